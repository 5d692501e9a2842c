"""ComfyUI's image and mask editing nodes: ImageScaleBy, ImageInvert, ImageBatch, ImageCrop,
ImagePadForOutpaint, ImageCompositeMasked, Canny, MaskComposite, CropMask. Inputs, defaults and numbers are
ComfyUI 0.30's; inputs are never modified.
"""

from __future__ import annotations

import torch

from .._checks import check_choice, check_float, check_int, check_mask
from ..engine.resample import resize
from .core import MAX_RESOLUTION, _image, paste

IMAGE_UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
MASK_OPERATIONS = ("multiply", "add", "subtract", "and", "or", "xor")


class ImageScaleBy:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "upscale_method": (list(IMAGE_UPSCALE_METHODS),),
                             "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(self, image, upscale_method, scale_by):
        image = _image(image, "image")
        check_choice("upscale_method", upscale_method, IMAGE_UPSCALE_METHODS)
        scale_by = check_float("scale_by", scale_by, 0.01, 8.0)
        s = image.movedim(-1, 1)
        width, height = round(s.shape[3] * scale_by), round(s.shape[2] * scale_by)
        if width < 1 or height < 1:
            raise ValueError(f"scale_by={scale_by} shrinks the {s.shape[3]}x{s.shape[2]} image to nothing")
        return (resize(s, width, height, upscale_method, "disabled").movedim(1, -1),)


class ImageInvert:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "invert"
    CATEGORY = "image"

    def invert(self, image):
        return (1.0 - _image(image, "image"),)


class ImageBatch:
    """image1 then image2 in one batch; image2 is resized (bilinear, centre crop) to image1's size, and an RGB
    image meeting an RGBA one gets an opaque alpha channel."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "batch"
    CATEGORY = "image"

    def batch(self, image1, image2):
        image1, image2 = _image(image1, "image1"), _image(image2, "image2")
        if image1.shape[-1] != image2.shape[-1]:
            if image1.shape[-1] > image2.shape[-1]:
                image2 = torch.nn.functional.pad(image2, (0, 1), mode="constant", value=1.0)
            else:
                image1 = torch.nn.functional.pad(image1, (0, 1), mode="constant", value=1.0)
        if image1.shape[1:] != image2.shape[1:]:
            image2 = resize(image2.movedim(-1, 1), image1.shape[2], image1.shape[1], "bilinear",
                            "center").movedim(1, -1)
        return (torch.cat((image1, image2.to(image1)), dim=0),)


class ImageCrop:
    """The width x height region at (x, y), clipped to the image (x, y at most the last column / row)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                             "height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                             "x": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
                             "y": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "crop"
    CATEGORY = "image/transform"

    def crop(self, image, width, height, x, y):
        image = _image(image, "image")
        width = check_int("width", width, 1, MAX_RESOLUTION)
        height = check_int("height", height, 1, MAX_RESOLUTION)
        x = min(check_int("x", x, 0, MAX_RESOLUTION), image.shape[2] - 1)
        y = min(check_int("y", y, 0, MAX_RESOLUTION), image.shape[1] - 1)
        return (image[:, y:y + height, x:x + width, :],)


def _outpaint_feather(h: int, w: int, sides: tuple[int, int, int, int], feathering: int) -> torch.Tensor:
    """ImagePadForOutpaint's mask over the original image: ((f - d) / f)^2 within f pixels of a padded side
    (d = distance to the nearest padded side), 0 elsewhere."""
    top, bottom, left, right = sides
    i = torch.arange(h, dtype=torch.int64)[:, None].expand(h, w)
    j = torch.arange(w, dtype=torch.int64)[None, :].expand(h, w)
    big = torch.full((h, w), max(h, w), dtype=torch.int64)
    d = torch.minimum(torch.minimum(i if top else big, h - i if bottom else big),
                      torch.minimum(j if left else big, w - j if right else big))
    v = (feathering - d.to(torch.float64)) / feathering
    t = (v * v).to(torch.float32)
    t[d >= feathering] = 0.0
    return t


