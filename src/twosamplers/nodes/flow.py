"""ComfyUI's nodes for Flux.1 and SD3/SD3.5: loaders of the separate files (UNETLoader, DualCLIPLoader,
TripleCLIPLoader, CLIPLoader), the model-sampling patches (ModelSamplingFlux, ModelSamplingSD3), Flux's guidance
(FluxGuidance, FluxDisableGuidance, CLIPTextEncodeFlux) and EmptySD3LatentImage; inputs, defaults and ranges as
ComfyUI 0.30 has them. Files are looked up in the run's models folders (diffusion_models/ and unet/,
text_encoders/ and clip/), each loaded once per run (`Folders.cache`).
"""

from __future__ import annotations

import torch

from .._checks import check_choice, check_float, check_int
from ..engine import schedules
from ..models.flow_loading import WEIGHT_DTYPES
from .core import MAX_RESOLUTION, FolderNode, _check_clip, _check_model
from .folders import Folders
from .handles import ClipHandle, ModelHandle

UNET_KINDS = ("diffusion_models", "unet")
TEXT_KINDS = ("text_encoders", "clip")
DUAL_TYPES = ["flux", "sd3"]
SINGLE_TYPES = ["sd3"]
DEVICES = ["default", "cpu"]
_GUIDANCE = ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1})


def _names(folders: Folders | None, kinds: tuple[str, ...]) -> list[str]:
    if folders is None:
        return []
    return sorted({n for kind in kinds for n in folders.list_models(kind)})


def _find(folders: Folders, kinds: tuple[str, ...], name, what: str):
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty file name, got {name!r}")
    for kind in kinds:
        p = folders.find_model(kind, name)
        if p is not None and p.is_file():
            return p
    where = ", ".join(str(d) for k in kinds for d in folders.search_dirs(k)) or \
        f"no {kinds[0]} folder given (use --models DIR or --comfyui DIR)"
    raise FileNotFoundError(f"{what} {name!r} not found (searched: {where})")


def _cache(folders: Folders):
    if folders.cache is None:
        from ..models import ModelCache

        folders.cache = ModelCache()
    return folders.cache


def _device_dtype(folders: Folders, device: str = "default") -> tuple:
    device = check_choice("device", device, DEVICES)
    opts = folders.load_options
    return ("cpu" if device == "cpu" else opts.get("device")), opts.get("dtype")


