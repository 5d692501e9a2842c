"""ComfyUI's core nodes for loading, prompting, sampling and latents, on the twosamplers engine.

Inputs, names, defaults and widget order are ComfyUI's (what its workflows store); the work is done by the
package's own engine (`ksampler.common_ksampler`) and model backends, so a workflow of these nodes gives
the numbers of the direct Python calls.
"""

from __future__ import annotations

import torch

from .._checks import MAX_CFG, MAX_STEPS, SEED_MAX, check_choice, check_float, check_int, check_mask
from ..engine.latent import check_latent, load_latent, remake_empty_latent, save_latent
from ..engine.noise_mask import repeat_to_batch_size
from ..engine.passes import common_ksampler
from ..engine.schedules import SCHEDULER_NAMES
from ..samplers import SAMPLER_NAMES
from .folders import Folders, PendingWrite, embedded_models, split_prefix
from .handles import ClipHandle, ModelHandle, VaeHandle, is_model

MAX_RESOLUTION = 16384


class FolderNode:
    """Base of the nodes that read or write files: they get the run's `Folders` (default: ./input, ./output)."""

    def __init__(self, folders: Folders | None = None) -> None:
        self.folders = folders if folders is not None else Folders()


def _check_model(model, name: str = "model"):
    if not is_model(model):
        raise TypeError(f"{name} must be a MODEL (from CheckpointLoaderSimple), got {type(model).__name__}")
    return model


def _check_clip(clip, name: str = "clip"):
    """A CLIP: a ClipHandle, or any model with encode_prompt (e.g. a LoRA-patched model)."""
    if not isinstance(clip, ClipHandle) and not callable(getattr(clip, "encode_prompt", None)):
        raise TypeError(f"{name} must be a CLIP (from CheckpointLoaderSimple), got {type(clip).__name__}")
    return clip


