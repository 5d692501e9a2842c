"""The plain-Python front door: `two_samplers_for_mask` and `regional_sample`.

Unlike the node classes (which reproduce Impact Pack's numbers, quirks included), the front door defaults to
the fixed behaviour described in docs/two-samplers.md:

- two-pass mode: the base pass renders the WHOLE image (base_covers_mask=True), so the mask pass blends into
  real content instead of the frozen input latent; with base_covers_mask=False the base pass is restricted to
  the soft inverse 1 - mask (inversion="soft"; "binary" is upstream's mask != 1.0);
- the result equals the base pass EXACTLY wherever the (resized) mask is 0, for every sampler;
- grow/feather are in IMAGE pixels (latent pixels x the model's downscale), applied at the mask's own
  resolution; crop_context is in LATENT pixels;
- differential=True thresholds the mask every step (Differential Diffusion): grey = per-pixel denoise;
- crop_to_mask samples only the mask's bounding box plus crop_context, rounded up to the model's multiple,
  then pastes it back; outside the box the result is bit-identical to the base pass;
- interleaved/regional modes: no pixel is left undenoised by soft masks, the initial noise is added once,
  stochastic samplers get a different seed at every step, masks keep their orientation, one mask per image.

Inputs are never modified. The returned LATENT has no "noise_mask" (an input noise_mask is ignored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._checks import check_choice, check_float, check_int, check_seed
from .conditioning import check_batch, normalize_conditioning
from .ksampler import MAX_CFG, MAX_STEPS, compute_sigmas, sample_with_sigmas
from .latent import check_latent, fit_latent_channels
from .mask_tools import (
    bbox,
    binary_inverse,
    check_mask_batch,
    crop,
    crop_box,
    differential_denoise_mask,
    dilate_region,
    feather,
    feather_outward,
    grow,
    pixel_scale,
    region_union_inverse,
    soft_inverse,
    to_latent,
)
from .masks import check_mask, check_mask_aspect
from .nodes.providers import ADDITIONAL_SAMPLERS, RECOVERY_MODES, KSamplerAdvancedWrapper
from .nodes.regional import interleaved_sample
from .noise import prepare_noise
from .samplers import SAMPLER_NAMES
from .schedules import SCHEDULER_NAMES

MODES = ("two-pass", "interleaved", "regional")
INVERSIONS = ("soft", "binary")
DEFAULT_CROP_MULTIPLE = 8


@dataclass(frozen=True)
class SamplerSettings:
    """Everything one pass needs. Validated on construction (errors name the field)."""

    model: object                 # a twosamplers model (protocol in models/base.py)
    positive: object              # CONDITIONING or tensor (B, L, D)
    negative: object
    seed: int = 0
    steps: int = 20
    cfg: float = 8.0
    sampler_name: str = "euler"
    scheduler: str = "normal"
    denoise: float = 1.0

    def __post_init__(self) -> None:
        for attr in ("apply_model", "model_sampling", "latent_format"):
            if not hasattr(self.model, attr):
                raise TypeError(f"SamplerSettings.model must implement the twosamplers model protocol (missing "
                                f"{attr!r}); wrap a plain network with twosamplers.models.NetworkModel")
        normalize_conditioning(self.positive, "SamplerSettings.positive")
        normalize_conditioning(self.negative, "SamplerSettings.negative")
        check_seed("SamplerSettings.seed", self.seed)
        check_int("SamplerSettings.steps", self.steps, 1, MAX_STEPS)
        check_float("SamplerSettings.cfg", self.cfg, 0.0, MAX_CFG)
        check_choice("SamplerSettings.sampler_name", self.sampler_name, SAMPLER_NAMES)
        check_choice("SamplerSettings.scheduler", self.scheduler, SCHEDULER_NAMES)
        check_float("SamplerSettings.denoise", self.denoise, 0.0, 1.0)

    def sigmas(self) -> torch.Tensor:
        return compute_sigmas(self.model.model_sampling, self.sampler_name, self.scheduler, self.steps, self.denoise)

    def advanced(self) -> KSamplerAdvancedWrapper:
        """This pass as a KSAMPLER_ADVANCED (Brownian trees over each call's own sigmas, ComfyUI's default)."""
        return KSamplerAdvancedWrapper(self.model, self.cfg, self.sampler_name, self.scheduler, self.positive,
                                       self.negative, brownian_tree="call")


def _check_settings(s, name: str) -> SamplerSettings:
    if not isinstance(s, SamplerSettings):
        raise TypeError(f"{name} must be a twosamplers.SamplerSettings, got {type(s).__name__}")
    return s


# ------------------------------------------------------------------------------------------------
# mask preparation
# ------------------------------------------------------------------------------------------------
def _grow_feather(mask: torch.Tensor, latent_hw, downscale: int, grow_px, feather_px, outward: bool = False):
    """grow (int, image px) then feather (float, image px) at the mask's own resolution."""
    sy, sx = pixel_scale(mask, latent_hw, downscale)
    if grow_px:
        def g(scale):
            return int(math.copysign(math.ceil(abs(grow_px) * scale - 1e-9), grow_px))
        mask = grow(mask, (g(sy), g(sx)))
    if feather_px > 0:
        sig = (feather_px * sy, feather_px * sx)
        mask = feather_outward(mask, sig) if outward else feather(mask, sig)
    return mask


