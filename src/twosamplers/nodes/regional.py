"""RegionalPrompt / CombineRegionalPrompts / RegionalSampler: per-step interleaving of a base sampler and any
number of (mask, KSAMPLER_ADVANCED) regions over one shared latent (`shared/spec/two-samplers.md`).

The node classes reproduce Impact Pack V7.10.6's numbers, quirks included (checked against the real code's
output in shared/parity/regional), except that inputs are never mutated, non-square masks keep their
orientation, and a batch of masks means one mask per image. Fixes for the remaining quirks are opt-in
keyword arguments (and optional node inputs): `fix_soft_masks`, `noise_once`, `step_seeds`.
`interleaved_sample` is the shared core; the front door (`twosamplers.front.regional_sample`) calls it with
every fix switched on.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .._checks import SEED_MAX, check_choice, check_float, check_int, check_seed
from ..ksampler import MAX_STEPS
from ..latent import check_latent
from ..mask_tools import as_bchw, check_mask_batch, composite, dilate_region, region_union_inverse
from ..noise import prepare_noise
from .providers import ADDITIONAL_SAMPLERS, RECOVERY_MODES, check_advanced_sampler

CATEGORY = "ImpactPack/Regional"
SEED_2ND_MODES = ("ignore", "fixed", "seed+seed_2nd", "seed-seed_2nd", "increment", "decrement", "randomize")
# Impact Pack wraps seed+seed_2nd / seed-seed_2nd into [0, 2**50] (ComfyUI's "randomize" range).
_SEED_WRAP = 1125899906842624


class RegionalPromptItem:
    """A REGIONAL_PROMPT: a mask and the KSAMPLER_ADVANCED that samples it."""

    def __init__(self, mask: torch.Tensor, sampler) -> None:
        as_bchw(mask, "mask")
        self.mask = mask.clone()
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


def second_seed(seed: int, seed_2nd: int, mode: str) -> int:
    """The seed of the per-step phase: seed ("ignore"), seed +/- seed_2nd (wrapped into [0, 2**50] like
    Impact, then modulo 2**64), or seed_2nd ("fixed", and "increment"/"decrement"/"randomize", which only tell
    a UI how to change seed_2nd between runs)."""
    if mode == "ignore":
        return seed
    if mode == "seed+seed_2nd":
        s = seed + seed_2nd
        if s > _SEED_WRAP:
            s -= _SEED_WRAP
    elif mode == "seed-seed_2nd":
        s = seed - seed_2nd
        if s < 0:
            s += _SEED_WRAP
    else:
        s = seed_2nd
    return s % (SEED_MAX + 1)


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


def interleaved_sample(latent: dict, base_sampler, regions: list[tuple[torch.Tensor, object, int | None]],
                       inv_mask: torch.Tensor, *, seed: int, seed_2nd: int = 0, seed_2nd_mode: str = "ignore",
                       steps: int, base_only_steps: int, denoise: float, restore_latent: bool = True,
                       additional_mode: str = "ratio between", additional_sampler: str = "AUTO",
                       additional_sigma_ratio: float = 0.3, noise_once: bool = False, step_seeds: bool = False,
                       callback=None, disable_pbar=None) -> dict:
    """The RegionalSampler algorithm on prepared masks; returns a new LATENT dict without noise_mask.

    regions: (region mask [B|1, 1, H, W] used as noise mask and composite mask, KSAMPLER_ADVANCED, seed or None =
    the shared seed). inv_mask: the base sampler's noise mask during the interleaved phase.
    noise_once: add the initial noise once (upstream re-adds the same noise tensor at every per-step base call
    when base_only_steps is 0 or seed_2nd_mode is not "ignore"). step_seeds: the stochastic samplers' seed at
    step i is seed + i (upstream re-seeds every one-step call identically, so ancestral noise repeats).
    callback(step, x0, x, total) is called once per shared step with the latent after it (x0 = x).
    """
    out = dict(latent)
    out.pop("noise_mask", None)
    if denoise <= 0.0:
        out["samples"] = latent["samples"].clone()
        return out
    adv_steps = int(steps / denoise)
    start = adv_steps - steps
    batch_index = latent.get("batch_index")
    recovery = {"recovery_mode": additional_mode, "recovery_sampler": additional_sampler,
                "recovery_sigma_ratio": additional_sigma_ratio}
    inner_pbar = True
    cur = latent
    leftover = False
    if base_only_steps > 0:
        leftover = seed_2nd_mode == "ignore"
        noise = prepare_noise(latent["samples"], seed, batch_index)
        cur = base_sampler.sample_advanced(True, seed, adv_steps, latent, start, start + base_only_steps, leftover,
                                           recovery_mode="DISABLE", noise=noise, disable_pbar=inner_pbar)
    seed = second_seed(seed, seed_2nd, seed_2nd_mode)
    if leftover:
        add_noise, noise = False, None
    else:
        add_noise, noise = True, prepare_noise(cur["samples"], seed, batch_index)

    def at(s: int, i: int) -> int:
        return (s + i) % (SEED_MAX + 1) if step_seeds else s

    first = start + base_only_steps
    total = max(0, adv_steps - first)
    bar = tqdm(total=total, disable=True if disable_pbar is None and total == 0 else disable_pbar, leave=False)
    try:
        for i in range(first, adv_steps):
            step_in = dict(cur)
            step_in["noise_mask"] = inv_mask
            cur = base_sampler.sample_advanced(add_noise, at(seed, i), adv_steps, step_in, i, i + 1, True,
                                               noise=noise, disable_pbar=inner_pbar, **recovery)
            # upstream: add_noise is true only for the first per-step base call. The noise tensor is still
            # passed to every later one (quirk 6), but the recovery call, which gets no tensor, adds no noise.
            add_noise = False
            if noise_once:
                noise = None
            base_latent = None
            if restore_latent:
                cur = dict(cur)
                cur.pop("noise_mask", None)
                base_latent = cur
            for region_mask, sampler, region_seed in regions:
                step_in = dict(base_latent if restore_latent else cur)
                step_in["noise_mask"] = region_mask
                rs = seed if region_seed is None else region_seed
                cur = sampler.sample_advanced(False, at(rs, i), adv_steps, step_in, i, i + 1, True,
                                              disable_pbar=inner_pbar, **recovery)
                if restore_latent:
                    base_latent = dict(base_latent)
                    base_latent["samples"] = composite(base_latent["samples"], cur["samples"], region_mask)
                    cur = base_latent
            bar.update(1)
            if callback is not None:
                callback(i - first, cur["samples"], cur["samples"], total)
    finally:
        bar.close()
    # upstream ends with a base call from step adv_steps when restore_latent is off: a pure no-op (quirk 14)
    out = dict(cur)
    out.pop("noise_mask", None)
    if out["samples"] is latent["samples"]:
        out["samples"] = latent["samples"].clone()
    return out


class RegionalSampler:
    """Impact Pack's RegionalSampler: a base sampler and any number of regions denoise the latent together,
    one step at a time (base step on the area no region covers, then each region on its dilated mask)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX}),
                "seed_2nd": ("INT", {"default": 0, "min": 0, "max": SEED_MAX}),
                "seed_2nd_mode": (list(SEED_2ND_MODES),),
                "steps": ("INT", {"default": 20, "min": 1, "max": MAX_STEPS}),
                "base_only_steps": ("INT", {"default": 2, "min": 0, "max": MAX_STEPS}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                "samples": ("LATENT",),
                "base_sampler": ("KSAMPLER_ADVANCED",),
                "regional_prompts": ("REGIONAL_PROMPTS",),
                "overlap_factor": ("INT", {"default": 10, "min": 0, "max": 10000}),
                "restore_latent": ("BOOLEAN", {"default": True, "label_on": "enabled", "label_off": "disabled"}),
                "additional_mode": (list(RECOVERY_MODES), {"default": "ratio between"}),
                "additional_sampler": (list(ADDITIONAL_SAMPLERS),),
                "additional_sigma_ratio": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01}),
            },
            "optional": {
                "fix_soft_masks": ("BOOLEAN", {"default": False}),
                "noise_once": ("BOOLEAN", {"default": False}),
                "step_seeds": ("BOOLEAN", {"default": False}),
            },
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, seed, seed_2nd, seed_2nd_mode, steps, base_only_steps, denoise, samples, base_sampler,
             regional_prompts, overlap_factor, restore_latent, additional_mode, additional_sampler,
             additional_sigma_ratio, unique_id=None, *, fix_soft_masks=False, noise_once=False, step_seeds=False,
             callback=None, disable_pbar=None):
        """-> (LATENT,) without noise_mask. Opt-in fixes: fix_soft_masks (a region is every pixel with m > 0, so
        no pixel is left undenoised), noise_once, step_seeds (see `interleaved_sample`)."""
        seed = check_seed("seed", seed)
        seed_2nd = check_seed("seed_2nd", seed_2nd)
        check_choice("seed_2nd_mode", seed_2nd_mode, SEED_2ND_MODES)
        steps = check_int("steps", steps, 1, MAX_STEPS)
        base_only_steps = check_int("base_only_steps", base_only_steps, 0, MAX_STEPS)
        denoise = check_float("denoise", denoise, 0.0, 1.0)
        check_latent(samples, "samples")
        check_advanced_sampler(base_sampler, "base_sampler")
        items = normalize_regions(regional_prompts)
        overlap_factor = check_int("overlap_factor", overlap_factor, 0, 10000)
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
