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
  stochastic samplers get a different seed at every step, masks keep their orientation, one mask per image;
- joint mode: regions that share the base's model are masked conditioning of ONE pass (`joint.py`): one
  evaluation per step whatever the number of regions, each region costing its box; regions with another
  model fall back to the interleaved mode with a warning.

Inputs are never modified. The returned LATENT has no "noise_mask" (an input noise_mask is ignored).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from .._checks import (
    MAX_IMAGE_SIDE,
    MAX_OVERLAP,
    MAX_STEPS,
    check_bool,
    check_choice,
    check_feather_width,
    check_float,
    check_int,
    check_mask,
    check_mask_aspect,
    check_mask_batch,
)
from ..models.control import attach_controlnets
from .joint import ignored_settings, joint_blockers, joint_sample
from .latent import check_latent
from .mask_ops import INVERSIONS, dilate_region, feather_outward, grow, pixel_scale, region_union_inverse, to_latent
from .mask_ops import feather as feather_mask
from .passes import Pass
from .regional import ADDITIONAL_SAMPLERS, RECOVERY_MODES, KSamplerAdvancedWrapper, interleaved_sample
from .two_pass import DEFAULT_CROP_MULTIPLE, TwoPassOptions, two_pass_sample

MODES = ("two-pass", "interleaved", "regional", "joint")
REGIONAL_MODES = ("interleaved", "regional", "joint")


@dataclass(frozen=True, eq=False)
class SamplerSettings(Pass):
    """Everything one pass needs: a `Pass` whose errors name `SamplerSettings.<field>`. Validated on
    construction. Positional order: model, positive, negative, seed, steps, cfg, sampler_name, scheduler,
    denoise (further `Pass` fields by keyword)."""

    name: str = field(default="SamplerSettings", repr=False)

    def advanced(self) -> KSamplerAdvancedWrapper:
        """This pass as a KSAMPLER_ADVANCED (Brownian trees over each call's own sigmas, ComfyUI's default)."""
        return _advanced(self)


def _check_settings(s, name: str, per_step: bool = False) -> Pass:
    if not isinstance(s, Pass):
        raise TypeError(f"{name} must be a twosamplers.SamplerSettings, got {type(s).__name__}")
    if per_step:  # the interleaved modes make their own per-step calls; these Pass fields would be ignored
        for key, unset in _PER_CALL_FIELDS.items():
            v = getattr(s, key)
            if (v is not None) if unset is None else (v != unset):
                raise ValueError(f"{name}.{key} is not used by the interleaved/regional modes; leave it unset")
    return s


_PER_CALL_FIELDS = {"start_step": None, "last_step": None, "force_full_denoise": False, "disable_noise": False,
                    "sigmas": None, "sigma_factor": 1.0, "model_options": None, "sampler_options": None}


def _grow_feather(mask: torch.Tensor, latent_hw, downscale: int, grow_px, feather_px, outward: bool = False):
    """grow (int, image px) then feather (float, image px) at the mask's own resolution. A feather wider than
    the image is an error (its cost grows with it); a grow beyond the image acts as the image size."""
    check_feather_width(feather_px, latent_hw[1] * downscale, latent_hw[0] * downscale)
    sy, sx = pixel_scale(mask, latent_hw, downscale)
    if grow_px:
        def g(scale):
            return int(math.copysign(math.ceil(abs(grow_px) * scale - 1e-9), grow_px))
        mask = grow(mask, (g(sy), g(sx)))
    if feather_px > 0:
        sig = (feather_px * sy, feather_px * sx)
        mask = feather_outward(mask, sig) if outward else feather_mask(mask, sig)
    return mask


def _region_masks(masks: list, latent_hw, downscale: int, mode: str, grow_px: int, feather_px: float,
                  overlap_factor: int) -> tuple[list, list]:
    """(each region's mask as its sampler uses it, each region's grown mask), at each mask's own resolution.

    two-pass: grown, then feathered (the mask pass's noise mask); interleaved/regional: grown, dilated by
    overlap_factor (every pixel > 0), then ramped outward by the feather (the region sampler's noise mask and
    composite; the base samples where no grown mask is > 0); joint: grown, then ramped outward by the feather,
    at least one latent pixel (the weight of the region's prompts)."""
    grown, used = [], []
    for m in masks:
        if mode == "two-pass":
            g = u = _grow_feather(m, latent_hw, downscale, grow_px, feather_px)
        elif mode == "joint":
            g = u = _grow_feather(m, latent_hw, downscale, grow_px, max(float(feather_px), float(downscale)),
                                  outward=True)
        else:
            g = _grow_feather(m, latent_hw, downscale, grow_px, 0.0)
            u = dilate_region(g, overlap_factor, "nonzero")
            if feather_px > 0:
                u = _grow_feather(u, latent_hw, downscale, 0, feather_px, outward=True)
        grown.append(g)
        used.append(u)
    return used, grown


