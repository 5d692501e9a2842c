"""Extra input channels of Flux.1 Fill, Canny and Depth models (ComfyUI 0.30's rules).

These transformers read more features per 2 x 2 patch than the 16 latent channels give (`img_in`: 64 for
Flux.1 dev / schnell, 128 for Canny / Depth, 384 for Fill); the rest is concatenated to the noisy latent along the
channel axis before patching ("c_concat"), per conditioning entry:

- the image latent: the entry's `concat_latent_image` (InstructPixToPixConditioning, InpaintModelConditioning),
  else zeros; resized to the latent size (bilinear, centre crop), brought to the batch by nearest index, then
  scaled into the model's latent space. Canny / Depth (up to twice the latent channels) take only this.
- Fill also takes the mask at pixel resolution, each 8 x 8 pixel block folded into 64 channels (row-major within
  the block): the entry's `concat_mask`, else the sampler's noise mask, else all ones; averaged over its
  channels and resized bilinearly (centre crop) to 8 x the latent size. It is not rounded (SD inpainting
  rounds, Flux Fill does not).
"""

from __future__ import annotations

import torch

from .control import center_upscale
from .inpaint import resize_to_batch

PATCH = 2
MASK_BLOCK = 8


def extra_channels(in_features: int, out_features: int) -> tuple[int, int]:
    """(channels the network reads, channels it writes) from its patch-embedding widths."""
    return in_features // (PATCH * PATCH), out_features // (PATCH * PATCH)


def flux_concat(extras: dict, *, latent_image: torch.Tensor, denoise_mask: torch.Tensor | None, process_in,
                channels_in: int, channels_out: int) -> torch.Tensor | None:
    """The c_concat tensor for one conditioning entry, or None for a model without extra channels.

    latent_image: the sampler's latent (B, 16, h, w), model space; denoise_mask: the sampler's noise mask or None.
    """
    if channels_in <= channels_out:
        return None
    b, _, h, w = latent_image.shape
    image = extras.get("concat_latent_image")
    if image is None:
        image = torch.zeros_like(latent_image)
    image = center_upscale(image.to(latent_image.device, torch.float32), h, w, mode="bilinear")
    image = process_in(resize_to_batch(image, b))
    if channels_in <= 2 * channels_out:
        return image
    mask = extras.get("concat_mask", denoise_mask)
    if mask is None:
        mask = torch.ones_like(latent_image[:, :1])
    mask = mask.to(latent_image.device, torch.float32)
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    mask = mask.mean(dim=1, keepdim=True)
    mask = center_upscale(mask, h * MASK_BLOCK, w * MASK_BLOCK, mode="bilinear")
    n = mask.shape[0]
    mask = mask.view(n, h, MASK_BLOCK, w, MASK_BLOCK).permute(0, 2, 4, 1, 3).reshape(n, MASK_BLOCK ** 2, h, w)
    return torch.cat([image, resize_to_batch(mask, b)], dim=1)


__all__ = ["flux_concat", "extra_channels"]