def _validate_common(latent, grow_px, feather_px, callback):
    check_latent(latent, "latent")
    check_int("grow", grow_px)
    check_float("feather", feather_px, 0.0)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable as callback(step, x0, x, total), got {type(callback).__name__}")


# ------------------------------------------------------------------------------------------------
# one pass
# ------------------------------------------------------------------------------------------------
def _run_pass(s: SamplerSettings, samples, noise_mask, *, noise=None, batch_index=None, model_options=None,
              callback=None, disable_pbar=None) -> torch.Tensor:
    """common_ksampler(s..., {"samples": samples, "noise_mask": noise_mask}) with an optional noise tensor."""
    samples = fit_latent_channels(samples, s.model.latent_format.channels)
    sigmas = s.sigmas()
    if sigmas.numel() == 0:
        return samples.clone()
    if noise is None:
        noise = prepare_noise(samples, s.seed, batch_index)
    pos = normalize_conditioning(s.positive, "positive")
    neg = normalize_conditioning(s.negative, "negative")
    check_batch(pos, samples.shape[0], "positive")
    check_batch(neg, samples.shape[0], "negative")
    return sample_with_sigmas(s.model, noise, sigmas, samples, pos, neg, s.cfg, s.sampler_name, s.seed, noise_mask,
                              callback=callback, disable_pbar=disable_pbar, model_options=model_options)


def _n_steps(s: SamplerSettings) -> int:
    return max(0, len(s.sigmas()) - 1)


