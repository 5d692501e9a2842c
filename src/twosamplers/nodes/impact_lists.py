"""Impact Pack's list nodes (V7.10.6 behaviour): ImpactMakeImageList, ImpactMakeMaskList, ImpactMakeAnyList,
ImpactImageBatchToImageList give lists (OUTPUT_IS_LIST: the workflow runner then runs each node they feed once per
item); ImageListToImageBatch, MaskListToMaskBatch and StringListToString take a whole list (INPUT_IS_LIST).

Images of another size are resized to the first one's (Lanczos, centre crop), as Impact does; masks of another size
are refused (Impact's resize of masks mixes up their axes). The runner runs these lists as ComfyUI does
(`workflow.execute`).
"""

from __future__ import annotations

import torch

from .core import _image
from .impact_util import _numbered, image_batch, mask3d, mask_batch


class ImpactMakeImageList:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image1": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Util"

    def doit(self, **kwargs):
        return ([_image(v, f"image{n}") for n, v in _numbered(kwargs, "image")],)


class ImpactMakeMaskList:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask1": ("MASK",)}}

    RETURN_TYPES = ("MASK",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Util"

    def doit(self, **kwargs):
        return ([mask3d(v, f"mask{n}") for n, v in _numbered(kwargs, "mask")],)


class ImpactMakeAnyList:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": {"value1": ("*",)}}

    RETURN_TYPES = ("*",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Util"

    def doit(self, **kwargs):
        return ([v for _n, v in _numbered(kwargs, "value")],)


class ImpactImageBatchToImageList:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Util"

    def doit(self, image):
        image = _image(image, "image")
        return ([image[i:i + 1] for i in range(image.shape[0])],)


class ImageListToImageBatch:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    INPUT_IS_LIST = True
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Operation"

    def doit(self, images):
        return (image_batch([(f"images[{i}]", im) for i, im in enumerate(images)], "images"),)


class MaskListToMaskBatch:
    """The masks in one batch (all of the first one's size); an empty list gives an empty 64 x 64 mask."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",)}}

    INPUT_IS_LIST = True
    RETURN_TYPES = ("MASK",)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Operation"

    def doit(self, mask):
        if not mask:
            return (torch.zeros((1, 64, 64), dtype=torch.float32),)
        return (mask_batch([(f"mask[{i}]", m) for i, m in enumerate(mask)]),)


class StringListToString:
    """The strings joined with join_with (the two characters \\n stand for a newline)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"join_with": ("STRING", {"default": "\\n"}),
                             "string_list": ("STRING", {"forceInput": True})}}

    INPUT_IS_LIST = True
    RETURN_TYPES = ("STRING",)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Util"

    def doit(self, join_with, string_list):
        sep = join_with[0] if join_with else "\\n"
        if not isinstance(sep, str) or not all(isinstance(t, str) for t in string_list):
            raise TypeError("join_with and string_list must be strings")
        return (("\n" if sep == "\\n" else sep).join(string_list),)


NODE_CLASSES = {
    "ImpactMakeImageList": ImpactMakeImageList,
    "ImpactMakeMaskList": ImpactMakeMaskList,
    "ImpactMakeAnyList": ImpactMakeAnyList,
    "ImpactImageBatchToImageList": ImpactImageBatchToImageList,
    "ImageListToImageBatch": ImageListToImageBatch,
    "MaskListToMaskBatch": MaskListToMaskBatch,
    "StringListToString": StringListToString,
}

__all__ = ["NODE_CLASSES", "image_batch", *NODE_CLASSES]