def sampler_masks(masks: list, latent_hw: tuple[int, int], downscale: int, *, mode: str = "two-pass",
                  grow: int = 0, feather: float = 0.0, overlap_factor: int = 10) -> list[torch.Tensor]:
    """Each region's mask as the sampler of `mode` sees it (see `_region_masks`), at the mask's own resolution:
    THE grow/feather of the front door, which a page's "mask as the sampler sees it" preview calls too.
    `masks`: valid MASKs of the image's aspect ratio; `latent_hw`: the latent's (h, w); `downscale`: the model's
    image px per latent px."""
    check_choice("mode", mode, MODES)
    check_int("grow", grow, -MAX_IMAGE_SIDE, MAX_IMAGE_SIDE)
    check_float("feather", feather, 0.0, float(MAX_IMAGE_SIDE))
    check_int("overlap_factor", overlap_factor, 0, MAX_OVERLAP)
    masks = [check_mask(m, f"masks[{i}]") for i, m in enumerate(masks)]
    return _region_masks(masks, tuple(latent_hw), int(downscale), mode, grow, feather, overlap_factor)[0]


def _validate_common(latent, grow_px, feather_px, callback):
    check_latent(latent, "latent")
    # bounded by the largest image (inf and huge values are errors); a grow beyond the mask acts as its side
    check_int("grow", grow_px, -MAX_IMAGE_SIDE, MAX_IMAGE_SIDE)
    check_float("feather", feather_px, 0.0, float(MAX_IMAGE_SIDE))
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable as callback(step, x0, x, total), got {type(callback).__name__}")


def _check_region_mask(mask, latent_shape, name: str, stretch: bool) -> torch.Tensor:
    mask = check_mask(mask, name)
    check_mask_batch(mask, latent_shape[0], name)
    if not stretch:
        check_mask_aspect(mask, tuple(latent_shape[-2:]), name)
    return mask


