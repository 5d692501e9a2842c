"""ComfyUI's image nodes: LoadImage, LoadImageMask, ImageScale, SaveImage, PreviewImage.

IMAGE is (B, H, W, C) float in [0, 1]; MASK is (B, H, W). Loading follows ComfyUI 0.30, which decodes
through PyAV/FFmpeg (`image_decode.py`: 8-bit RGB(A)/palette/JPEG values / 255, other formats through FFmpeg's
float conversion, mask = 1 - alpha, every frame stacked); saving truncates 255 * x to uint8 and writes PNG at
compression level 4 with the prompt and workflow as text chunks.
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from .._checks import check_choice, check_int
from ..models.control import center_crop
from .core import MAX_RESOLUTION, FolderNode, _image
from .folders import Folders, PendingWrite, split_prefix
from .image_decode import decode_image

UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROP_METHODS = ("disabled", "center")
MASK_CHANNELS = ("alpha", "red", "green", "blue")
PNG_COMPRESS_LEVEL = 4


class LoadImage(FolderNode):
    """A file from the input folder -> (IMAGE, MASK = 1 - alpha, or 64x64 zeros without alpha), decoded as
    ComfyUI 0.30 decodes it (through PyAV/FFmpeg, quirks included: `nodes/image_decode.py`)."""

    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        names = folders.list_inputs() if folders is not None else []
        return {"required": {"image": (names, {"image_upload": True})}}

    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"
    CATEGORY = "image"
    FILE_INPUTS = ("image",)
    INPUT_FILES = ("image",)  # read from the input folder (a batch ships these to its workers)

    def check_inputs(self, image):
        self.folders.input_path(image)

    def load_image(self, image):
        return decode_image(self.folders.input_path(image))


class LoadImageMask(FolderNode):
    """One channel of a file from the input folder -> MASK: red, green or blue of LoadImage's IMAGE, or for
    "alpha" LoadImage's MASK (1 - alpha; 64x64 zeros without alpha), as ComfyUI 0.30 gives them."""

    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        names = folders.list_inputs() if folders is not None else []
        return {"required": {"image": (names, {"image_upload": True}), "channel": (list(MASK_CHANNELS),)}}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "load_image"
    CATEGORY = "mask"
    FILE_INPUTS = ("image",)
    INPUT_FILES = ("image",)  # read from the input folder (a batch ships these to its workers)

    def check_inputs(self, image, channel="alpha"):
        self.folders.input_path(image)

    def load_image(self, image, channel):
        check_choice("channel", channel, MASK_CHANNELS)
        images, mask = decode_image(self.folders.input_path(image))
        c = channel[0].upper()
        if c == "A":
            return (mask,)
        return (images[..., "RGB".index(c)].clone(),)


class ImageScale:
    """Resize to width x height (0 keeps the aspect ratio from the other side), optionally centre-cropping to the
    new aspect ratio first."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE",),
            "upscale_method": (list(UPSCALE_METHODS),),
            "width": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
            "height": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
            "crop": (list(CROP_METHODS),),
        }}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(self, image, upscale_method, width, height, crop):
        image = _image(image, "image")
        check_choice("upscale_method", upscale_method, UPSCALE_METHODS)
        check_choice("crop", crop, CROP_METHODS)
        width = check_int("width", width, 0, MAX_RESOLUTION)
        height = check_int("height", height, 0, MAX_RESOLUTION)
        if width == 0 and height == 0:
            return (image,)
        s = image.movedim(-1, 1)
        if width == 0:
            width = max(1, round(s.shape[3] * height / s.shape[2]))
        elif height == 0:
            height = max(1, round(s.shape[2] * width / s.shape[3]))
        return (upscale(s, width, height, upscale_method, crop).movedim(1, -1),)


def upscale(samples: torch.Tensor, width: int, height: int, method: str, crop: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, height, width): centre crop to the new aspect ratio (crop="center"), then
    torch interpolation (or Pillow's Lanczos on 8-bit values for "lanczos")."""
    if crop == "center":
        samples = center_crop(samples, height, width)
    if method == "lanczos":
        out = []
        for img in samples:
            arr = np.clip(255.0 * img.movedim(0, -1).cpu().numpy(), 0, 255).astype(np.uint8)
            pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
            pil = pil.resize((width, height), resample=Image.Resampling.LANCZOS)
            t = torch.from_numpy(np.array(pil).astype(np.float32) / 255.0)
            out.append(t.reshape(height, width, -1).movedim(-1, 0))
        return torch.stack(out).to(samples.dtype)
    return torch.nn.functional.interpolate(samples, size=(height, width), mode=method)


def _png_info(prompt, extra_pnginfo) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    for k, v in (extra_pnginfo or {}).items():
        info.add_text(str(k), json.dumps(v))
    return info


def _expand_prefix(prefix: str, image: torch.Tensor) -> str:
    now = time.localtime()
    values = {"%width%": str(image.shape[2]), "%height%": str(image.shape[1]), "%year%": str(now.tm_year),
              "%month%": f"{now.tm_mon:02}", "%day%": f"{now.tm_mday:02}", "%hour%": f"{now.tm_hour:02}",
              "%minute%": f"{now.tm_min:02}", "%second%": f"{now.tm_sec:02}"}
    for k, v in values.items():
        prefix = prefix.replace(k, v)
    return prefix


def check_prefix(prefix) -> None:
    """A filename_prefix as SaveImage / SaveLatent will use it, checked before the run: %width% and the other
    placeholders stand for digits, and the result must stay inside the output folder."""
    if not isinstance(prefix, str):
        raise ValueError(f"filename_prefix must be a string, got {prefix!r}")
    split_prefix(re.sub(r"%(width|height|year|month|day|hour|minute|second|batch_num)%", "0", prefix))


class SaveImage(FolderNode):
    """Writes each image as `prefix_NNNNN_.png` in the output folder (the counter continues after the highest
    existing number), with the prompt (API format) and the workflow embedded as text chunks."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    OUTPUT_INPUTS = ("filename_prefix",)  # checked while planning (check_inputs), before any sampling

    def check_inputs(self, filename_prefix="ComfyUI"):
        check_prefix(filename_prefix)

    def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None, unique_id=None):
        images = _image(images, "images")
        sub, name = split_prefix(_expand_prefix(filename_prefix, images))
        items = []
        for i, image in enumerate(images):
            arr = np.clip(255.0 * image.detach().cpu().float().numpy(), 0, 255).astype(np.uint8)
            pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
            info = _png_info(prompt, extra_pnginfo)

            def write(tmp: str, pil=pil, info=info) -> None:
                pil.save(tmp, format="PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL)

            items.append(self.folders.write(PendingWrite(sub, name.replace("%batch_num%", str(i)), "png", write,
                                                         unique_id, "image")))
        return {"ui": {"images": items}, "result": ()}


class PreviewImage:
    """Shows images in ComfyUI; headless it writes nothing (the images come back in the run's outputs)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    RETURN_TYPES = ()
    FUNCTION = "preview"
    OUTPUT_NODE = True
    CATEGORY = "image"

    def preview(self, images):
        return {"ui": {"images": []}, "result": ()}


__all__ = ["ImageScale", "LoadImage", "LoadImageMask", "PreviewImage", "SaveImage", "upscale"]
