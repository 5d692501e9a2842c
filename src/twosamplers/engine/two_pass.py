"""The two-pass regional algorithm (TwoSamplersForMask with the fixes): a base pass, then a mask pass over its
result, optionally restricted to the mask's bounding box (crop) and with Differential Diffusion.

Engine code under the front door (`front.two_samplers_for_mask`) and any other front end. Contract: the caller
validated everything (the mask is a valid MASK with batch 1 or the latent's, the passes are `Pass` values);
this module only samples. Every pass runs through `passes.run_pass`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..models.inpaint import masked_image_conditioning, with_extras
from .latent import fit_latent_channels
from .mask_ops import bbox, crop, crop_box, differential_denoise_mask, inverse, paste, to_latent
from .noise import prepare_noise
from .passes import Pass, crop_pass, run_pass

DEFAULT_CROP_MULTIPLE = 8


@dataclass(frozen=True)
class TwoPassOptions:
    """How the two passes share the image. base_covers_mask: the base pass renders the whole image (else it is
    restricted to `inverse(mask, inversion)`); differential: grey mask values are per-pixel denoise;
    crop_to_mask: the mask pass samples only the mask's box plus `crop_context` latent px, rounded up to
    `crop_multiple` (None: the model's `latent_multiple`, else 8); inpaint_conditioning: when the mask pass's
    model is an inpainting checkpoint, give it the base result with the mask greyed out and the mask, as
    InpaintModelConditioning would (off: ComfyUI's plain noise-mask behaviour, the latent itself)."""

    base_covers_mask: bool = True
    inversion: str = "soft"
    differential: bool = False
    crop_to_mask: bool = False
    crop_context: int = 8
    crop_multiple: int | None = None
    inpaint_conditioning: bool = True


def two_pass_sample(samples: torch.Tensor, mask: torch.Tensor, base: Pass, inside: Pass, opts: TwoPassOptions, *,
                    batch_index=None, callback=None, disable_pbar=None) -> torch.Tensor:
    """Base pass, then the mask pass; returns the new samples. `mask` is at any resolution (grown/feathered
    already). The result equals the base pass exactly wherever the latent-size mask is 0.
    callback(step, x0, x, total) counts steps over both passes."""
    m_lat = to_latent(mask, samples.shape)  # [B, 1, h, w]
    diff = {"denoise_mask_function": differential_denoise_mask} if opts.differential else None
    n1 = base.n_steps()
    total = n1 + inside.n_steps()

    if opts.base_covers_mask:
        base_mask = None
    else:
        base_mask = to_latent(inverse(mask, opts.inversion), samples.shape)
        base = replace(base, model_options=diff)
    base_out = run_pass(base, samples, noise_mask=base_mask, batch_index=batch_index,
                        callback=_relay(callback, 0, total), disable_pbar=disable_pbar)

    box = bbox(m_lat)
    if box is None:
        return base_out.clone()
    inside = replace(inside, model_options=diff)
    if not opts.crop_to_mask:
        inside = _inpaint_inputs(inside, base_out, m_lat, opts)
        out = run_pass(inside, base_out, noise_mask=m_lat, batch_index=batch_index,
                       callback=_relay(callback, n1, total), disable_pbar=disable_pbar)
        return torch.where(m_lat > 0, out, base_out)
    return _cropped_mask_pass(base_out, m_lat, box, inside, opts, batch_index=batch_index,
                              callback=callback, steps=(n1, total), disable_pbar=disable_pbar)


def _cropped_mask_pass(base_out, m_lat, box, inside: Pass, opts: TwoPassOptions, *, batch_index, callback, steps,
                       disable_pbar):
    """The mask pass on the crop box only, pasted back: noise is the full image's noise cut to the box, so the
    crop sees exactly the numbers a full-size pass would draw there."""
    h, w = base_out.shape[-2:]
    multiple = opts.crop_multiple
    if multiple is None:
        multiple = getattr(inside.model, "latent_multiple", None) or DEFAULT_CROP_MULTIPLE
    box = crop_box(box, h, w, opts.crop_context, multiple)
    base_fit = fit_latent_channels(base_out, inside.model.latent_format.channels)
    full_noise = prepare_noise(base_fit, inside.seed, batch_index)
    base_crop = crop(base_out, box)
    m_crop = crop(m_lat, box)
    frame = None
    if callback is not None:  # previews see the whole image: the crop pasted into the (scaled) base result
        frame = inside.model.latent_format.process_in(base_out.float())
    inside = _inpaint_inputs(crop_pass(inside, box, (h, w)), base_crop, m_crop, opts)
    out_crop = run_pass(inside, base_crop.contiguous(), noise_mask=m_crop.contiguous(),
                        noise=crop(full_noise, box).contiguous(), callback=_relay(callback, *steps, frame, box),
                        disable_pbar=disable_pbar)
    return paste(base_out, torch.where(m_crop > 0, out_crop, base_crop), box)


def _inpaint_inputs(inside: Pass, samples: torch.Tensor, m_lat: torch.Tensor, opts: TwoPassOptions) -> Pass:
    if not (opts.inpaint_conditioning and getattr(inside.model, "inpainting", False)):
        return inside
    extras = masked_image_conditioning(inside.model, samples, m_lat)
    return replace(inside, positive=with_extras(inside.cond_pos, extras),
                   negative=with_extras(inside.cond_neg, extras))


def _relay(callback, offset: int, total: int, frame: torch.Tensor | None = None, box=None):
    """A pass callback that reports steps over the whole job (and, for a crop, the whole frame)."""
    if callback is None:
        return None

    def cb(step, x0, x, _total):
        if frame is not None:
            x0, x = paste(frame, x0, box), paste(frame, x, box)
        callback(offset + step, x0, x, total)
    return cb


__all__ = ["DEFAULT_CROP_MULTIPLE", "TwoPassOptions", "two_pass_sample"]
