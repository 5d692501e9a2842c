"""ComfyUI's mask nodes: ImageToMask, MaskToImage, SolidMask, InvertMask, GrowMask, FeatherMask.

MASK is (B, H, W) float in [0, 1]. Every node returns a new tensor.
"""

from __future__ import annotations

import numpy as np
import torch

from .._checks import check_choice, check_float, check_int, check_mask
from .core import MAX_RESOLUTION, _image

IMAGE_CHANNELS = ("red", "green", "blue", "alpha")


def _bhw(mask, name: str = "mask") -> torch.Tensor:
    mask = check_mask(mask, name)
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


class ImageToMask:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "channel": (list(IMAGE_CHANNELS),)}}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"
    CATEGORY = "mask"

    def image_to_mask(self, image, channel):
        image = _image(image, "image")
        idx = IMAGE_CHANNELS.index(check_choice("channel", channel, IMAGE_CHANNELS))
        if idx >= image.shape[-1]:
            raise ValueError(f"channel {channel!r}: the image has only {image.shape[-1]} channels")
        return (image[:, :, :, idx].clone(),)


class MaskToImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "mask_to_image"
    CATEGORY = "mask"

    def mask_to_image(self, mask):
        m = _bhw(mask)
        return (m.reshape((-1, 1, m.shape[-2], m.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3).clone(),)


class SolidMask:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "value": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            "width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
            "height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
        }}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "solid"
    CATEGORY = "mask"

    def solid(self, value, width, height):
        value = check_float("value", value, 0.0, 1.0)
        width = check_int("width", width, 1, MAX_RESOLUTION)
        height = check_int("height", height, 1, MAX_RESOLUTION)
        return (torch.full((1, height, width), value, dtype=torch.float32),)


class InvertMask:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",)}}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "invert"
    CATEGORY = "mask"

    def invert(self, mask):
        return (1.0 - check_mask(mask, "mask"),)


class GrowMask:
    """Grey dilation (expand > 0) or erosion (< 0), |expand| times, with a 3x3 footprint: a cross when
    tapered_corners, else the full square."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mask": ("MASK",),
            "expand": ("INT", {"default": 0, "min": -MAX_RESOLUTION, "max": MAX_RESOLUTION, "step": 1}),
            "tapered_corners": ("BOOLEAN", {"default": True}),
        }}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "expand_mask"
    CATEGORY = "mask"

    def expand_mask(self, mask, expand, tapered_corners=True):
        from scipy import ndimage

        m = _bhw(mask)
        expand = check_int("expand", expand, -MAX_RESOLUTION, MAX_RESOLUTION)
        c = 0 if tapered_corners else 1
        footprint = np.array([[c, 1, c], [1, 1, 1], [c, 1, c]], dtype=bool)
        op = ndimage.grey_dilation if expand > 0 else ndimage.grey_erosion
        out = []
        for one in m:
            arr = one.cpu().numpy()
            for _ in range(abs(expand)):
                arr = op(arr, footprint=footprint)
            out.append(torch.from_numpy(np.ascontiguousarray(arr)))
        return (torch.stack(out, dim=0),)


class FeatherMask:
    """Linear ramps over `left`/`top`/`right`/`bottom` pixels from the edges, as ComfyUI computes them (its
    right and bottom ramps index columns -0, -1, ..., so the first factor lands on column/row 0)."""

    @classmethod
    def INPUT_TYPES(cls):
        opts = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}
        return {"required": {"mask": ("MASK",), "left": ("INT", opts), "top": ("INT", opts),
                             "right": ("INT", opts), "bottom": ("INT", opts)}}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "feather"
    CATEGORY = "mask"

    def feather(self, mask, left, top, right, bottom):
        out = _bhw(mask).clone()
        h, w = out.shape[-2], out.shape[-1]
        left = min(check_int("left", left, 0), w)
        right = min(check_int("right", right, 0), w)
        top = min(check_int("top", top, 0), h)
        bottom = min(check_int("bottom", bottom, 0), h)
        for i in range(left):
            out[:, :, i] *= (i + 1.0) / left
        for i in range(right):
            out[:, :, -i] *= (i + 1) / right
        for i in range(top):
            out[:, i, :] *= (i + 1) / top
        for i in range(bottom):
            out[:, -i, :] *= (i + 1) / bottom
        return (out,)


__all__ = ["FeatherMask", "GrowMask", "ImageToMask", "InvertMask", "MaskToImage", "SolidMask"]
