"""The joint regional algorithm: all regions as masked conditioning of ONE pass.

The interleaved algorithm (`regional.py`, RegionalSampler) runs a sampler per region, so N regions cost
N + 1 network evaluations of the whole image per step. Regions that share the base's model need none of that:
each region's prompts become conditioning entries weighted by the region's mask (ComfyUI's ConditioningSetMask
semantics, `regional_cond.py`), the base prompts take the rest of the image, and one `run_pass` samples it all.
A region's entries run on the region's box only (the nonzero bounds of its weight, widened to the model's
multiple), so a region costs its area, and regions whose boxes have one size share one network call.

Regions whose model (or any other per-model `Pass` field: LoRAs, ControlNets) differs from the base's
cannot be conditioning of one pass: `joint_blockers` names them and the front door falls back to interleaving.
The base's ControlNets (shared by every region) act on every entry, each region seeing its box of the hint.
Contract: the caller validated everything (passes are `Pass` values, weights are latent-size masks
[B or 1, 1, h, w] in [0, 1]).
"""

from __future__ import annotations

import dataclasses

import torch

from ..models.control import attach_controlnets
from .conditioning import CondEntry
from .mask_ops import bbox, crop_box
from .passes import Pass, run_pass

# Pass fields that are not per-model: the prompts, the settings joint sampling takes from the base (seeding
# included: comfyui_version), the per-call fields the front door refuses for regions anyway, and `net` (made
# from model + loras, compared through those). Any other field that differs (loras, controlnets, ...) blocks
# joint mode.
_NOT_PER_MODEL = frozenset({
    "positive", "negative", "cond_pos", "cond_neg", "name", "seed", "steps", "cfg", "sampler_name", "scheduler",
    "denoise", "start_step", "last_step", "force_full_denoise", "disable_noise", "sigmas", "sigma_factor",
    "model_options", "sampler_options", "comfyui_version", "net"})
IGNORED_IN_JOINT = ("cfg", "sampler_name", "scheduler")


def _same(a, b) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except (RuntimeError, TypeError, ValueError):  # e.g. tensors of several elements
        return False


def _same_controlnets(a: tuple, b: tuple) -> bool:
    """The same networks (loaded once per file), hints and windows, in the same order."""
    return len(a) == len(b) and all(
        x.source is y.source and (x.image is y.image or torch.equal(x.image, y.image))
        and (x.strength, x.start_percent, x.end_percent) == (y.strength, y.start_percent, y.end_percent)
        for x, y in zip(a, b, strict=True))


def joint_blockers(base: Pass, regions: list[Pass]) -> list[str]:
    """Why these region passes cannot be sampled jointly with `base` (empty when they can)."""
    reasons = []
    for j, s in enumerate(regions):
        if s.model is not base.model:
            reasons.append(f"regions[{j}] uses another model")
            continue
        for f in dataclasses.fields(s):
            if f.name in _NOT_PER_MODEL or f.name == "model":
                continue
            same = _same_controlnets if f.name == "controlnets" else _same
            if not same(getattr(s, f.name), getattr(base, f.name, None)):
                reasons.append(f"regions[{j}] has another {f.name}")
    return reasons


def ignored_settings(base: Pass, regions: list[Pass]) -> list[str]:
    """Region settings that joint sampling replaces by the base's (one sampler, one cfg)."""
    return [f"regions[{j}].{name}={getattr(s, name)!r}" for j, s in enumerate(regions) for name in IGNORED_IN_JOINT
            if getattr(s, name) != getattr(base, name)]


def _on_mask(entries: list[CondEntry], mask: torch.Tensor, area: tuple | None, name: str) -> list[CondEntry]:
    """Every entry restricted to `mask` (B or 1, h, w), and run on `area` (h, w, y, x) when given."""
    out = []
    for i, e in enumerate(entries):
        if e.mask is not None or e.area is not None:
            raise ValueError(f"{name}[{i}] already has a mask or area: joint mode places each prompt on its region "
                             "itself; combine such conditioning with the conditioning nodes instead")
        out.append(dataclasses.replace(e, mask=mask, mask_strength=1.0, set_area_to_bounds=False, area=area))
    return out


