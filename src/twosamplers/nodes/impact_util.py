"""Impact Pack's small utility nodes around sampling workflows (V7.10.6 behaviour): ImageMaskSwitch, LatentSwitch,
RemoveNoiseMask, ImpactMakeImageBatch / ImpactMakeMaskBatch, ImpactCombineConditionings /
ImpactConcatConditionings, ImpactNegativeConditioningPlaceholder and ImpactSchedulerAdapter.

- ImpactNegativeConditioningPlaceholder ("Negative Cond Placeholder", for Flux, which has no negative prompt)
  gives `NEGATIVE_PLACEHOLDER` instead of a conditioning. Impact's samplers (ImpactKSamplerBasicPipe and the
  advanced one, KSamplerProvider / KSamplerAdvancedProvider and what they feed: TwoSamplersForMask,
  RegionalSampler, ...) then sample without a negative: the positive alone (a basic guider, no CFG), with the
  sampler's cfg set as the positive's "guidance" (Flux dev's guidance embedding). `engine.conditioning` holds the
  rule. ComfyUI's own samplers (KSampler, KSamplerAdvanced, SamplerCustom, CFGGuider) fail on it in ComfyUI; here
  they refuse it with a message saying which samplers take it.
- LatentSwitch is Impact's general switch (ImpactSwitch: input1, input2, ...); files saved by older Impact
  versions name its inputs latent1, latent2, ..., which are read too.
- ImpactSchedulerAdapter passes the scheduler on; its extra schedulers (AYS, GITS) are not run here and are
  refused by name.
"""

from __future__ import annotations

import re

import torch

from .._checks import check_choice, check_int
from ..engine.conditioning import NEGATIVE_PLACEHOLDER
from ..engine.resample import resize
from ..engine.schedules import SCHEDULER_NAMES
from .core import _image
from .impact_switch import MAX_INPUTS, ImpactSwitch

EXTRA_SCHEDULERS = ("None", "AYS SDXL", "AYS SD1", "AYS SVD", "GITS[coeff=1.2]")


def _numbered(kwargs: dict, prefix: str) -> list[tuple[int, object]]:
    """(n, value) of the inputs prefix1, prefix2, ... that have a value, by n."""
    out = []
    for name, value in kwargs.items():
        m = re.fullmatch(re.escape(prefix) + r"(\d+)", name)
        if m and value is not None:
            out.append((int(m.group(1)), value))
    return sorted(out, key=lambda t: t[0])


class ImageMaskSwitch:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"select": ("INT", {"default": 1, "min": 1, "max": 4, "step": 1}),
                             "images1": ("IMAGE",)},
                "optional": {"mask1_opt": ("MASK",), "images2_opt": ("IMAGE",), "mask2_opt": ("MASK",),
                             "images3_opt": ("IMAGE",), "mask3_opt": ("MASK",), "images4_opt": ("IMAGE",),
                             "mask4_opt": ("MASK",)}}

    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "doit"  # Impact marks it an output node, which only makes ComfyUI run it when nothing uses it
    CATEGORY = "ImpactPack/Util"

    def doit(self, select, images1, mask1_opt=None, images2_opt=None, mask2_opt=None, images3_opt=None,
             mask3_opt=None, images4_opt=None, mask4_opt=None):
        index = check_int("select", select, 1, 4)
        pairs = [(images1, mask1_opt), (images2_opt, mask2_opt), (images3_opt, mask3_opt), (images4_opt, mask4_opt)]
        images, mask = pairs[index - 1]
        if images is None:
            raise ValueError(f"ImageMaskSwitch: select={index} chooses images{index}_opt, which is not connected")
        return (images, mask)


class LatentSwitch(ImpactSwitch):
    @classmethod
    def INPUT_TYPES(cls):
        types = super().INPUT_TYPES()
        older = {f"latent{i}": ("LATENT", {"lazy": True}) for i in range(1, MAX_INPUTS + 1)}  # older files' names
        types["optional"] = {**types["optional"], **older}
        types["required"] = {**types["required"]}
        types["optional"]["sel_mode"] = types["required"].pop("sel_mode")
        return types

    def check_lazy_status(self, select, **inputs):
        index = check_int("select", select, 1, 999999)
        return [f"input{index}", f"latent{index}"]

    def doit(self, select, sel_mode=False, unique_id=None, extra_pnginfo=None, **inputs):
        index = check_int("select", select, 1, 999999)
        old = inputs.pop(f"latent{index}", None)
        if inputs.get(f"input{index}") is None and old is not None:
            inputs[f"input{index}"] = old
        inputs = {k: v for k, v in inputs.items() if k.startswith("input")}
        return super().doit(select, sel_mode, unique_id, extra_pnginfo, **inputs)


class RemoveNoiseMask:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Util"

    def doit(self, samples):
        if not isinstance(samples, dict) or "samples" not in samples:
            raise TypeError(f"samples must be a LATENT dict, got {type(samples).__name__}")
        return ({k: v for k, v in samples.items() if k != "noise_mask"},)


def image_batch(images: list, what: str = "image") -> torch.Tensor:
    """The images in one batch, each resized to the first one's size when it differs (Lanczos, centre crop, as
    Impact)."""
    out = None
    for name, image in images:
        image = _image(image, name)
        if out is None:
            out = image
            continue
        if image.shape[-1] != out.shape[-1]:
            raise ValueError(f"{name} has {image.shape[-1]} channels, {images[0][0]} {out.shape[-1]}: they cannot be "
                             "batched")
        if image.shape[1:] != out.shape[1:]:
            image = resize(image.movedim(-1, 1), out.shape[2], out.shape[1], "lanczos", "center").movedim(1, -1)
        out = torch.cat((out, image.to(out)), dim=0)
    if out is None:
        raise ValueError(f"no {what} to batch")
    return out


