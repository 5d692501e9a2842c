"""InstructPixToPixConditioning: ComfyUI 0.30's way to hand a model an image to edit or follow.

The pixels (centre-cropped to multiples of 8, as ComfyUI crops them whatever the VAE) are encoded once and set as
`concat_latent_image` on every positive and negative entry; the LATENT out is zeros of the encoded shape (the
model starts from noise). Models with extra input channels read it: Flux.1 Canny / Depth (and Fill) through
`models/flow_concat.py`, InstructPix2Pix / CosXL-edit UNets (8 input channels) through `models/ip2p.py`. Models
without extra channels (plain SD / SDXL / Flux) ignore it, as ComfyUI's do.
"""

from __future__ import annotations

import torch

from .core import _image, _vae

CROP = 8  # ComfyUI's fixed multiple, not the VAE's downscale


def crop_to_multiple(pixels: torch.Tensor, multiple: int = CROP) -> torch.Tensor:
    """(B, H, W, C) cut to multiples of `multiple` around the centre (the extra row / column goes to the end)."""
    h, w = pixels.shape[1], pixels.shape[2]
    hh, ww = (h // multiple) * multiple, (w // multiple) * multiple
    if (hh, ww) == (h, w):
        return pixels
    if hh == 0 or ww == 0:
        raise ValueError(f"pixels must be at least {multiple} x {multiple} pixels, got {w} x {h}")
    y, x = (h % multiple) // 2, (w % multiple) // 2
    return pixels[:, y:y + hh, x:x + ww, :]


class InstructPixToPixConditioning:
    """positive, negative, vae, pixels -> (positive, negative, latent): the image's latent as every entry's
    concat_latent_image; latent = zeros of its shape."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "vae": ("VAE",),
                             "pixels": ("IMAGE",)}}

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "encode"
    CATEGORY = "conditioning/instructpix2pix"

    def encode(self, positive, negative, pixels, vae):
        pixels = crop_to_multiple(_image(pixels, "pixels"))
        concat = _vae(vae).encode(pixels[:, :, :, :3])
        out = [[[t, {**o, "concat_latent_image": concat}] for t, o in cond] for cond in (positive, negative)]
        return out[0], out[1], {"samples": torch.zeros_like(concat)}


__all__ = ["InstructPixToPixConditioning", "crop_to_multiple"]
