"""Joint regional sampling: all regions as masked conditioning of ONE sampler.

The interleaved mode (RegionalSampler) runs a sampler per region, so N regions cost N + 1 network calls per
step over the whole image. Regions that share the base's model need none of that: each region's prompts become
entries weighted by the region's mask (ComfyUI's ConditioningSetMask semantics, `regional_cond.py`) and the
base prompts take the rest of the image, so every step is one evaluation of a conditioning list. Each region's
entries run on the region's box only (its mask bounds, rounded up to the model's multiple), so a region costs
its area, and regions whose boxes have one size share one network call.

Regions whose model (or any other per-model setting, e.g. LoRAs or ControlNets) differs from the base's cannot
be conditioning of one sampler; `joint_blockers` names them and the front door falls back to interleaving.
"""

from __future__ import annotations

import dataclasses

import torch

from .ksampler import common_ksampler
from .mask_tools import bbox, crop_box

# settings that are per-model (must equal the base's for joint sampling) vs. per-pass (the base's are used)
PASS_FIELDS = ("positive", "negative", "seed", "steps", "cfg", "sampler_name", "scheduler", "denoise")
IGNORED_IN_JOINT = ("cfg", "sampler_name", "scheduler")
_REGION_KEYS = ("mask", "mask_strength", "set_area_to_bounds", "area")


def joint_blockers(base, settings: list) -> list[str]:
    """Why these regions cannot be sampled jointly with `base` (empty when they can): a different model
    object, or any other per-model field (anything beyond prompts, seed and schedule) that differs."""
    reasons = []
    for j, s in enumerate(settings):
        if s.model is not base.model:
            reasons.append(f"regions[{j}] uses another model")
            continue
        for f in dataclasses.fields(s):
            if f.name not in PASS_FIELDS and f.name != "model" and getattr(s, f.name) != getattr(base, f.name):
                reasons.append(f"regions[{j}] has another {f.name}")
    return reasons


def ignored_settings(base, settings: list) -> list[str]:
    """Region settings that joint sampling replaces by the base's (one sampler, one cfg)."""
    out = []
    for j, s in enumerate(settings):
        for name in IGNORED_IN_JOINT:
            if getattr(s, name) != getattr(base, name):
                out.append(f"regions[{j}].{name}={getattr(s, name)!r}")
    return out


def _entries(cond) -> list:
    return [[cond, {}]] if isinstance(cond, torch.Tensor) else [list(e) for e in cond]


def _on_mask(cond, mask: torch.Tensor, area: tuple | None, name: str) -> list:
    """Every entry of `cond` restricted to `mask` (and run on `area` when given); other options kept."""
    out = []
    for i, (t, opts) in enumerate(_entries(cond)):
        clash = [k for k in _REGION_KEYS if opts.get(k) is not None and k != "mask_strength"]
        if clash:
            raise ValueError(f"{name}[{i}] already has {', '.join(clash)}: joint mode places each prompt on its "
                             "region itself; combine such conditioning with the conditioning nodes instead")
        new = {**opts, "mask": mask, "set_area_to_bounds": False, "mask_strength": 1.0}
        if area is not None:
            new["area"] = area
        out.append([t, new])
    return out


def joint_conditioning(base_positive, base_negative, regions: list, multiple: int = 8) -> tuple[list, list]:
    """(positive, negative) CONDITIONING for one sampler.

    regions: (weight, positive, negative) with weight a [B or 1, 1, h, w] latent-size mask in [0, 1]. A region's
    prompts act on its weight, run on its box (the weight's nonzero bounds widened to a multiple of `multiple`);
    the base prompts act on 1 - the union (max) of the weights, over the whole image. Empty regions are dropped;
    base entries are dropped where the regions cover everything.
    """
    pos, neg = [], []
    union = None
    for j, (weight, rpos, rneg) in enumerate(regions):
        box = bbox(weight)
        if box is None:
            continue
        h, w = weight.shape[-2:]
        top, left, bottom, right = crop_box(box, h, w, 0, multiple)
        area = (bottom - top, right - left, top, left)
        m = weight.reshape(-1, h, w)
        pos += _on_mask(rpos, m, area, f"regions[{j}].positive")
        neg += _on_mask(rneg, m, area, f"regions[{j}].negative")
        union = m if union is None else torch.maximum(union, m)
    if union is None:
        return _entries(base_positive), _entries(base_negative)
    rest = 1.0 - union
    if bool((rest > 0).any()):
        pos = _on_mask(base_positive, rest, None, "base.positive") + pos
        neg = _on_mask(base_negative, rest, None, "base.negative") + neg
    return pos, neg


def joint_sample(latent: dict, base, regions: list, *, multiple: int = 8, callback=None,
                 disable_pbar=None) -> dict:
    """Sample `latent` once with base's model, seed, schedule, cfg and sampler; `regions` as in
    `joint_conditioning` but with SamplerSettings: (weight, settings). Returns a LATENT without noise_mask."""
    pos, neg = joint_conditioning(base.positive, base.negative,
                                  [(w, s.positive, s.negative) for w, s in regions], multiple)
    start = {k: v for k, v in latent.items() if k != "noise_mask"}
    out = common_ksampler(base.model, base.seed, base.steps, base.cfg, base.sampler_name, base.scheduler, pos, neg,
                          start, denoise=base.denoise, callback=callback, disable_pbar=disable_pbar)
    out.pop("noise_mask", None)
    return out
