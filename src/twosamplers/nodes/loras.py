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
        f_m = load_lora(base_m, path, allow_pickle=self.allow_pickle)
        f_c = f_m if base_c is base_m else load_lora(base_c, path, allow_pickle=self.allow_pickle)
        return (LoraModel(model, [(f_m, sm, 0.0)]), LoraModel(clip, [(f_c, 0.0, sc)]))


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
