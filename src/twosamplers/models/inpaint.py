"""Inpainting checkpoints (UNets with 4 + 5 input channels) and ComfyUI's two ways of preparing them.

An inpainting UNet sees, besides the noisy latent, a mask channel and the latent of the image with the masked
area greyed out ("c_concat": mask first, then the masked-image latent). What ComfyUI feeds it, per entry:

- mask: the entry's `concat_mask` (InpaintModelConditioning), else the sampler's noise mask, brought to the
  latent size (bilinear, centre crop) and rounded to 0/1; without either, all ones;
- masked image: the entry's `concat_latent_image` (scaled into the model's latent space, resized bilinearly to
  the latent size when it differs), else the sampled latent itself (ComfyUI's behaviour after
  SetLatentNoiseMask: it is NOT greyed out); without a mask at all, the latent of a blank grey image;
- batches are brought to the latent's batch by ComfyUI's nearest-index resize.

`vae_encode_for_inpaint` (VAEEncodeForInpaint) and `inpaint_model_conditioning` (InpaintModelConditioning)
build those inputs from pixels; both grey out the rounded mask's pixels (0.5) before encoding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .control import center_upscale

EXTRA_CHANNELS = 5  # mask + masked-image latent
CONCAT_KEYS = ("concat_latent_image", "concat_mask")
# The SD1.x/2.x VAE latent of a mid-grey image, scaled (ComfyUI's blank inpaint image for those models).
SD15_BLANK_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)


def resize_to_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    """ComfyUI's resize_to_batch_size: pick rows by nearest index (spread out, not tiled)."""
    n = t.shape[0]
    if n == batch:
        return t
    if batch <= 1:
        return t[:batch]
    if batch < n:
        step = (n - 1) / float(batch - 1)
        idx = [min(round(i * step), n - 1) for i in range(batch)]
    else:
        step = n / batch
        idx = [min(math.floor((i + 0.5) * step), n - 1) for i in range(batch)]
    return t[idx]


def concat_cond(extras: dict, *, latent_image: torch.Tensor, denoise_mask: torch.Tensor | None,
                process_in, blank: torch.Tensor) -> torch.Tensor:
    """The 5 extra input channels for one conditioning entry (see the module docstring).

    latent_image: the sampler's latent, already in the model's space (B, 4, h, w); denoise_mask: the sampler's
    prepared noise mask (B, C, h, w) or None; blank: the blank-image latent (1, 4, 1, 1) in model space.
    """
    shape = latent_image.shape
    mask = extras.get("concat_mask", denoise_mask)
    image = extras.get("concat_latent_image")
    if image is None:
        image = latent_image
    else:
        image = process_in(image.to(latent_image.device, torch.float32))
        if image.shape[1:] != shape[1:]:
            image = center_upscale(image, shape[-2], shape[-1], mode="bilinear")
    image = resize_to_batch(image, shape[0])
    if mask is None:
        return torch.cat([torch.ones_like(latent_image[:, :1]), blank.to(latent_image).expand(shape)], dim=1)
    mask = mask.to(latent_image.device, torch.float32)
    if mask.ndim == latent_image.ndim:
        mask = mask[:, :1]
    mask = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    if mask.shape[-2:] != shape[-2:]:
        mask = center_upscale(mask, shape[-2], shape[-1], mode="bilinear")
    mask = resize_to_batch(mask.round(), shape[0])
    return torch.cat([mask, image], dim=1)


def _pixel_mask(mask: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3, 4):
        raise ValueError("mask must be a MASK tensor (H, W) or (B, H, W) in [0, 1]")
    m = mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    return F.interpolate(m, size=(pixels.shape[1], pixels.shape[2]), mode="bilinear")


