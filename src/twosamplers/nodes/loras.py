"""ComfyUI's `LoraLoader` and `LoraLoaderModelOnly` node classes (same inputs, defaults and ranges).

MODEL and CLIP are twosamplers models (a Stable Diffusion `SDModel`, or one already carrying LoRAs); the
outputs are `LoraModel`s over the same network, which is patched only while a pass samples (MODEL, at
strength_model) or a prompt is encoded (CLIP, at strength_clip). `lora_name` is a file path, or a name looked
up in the directory of the `TWOSAMPLERS_LORA_DIR` environment variable (ComfyUI's models/loras).
"""

from __future__ import annotations

import os

from ..models.lora import MAX_STRENGTH, LoraModel, load_lora
from ..models.prompt_tags import lora_file

LORA_DIR_ENV = "TWOSAMPLERS_LORA_DIR"
_STRENGTH = {"default": 1.0, "min": -MAX_STRENGTH, "max": MAX_STRENGTH, "step": 0.01}


def _lora_names():
    root = os.environ.get(LORA_DIR_ENV)
    if root and os.path.isdir(root):
        names = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
                       if f.lower().endswith((".safetensors", ".pt", ".ckpt", ".pth", ".bin")))
        if names:
            return (names,)
    return ("STRING", {"default": ""})


def _network(model, name: str):
    base = model.base if isinstance(model, LoraModel) else model
    if callable(getattr(base, "lora_modules", None)):  # Flux / SD3 models and text encoders name their parts
        return base
    if not hasattr(base, "unet") or not hasattr(base, "text_encoders"):
        raise TypeError(f"{name} must be a Stable Diffusion model (twosamplers.load of a checkpoint); "
                        f"got {type(base).__name__}, which has no UNet/text encoders to patch")
    return base


def _strength(value, name: str) -> float:
    import math
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or abs(value) > MAX_STRENGTH:
        raise ValueError(f"{name} must be a finite number in [-{MAX_STRENGTH:g}, {MAX_STRENGTH:g}], got {value!r}")
    return float(value)


class LoraLoader:
    """LoRA on a MODEL (strength_model) and a CLIP (strength_clip); both 0 returns the inputs unchanged."""

    allow_pickle = False

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "clip": ("CLIP",), "lora_name": _lora_names(),
                             "strength_model": ("FLOAT", dict(_STRENGTH)),
                             "strength_clip": ("FLOAT", dict(_STRENGTH))}}

    RETURN_TYPES = ("MODEL", "CLIP")
    FUNCTION = "load_lora"
    CATEGORY = "loaders"

    def load_lora(self, model, clip, lora_name, strength_model, strength_clip):
        sm = _strength(strength_model, "strength_model")
        sc = _strength(strength_clip, "strength_clip")
        if sm == 0 and sc == 0:
            return (model, clip)
        path = lora_file(str(lora_name), os.environ.get(LORA_DIR_ENV))
        base_m, base_c = _network(model, "model"), _network(clip, "clip")
        if base_c is base_m:
            f_m = f_c = load_lora(base_m, path, allow_pickle=self.allow_pickle)
        else:  # MODEL and CLIP from separate loaders (UNETLoader + DualCLIPLoader): each takes its half
            f_m, f_c = _load_halves(base_m, base_c, path, self.allow_pickle)
        return (LoraModel(model, [(f_m, sm, 0.0)]), LoraModel(clip, [(f_c, 0.0, sc)]))


def _load_halves(model, clip, path, allow_pickle: bool):
    """A LoRA file read for a MODEL and a CLIP that are separate objects: a half may match nothing (a LoRA
    without text-encoder keys), and keys are reported only when neither half takes them."""
    import warnings

    from ..models.lora import LoraError, LoraFile

    files, errors = [], []
    for net in (model, clip):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                files.append(load_lora(net, path, allow_pickle=allow_pickle))
            except LoraError as e:
                if "matches the" not in str(e):  # a damaged file, a shape that does not fit: report it
                    raise
                files.append(None)
                errors.append(e)
    if files[0] is None and files[1] is None:
        raise errors[0]
    unmatched = None
    for f in files:
        if f is not None:
            unmatched = set(f.unmatched) if unmatched is None else unmatched & set(f.unmatched)
    if unmatched:
        few = sorted(unmatched)[:4]
        warnings.warn(f"{os.path.basename(str(path))}: {len(unmatched)} LoRA keys match nothing in this model and "
                      f"are ignored (e.g. {', '.join(few)})", stacklevel=3)
    from pathlib import Path

    empty = LoraFile(Path(path), {})
    return files[0] or empty, files[1] or empty


class LoraLoaderModelOnly:
    """LoRA on a MODEL only; strength 0 returns the input unchanged."""

    allow_pickle = False

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "lora_name": _lora_names(),
                             "strength_model": ("FLOAT", dict(_STRENGTH))}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_lora_model_only"
    CATEGORY = "loaders"

    def load_lora_model_only(self, model, lora_name, strength_model):
        sm = _strength(strength_model, "strength_model")
        if sm == 0:
            return (model,)
        path = lora_file(str(lora_name), os.environ.get(LORA_DIR_ENV))
        f = load_lora(_network(model, "model"), path, allow_pickle=self.allow_pickle)
        return (LoraModel(model, [(f, sm, 0.0)]),)
