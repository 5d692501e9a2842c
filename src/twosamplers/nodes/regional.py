"""RegionalPrompt / CombineRegionalPrompts / RegionalSampler: per-step interleaving of a base sampler and any
number of (mask, KSAMPLER_ADVANCED) regions over one shared latent (`shared/spec/two-samplers.md`).

The node classes reproduce Impact Pack V7.10.6's numbers, quirks included (checked against the real code's
output in shared/parity/regional), except that inputs are never mutated, non-square masks keep their
orientation, and a batch of masks means one mask per image. Fixes for the remaining quirks are opt-in
keyword arguments (and optional node inputs): `fix_soft_masks`, `noise_once`, `step_seeds`.
The algorithm (`interleaved_sample`) is engine code in `twosamplers.engine.regional`; the front door calls it with
every fix switched on.
"""

from __future__ import annotations

import torch

from .. import _checks as limits
from .._checks import check_choice, check_float, check_int, check_mask, check_mask_batch, check_seed
from ..engine.latent import check_latent
from ..engine.mask_ops import dilate_region, region_union_inverse
from ..engine.regional import (
    ADDITIONAL_SAMPLERS,
    RECOVERY_MODES,
    SEED_2ND_MODES,
    check_advanced_sampler,
    interleaved_sample,
    second_seed,
)
from . import widgets as W

CATEGORY = "ImpactPack/Regional"