def _crop_to_multiple(pixels: torch.Tensor, mask: torch.Tensor, f: int):
    h, w = pixels.shape[1] // f * f, pixels.shape[2] // f * f
    if (h, w) != tuple(pixels.shape[1:3]):
        y0, x0 = (pixels.shape[1] % f) // 2, (pixels.shape[2] % f) // 2
        pixels = pixels[:, y0:y0 + h, x0:x0 + w]
        mask = mask[:, :, y0:y0 + h, x0:x0 + w]
    return pixels, mask, h, w


def _grey_out(pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    keep = (1.0 - mask.round()).squeeze(1).unsqueeze(-1)
    return (pixels[..., :3] - 0.5) * keep + 0.5


def _check_pixels(pixels) -> torch.Tensor:
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[-1] not in (3, 4):
        raise ValueError("pixels must be an IMAGE tensor (B, H, W, 3) in [0, 1]")
    return pixels.float()


def vae_encode_for_inpaint(model, pixels: torch.Tensor, mask: torch.Tensor, grow_mask_by: int = 6) -> dict:
    """VAEEncodeForInpaint: the masked pixels greyed out, encoded; noise_mask = the mask grown by a box of
    `grow_mask_by` pixels (0..64), rounded."""
    if not isinstance(grow_mask_by, int) or isinstance(grow_mask_by, bool) or not 0 <= grow_mask_by <= 64:
        raise ValueError(f"grow_mask_by must be an integer in 0..64, got {grow_mask_by!r}")
    pixels = _check_pixels(pixels)
    f = int(model.latent_format.downscale)
    mask = _pixel_mask(mask, pixels)
    pixels, mask, h, w = _crop_to_multiple(pixels, mask, f)
    if grow_mask_by == 0:
        grown = mask
    else:
        kernel = torch.ones(1, 1, grow_mask_by, grow_mask_by)
        grown = torch.clamp(F.conv2d(mask.round(), kernel, padding=math.ceil((grow_mask_by - 1) / 2)), 0, 1)
    samples = model.encode_image(_grey_out(pixels, mask))
    return {"samples": samples, "noise_mask": grown[:, :, :h, :w].round()}


def inpaint_model_conditioning(positive, negative, model, pixels: torch.Tensor, mask: torch.Tensor,
                               noise_mask: bool = True) -> tuple[list, list, dict]:
    """InpaintModelConditioning: (positive, negative, latent). The conditioning entries get the greyed-out
    image's latent and the pixel mask (`concat_latent_image`, `concat_mask`); the latent is the original image's,
    with the mask as its noise_mask when `noise_mask`."""
    pixels = _check_pixels(pixels)
    mask = _pixel_mask(mask, pixels)
    f = int(model.latent_format.downscale)
    cropped, mask, _, _ = _crop_to_multiple(pixels, mask, f)
    concat_latent = model.encode_image(_grey_out(cropped, mask))
    latent = {"samples": model.encode_image(pixels)}
    if noise_mask:
        latent["noise_mask"] = mask
    out = []
    for cond in (positive, negative):
        out.append([[t, {**o, "concat_latent_image": concat_latent, "concat_mask": mask}] for t, o in cond])
    return out[0], out[1], latent


def masked_image_conditioning(model, samples: torch.Tensor, mask_latent: torch.Tensor) -> dict:
    """What InpaintModelConditioning would add for a mask pass over `samples` (unscaled latent): the latent of
    the decoded image with the (rounded) mask's pixels greyed out, and the mask. Used by the two-pass mask pass
    when its model is an inpainting model."""
    f = int(model.latent_format.downscale)
    pixels = model.decode_latent(samples)
    m_px = F.interpolate(mask_latent.float(), scale_factor=f, mode="nearest")
    return {"concat_latent_image": model.encode_image(_grey_out(pixels, m_px)), "concat_mask": mask_latent}


def with_extras(entries: list, extras: dict) -> list:
    """CondEntry list with `extras` added to every entry (inputs untouched)."""
    from ..engine.conditioning import CondEntry

    return [CondEntry(e.cross_attn, {**e.extras, **extras}, e.strength) for e in entries]
