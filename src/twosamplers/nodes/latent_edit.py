"""ComfyUI's latent editing nodes: LatentUpscale, LatentUpscaleBy, LatentComposite, LatentBlend,
LatentFromBatch, RepeatLatentBatch. Inputs, defaults and numbers are ComfyUI 0.30's; a LATENT dict comes
back as a new dict (its other entries, noise_mask and batch_index, carried over as ComfyUI carries them) and
the input is never modified.
"""

from __future__ import annotations

import math

import torch

from .._checks import check_choice, check_float, check_int
from ..engine.latent import check_latent
from ..engine.resample import resize
from .core import MAX_RESOLUTION

LATENT_UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
CROP_METHODS = ("disabled", "center")


class LatentUpscale:
    """Resize to width x height pixels (/8 in the latent; 0 keeps the aspect ratio from the other side; at
    least 64 pixels a side)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT",), "upscale_method": (list(LATENT_UPSCALE_METHODS),),
            "width": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 8}),
            "height": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 8}),
            "crop": (list(CROP_METHODS),)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"
    CATEGORY = "latent"

    def upscale(self, samples, upscale_method, width, height, crop):
        check_latent(samples, "samples")
        check_choice("upscale_method", upscale_method, LATENT_UPSCALE_METHODS)
        check_choice("crop", crop, CROP_METHODS)
        width = check_int("width", width, 0, MAX_RESOLUTION)
        height = check_int("height", height, 0, MAX_RESOLUTION)
        if width == 0 and height == 0:
            return (dict(samples),)
        x = samples["samples"]
        if width == 0:
            height = max(64, height)
            width = max(64, round(x.shape[-1] * height / x.shape[-2]))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(x.shape[-2] * width / x.shape[-1]))
        else:
            width, height = max(64, width), max(64, height)
        out = dict(samples)
        out["samples"] = resize(x, width // 8, height // 8, upscale_method, crop)
        return (out,)


class LatentUpscaleBy:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT",), "upscale_method": (list(LATENT_UPSCALE_METHODS),),
            "scale_by": ("FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"
    CATEGORY = "latent"

    def upscale(self, samples, upscale_method, scale_by):
        check_latent(samples, "samples")
        check_choice("upscale_method", upscale_method, LATENT_UPSCALE_METHODS)
        scale_by = check_float("scale_by", scale_by, 0.01, 8.0)
        x = samples["samples"]
        width, height = round(x.shape[-1] * scale_by), round(x.shape[-2] * scale_by)
        if width < 1 or height < 1:
            raise ValueError(f"scale_by={scale_by} shrinks the {x.shape[-1]}x{x.shape[-2]} latent to nothing")
        out = dict(samples)
        out["samples"] = resize(x, width, height, upscale_method, "disabled")
        return (out,)


def _feather_mask(shape, y: int, x: int, to_hw: tuple[int, int], feather: int) -> torch.Tensor:
    """LatentComposite's blend weights: linear ramps of `feather` latent pixels on the sides of the pasted
    block that lie inside the destination (not on the sides touching its border)."""
    mask = torch.ones(shape)
    h, w = shape[2], shape[3]
    for t in range(feather):
        a = (1.0 / feather) * (t + 1)
        if y != 0:
            mask[:, :, t:1 + t, :] *= a
        if y + h < to_hw[0]:
            mask[:, :, h - 1 - t:h - t, :] *= a
        if x != 0:
            mask[:, :, :, t:1 + t] *= a
        if x + w < to_hw[1]:
            mask[:, :, :, w - 1 - t:w - t] *= a
    return mask


class LatentComposite:
    """Paste samples_from into samples_to at (x, y) pixels (/8), optionally feathered."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples_to": ("LATENT",), "samples_from": ("LATENT",),
            "x": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8}),
            "y": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8}),
            "feather": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "composite"
    CATEGORY = "latent"

    def composite(self, samples_to, samples_from, x, y, feather=0):
        check_latent(samples_to, "samples_to")
        check_latent(samples_from, "samples_from")
        x = check_int("x", x, 0, MAX_RESOLUTION) // 8
        y = check_int("y", y, 0, MAX_RESOLUTION) // 8
        feather = check_int("feather", feather, 0, MAX_RESOLUTION) // 8
        dest, src = samples_to["samples"], samples_from["samples"]
        if dest.shape[1] != src.shape[1]:
            raise ValueError(f"samples_from has {src.shape[1]} channels, samples_to {dest.shape[1]}")
        if src.shape[0] not in (1, dest.shape[0]):
            raise ValueError(f"samples_from has a batch of {src.shape[0]}, samples_to {dest.shape[0]}: give 1 or "
                             "the same number")
        s = dest.clone()
        part = src[:, :, :dest.shape[2] - y, :dest.shape[3] - x].to(s)
        region = (slice(None), slice(None), slice(y, y + part.shape[2]), slice(x, x + part.shape[3]))
        if feather == 0:
            s[region] = part
        else:
            mask = _feather_mask(part.shape, y, x, tuple(dest.shape[2:]), feather).to(s)
            s[region] = part * mask + s[region] * (torch.ones_like(mask) - mask)
        out = dict(samples_to)
        out["samples"] = s
        return (out,)


