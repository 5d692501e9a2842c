"""TwoSamplersForMask and TwoAdvancedSamplersForMask (`shared/spec/two-samplers.md`).

TwoSamplersForMask: a base KSAMPLER renders the area outside the mask (noise mask = mask != 1.0), then a
mask KSAMPLER resamples the mask (noise mask = the raw mask) over that result. Upstream writes the noise mask
into the caller's latent dict; ours never mutates an input. Opt-in fixes (keyword arguments and optional
node inputs): inversion="soft" (1 - mask) and base_covers_mask=True (the base pass renders the whole image).

TwoAdvancedSamplersForMask: RegionalSampler with one region (base_only_steps 1, restore_latent on,
recovery "ratio between" / AUTO / 0.3).
"""

from __future__ import annotations

from .._checks import check_choice, check_mask, check_mask_batch
from ..engine.latent import check_latent
from ..engine.mask_ops import INVERSIONS, inverse
from ..engine.regional import check_advanced_sampler
from . import widgets as W
from .providers import CATEGORY, check_ksampler
from .regional import RegionalPrompt, RegionalSampler


class TwoSamplersForMask:
    """Impact Pack's TwoSamplersForMask: base pass on the inverse mask, mask pass on the mask."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent_image": ("LATENT",),
                "base_sampler": ("KSAMPLER",),
                "mask_sampler": ("KSAMPLER",),
                "mask": ("MASK",),
            },
            "optional": {
                "inversion": (list(INVERSIONS), {"default": "binary"}),
                "base_covers_mask": W.OFF,
            },
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, latent_image, base_sampler, mask_sampler, mask, inversion="binary", base_covers_mask=False,
             *, callback=None, disable_pbar=None):
        """-> (LATENT,) without "noise_mask" (batch_index kept).

        Upstream (the defaults): inverse = where(mask != 1.0, 1, 0) at the mask's resolution; pass 1 =
        base_sampler.sample(latent with noise_mask = inverse); pass 2 = mask_sampler.sample(pass 1 with
        noise_mask = mask). A noise_mask already in latent_image is replaced, as upstream does.
        inversion="soft": the inverse is 1 - mask; base_covers_mask=True: pass 1 has no noise mask at all.
        callback(step, x0, x, total) is forwarded to both passes (each counts its own steps).
        """
        check_latent(latent_image, "latent_image")
        check_ksampler(base_sampler, "base_sampler")
        check_ksampler(mask_sampler, "mask_sampler")
        mask = check_mask(mask, "mask")
        check_mask_batch(mask, latent_image["samples"].shape[0], "mask")
        check_choice("inversion", inversion, INVERSIONS)
        kw = {}
        if callback is not None:
            kw["callback"] = callback
        if disable_pbar is not None:
            kw["disable_pbar"] = disable_pbar

        first = dict(latent_image)
        if base_covers_mask:
            first.pop("noise_mask", None)
        else:
            first["noise_mask"] = inverse(mask, inversion)
        stage1 = base_sampler.sample(first, **kw)
        second = dict(stage1)
        second["noise_mask"] = mask.clone()
        stage2 = mask_sampler.sample(second, **kw)
        out = dict(stage2)
        out.pop("noise_mask", None)
        return (out,)


class TwoAdvancedSamplersForMask:
    """Impact Pack's TwoAdvancedSamplersForMask: the base and mask KSAMPLER_ADVANCED samplers interleaved step
    by step over one shared schedule (RegionalSampler with one region)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "seed": W.SEED,
                "steps": W.STEPS,
                "denoise": W.DENOISE,
                "samples": ("LATENT",),
                "base_sampler": ("KSAMPLER_ADVANCED",),
                "mask_sampler": ("KSAMPLER_ADVANCED",),
                "mask": ("MASK",),
                "overlap_factor": W.OVERLAP,
            },
            "optional": {
                "fix_soft_masks": W.OFF,
                "step_seeds": W.OFF,
            },
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, seed, steps, denoise, samples, base_sampler, mask_sampler, mask, overlap_factor,
             *, fix_soft_masks=False, step_seeds=False, callback=None, disable_pbar=None):
        check_advanced_sampler(base_sampler, "base_sampler")
        check_advanced_sampler(mask_sampler, "mask_sampler")
        regional_prompts = RegionalPrompt().doit(mask, mask_sampler)[0]
        return RegionalSampler().doit(seed, 0, "ignore", steps, 1, denoise, samples, base_sampler, regional_prompts,
                                      overlap_factor, True, "ratio between", "AUTO", 0.3,
                                      fix_soft_masks=fix_soft_masks, step_seeds=step_seeds, callback=callback,
                                      disable_pbar=disable_pbar)


__all__ = ["INVERSIONS", "TwoAdvancedSamplersForMask", "TwoSamplersForMask"]
