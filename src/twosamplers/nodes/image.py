"""ComfyUI's image nodes: LoadImage, LoadImageMask, ImageScale, SaveImage, PreviewImage.

IMAGE is (B, H, W, C) float in [0, 1]; MASK is (B, H, W). Loading and saving follow ComfyUI's conventions
(8-bit values / 255, EXIF orientation, mask = 1 - alpha, frames of one size batched; saving truncates
255 * x to uint8 and writes PNG at compression level 4 with the prompt and workflow as text chunks).
"""

from __future__ import annotations

import json
import re
import time
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence, PngImagePlugin

from .._checks import check_choice, check_int
from .._paths import regular_file
from ..models.control import center_crop
from .core import MAX_RESOLUTION, FolderNode, _image
from .folders import Folders, PendingWrite, split_prefix

UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROP_METHODS = ("disabled", "center")
MASK_CHANNELS = ("alpha", "red", "green", "blue")
PNG_COMPRESS_LEVEL = 4


def _open(path):
    """An ordinary image file, decoded; a decompression bomb (more pixels than Pillow's MAX_IMAGE_PIXELS, the
    warning band included) is refused before it is decoded."""
    regular_file(path, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"{path} is too large to read safely (a possible decompression bomb): {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ValueError(f"{path} is not a readable image: {e}") from None
    return im


class LoadImage(FolderNode):
    """A file from the input folder -> (IMAGE, MASK = 1 - alpha, or 64x64 zeros without alpha)."""

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
        img = _open(self.folders.input_path(image))
        images, masks = [], []
        size = None
        for frame in ImageSequence.Iterator(img):
            frame = ImageOps.exif_transpose(frame)
            if frame.mode == "I":
                frame = frame.point(lambda v: v * (1 / 255))
            rgb = frame.convert("RGB")
            if size is None:
                size = rgb.size
            if rgb.size != size:
                continue
            images.append(torch.from_numpy(np.array(rgb).astype(np.float32) / 255.0)[None])
            if "A" in frame.getbands():
                alpha = np.array(frame.getchannel("A")).astype(np.float32) / 255.0
                masks.append((1.0 - torch.from_numpy(alpha))[None])
            elif frame.mode == "P" and "transparency" in frame.info:
                alpha = np.array(frame.convert("RGBA").getchannel("A")).astype(np.float32) / 255.0
                masks.append((1.0 - torch.from_numpy(alpha))[None])
            else:
                masks.append(torch.zeros((1, 64, 64), dtype=torch.float32))
        if len(images) > 1 and img.format != "MPO":
            return (torch.cat(images, dim=0), torch.cat(masks, dim=0))
        return (images[0], masks[0])


class LoadImageMask(FolderNode):
    """One channel of a file from the input folder -> MASK (the alpha channel inverted: 1 - alpha)."""

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
        im = ImageOps.exif_transpose(_open(self.folders.input_path(image)))
        if im.getbands() != ("R", "G", "B", "A"):
            if im.mode == "I":
                im = im.point(lambda v: v * (1 / 255))
            im = im.convert("RGBA")
        c = channel[0].upper()
        if c in im.getbands():
            mask = torch.from_numpy(np.array(im.getchannel(c)).astype(np.float32) / 255.0)
            if c == "A":
                mask = 1.0 - mask
        else:
            mask = torch.zeros((64, 64), dtype=torch.float32)
        return (mask[None],)


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
