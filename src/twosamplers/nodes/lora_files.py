"""LoraLoader / LoraLoaderModelOnly (`nodes/loras.py`) with `lora_name` looked up in the run's loras/ folders
(`--models DIR/loras`, a ComfyUI install's models/loras, extra_model_paths.yaml), for workflows."""

from __future__ import annotations

import os

from ..models.prompt_tags import resolve_lora
from . import loras
from .core import FolderNode
from .folders import Folders

LORA_EXTENSIONS = (".safetensors", ".pt", ".ckpt", ".pth", ".bin")


def lora_path(folders: Folders, name) -> str:
    """lora_name -> the file under a loras/ folder (else under TWOSAMPLERS_LORA_DIR, as loras.py looks). A workflow
    is someone else's document: the name stays inside those folders (no absolute path, no '..')."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"lora_name must be a non-empty file name, got {name!r}")
    p = folders.find_model("loras", name)
    if p is not None and p.is_file():
        return str(p)
    env = os.environ.get(loras.LORA_DIR_ENV)
    if env:
        return str(resolve_lora(name, env))
    where = ", ".join(str(d) for d in folders.search_dirs("loras")) or "no loras folder given (use --models DIR " \
        "or --comfyui DIR)"
    raise FileNotFoundError(f"LoRA {name!r} not found (searched: {where})")


def _with_names(types: dict, folders: Folders | None) -> dict:
    names = folders.list_models("loras", LORA_EXTENSIONS) if folders is not None else []
    req = dict(types["required"])
    req["lora_name"] = (names,)
    return {**types, "required": req}


class LoraLoader(FolderNode, loras.LoraLoader):
    @property
    def allow_pickle(self) -> bool:  # run --allow-pickle
        return bool(self.folders.load_options.get("allow_pickle"))

    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        return _with_names(loras.LoraLoader.INPUT_TYPES(), folders)

    FILE_INPUTS = ("lora_name",)

    def check_inputs(self, lora_name):
        lora_path(self.folders, lora_name)

    def load_lora(self, model, clip, lora_name, strength_model, strength_clip):
        return super().load_lora(model, clip, lora_path(self.folders, lora_name), strength_model, strength_clip)


class LoraLoaderModelOnly(FolderNode, loras.LoraLoaderModelOnly):
    @property
    def allow_pickle(self) -> bool:  # run --allow-pickle
        return bool(self.folders.load_options.get("allow_pickle"))

    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        return _with_names(loras.LoraLoaderModelOnly.INPUT_TYPES(), folders)

    FILE_INPUTS = ("lora_name",)

    def check_inputs(self, lora_name):
        lora_path(self.folders, lora_name)

    def load_lora_model_only(self, model, lora_name, strength_model):
        return super().load_lora_model_only(model, lora_path(self.folders, lora_name), strength_model)


__all__ = ["LoraLoader", "LoraLoaderModelOnly", "lora_path"]