# ---------------------------------------------------------------------------------------------- loaders
class CheckpointLoaderSimple(FolderNode):
    """ckpt_name -> (MODEL, CLIP, VAE): a checkpoint under models/checkpoints/ (a file or a diffusers folder),
    or an embedded model by name ("textures", "ideal"), which needs no file."""

    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        names = list(embedded_models()) + (folders.list_models("checkpoints") if folders is not None else [])
        return {"required": {"ckpt_name": (names,)}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load_checkpoint"
    CATEGORY = "loaders"
    FILE_INPUTS = ("ckpt_name",)

    def check_inputs(self, ckpt_name):
        self.folders.resolve_checkpoint(ckpt_name)

    def load_checkpoint(self, ckpt_name):
        model = self.folders.load_checkpoint(ckpt_name)
        return (ModelHandle(model), ClipHandle(model), VaeHandle(model))


# ---------------------------------------------------------------------------------------------- text
def encode_text(folders: Folders, clip, text: str, **options) -> list:
    """ComfyUI's text encoding of a node: `embedding:NAME` words resolve in the run's embeddings folders (an
    unknown name is dropped with a warning naming it, as ComfyUI drops it)."""
    clip = _check_clip(clip)
    if not isinstance(clip, ClipHandle):
        clip = ClipHandle(clip)
    library = folders.embeddings()
    return clip.encode(text, library if library.directories else None, **options)


class CLIPTextEncode(FolderNode):
    """text -> CONDITIONING; `embedding:NAME` reads the run's embeddings/ folders."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True, "dynamicPrompts": True}), "clip": ("CLIP",)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "conditioning"

    def encode(self, clip, text):
        return (encode_text(self.folders, clip, text),)


def _sdxl_family(clip, node: str, families: tuple[str, ...]) -> str:
    family = getattr(clip, "family", None)
    if family not in families:
        raise ValueError(f"{node} needs the CLIP of an SDXL checkpoint ({' or '.join(families)}), got a "
                         f"{family or type(clip).__name__} one")
    return family


def _size(name: str, value) -> int:
    return check_int(name, value, 0, MAX_RESOLUTION)


class CLIPTextEncodeSDXL(FolderNode):
    """SDXL prompt with its own CLIP-L text (text_l) and the size conditioning (original size, crop, target
    size) the SDXL UNet is given: ComfyUI's node. The shorter of text_g / text_l is padded with empty-prompt
    chunks to the other's length. On a refiner CLIP, text_l only pads, and target sizes are not used."""

    @classmethod
    def INPUT_TYPES(cls):
        size = {"default": 1024, "min": 0, "max": MAX_RESOLUTION}
        crop = {"default": 0, "min": 0, "max": MAX_RESOLUTION}
        return {"required": {
            "clip": ("CLIP",),
            "width": ("INT", size), "height": ("INT", size),
            "crop_w": ("INT", crop), "crop_h": ("INT", crop),
            "target_width": ("INT", size), "target_height": ("INT", size),
            "text_g": ("STRING", {"multiline": True, "dynamicPrompts": True}),
            "text_l": ("STRING", {"multiline": True, "dynamicPrompts": True}),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "model/conditioning/stable diffusion"

    def encode(self, clip, width, height, crop_w, crop_h, target_width, target_height, text_g, text_l):
        clip = _check_clip(clip)
        _sdxl_family(clip, "CLIPTextEncodeSDXL", ("sdxl", "sdxl_refiner"))
        for name, value in (("text_g", text_g), ("text_l", text_l)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a string, got {type(value).__name__}")
        sizes = {k: _size(k, v) for k, v in (("width", width), ("height", height), ("crop_w", crop_w),
                                             ("crop_h", crop_h), ("target_width", target_width),
                                             ("target_height", target_height))}
        return (encode_text(self.folders, clip, text_g, text_l=text_l, **sizes),)


class CLIPTextEncodeSDXLRefiner(FolderNode):
    """SDXL refiner prompt with its aesthetic score and original size (crop 0): ComfyUI's node. On an SDXL
    base CLIP the size is used (target = size) and the score is not."""

    @classmethod
    def INPUT_TYPES(cls):
        size = {"default": 1024, "min": 0, "max": MAX_RESOLUTION}
        return {"required": {
            "ascore": ("FLOAT", {"default": 6.0, "min": 0.0, "max": 1000.0, "step": 0.01}),
            "width": ("INT", size), "height": ("INT", size),
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True}),
            "clip": ("CLIP",),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "model/conditioning/stable diffusion"

    def encode(self, clip, ascore, width, height, text):
        clip = _check_clip(clip)
        _sdxl_family(clip, "CLIPTextEncodeSDXLRefiner", ("sdxl", "sdxl_refiner"))
        ascore = check_float("ascore", ascore, 0.0, 1000.0)
        return (encode_text(self.folders, clip, text, aesthetic_score=ascore, width=_size("width", width),
                            height=_size("height", height)),)


class CLIPSetLastLayer:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip": ("CLIP",),
                             "stop_at_clip_layer": ("INT", {"default": -1, "min": -24, "max": -1, "step": 1})}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "set_last_layer"
    CATEGORY = "conditioning"

    def set_last_layer(self, clip, stop_at_clip_layer):
        skip = check_int("stop_at_clip_layer", stop_at_clip_layer, -24, -1)
        return (_with_clip_skip(_check_clip(clip), skip),)


def _with_clip_skip(clip, skip: int):
    """The CLIP with another last layer; a LoRA stack stays outermost (a LoRA after CLIPSetLastLayer then joins
    the same stack instead of nesting a second one on the same text encoder)."""
    from ..models.lora import LoraModel

    if isinstance(clip, LoraModel):
        return LoraModel(_with_clip_skip(clip.base, skip), clip.loras)
    return clip.with_clip_skip(skip) if isinstance(clip, ClipHandle) else ClipHandle(clip, skip)


# ---------------------------------------------------------------------------------------------- sampling
class KSampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True}),
            "steps": ("INT", {"default": 20, "min": 1, "max": MAX_STEPS}),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": MAX_CFG, "step": 0.1, "round": 0.01}),
            "sampler_name": (list(SAMPLER_NAMES),),
            "scheduler": (list(SCHEDULER_NAMES),),
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            "latent_image": ("LATENT",),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = "sampling"

    def sample(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise=1.0,
               *, disable_pbar=None):
        _check_model(model)
        latent = remake_empty_latent(check_latent(latent_image, "latent_image"), model.latent_format)
        return (common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                                denoise=denoise, disable_pbar=disable_pbar),)


