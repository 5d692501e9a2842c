"""ComfyUI's image filter nodes ImageBlur and ImageSharpen, and ImageScaleToTotalPixels (inputs, defaults and numbers
of ComfyUI 0.30).

Blur: a (2r + 1)-square Gaussian kernel sampled on a [-1, 1] grid (exp(-d^2 / (2 sigma^2)), normalised to sum 1),
applied per channel to the image reflect-padded by r (2r in all: the convolution pads r more with zeros, and r is
cut from each side of the result). Sharpen: the same kernel times -10 alpha with its centre raised so that it
sums to 1, the result clamped to [0, 1]. ImageScaleToTotalPixels: both sides scaled by sqrt(megapixels * 2^20 /
(width * height)) and rounded to multiples of resolution_steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_float, check_int
from ..engine.resample import resize
from .core import _image
from .image_edit import IMAGE_UPSCALE_METHODS


def gaussian_kernel(size: int, sigma: float, dtype=torch.float32) -> torch.Tensor:
    ax = torch.linspace(-1, 1, size)
    x, y = torch.meshgrid(ax, ax, indexing="ij")
    d = torch.sqrt(x * x + y * y)
    g = torch.exp(-(d * d) / (2.0 * sigma * sigma))
    return (g / g.sum()).to(dtype)


def _filter(image: torch.Tensor, kernel: torch.Tensor, radius: int) -> torch.Tensor:
    channels = image.shape[-1]
    k = kernel.repeat(channels, 1, 1).unsqueeze(1)
    x = F.pad(image.permute(0, 3, 1, 2), (radius,) * 4, "reflect")
    out = F.conv2d(x, k, padding=kernel.shape[0] // 2, groups=channels)[:, :, radius:-radius, radius:-radius]
    return out.permute(0, 2, 3, 1)


class ImageBlur:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "blur_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
                             "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "blur"
    CATEGORY = "image/postprocessing"

    def blur(self, image, blur_radius=1, sigma=1.0):
        image = _image(image, "image")
        r = check_int("blur_radius", blur_radius, 1, 31)
        sigma = check_float("sigma", sigma, 0.1, 10.0)
        _check_size(image, r, "blur_radius")
        return (_filter(image, gaussian_kernel(2 * r + 1, sigma, image.dtype), r),)


class ImageSharpen:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "sharpen_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
                             "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.01}),
                             "alpha": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 5.0, "step": 0.01})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "sharpen"
    CATEGORY = "image/postprocessing"

    def sharpen(self, image, sharpen_radius=1, sigma=1.0, alpha=1.0):
        image = _image(image, "image")
        r = check_int("sharpen_radius", sharpen_radius, 1, 31)
        sigma = check_float("sigma", sigma, 0.1, 10.0)
        alpha = check_float("alpha", alpha, 0.0, 5.0)
        _check_size(image, r, "sharpen_radius")
        kernel = gaussian_kernel(2 * r + 1, sigma, image.dtype) * -(alpha * 10)
        c = r
        kernel[c, c] = kernel[c, c] - kernel.sum() + 1.0
        return (torch.clamp(_filter(image, kernel, r), 0, 1),)


def _check_size(image: torch.Tensor, radius: int, name: str) -> None:
    if radius >= min(image.shape[1], image.shape[2]):
        raise ValueError(f"{name}={radius} must be smaller than the image's sides ({image.shape[2]}x{image.shape[1]})")


class ImageScaleToTotalPixels:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "upscale_method": (list(IMAGE_UPSCALE_METHODS),),
                             "megapixels": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 16.0, "step": 0.01}),
                             "resolution_steps": ("INT", {"default": 1, "min": 1, "max": 256})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(self, image, upscale_method, megapixels=1.0, resolution_steps=1):
        image = _image(image, "image")
        check_choice("upscale_method", upscale_method, IMAGE_UPSCALE_METHODS)
        megapixels = check_float("megapixels", megapixels, 0.01, 16.0)
        steps = check_int("resolution_steps", resolution_steps, 1, 256)
        s = image.movedim(-1, 1)
        scale = math.sqrt(megapixels * 1024 * 1024 / (s.shape[3] * s.shape[2]))
        width = round(s.shape[3] * scale / steps) * steps
        height = round(s.shape[2] * scale / steps) * steps
        if width < 1 or height < 1:
            raise ValueError(f"megapixels={megapixels} with resolution_steps={steps} leaves no pixels")
        return (resize(s, int(width), int(height), upscale_method, "disabled").movedim(1, -1),)


__all__ = ["ImageBlur", "ImageScaleToTotalPixels", "ImageSharpen", "gaussian_kernel"]