class ImagePadForOutpaint:
    """The image on a larger mid-grey canvas, and the mask of what to paint (1 on the new border, a squared
    ramp of `feathering` pixels into the image along the padded sides)."""

    @classmethod
    def INPUT_TYPES(cls):
        side = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8})
        return {"required": {"image": ("IMAGE",), "left": side, "top": side, "right": side, "bottom": side,
                             "feathering": ("INT", {"default": 40, "min": 0, "max": MAX_RESOLUTION, "step": 1})}}

    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "expand_image"
    CATEGORY = "image"

    def expand_image(self, image, left, top, right, bottom, feathering):
        image = _image(image, "image")
        left, top, right, bottom = (check_int(n, v, 0, MAX_RESOLUTION) for n, v in
                                    (("left", left), ("top", top), ("right", right), ("bottom", bottom)))
        feathering = check_int("feathering", feathering, 0, MAX_RESOLUTION)
        b, h, w, c = image.shape
        canvas = torch.ones((b, h + top + bottom, w + left + right, c), dtype=torch.float32) * 0.5
        canvas[:, top:top + h, left:left + w, :] = image
        mask = torch.ones((h + top + bottom, w + left + right), dtype=torch.float32)
        inner = torch.zeros((h, w), dtype=torch.float32)
        if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
            inner = _outpaint_feather(h, w, (top, bottom, left, right), feathering)
        mask[top:top + h, left:left + w] = inner
        return (canvas, mask.unsqueeze(0))


class ImageCompositeMasked:
    """Paste `source` into `destination` at (x, y) pixels through an optional mask (the source takes the
    destination's channels: extra ones dropped, a missing alpha opaque)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"destination": ("IMAGE",), "source": ("IMAGE",),
                             "x": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
                             "y": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
                             "resize_source": ("BOOLEAN", {"default": False})},
                "optional": {"mask": ("MASK",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "composite"
    CATEGORY = "image"

    def composite(self, destination, source, x, y, resize_source, mask=None):
        destination, source = _image(destination, "destination"), _image(source, "source")
        x = check_int("x", x, 0, MAX_RESOLUTION)
        y = check_int("y", y, 0, MAX_RESOLUTION)
        if mask is not None:
            mask = check_mask(mask, "mask")
        if destination.shape[-1] < source.shape[-1]:  # the source takes the destination's channels
            source = source[..., :destination.shape[-1]]
        elif destination.shape[-1] > source.shape[-1]:  # RGB source on an RGBA destination: opaque alpha
            source = torch.nn.functional.pad(source, (0, 1), value=1.0)
        out = paste(destination.movedim(-1, 1), source.movedim(-1, 1), x, y, mask, 1, bool(resize_source))
        return (out.movedim(1, -1),)


class Canny:
    """Edges by kornia's Canny (Gaussian blur, Sobel, non-maximum suppression, hysteresis), as ComfyUI computes
    them; the edge map comes back as a 3-channel image. Needs kornia (`pip install 'twosamplers[image]'`)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "low_threshold": ("FLOAT", {"default": 0.4, "min": 0.01, "max": 0.99, "step": 0.01}),
                             "high_threshold": ("FLOAT", {"default": 0.8, "min": 0.01, "max": 0.99, "step": 0.01})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "detect_edge"
    CATEGORY = "image/preprocessors"

    def detect_edge(self, image, low_threshold, high_threshold):
        image = _image(image, "image")
        low = check_float("low_threshold", low_threshold, 0.01, 0.99)
        high = check_float("high_threshold", high_threshold, 0.01, 0.99)
        if low > high:
            raise ValueError(f"low_threshold ({low}) must not exceed high_threshold ({high})")
        try:
            from kornia.filters import canny
        except ImportError as e:
            raise NotImplementedError("the Canny node needs kornia: pip install 'twosamplers[image]'") from e
        edges = canny(image.to(torch.float32).movedim(-1, 1), low, high)[1]
        return (edges.repeat(1, 3, 1, 1).movedim(1, -1),)