# ------------------------------------------------------------------------------------------------ loaders
class UNETLoader(FolderNode):
    """unet_name (a Flux / SD3 diffusion model file in diffusion_models/ or unet/), weight_dtype -> MODEL (no text
    encoders, no VAE). weight_dtype "default" keeps the file's dtype; the fp8 choices store the weights in 8 bits
    (computed in the compute dtype, float32 on the CPU)."""

    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        return {"required": {"unet_name": (_names(folders, UNET_KINDS),),
                             "weight_dtype": (list(WEIGHT_DTYPES), {"advanced": True})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_unet"
    CATEGORY = "loaders"
    FILE_INPUTS = ("unet_name",)

    def check_inputs(self, unet_name, **_values):
        _find(self.folders, UNET_KINDS, unet_name, "unet_name")

    def load_unet(self, unet_name, weight_dtype="default"):
        from ..models.flow_loading import load_diffusion_model

        check_choice("weight_dtype", weight_dtype, list(WEIGHT_DTYPES))
        path = _find(self.folders, UNET_KINDS, unet_name, "unet_name")
        device, dtype = _device_dtype(self.folders)
        model = _cache(self.folders).get_loaded(
            ("unet", str(path.resolve()), weight_dtype, str(device), str(dtype)),
            lambda: load_diffusion_model(path, weight_dtype=weight_dtype, device=device, dtype=dtype))
        return (ModelHandle(model),)


def _load_text(folders: Folders, names: list[str], family: str, device: str):
    from ..models.flow_loading import load_text_encoders

    paths = [_find(folders, TEXT_KINDS, n, f"clip_name{i + 1 if len(names) > 1 else ''}") for i, n in
             enumerate(names)]
    dev, dtype = _device_dtype(folders, device)
    key = ("text", family, *(str(p.resolve()) for p in paths), str(dev), str(dtype))
    return ClipHandle(_cache(folders).get_loaded(key, lambda: load_text_encoders(paths, family, device=dev,
                                                                                 dtype=dtype)))


class DualCLIPLoader(FolderNode):
    """Two text encoder files -> CLIP: type "flux" (CLIP-L + T5-XXL) or "sd3" (any two of CLIP-L, CLIP-G, T5-XXL).
    Which file is which encoder is read from its keys."""

    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        names = _names(folders, TEXT_KINDS)
        return {"required": {"clip_name1": (names,), "clip_name2": (names,), "type": (DUAL_TYPES,)},
                "optional": {"device": (DEVICES, {"advanced": True})}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"
    CATEGORY = "loaders"
    FILE_INPUTS = ("clip_name1", "clip_name2")

    def check_inputs(self, clip_name1, clip_name2, **_values):  # the runner passes the file inputs
        for i, n in enumerate((clip_name1, clip_name2)):
            _find(self.folders, TEXT_KINDS, n, f"clip_name{i + 1}")

    def load_clip(self, clip_name1, clip_name2, type, device="default"):
        check_choice("type", type, DUAL_TYPES)
        return (_load_text(self.folders, [clip_name1, clip_name2], type, device),)


class TripleCLIPLoader(FolderNode):
    """CLIP-L, CLIP-G and T5-XXL files -> SD3's CLIP (the order of the files does not matter)."""

    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        names = _names(folders, TEXT_KINDS)
        return {"required": {"clip_name1": (names,), "clip_name2": (names,), "clip_name3": (names,)}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"
    CATEGORY = "loaders"
    FILE_INPUTS = ("clip_name1", "clip_name2", "clip_name3")

    def check_inputs(self, clip_name1, clip_name2, clip_name3):
        for i, n in enumerate((clip_name1, clip_name2, clip_name3)):
            _find(self.folders, TEXT_KINDS, n, f"clip_name{i + 1}")

    def load_clip(self, clip_name1, clip_name2, clip_name3):
        return (_load_text(self.folders, [clip_name1, clip_name2, clip_name3], "sd3", "default"),)


class CLIPLoader(FolderNode):
    """One text encoder file -> CLIP. Types run here: "sd3" (CLIP-L, CLIP-G or T5-XXL alone, as SD3's CLIP)."""

    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        return {"required": {"clip_name": (_names(folders, TEXT_KINDS),), "type": (SINGLE_TYPES,)},
                "optional": {"device": (DEVICES, {"advanced": True})}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"
    CATEGORY = "loaders"
    FILE_INPUTS = ("clip_name",)

    def check_inputs(self, clip_name, **_values):
        _find(self.folders, TEXT_KINDS, clip_name, "clip_name")

    def load_clip(self, clip_name, type="sd3", device="default"):
        check_choice("type", type, SINGLE_TYPES)
        return (_load_text(self.folders, [clip_name], type, device),)


# ------------------------------------------------------------------------------------------------ model sampling
def with_model_sampling(model, model_sampling, node: str):
    """`model` over the same weights with another sigma schedule (LoRA stacks kept)."""
    from ..models.lora import LoraModel

    _check_model(model)
    inner = model.model if isinstance(model, ModelHandle) else model
    if isinstance(inner, LoraModel):
        return LoraModel(with_model_sampling(inner.base, model_sampling, node), inner.loras)
    fn = getattr(inner, "with_model_sampling", None)
    if not callable(fn):
        raise TypeError(f"{node} needs a Flux or SD3 model (a flow-matching model); got {type(inner).__name__}")
    return fn(model_sampling)


class ModelSamplingFlux:
    """Flux's sigma shift from the image size: shift = base_shift + (max_shift - base_shift) * (patches - 256) /
    (4096 - 256), patches = width * height / 256."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "max_shift": ("FLOAT", {"default": 1.15, "min": 0.0, "max": 100.0, "step": 0.01}),
            "base_shift": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 100.0, "step": 0.01}),
            "width": ("INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
            "height": ("INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "advanced/model"

    def patch(self, model, max_shift, base_shift, width, height):
        max_shift = check_float("max_shift", max_shift, 0.0, 100.0)
        base_shift = check_float("base_shift", base_shift, 0.0, 100.0)
        width = check_int("width", width, 16, MAX_RESOLUTION)
        height = check_int("height", height, 16, MAX_RESOLUTION)
        ms = schedules.ModelSamplingFlux(shift=schedules.flux_shift(width, height, max_shift, base_shift))
        return (ModelHandle(with_model_sampling(model, ms, "ModelSamplingFlux")),)


class ModelSamplingSD3:
    """SD3's flow schedule with another shift (ComfyUI's ModelSamplingSD3: multiplier 1000)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",),
                             "shift": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0, "step": 0.01})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "advanced/model"

    def patch(self, model, shift):
        shift = check_float("shift", shift, 0.0, 100.0)
        ms = schedules.ModelSamplingFlow(shift=shift, multiplier=1000)
        return (ModelHandle(with_model_sampling(model, ms, "ModelSamplingSD3")),)


# ------------------------------------------------------------------------------------------------ conditioning
def set_values(conditioning, values: dict) -> list:
    """A copy of CONDITIONING with `values` set in every entry's options (ComfyUI's conditioning_set_values)."""
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise TypeError("conditioning must be a CONDITIONING list [[tensor, {...}], ...]")
    out = []
    for i, item in enumerate(conditioning):
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[1], dict):
            raise TypeError(f"conditioning[{i}] must be a pair [tensor, dict]")
        out.append([item[0], {**item[1], **values}])
    return out


class FluxGuidance:
    """Sets Flux dev's guidance embedding value on every entry of a conditioning."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "guidance": _GUIDANCE}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"
    CATEGORY = "advanced/conditioning/flux"

    def append(self, conditioning, guidance):
        return (set_values(conditioning, {"guidance": check_float("guidance", guidance, 0.0, 100.0)}),)


class FluxDisableGuidance:
    """Removes the guidance embedding input (guidance None: the embedding is not added)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"
    CATEGORY = "advanced/conditioning/flux"

    def append(self, conditioning):
        return (set_values(conditioning, {"guidance": None}),)


class CLIPTextEncodeFlux:
    """Flux prompt with its own text for CLIP-L (`clip_l`) and T5-XXL (`t5xxl`), and the guidance value."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip": ("CLIP",), "clip_l": ("STRING", {"multiline": True, "dynamicPrompts": True}),
                             "t5xxl": ("STRING", {"multiline": True, "dynamicPrompts": True}),
                             "guidance": _GUIDANCE}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "advanced/conditioning/flux"

    def encode(self, clip, clip_l, t5xxl, guidance):
        clip = _check_clip(clip)
        for name, v in (("clip_l", clip_l), ("t5xxl", t5xxl)):
            if not isinstance(v, str):
                raise TypeError(f"{name} must be a string, got {type(v).__name__}")
        g = check_float("guidance", guidance, 0.0, 100.0)
        if not isinstance(clip, ClipHandle):
            clip = ClipHandle(clip)
        return (clip.encode_prompt(clip_l, t5_text=t5xxl, guidance=g),)


class CLIPTextEncodeSD3:
    """SD3 prompt with its own text for CLIP-L, CLIP-G and T5-XXL; empty_padding "none" leaves an encoder whose
    text is empty out (ComfyUI's rules), "empty_prompt" encodes the empty prompt for it."""

    @classmethod
    def INPUT_TYPES(cls):
        text = ("STRING", {"multiline": True, "dynamicPrompts": True})
        return {"required": {"clip": ("CLIP",), "clip_l": text, "clip_g": text, "t5xxl": text,
                             "empty_padding": (["none", "empty_prompt"],)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "advanced/conditioning"

    def encode(self, clip, clip_l, clip_g, t5xxl, empty_padding="none"):
        clip = _check_clip(clip)
        for name, v in (("clip_l", clip_l), ("clip_g", clip_g), ("t5xxl", t5xxl)):
            if not isinstance(v, str):
                raise TypeError(f"{name} must be a string, got {type(v).__name__}")
        empty_padding = check_choice("empty_padding", empty_padding, ["none", "empty_prompt"])
        if not isinstance(clip, ClipHandle):
            clip = ClipHandle(clip)
        if getattr(clip, "family", None) != "sd3":
            raise TypeError("CLIPTextEncodeSD3 needs SD3 text encoders (TripleCLIPLoader, DualCLIPLoader type "
                            "sd3, or an SD3 checkpoint's CLIP)")
        return (clip.encode_prompt(clip_l, clip_g_text=clip_g, t5_text=t5xxl, empty_padding=empty_padding),)


# ------------------------------------------------------------------------------------------------ latents
class EmptySD3LatentImage:
    """Zeros (batch, 16, height // 8, width // 8): the empty latent of SD3 and Flux."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 16}),
            "height": ("INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 16}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"
    CATEGORY = "latent/sd3"

    def generate(self, width, height, batch_size=1):
        width = check_int("width", width, 16, MAX_RESOLUTION)
        height = check_int("height", height, 16, MAX_RESOLUTION)
        batch_size = check_int("batch_size", batch_size, 1, 4096)
        return ({"samples": torch.zeros([batch_size, 16, height // 8, width // 8])},)


__all__ = ["CLIPLoader", "CLIPTextEncodeFlux", "CLIPTextEncodeSD3", "DualCLIPLoader", "EmptySD3LatentImage",
           "FluxDisableGuidance", "FluxGuidance", "ModelSamplingFlux", "ModelSamplingSD3", "TripleCLIPLoader",
           "UNETLoader", "set_values", "with_model_sampling"]