# ------------------------------------------------------------------------------------------------
# front door
# ------------------------------------------------------------------------------------------------
def two_samplers_for_mask(latent: dict, mask: torch.Tensor, base: SamplerSettings, inside: SamplerSettings, *,
                          mode: str = "two-pass", inversion: str = "soft", base_covers_mask: bool = True,
                          grow: int = 0, feather: float = 0.0, differential: bool = False,
                          crop_to_mask: bool = False, crop_context: int = 8, overlap_factor: int = 10,
                          base_only_steps: int = 1, callback=None, disable_pbar=None,
                          crop_multiple: int | None = None, additional_mode: str = "ratio between",
                          additional_sampler: str = "AUTO", additional_sigma_ratio: float = 0.3,
                          stretch_mask: bool = False) -> dict:
    """Render `latent` with `base` outside `mask` and `inside` inside it; returns a LATENT without noise_mask.

    mask: [H, W], [B, H, W] or [B, 1, H, W] in [0, 1], at image (H*downscale) or latent resolution (any size is
    resized like ComfyUI); batch 1 or one mask per image. A mask whose aspect ratio differs from the latent's is
    an error unless stretch_mask=True.
    mode "two-pass" (TwoSamplersForMask): a full base pass, then the inside pass over its result with the mask
    as noise mask. Options: base_covers_mask, inversion (only used when base_covers_mask is False),
    differential, crop_to_mask / crop_context (latent px) / crop_multiple (default: model.latent_multiple or 8).
    mode "interleaved" / "regional" (TwoAdvancedSamplersForMask / RegionalSampler with this one region, which
    are the same algorithm): `regional_sample(latent, base, [(mask, inside)], ...)`; the shared schedule is
    base's seed/steps/denoise, `inside` contributes model, prompts, cfg, sampler, scheduler and the seed of
    its stochastic noise. Options: overlap_factor, base_only_steps, additional_*.
    grow (int) and feather (Gaussian sigma) are in image pixels. callback(step, x0, x, total) counts steps
    over the whole job.
    """
    check_choice("mode", mode, MODES)
    _check_settings(base, "base")
    _check_settings(inside, "inside")
    if mode != "two-pass":
        if crop_to_mask:
            raise ValueError(f"crop_to_mask is only available in mode='two-pass' (got mode={mode!r})")
        if differential:
            raise ValueError(f"differential is only available in mode='two-pass' (got mode={mode!r})")
        return regional_sample(latent, base, [(mask, inside)], grow=grow, feather=feather,
                               overlap_factor=overlap_factor, base_only_steps=base_only_steps,
                               additional_mode=additional_mode, additional_sampler=additional_sampler,
                               additional_sigma_ratio=additional_sigma_ratio, callback=callback,
                               disable_pbar=disable_pbar, stretch_mask=stretch_mask)

    _validate_common(latent, grow, feather, callback)
    check_choice("inversion", inversion, INVERSIONS)
    crop_context = check_int("crop_context", crop_context, 0)
    mask = check_mask(mask, "mask")
    samples = latent["samples"]
    b, _, h, w = samples.shape
    check_mask_batch(mask, b, "mask")
    if not stretch_mask:
        check_mask_aspect(mask, (h, w), "mask")
    batch_index = latent.get("batch_index")
    downscale = int(inside.model.latent_format.downscale)

    m = _grow_feather(mask, (h, w), downscale, grow, feather)
    m_lat = to_latent(m, samples.shape, "mask")  # [B, 1, h, w]
    options = {"denoise_mask_function": differential_denoise_mask} if differential else None

    n1 = _n_steps(base)
    n2 = _n_steps(inside)
    total = n1 + n2

    def relay(offset, paste_into=None, box=None):
        if callback is None:
            return None

        def cb(step, x0, x, _total):
            if paste_into is not None:
                top, left, bottom, right = box
                full0, full = paste_into.clone(), paste_into.clone()
                full0[..., top:bottom, left:right] = x0
                full[..., top:bottom, left:right] = x
                x0, x = full0, full
            callback(offset + step, x0, x, total)
        return cb

    # pass 1: the base sampler
    if base_covers_mask:
        nm1 = None
    else:
        inv = soft_inverse(m) if inversion == "soft" else binary_inverse(m)
        nm1 = to_latent(inv, samples.shape, "mask")
    base_out = _run_pass(base, samples, nm1, batch_index=batch_index,
                         model_options=options if nm1 is not None else None, callback=relay(0),
                         disable_pbar=disable_pbar)

    # pass 2: the mask sampler, on the base result
    box = bbox(m_lat)
    if box is None:
        final = base_out.clone()
    elif crop_to_mask:
        multiple = crop_multiple if crop_multiple is not None else getattr(inside.model, "latent_multiple", None)
        multiple = check_int("crop_multiple", multiple if multiple is not None else DEFAULT_CROP_MULTIPLE, 1)
        box = crop_box(box, h, w, crop_context, multiple)
        base_fit = fit_latent_channels(base_out, inside.model.latent_format.channels)
        full_noise = prepare_noise(base_fit, inside.seed, batch_index)
        base_crop = crop(base_out, box)
        m_crop = crop(m_lat, box)
        scaled = inside.model.latent_format.process_in(base_out.float()) if callback is not None else None
        out_crop = _run_pass(inside, base_crop.contiguous(), m_crop.contiguous(),
                             noise=crop(full_noise, box).contiguous(), model_options=options,
                             callback=relay(n1, scaled, box), disable_pbar=disable_pbar)
        final = base_out.clone()
        top, left, bottom, right = box
        final[..., top:bottom, left:right] = torch.where(m_crop > 0, out_crop, base_crop)
    else:
        out = _run_pass(inside, base_out, m_lat, batch_index=batch_index, model_options=options,
                        callback=relay(n1), disable_pbar=disable_pbar)
        final = torch.where(m_lat > 0, out, base_out)

    result = dict(latent)
    result.pop("noise_mask", None)
    result["samples"] = final
    return result