class RegionalPromptItem:
    """A REGIONAL_PROMPT: a mask and the KSAMPLER_ADVANCED that samples it."""

    def __init__(self, mask: torch.Tensor, sampler) -> None:
        self.mask = check_mask(mask, "mask").clone()
        self.sampler = check_advanced_sampler(sampler, "advanced_sampler")
        self._erosion: dict[tuple[int, str], torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"RegionalPromptItem(mask {tuple(self.mask.shape)}, {self.sampler!r})"

    def get_mask_erosion(self, factor: int, threshold: str = "round") -> torch.Tensor:
        """The region's noise mask: `mask_tools.dilate_region(mask, factor)`, [B, 1, H, W] (cached)."""
        key = (int(factor), threshold)
        if key not in self._erosion:
            self._erosion[key] = dilate_region(self.mask, factor, threshold)
        return self._erosion[key].clone()


class RegionalPrompt:
    """mask + KSAMPLER_ADVANCED -> REGIONAL_PROMPTS (a list with one region)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",), "advanced_sampler": ("KSAMPLER_ADVANCED",)}}

    RETURN_TYPES = ("REGIONAL_PROMPTS",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, mask, advanced_sampler):
        return ([RegionalPromptItem(mask, advanced_sampler)],)


class CombineRegionalPrompts:
    """Concatenate REGIONAL_PROMPTS lists (regional_prompts1, regional_prompts2, ...), in that order."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"regional_prompts1": ("REGIONAL_PROMPTS",)}}

    RETURN_TYPES = ("REGIONAL_PROMPTS",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, **kwargs):
        def order(k):
            tail = k[len("regional_prompts"):]
            return int(tail) if tail.isdigit() else 0

        out = []
        for k in sorted(kwargs, key=order):
            out += list(kwargs[k])
        return (out,)


def normalize_regions(regional_prompts) -> list[RegionalPromptItem]:
    """REGIONAL_PROMPTS (RegionalPromptItem objects or (mask, sampler) pairs) -> items; clear errors."""
    if isinstance(regional_prompts, RegionalPromptItem):
        regional_prompts = [regional_prompts]
    if not isinstance(regional_prompts, (list, tuple)):
        raise TypeError(f"regional_prompts must be a list of regions, got {type(regional_prompts).__name__}")
    if len(regional_prompts) == 0:
        raise ValueError("regional_prompts is empty: give at least one (mask, sampler) region")
    items = []
    for j, rp in enumerate(regional_prompts):
        if isinstance(rp, RegionalPromptItem):
            items.append(rp)
        elif isinstance(rp, (list, tuple)) and len(rp) == 2:
            try:
                items.append(RegionalPromptItem(rp[0], rp[1]))
            except (TypeError, ValueError) as e:
                raise type(e)(f"regional_prompts[{j}]: {e}") from None
        else:
            raise TypeError(f"regional_prompts[{j}] must be a REGIONAL_PROMPT (from RegionalPrompt) or a "
                            f"(mask, KSAMPLER_ADVANCED) pair, got {type(rp).__name__}")
    return items


class RegionalSampler:
    """Impact Pack's RegionalSampler: a base sampler and any number of regions denoise the latent together,
    one step at a time (base step on the area no region covers, then each region on its dilated mask)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "seed": W.SEED,
                "seed_2nd": W.SEED,
                "seed_2nd_mode": (list(SEED_2ND_MODES),),
                "steps": W.STEPS,
                "base_only_steps": ("INT", {"default": 2, "min": 0, "max": limits.MAX_STEPS}),
                "denoise": W.DENOISE,
                "samples": ("LATENT",),
                "base_sampler": ("KSAMPLER_ADVANCED",),
                "regional_prompts": ("REGIONAL_PROMPTS",),
                "overlap_factor": W.OVERLAP,
                "restore_latent": ("BOOLEAN", {"default": True, "label_on": "enabled", "label_off": "disabled"}),
                "additional_mode": (list(RECOVERY_MODES), {"default": "ratio between"}),
                "additional_sampler": (list(ADDITIONAL_SAMPLERS),),
                "additional_sigma_ratio": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01}),
            },
            "optional": {
                "fix_soft_masks": W.OFF,
                "noise_once": W.OFF,
                "step_seeds": W.OFF,
            },
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY
    # widget lists saved by older Impact Pack versions, by number of values (control values not counted): the
    # first RegionalSampler (seed, steps, base_only_steps, overlap_factor), then with denoise
    LEGACY_WIDGETS = {4: ("seed", "steps", "base_only_steps", "overlap_factor"),
                      5: ("seed", "steps", "base_only_steps", "denoise", "overlap_factor")}

    def doit(self, seed, seed_2nd, seed_2nd_mode, steps, base_only_steps, denoise, samples, base_sampler,
             regional_prompts, overlap_factor, restore_latent, additional_mode, additional_sampler,
             additional_sigma_ratio, unique_id=None, *, fix_soft_masks=False, noise_once=False, step_seeds=False,
             callback=None, disable_pbar=None):
        """-> (LATENT,) without noise_mask. Opt-in fixes: fix_soft_masks (a region is every pixel with m > 0, so
        no pixel is left undenoised), noise_once, step_seeds (see `interleaved_sample`)."""
        seed = check_seed("seed", seed)
        seed_2nd = check_seed("seed_2nd", seed_2nd)
        check_choice("seed_2nd_mode", seed_2nd_mode, SEED_2ND_MODES)
        steps = check_int("steps", steps, 1, limits.MAX_STEPS)
        base_only_steps = check_int("base_only_steps", base_only_steps, 0, limits.MAX_STEPS)
        denoise = check_float("denoise", denoise, 0.0, 1.0)
        check_latent(samples, "samples")
        check_advanced_sampler(base_sampler, "base_sampler")
        items = normalize_regions(regional_prompts)
        overlap_factor = check_int("overlap_factor", overlap_factor, 0, limits.MAX_OVERLAP)
        check_choice("additional_mode", additional_mode, RECOVERY_MODES)
        check_choice("additional_sampler", additional_sampler, ADDITIONAL_SAMPLERS)
        additional_sigma_ratio = check_float("additional_sigma_ratio", additional_sigma_ratio, 0.0, 1.0)
        batch = samples["samples"].shape[0]
        for j, it in enumerate(items):
            check_mask_batch(it.mask, batch, f"regional_prompts[{j}] mask")
        threshold = "nonzero" if fix_soft_masks else "round"
        regions = [(it.get_mask_erosion(overlap_factor, threshold), it.sampler, None) for it in items]
        inv_mask = region_union_inverse([it.mask for it in items])
        out = interleaved_sample(samples, base_sampler, regions, inv_mask, seed=seed, seed_2nd=seed_2nd,
                                 seed_2nd_mode=seed_2nd_mode, steps=steps, base_only_steps=base_only_steps,
                                 denoise=denoise, restore_latent=bool(restore_latent), additional_mode=additional_mode,
                                 additional_sampler=additional_sampler, additional_sigma_ratio=additional_sigma_ratio,
                                 noise_once=noise_once, step_seeds=step_seeds, callback=callback,
                                 disable_pbar=disable_pbar)
        return (out,)


__all__ = [
    "CombineRegionalPrompts",
    "RegionalPrompt",
    "RegionalPromptItem",
    "RegionalSampler",
    "SEED_2ND_MODES",
    "interleaved_sample",
    "normalize_regions",
    "second_seed",
]