class MaskComposite:
    """`source` combined into `destination` at (x, y) by an operation (and/or/xor on rounded masks), clamped to
    [0, 1]."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"destination": ("MASK",), "source": ("MASK",),
                             "x": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
                             "y": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
                             "operation": (list(MASK_OPERATIONS),)}}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "combine"
    CATEGORY = "mask"

    def combine(self, destination, source, x, y, operation):
        destination, source = check_mask(destination, "destination"), check_mask(source, "source")
        x = check_int("x", x, 0, MAX_RESOLUTION)
        y = check_int("y", y, 0, MAX_RESOLUTION)
        check_choice("operation", operation, MASK_OPERATIONS)
        out = destination.reshape((-1, *destination.shape[-2:])).clone()
        src = source.reshape((-1, *source.shape[-2:])).to(out)
        right = min(x + src.shape[-1], out.shape[-1])
        bottom = min(y + src.shape[-2], out.shape[-2])
        s = src[:, :max(0, bottom - y), :max(0, right - x)]
        d = out[:, y:bottom, x:right]
        if operation == "multiply":
            r = d * s
        elif operation == "add":
            r = d + s
        elif operation == "subtract":
            r = d - s
        else:
            fn = {"and": torch.bitwise_and, "or": torch.bitwise_or, "xor": torch.bitwise_xor}[operation]
            r = fn(d.round().bool(), s.round().bool()).float()
        out[:, y:bottom, x:right] = r
        return (torch.clamp(out, 0.0, 1.0),)


class CropMask:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",),
                             "x": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
                             "y": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
                             "width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                             "height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1})}}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "crop"
    CATEGORY = "mask"

    def crop(self, mask, x, y, width, height):
        mask = check_mask(mask, "mask")
        x = check_int("x", x, 0, MAX_RESOLUTION)
        y = check_int("y", y, 0, MAX_RESOLUTION)
        width = check_int("width", width, 1, MAX_RESOLUTION)
        height = check_int("height", height, 1, MAX_RESOLUTION)
        m = mask.reshape((-1, *mask.shape[-2:]))
        if x >= m.shape[-1] or y >= m.shape[-2]:
            raise ValueError(f"crop origin ({x}, {y}) lies outside the {m.shape[-1]}x{m.shape[-2]} mask")
        return (m[:, y:y + height, x:x + width].clone(),)


BLEND_MODES = ("normal", "multiply", "screen", "overlay", "soft_light", "difference")


def _blend(a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "normal":
        return b
    if mode == "multiply":
        return a * b
    if mode == "screen":
        return 1 - (1 - a) * (1 - b)
    if mode == "overlay":
        return torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
    if mode == "soft_light":
        g = torch.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, torch.sqrt(a))
        return torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (g - a))
    return a - b  # difference


class ImageBlend:
    """image1 * (1 - blend_factor) + mode(image1, image2) * blend_factor, clamped; image2 resized (bicubic,
    centre crop) to image1's size."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",),
                             "blend_factor": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
                             "blend_mode": (list(BLEND_MODES),)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "blend_images"
    CATEGORY = "image/postprocessing"

    def blend_images(self, image1, image2, blend_factor, blend_mode):
        a, b = _image(image1, "image1"), _image(image2, "image2")
        blend_factor = check_float("blend_factor", blend_factor, 0.0, 1.0)
        check_choice("blend_mode", blend_mode, BLEND_MODES)
        if a.shape[-1] < b.shape[-1]:
            b = b[..., :a.shape[-1]]
        elif a.shape[-1] > b.shape[-1]:
            b = torch.nn.functional.pad(b, (0, 1), value=1.0)
        b = b.to(a)
        if a.shape != b.shape:
            b = resize(b.permute(0, 3, 1, 2), a.shape[2], a.shape[1], "bicubic", "center").permute(0, 2, 3, 1)
        out = a * (1 - blend_factor) + _blend(a, b, blend_mode) * blend_factor
        return (torch.clamp(out, 0, 1),)


__all__ = ["Canny", "CropMask", "ImageBatch", "ImageBlend", "ImageCompositeMasked", "ImageCrop", "ImageInvert",
           "ImagePadForOutpaint", "ImageScaleBy", "MaskComposite"]