def mask3d(mask, name: str) -> torch.Tensor:
    """A MASK as (B, H, W) (Impact's make_3d_mask: (H, W) gets a batch axis, (1, B, H, W) loses its first)."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3, 4):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"{name} must be a MASK tensor (B, H, W), got {got}")
    return mask[None] if mask.ndim == 2 else mask.squeeze(0) if mask.ndim == 4 else mask


def mask_batch(masks: list) -> torch.Tensor:
    """The (name, mask) pairs in one batch; all must have the first one's size (Impact's resize of masks mixes up
    their axes, so other sizes are refused here)."""
    masks = [(name, mask3d(m, name)) for name, m in masks]
    first_name, first = masks[0]
    for name, m in masks[1:]:
        if m.shape[1:] != first.shape[1:]:
            raise ValueError(f"{name} is {tuple(m.shape[1:])}, {first_name} {tuple(first.shape[1:])}: masks of "
                             "another size are not resized here")
    return torch.cat([m.to(first) for _, m in masks], dim=0)


class ImpactMakeImageBatch:
    """image1, image2, ... in one batch; an image of another size is resized to image1's (Lanczos, centre crop)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image1": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Util"

    def doit(self, **kwargs):
        images = [(f"image{n}", v) for n, v in _numbered(kwargs, "image")]
        if not images or images[0][0] != "image1":
            raise ValueError("input 'image1' is required")
        return (image_batch(images),)


class ImpactMakeMaskBatch:
    """mask1, mask2, ... (each (H, W) or (B, H, W)) in one batch; all must have mask1's size."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask1": ("MASK",)}}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Util"

    def doit(self, **kwargs):
        masks = [(f"mask{n}", v) for n, v in _numbered(kwargs, "mask")]
        if not masks or masks[0][0] != "mask1":
            raise ValueError("input 'mask1' is required")
        return (mask_batch(masks),)


def _conditioning(name: str, value) -> list:
    if value is NEGATIVE_PLACEHOLDER:
        raise TypeError(f"{name} is Impact's negative placeholder, not a conditioning to combine")
    if not isinstance(value, (list, tuple)) or not all(isinstance(e, (list, tuple)) and len(e) == 2 for e in value):
        raise TypeError(f"{name} must be a CONDITIONING list [[tensor, {{...}}], ...], got {type(value).__name__}")
    return list(value)


class ImpactCombineConditionings:
    """conditioning1 + conditioning2 + ...: all their entries in one list (ConditioningCombine for many)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning1": ("CONDITIONING",)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Util"

    def doit(self, **kwargs):
        out = []
        for n, cond in _numbered(kwargs, "conditioning"):
            out += _conditioning(f"conditioning{n}", cond)
        return (out,)


class ImpactConcatConditionings:
    """conditioning1's entries, each with the first entry's tokens of conditioning2, 3, ... appended (the options
    stay conditioning1's). One input alone comes back unchanged (Impact fails there)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning1": ("CONDITIONING",)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Util"

    def doit(self, **kwargs):
        conds = [(n, _conditioning(f"conditioning{n}", c)) for n, c in _numbered(kwargs, "conditioning")]
        if not conds:
            raise ValueError("input 'conditioning1' is required")
        out = [[t, dict(o)] for t, o in conds[0][1]]
        for n, cond in conds[1:]:
            if not cond:
                raise ValueError(f"conditioning{n} is empty")
            extra = cond[0][0]
            for i, (t, _o) in enumerate(out):
                if not (isinstance(t, torch.Tensor) and isinstance(extra, torch.Tensor)) \
                        or t.shape[-1] != extra.shape[-1]:
                    raise ValueError(f"conditioning{n}'s tokens ({_dims(extra)}) cannot follow conditioning1's "
                                     f"({_dims(t)}): another text encoder")
                out[i][0] = torch.cat((t, extra.to(t)), dim=1)
        return (out,)


def _dims(t) -> str:
    return "x".join(map(str, t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


class ImpactNegativeConditioningPlaceholder:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/sampling"

    def doit(self):
        return (NEGATIVE_PLACEHOLDER,)


class ImpactSchedulerAdapter:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"scheduler": (list(SCHEDULER_NAMES), {"defaultInput": True}),
                             "extra_scheduler": (list(EXTRA_SCHEDULERS),)}}

    RETURN_TYPES = (list(SCHEDULER_NAMES),)
    RETURN_NAMES = ("scheduler",)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Util"

    def doit(self, scheduler, extra_scheduler="None"):
        extra = check_choice("extra_scheduler", extra_scheduler, EXTRA_SCHEDULERS)
        if extra != "None":
            raise ValueError(f"extra_scheduler {extra!r}: Impact's AYS / GITS schedules are not run here (set it to "
                             "'None' to use the scheduler input)")
        return (check_choice("scheduler", scheduler, SCHEDULER_NAMES),)


NODE_CLASSES = {
    "ImageMaskSwitch": ImageMaskSwitch,
    "LatentSwitch": LatentSwitch,
    "RemoveNoiseMask": RemoveNoiseMask,
    "ImpactMakeImageBatch": ImpactMakeImageBatch,
    "ImpactMakeMaskBatch": ImpactMakeMaskBatch,
    "ImpactCombineConditionings": ImpactCombineConditionings,
    "ImpactConcatConditionings": ImpactConcatConditionings,
    "ImpactNegativeConditioningPlaceholder": ImpactNegativeConditioningPlaceholder,
    "ImpactSchedulerAdapter": ImpactSchedulerAdapter,
}

__all__ = ["EXTRA_SCHEDULERS", "NODE_CLASSES", "image_batch", "mask3d", "mask_batch", *NODE_CLASSES]