class KSamplerAdvanced:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "add_noise": (["enable", "disable"],),
            "noise_seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True}),
            "steps": ("INT", {"default": 20, "min": 1, "max": MAX_STEPS}),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": MAX_CFG, "step": 0.1, "round": 0.01}),
            "sampler_name": (list(SAMPLER_NAMES),),
            "scheduler": (list(SCHEDULER_NAMES),),
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            "latent_image": ("LATENT",),
            "start_at_step": ("INT", {"default": 0, "min": 0, "max": MAX_STEPS}),
            "end_at_step": ("INT", {"default": 10000, "min": 0, "max": MAX_STEPS}),
            "return_with_leftover_noise": (["disable", "enable"],),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = "sampling"

    def sample(self, model, add_noise, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
               latent_image, start_at_step, end_at_step, return_with_leftover_noise, denoise=1.0, *,
               disable_pbar=None):
        _check_model(model)
        check_choice("add_noise", add_noise, ("enable", "disable"))
        check_choice("return_with_leftover_noise", return_with_leftover_noise, ("disable", "enable"))
        latent = remake_empty_latent(check_latent(latent_image, "latent_image"), model.latent_format)
        return (common_ksampler(model, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                                denoise=denoise, disable_noise=add_noise == "disable", start_step=start_at_step,
                                last_step=end_at_step, force_full_denoise=return_with_leftover_noise != "enable",
                                disable_pbar=disable_pbar),)


