"""Impact Pack's RegionalSamplerAdvanced: RegionalSampler's per-step interleaving as a KSamplerAdvanced (add_noise,
noise_seed, steps, start/end step, return_with_leftover_noise) over the regions of REGIONAL_PROMPTS; the algorithm
is `regional.interleaved_sample_advanced` (upstream's numbers, its discarded closing step included)."""

from __future__ import annotations

from .. import _checks as limits
from .._checks import check_bool, check_choice, check_float, check_int, check_mask_batch, check_seed
from ..engine.latent import check_latent, fit_latent_channels
from ..engine.mask_ops import region_union_inverse
from ..engine.regional import ADDITIONAL_SAMPLERS, RECOVERY_MODES, check_advanced_sampler, interleaved_sample_advanced
from . import widgets as W
from .regional import CATEGORY, normalize_regions


class RegionalSamplerAdvanced:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "add_noise": ("BOOLEAN", {"default": True, "label_on": "enabled", "label_off": "disabled"}),
            "noise_seed": W.SEED,
            "steps": W.STEPS,
            "start_at_step": ("INT", {"default": 0, "min": 0, "max": limits.MAX_STEPS}),
            "end_at_step": ("INT", {"default": 10000, "min": 0, "max": limits.MAX_STEPS}),
            "overlap_factor": W.OVERLAP,
            "restore_latent": ("BOOLEAN", {"default": True, "label_on": "enabled", "label_off": "disabled"}),
            "return_with_leftover_noise": ("BOOLEAN", {"default": False, "label_on": "enabled",
                                                       "label_off": "disabled"}),
            "latent_image": ("LATENT",),
            "base_sampler": ("KSAMPLER_ADVANCED",),
            "regional_prompts": ("REGIONAL_PROMPTS",),
            "additional_mode": (list(RECOVERY_MODES), {"default": "ratio between"}),
            "additional_sampler": (list(ADDITIONAL_SAMPLERS),),
            "additional_sigma_ratio": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, add_noise, noise_seed, steps, start_at_step, end_at_step, overlap_factor, restore_latent,
             return_with_leftover_noise, latent_image, base_sampler, regional_prompts, additional_mode,
             additional_sampler, additional_sigma_ratio, unique_id=None, *, callback=None, disable_pbar=None):
        seed = check_seed("noise_seed", noise_seed)
        steps = check_int("steps", steps, 1, limits.MAX_STEPS)
        start = check_int("start_at_step", start_at_step, 0, limits.MAX_STEPS)
        end = check_int("end_at_step", end_at_step, 0, limits.MAX_STEPS)
        overlap_factor = check_int("overlap_factor", overlap_factor, 0, limits.MAX_OVERLAP)
        check_latent(latent_image, "latent_image")
        check_advanced_sampler(base_sampler, "base_sampler")
        items = normalize_regions(regional_prompts)
        check_choice("additional_mode", additional_mode, RECOVERY_MODES)
        check_choice("additional_sampler", additional_sampler, ADDITIONAL_SAMPLERS)
        ratio = check_float("additional_sigma_ratio", additional_sigma_ratio, 0.0, 1.0)
        batch = latent_image["samples"].shape[0]
        for j, it in enumerate(items):
            check_mask_batch(it.mask, batch, f"regional_prompts[{j}] mask")
        latent = dict(latent_image)
        model = getattr(base_sampler, "model", None)
        if model is not None:
            latent["samples"] = fit_latent_channels(latent["samples"], model.latent_format.channels)
        regions = [(it.get_mask_erosion(overlap_factor), it.sampler) for it in items]
        inv_mask = region_union_inverse([it.mask for it in items])
        out = interleaved_sample_advanced(latent, base_sampler, regions, inv_mask,
                                          add_noise=check_bool("add_noise", add_noise), seed=seed, steps=steps,
                                          start_at_step=start, end_at_step=end,
                                          restore_latent=check_bool("restore_latent", restore_latent),
                                          leftover=check_bool("return_with_leftover_noise", return_with_leftover_noise),
                                          additional_mode=additional_mode, additional_sampler=additional_sampler,
                                          additional_sigma_ratio=ratio, callback=callback, disable_pbar=disable_pbar)
        return (out,)


__all__ = ["RegionalSamplerAdvanced"]