def joint_conditioning(base_positive: list[CondEntry], base_negative: list[CondEntry], regions: list,
                       multiple: int = 8, controlnets: tuple = (), downscale: int = 8,
                       ) -> tuple[list[CondEntry], list[CondEntry]]:
    """(positive, negative) entries for one pass.

    regions: (weight [B or 1, 1, h, w], positive entries, negative entries). A region's prompts act with its
    weight and run on its box (the weight's nonzero bounds widened to a multiple of `multiple`, then to the
    largest region box when that costs at most SAME_BOX_SLACK x their own areas, so that they share one network
    call); the base prompts act with 1 - the union (max) of the weights over the whole image. Empty regions
    are dropped, and the base entries too where the regions cover everything. `controlnets` (loaded) are
    attached to every entry, a region's cut to its box (`downscale` image px per latent px).
    """
    kept = [(j, r) for j, r in enumerate(regions) if bbox(r[0]) is not None]
    if not kept:
        return attach_controlnets(list(base_positive), list(base_negative), controlnets)
    h, w = kept[0][1][0].shape[-2:]
    boxes = _common_size([crop_box(bbox(r[0]), h, w, 0, multiple) for _, r in kept], h, w)
    pos, neg, union = [], [], None
    for (j, (weight, rpos, rneg)), (top, left, bottom, right) in zip(kept, boxes, strict=True):
        area = (bottom - top, right - left, top, left)
        m = weight.reshape(-1, h, w)
        rpos, rneg = attach_controlnets(rpos, rneg, tuple(c.cropped((top, left, bottom, right), (h, w), downscale)
                                                          for c in controlnets))
        pos += _on_mask(rpos, m, area, f"regions[{j}].positive")
        neg += _on_mask(rneg, m, area, f"regions[{j}].negative")
        union = m if union is None else torch.maximum(union, m)
    rest = 1.0 - union
    if bool((rest > 0).any()):
        base_positive, base_negative = attach_controlnets(base_positive, base_negative, controlnets)
        pos = _on_mask(base_positive, rest, None, "base.positive") + pos
        neg = _on_mask(base_negative, rest, None, "base.negative") + neg
    return pos, neg


SAME_BOX_SLACK = 1.5


def _widen(lo: int, hi: int, size: int, target: int) -> tuple[int, int]:
    """[lo, hi) widened to `target` pixels, centred where the border allows."""
    extra = target - (hi - lo)
    lo, hi = lo - extra // 2, hi + extra - extra // 2
    if lo < 0:
        lo, hi = 0, hi - lo
    if hi > size:
        lo, hi = lo - (hi - size), size
    return lo, hi


def _common_size(boxes: list, h: int, w: int) -> list:
    """The boxes all widened to the largest height and width, unless that costs more than SAME_BOX_SLACK x."""
    th = max(b - t for t, _, b, _ in boxes)
    tw = max(r - left for _, left, _, r in boxes)
    own = sum((b - t) * (r - left) for t, left, b, r in boxes)
    if len(boxes) * th * tw > SAME_BOX_SLACK * own:
        return boxes
    out = []
    for t, left, b, r in boxes:
        t, b = _widen(t, b, h, th)
        left, r = _widen(left, r, w, tw)
        out.append((t, left, b, r))
    return out


def joint_sample(samples: torch.Tensor, base: Pass, regions: list[tuple[torch.Tensor, Pass]], *, multiple: int = 8,
                 batch_index=None, callback=None, disable_pbar=None) -> torch.Tensor:
    """One pass with base's model, seed, schedule, cfg and sampler over `samples`; each region (weight, pass)
    contributes its prompts on its weight. Returns the new samples."""
    pos, neg = joint_conditioning(base.cond_pos, base.cond_neg, [(w, s.cond_pos, s.cond_neg) for w, s in regions],
                                  multiple, base.controlnets, int(base.model.latent_format.downscale))
    p = dataclasses.replace(base, positive=pos, negative=neg, controlnets=())  # attached above, crop-aware
    return run_pass(p, samples, batch_index=batch_index, callback=callback, disable_pbar=disable_pbar)


__all__ = ["IGNORED_IN_JOINT", "ignored_settings", "joint_blockers", "joint_conditioning", "joint_sample"]