# ---------------------------------------------------------------------------------------------- latents
class EmptyLatentImage:
    """Zeros (batch, 4, height // 8, width // 8), ComfyUI's latent; a model with another latent format (the
    pixel-space embedded models) gets it re-made at its own channels and scale (`latent.remake_empty_latent`)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
            "height": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"
    CATEGORY = "latent"

    def generate(self, width, height, batch_size=1):
        width = check_int("width", width, 16, MAX_RESOLUTION)
        height = check_int("height", height, 16, MAX_RESOLUTION)
        batch_size = check_int("batch_size", batch_size, 1, 4096)
        return ({"samples": torch.zeros([batch_size, 4, height // 8, width // 8])},)


class SetLatentNoiseMask:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "mask": ("MASK",)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "set_mask"
    CATEGORY = "latent/inpaint"

    def set_mask(self, samples, mask):
        check_latent(samples, "samples")
        mask = check_mask(mask, "mask")
        out = dict(samples)
        out["noise_mask"] = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        return (out,)


class LatentCompositeMasked:
    """Paste `source` into `destination` at (x, y) (pixels, multiples of 8), through an optional mask."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "destination": ("LATENT",),
            "source": ("LATENT",),
            "x": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8}),
            "y": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8}),
            "resize_source": ("BOOLEAN", {"default": False}),
        }, "optional": {"mask": ("MASK",)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "composite"
    CATEGORY = "latent"

    def composite(self, destination, source, x, y, resize_source, mask=None):
        check_latent(destination, "destination")
        check_latent(source, "source")
        x = check_int("x", x, 0, MAX_RESOLUTION)
        y = check_int("y", y, 0, MAX_RESOLUTION)
        if mask is not None:
            mask = check_mask(mask, "mask")
        out = dict(destination)
        out["samples"] = paste(destination["samples"], source["samples"], x, y, mask, 8, bool(resize_source))
        return (out,)


def paste(dest: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: torch.Tensor | None, multiplier: int,
          resize_source: bool) -> torch.Tensor:
    """`source` blended into a copy of `dest` at (x, y) // multiplier, clipped to dest, weighted by `mask`
    (resized bilinearly to the source, batch tiled); ComfyUI's latent composite rule."""
    dest = dest.clone()
    if dest.shape[1] != source.shape[1]:
        raise ValueError(f"source has {source.shape[1]} channels, destination {dest.shape[1]}")
    source = source.to(dest.device, dest.dtype)
    if resize_source:
        source = torch.nn.functional.interpolate(source, size=dest.shape[2:], mode="bilinear")
    source = repeat_to_batch_size(source, dest.shape[0])
    x, y = x // multiplier, y // multiplier
    x = max(-source.shape[3], min(x, dest.shape[3]))
    y = max(-source.shape[2], min(y, dest.shape[2]))
    left, top = x, y
    right, bottom = left + source.shape[3], top + source.shape[2]
    if mask is None:
        m = torch.ones_like(source)
    else:
        m = mask.to(dest.device, dest.dtype).reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        m = torch.nn.functional.interpolate(m, size=source.shape[2:], mode="bilinear")
        m = repeat_to_batch_size(m, source.shape[0])
    vis_w = dest.shape[3] - x
    vis_h = dest.shape[2] - y
    m = m[:, :, :vis_h, :vis_w]
    src = source[:, :, :vis_h, :vis_w]
    part = dest[:, :, top:bottom, left:right]
    dest[:, :, top:bottom, left:right] = m * src + (1 - m) * part
    return dest


class SaveLatent(FolderNode):
    """Writes `prefix_NNNNN_.latent` (ComfyUI's .latent format) with the prompt and workflow as metadata."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "filename_prefix": ("STRING", {"default": "latents/ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "_for_testing"
    OUTPUT_INPUTS = ("filename_prefix",)  # checked while planning (check_inputs), before any sampling

    def check_inputs(self, filename_prefix="latents/ComfyUI"):
        split_prefix(filename_prefix)

    def save(self, samples, filename_prefix="latents/ComfyUI", prompt=None, extra_pnginfo=None, unique_id=None):
        import json

        check_latent(samples, "samples")
        sub, name = split_prefix(filename_prefix)
        meta = {}
        if prompt is not None:
            meta["prompt"] = json.dumps(prompt)
        for k, v in (extra_pnginfo or {}).items():
            meta[k] = json.dumps(v)
        latent = {"samples": samples["samples"]}

        def write(tmp: str) -> None:
            save_latent(tmp, latent, meta)

        item = self.folders.write(PendingWrite(sub, name, "latent", write, unique_id, "latent"))
        return {"ui": {"latents": [item]}, "result": ()}


class LoadLatent(FolderNode):
    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        names = folders.list_inputs((".latent",)) if folders is not None else []
        return {"required": {"latent": (names,)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "load"
    CATEGORY = "_for_testing"
    FILE_INPUTS = ("latent",)
    INPUT_FILES = ("latent",)  # read from the input folder (a batch ships these to its workers)

    def check_inputs(self, latent):
        self.folders.input_path(latent)

    def load(self, latent):
        return (load_latent(self.folders.input_path(latent)),)


# ---------------------------------------------------------------------------------------------- VAE
class VAEEncode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"
    CATEGORY = "latent"

    def encode(self, vae, pixels):
        return ({"samples": _vae(vae).encode(_image(pixels, "pixels")[:, :, :, :3])},)


class VAEDecode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "vae": ("VAE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"
    CATEGORY = "latent"

    def decode(self, vae, samples):
        check_latent(samples, "samples")
        return (_vae(vae).decode(samples["samples"]),)


class VAEEncodeForInpaint:
    """Pixels under the (rounded) mask set to grey, encoded; noise mask = the mask grown by grow_mask_by."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",), "mask": ("MASK",),
                             "grow_mask_by": ("INT", {"default": 6, "min": 0, "max": 64, "step": 1})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"
    CATEGORY = "latent/inpaint"

    def encode(self, vae, pixels, mask, grow_mask_by=6):
        from ..models.inpaint import vae_encode_for_inpaint

        return (vae_encode_for_inpaint(_vae(vae).model, pixels, check_mask(mask, "mask"), grow_mask_by),)


def _vae(vae) -> VaeHandle:
    if not isinstance(vae, VaeHandle):
        raise TypeError(f"vae must be a VAE (from CheckpointLoaderSimple), got {type(vae).__name__}")
    return vae


def _image(image, name: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name} must be an IMAGE tensor (B, H, W, 3), got {shape}")
    return image


__all__ = [
    "CLIPSetLastLayer",
    "CLIPTextEncode",
    "CLIPTextEncodeSDXL",
    "CLIPTextEncodeSDXLRefiner",
    "CheckpointLoaderSimple",
    "EmptyLatentImage",
    "FolderNode",
    "KSampler",
    "KSamplerAdvanced",
    "LatentCompositeMasked",
    "LoadLatent",
    "SaveLatent",
    "SetLatentNoiseMask",
    "VAEDecode",
    "VAEEncode",
    "VAEEncodeForInpaint",
    "paste",
]