class LatentBlend:
    """samples1 * blend_factor + samples2 * (1 - blend_factor); samples2 of another size is first resized
    (bicubic, centre crop) to samples1's."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples1": ("LATENT",), "samples2": ("LATENT",),
                             "blend_factor": ("FLOAT", {"default": 0.5, "min": 0, "max": 1, "step": 0.01})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "blend"
    CATEGORY = "_for_testing"

    def blend(self, samples1, samples2, blend_factor):
        check_latent(samples1, "samples1")
        check_latent(samples2, "samples2")
        blend_factor = check_float("blend_factor", blend_factor, 0.0, 1.0)
        a, b = samples1["samples"], samples2["samples"]
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"samples2 has {b.shape[1]} channels, samples1 {a.shape[1]}")
        if b.shape[0] not in (1, a.shape[0]):
            raise ValueError(f"samples2 has a batch of {b.shape[0]}, samples1 {a.shape[0]}: give 1 or the same number")
        if a.shape[2:] != b.shape[2:]:
            b = resize(b, a.shape[3], a.shape[2], "bicubic", "center")
        out = dict(samples1)
        out["samples"] = a * blend_factor + b * (1 - blend_factor)
        return (out,)


class LatentFromBatch:
    """`length` latents from `batch_index` on (negative counts from the end; clamped to the batch), with their
    noise masks and their batch_index (so their noise is the noise they had in the batch)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",),
                             "batch_index": ("INT", {"default": 0, "min": -MAX_RESOLUTION, "max": MAX_RESOLUTION}),
                             "length": ("INT", {"default": 1, "min": 1, "max": 64})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "frombatch"
    CATEGORY = "latent/batch"

    def frombatch(self, samples, batch_index, length):
        check_latent(samples, "samples")
        batch_index = check_int("batch_index", batch_index, -MAX_RESOLUTION, MAX_RESOLUTION)
        length = check_int("length", length, 1, 64)
        x = samples["samples"]
        n = x.shape[0]
        if batch_index < 0:
            batch_index += n
        start = max(0, min(n - 1, batch_index))
        length = min(n - start, length)
        out = dict(samples)
        out["samples"] = x[start:start + length].clone()
        if "noise_mask" in samples:
            masks = samples["noise_mask"]
            if masks.shape[0] == 1:
                out["noise_mask"] = masks.clone()
            else:
                if masks.shape[0] < n:
                    masks = masks.repeat(math.ceil(n / masks.shape[0]), *([1] * (masks.ndim - 1)))[:n]
                out["noise_mask"] = masks[start:start + length].clone()
        if "batch_index" in samples:
            out["batch_index"] = list(samples["batch_index"])[start:start + length]
        else:
            out["batch_index"] = list(range(start, start + length))
        return (out,)


class RepeatLatentBatch:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "amount": ("INT", {"default": 1, "min": 1, "max": 64})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "repeat"
    CATEGORY = "latent/batch"

    def repeat(self, samples, amount):
        check_latent(samples, "samples")
        amount = check_int("amount", amount, 1, 64)
        x = samples["samples"]
        out = dict(samples)
        out["samples"] = x.repeat((amount,) + (1,) * (x.ndim - 1))
        masks = samples.get("noise_mask")
        if masks is not None and masks.shape[0] > 1:
            out["noise_mask"] = masks.repeat((amount,) + (1,) * (masks.ndim - 1))
        if "batch_index" in samples:
            idx = list(samples["batch_index"])
            offset = max(idx) - min(idx) + 1
            out["batch_index"] = idx + [v + i * offset for i in range(1, amount) for v in idx]
        return (out,)


class LatentCrop:
    """The width x height region at (x, y) pixels (/8), the origin kept at least 8 latent pixels from the far
    edges."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",),
                             "width": ("INT", {"default": 512, "min": 64, "max": MAX_RESOLUTION, "step": 8}),
                             "height": ("INT", {"default": 512, "min": 64, "max": MAX_RESOLUTION, "step": 8}),
                             "x": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8}),
                             "y": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "crop"
    CATEGORY = "latent/transform"

    def crop(self, samples, width, height, x, y):
        check_latent(samples, "samples")
        width = check_int("width", width, 64, MAX_RESOLUTION) // 8
        height = check_int("height", height, 64, MAX_RESOLUTION) // 8
        x = check_int("x", x, 0, MAX_RESOLUTION) // 8
        y = check_int("y", y, 0, MAX_RESOLUTION) // 8
        t = samples["samples"]
        x = min(x, t.shape[3] - 8)
        y = min(y, t.shape[2] - 8)
        if x < 0 or y < 0:
            raise ValueError(f"the latent ({t.shape[3] * 8}x{t.shape[2] * 8} pixels) is smaller than 64 pixels a side")
        out = dict(samples)
        out["samples"] = t[:, :, y:y + height, x:x + width]
        return (out,)


__all__ = ["LatentBlend", "LatentComposite", "LatentCrop", "LatentFromBatch", "LatentUpscale", "LatentUpscaleBy",
           "RepeatLatentBatch"]