def regional_sample(latent: dict, base: SamplerSettings, regions: list, *, grow: int = 0, feather: float = 0.0,
                    overlap_factor: int = 10, base_only_steps: int = 1, additional_mode: str = "ratio between",
                    additional_sampler: str = "AUTO", additional_sigma_ratio: float = 0.3, callback=None,
                    disable_pbar=None, stretch_mask: bool = False) -> dict:
    """RegionalSampler's per-step interleaving with the fixes on; returns a LATENT without noise_mask.

    regions: a non-empty list of (mask, SamplerSettings). The shared schedule is base.seed / steps / denoise;
    each region contributes its model, prompts, cfg, sampler, scheduler and seed (its seed + i drives the
    stochastic noise of its step i; its steps/denoise are not used). A region is every pixel with mask > 0 (after
    `grow`, in image pixels), dilated by a box of size overlap_factor in the mask's own pixels (as upstream);
    `feather` (image px) adds a soft ramp outside the dilated region. The base sampler covers exactly the
    pixels no region covers. Regions are applied in order, each composited over the previous ones. A mask whose
    aspect ratio differs from the latent's is an error unless stretch_mask=True.
    """
    _check_settings(base, "base")
    _validate_common(latent, grow, feather, callback)
    if not isinstance(regions, (list, tuple)):
        raise TypeError(f"regions must be a list of (mask, SamplerSettings) pairs, got {type(regions).__name__}")
    if len(regions) == 0:
        raise ValueError("regions is empty: give at least one (mask, SamplerSettings) region")
    base_only_steps = check_int("base_only_steps", base_only_steps, 0, MAX_STEPS)
    overlap_factor = check_int("overlap_factor", overlap_factor, 0, 10000)
    check_choice("additional_mode", additional_mode, RECOVERY_MODES)
    check_choice("additional_sampler", additional_sampler, ADDITIONAL_SAMPLERS)
    additional_sigma_ratio = check_float("additional_sigma_ratio", additional_sigma_ratio, 0.0, 1.0)
    samples = latent["samples"]
    b, _, h, w = samples.shape
    downscale = int(base.model.latent_format.downscale)

    grown, prepared = [], []
    for j, item in enumerate(regions):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise TypeError(f"regions[{j}] must be a (mask, SamplerSettings) pair, got {type(item).__name__}")
        m, s = item
        _check_settings(s, f"regions[{j}] settings")
        m = check_mask(m, f"regions[{j}] mask")
        check_mask_batch(m, b, f"regions[{j}] mask")
        if not stretch_mask:
            check_mask_aspect(m, (h, w), f"regions[{j}] mask")
        g = _grow_feather(m, (h, w), downscale, grow, 0.0)
        region = dilate_region(g, overlap_factor, "nonzero")
        if feather > 0:
            region = _grow_feather(region, (h, w), downscale, 0, feather, outward=True)
        grown.append(g)
        prepared.append((region, s.advanced(), s.seed))
    inv = region_union_inverse(grown)

    start_latent = dict(latent)
    start_latent.pop("noise_mask", None)
    return interleaved_sample(start_latent, base.advanced(), prepared, inv, seed=base.seed, steps=base.steps,
                              base_only_steps=base_only_steps, denoise=base.denoise, restore_latent=True,
                              additional_mode=additional_mode, additional_sampler=additional_sampler,
                              additional_sigma_ratio=additional_sigma_ratio, noise_once=True, step_seeds=True,
                              callback=callback, disable_pbar=disable_pbar)


__all__ = ["INVERSIONS", "MODES", "SamplerSettings", "regional_sample", "two_samplers_for_mask"]