def two_samplers_for_mask(latent: dict, mask: torch.Tensor, base: SamplerSettings, inside: SamplerSettings, *,
                          mode: str = "two-pass", inversion: str = "soft", base_covers_mask: bool = True,
                          grow: int = 0, feather: float = 0.0, differential: bool = False,
                          crop_to_mask: bool = False, crop_context: int = 8, overlap_factor: int = 10,
                          base_only_steps: int = 1, callback=None, disable_pbar=None,
                          crop_multiple: int | None = None, additional_mode: str = "ratio between",
                          additional_sampler: str = "AUTO", additional_sigma_ratio: float = 0.3,
                          inpaint_conditioning: bool = True, stretch_mask: bool = False) -> dict:
    """Render `latent` with `base` outside `mask` and `inside` inside it; returns a LATENT without noise_mask.

    mask: [H, W], [B, H, W] or [B, 1, H, W] in [0, 1], at image (H*downscale) or latent resolution (any size is
    resized like ComfyUI); batch 1 or one mask per image. A mask whose aspect ratio differs from the latent's is
    an error unless stretch_mask=True.
    mode "two-pass" (TwoSamplersForMask): a full base pass, then the inside pass over its result with the mask
    as noise mask. Options: base_covers_mask, inversion (only used when base_covers_mask is False),
    differential, crop_to_mask / crop_context (latent px) / crop_multiple (default: model.latent_multiple or 8),
    inpaint_conditioning (when `inside.model` is an inpainting checkpoint: its extra inputs are the base result
    with the mask greyed out, as InpaintModelConditioning makes them; False: the latent itself, as after
    SetLatentNoiseMask).
    mode "interleaved" / "regional" (TwoAdvancedSamplersForMask / RegionalSampler with this one region, which
    are the same algorithm): `regional_sample(latent, base, [(mask, inside)], ...)`; the shared schedule is
    base's seed/steps/denoise, `inside` contributes model, prompts, cfg, sampler, scheduler and the seed of
    its stochastic noise. Options: overlap_factor, base_only_steps, additional_*.
    mode "joint": `regional_sample(..., mode="joint")`: inside's prompts as masked conditioning of one pass with
    base's settings (see there); crop_multiple sets its box rounding.
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
        return regional_sample(latent, base, [(mask, inside)], mode=mode, grow=grow, feather=feather,
                               overlap_factor=overlap_factor, base_only_steps=base_only_steps,
                               crop_multiple=crop_multiple,
                               additional_mode=additional_mode, additional_sampler=additional_sampler,
                               additional_sigma_ratio=additional_sigma_ratio, callback=callback,
                               disable_pbar=disable_pbar, stretch_mask=stretch_mask)
    _validate_common(latent, grow, feather, callback)
    opts = TwoPassOptions(base_covers_mask=bool(base_covers_mask), inversion=check_choice("inversion", inversion,
                          INVERSIONS), differential=bool(differential), crop_to_mask=bool(crop_to_mask),
                          crop_context=check_int("crop_context", crop_context, 0, MAX_IMAGE_SIDE),
                          crop_multiple=None if crop_multiple is None else check_int("crop_multiple", crop_multiple, 1),
                          inpaint_conditioning=check_bool("inpaint_conditioning", inpaint_conditioning))
    samples = latent["samples"]
    b, _, h, w = samples.shape
    mask = _check_region_mask(mask, samples.shape, "mask", stretch_mask)
    m = _region_masks([mask], (h, w), int(inside.model.latent_format.downscale), "two-pass", grow, feather, 0)[0][0]
    result = dict(latent)
    result.pop("noise_mask", None)
    result["samples"] = two_pass_sample(samples, m, base, inside, opts, batch_index=latent.get("batch_index"),
                                        callback=callback, disable_pbar=disable_pbar)
    return result


def regional_sample(latent: dict, base: SamplerSettings, regions: list, *, mode: str = "interleaved", grow: int = 0,
                    feather: float = 0.0, overlap_factor: int = 10, base_only_steps: int = 1,
                    additional_mode: str = "ratio between", additional_sampler: str = "AUTO",
                    additional_sigma_ratio: float = 0.3, crop_multiple: int | None = None, callback=None,
                    disable_pbar=None, stretch_mask: bool = False) -> dict:
    """Base prompts outside the regions, each region's prompts inside it; returns a LATENT without noise_mask.

    regions: a non-empty list of (mask, SamplerSettings). The shared schedule is base.seed / steps / denoise.
    mode "interleaved" ("regional" is the same): RegionalSampler's per-step interleaving with the fixes on. Each
    region contributes its model, prompts, cfg, sampler, scheduler and seed (its seed + i drives the stochastic
    noise of its step i; its steps/denoise are not used). A region is every pixel with mask > 0 (after `grow`,
    in image pixels), dilated by a box of size overlap_factor in the mask's own pixels (as upstream); `feather`
    (image px) adds a soft ramp outside the dilated region. The base sampler covers exactly the pixels no region
    covers. Regions are applied in order, each composited over the previous ones.
    mode "joint": the regions become masked conditioning of ONE pass with base's settings (cfg, sampler and
    scheduler too; a warning names region values that are therefore not used). A region's prompts act on its
    mask after `grow`, ramped outward by `feather` image px (at least one latent pixel), and run on the mask's
    box only (rounded up to `crop_multiple` latent px; default model.latent_multiple or 8); the base prompts act
    on 1 - the union of the regions. If a region has another model (or other per-model settings), the call
    falls back to "interleaved" with a warning. overlap_factor, base_only_steps, additional_* are interleaved's.
    A mask whose aspect ratio differs from the latent's is an error unless stretch_mask=True.
    """
    check_choice("mode", mode, REGIONAL_MODES)
    _check_settings(base, "base", per_step=True)
    _validate_common(latent, grow, feather, callback)
    checked = _check_regions(regions, latent["samples"].shape, stretch_mask)
    if mode == "joint":
        blockers = joint_blockers(base, [s for _, s in checked])
        if not blockers:
            return _joint(latent, base, checked, grow, feather, crop_multiple, callback, disable_pbar)
        warnings.warn("mode='joint' fell back to the interleaved mode (one sampler per region): "
                      + "; ".join(blockers), stacklevel=2)
    base_only_steps = check_int("base_only_steps", base_only_steps, 0, MAX_STEPS)
    overlap_factor = check_int("overlap_factor", overlap_factor, 0, MAX_OVERLAP)
    check_choice("additional_mode", additional_mode, RECOVERY_MODES)
    check_choice("additional_sampler", additional_sampler, ADDITIONAL_SAMPLERS)
    additional_sigma_ratio = check_float("additional_sigma_ratio", additional_sigma_ratio, 0.0, 1.0)
    h, w = latent["samples"].shape[-2:]
    downscale = int(base.model.latent_format.downscale)

    used, grown = _region_masks([m for m, _ in checked], (h, w), downscale, "interleaved", grow, feather,
                                overlap_factor)
    prepared = [(region, _advanced(s), s.seed) for region, (_, s) in zip(used, checked, strict=True)]
    inv = region_union_inverse(grown)

    start_latent = dict(latent)
    start_latent.pop("noise_mask", None)
    return interleaved_sample(start_latent, _advanced(base), prepared, inv, seed=base.seed, steps=base.steps,
                              base_only_steps=base_only_steps, denoise=base.denoise, restore_latent=True,
                              additional_mode=additional_mode, additional_sampler=additional_sampler,
                              additional_sigma_ratio=additional_sigma_ratio, noise_once=True, step_seeds=True,
                              callback=callback, disable_pbar=disable_pbar)


def _check_regions(regions, latent_shape, stretch_mask: bool) -> list:
    """regions -> [(validated mask, settings)], errors naming regions[j]."""
    if not isinstance(regions, (list, tuple)):
        raise TypeError(f"regions must be a list of (mask, SamplerSettings) pairs, got {type(regions).__name__}")
    if len(regions) == 0:
        raise ValueError("regions is empty: give at least one (mask, SamplerSettings) region")
    checked = []
    for j, item in enumerate(regions):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise TypeError(f"regions[{j}] must be a (mask, SamplerSettings) pair, got {type(item).__name__}")
        m, s = item
        _check_settings(s, f"regions[{j}] settings", per_step=True)
        checked.append((_check_region_mask(m, latent_shape, f"regions[{j}] mask", stretch_mask), s))
    return checked


def _joint(latent, base, checked, grow_px, feather_px, crop_multiple, callback, disable_pbar) -> dict:
    """mode="joint" once the regions are known to share base's model: region weights at latent size, then
    `joint.joint_sample`."""
    ignored = ignored_settings(base, [s for _, s in checked])
    if ignored:
        warnings.warn("mode='joint' samples every region with the base's cfg, sampler and scheduler; not used: "
                      + ", ".join(ignored), stacklevel=3)
    samples = latent["samples"]
    h, w = samples.shape[-2:]
    downscale = int(base.model.latent_format.downscale)
    multiple = crop_multiple if crop_multiple is not None else getattr(base.model, "latent_multiple", None)
    multiple = check_int("crop_multiple", multiple if multiple is not None else DEFAULT_CROP_MULTIPLE, 1)
    used, _ = _region_masks([m for m, _ in checked], (h, w), downscale, "joint", grow_px, feather_px, 0)
    regions = [(to_latent(g, samples.shape), s) for g, (_, s) in zip(used, checked, strict=True)]
    out = {k: v for k, v in latent.items() if k != "noise_mask"}
    out["samples"] = joint_sample(samples, base, regions, multiple=multiple, batch_index=latent.get("batch_index"),
                                  callback=callback, disable_pbar=disable_pbar)
    return out


def _advanced(s: Pass) -> KSamplerAdvancedWrapper:
    """A pass as a KSAMPLER_ADVANCED (Brownian trees over each call's own sigmas, ComfyUI's default)."""
    pos, neg = attach_controlnets(s.cond_pos, s.cond_neg, s.controlnets)
    return KSamplerAdvancedWrapper(s.net, s.cfg, s.sampler_name, s.scheduler, pos, neg, brownian_tree="call",
                                   comfyui_version=s.comfyui_version)


__all__ = ["DEFAULT_CROP_MULTIPLE", "INVERSIONS", "MODES", "REGIONAL_MODES", "SamplerSettings", "regional_sample",
           "sampler_masks", "two_samplers_for_mask"]
