"""Regional conditioning: CONDITIONING entries with masks, areas, strengths and timestep ranges, as ComfyUI 0.30
applies them (`comfyui-sampling.md` s.10; the semantics in our words are in docs/engine.md).

Two stages:
1. Once per sampling run (`RegionalConditioning.__init__`), against the latent's size: percentage areas become
   latent pixels, masks are resized to the latent, "mask bounds" entries take their mask's bounding box as area,
   start/end percents become sigma thresholds, and each entry with an area gets a twin in the other list (with
   the prompt of that list's smallest entry enclosing the area) so that cond and uncond are cropped alike.
2. At every model call (`predict`): the entries whose sigma range holds the call's sigma are grouped by shape,
   one network call per group; each side's prediction is the sum of its entries' predictions times their
   per-pixel weights, divided by (the sum of the weights + 1e-37).

Entries without any of these options never come here: the KSampler's plain path handles them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .conditioning import CondBatch, CondEntry

FEATHER = 8  # plain areas fade in over min(FEATHER, size // 4) pixels on each inner edge
COUNT_FLOOR = 1e-37  # the weight sum starts here, so uncovered pixels give 0 instead of 0/0
MIN_BOUNDS = 8  # "mask bounds" areas are at least this many latent pixels high and wide


# ------------------------------------------------------------------------------------------------
# stage 1: resolving options against the latent
# ------------------------------------------------------------------------------------------------
def _f32(v: float) -> float:
    """The float32 value ComfyUI's comparisons of a float32 sigma against a Python threshold use."""
    return float(torch.tensor(v, dtype=torch.float32))


def mask_bounds(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(h, w, y, x) of the box around the nonzero pixels of any mask in the batch, at least 8 x 8;
    an all-zero mask gives (8, 8, 0, 0)."""
    covered = mask.abs().amax(dim=0) > 0
    if not bool(covered.any()):
        return (MIN_BOUNDS, MIN_BOUNDS, 0, 0)
    rows = covered.any(dim=1).nonzero().flatten()
    cols = covered.any(dim=0).nonzero().flatten()
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return (max(MIN_BOUNDS, y1 - y0 + 1), max(MIN_BOUNDS, x1 - x0 + 1), y0, x0)


def resolve_entry(e: CondEntry, hw: tuple[int, int], model_sampling, device: torch.device) -> CondEntry:
    """One entry with its area in latent pixels, its mask at latent size (float32, on `device`) and its time
    range as sigma thresholds (`sigma_start` >= sigma >= `sigma_end` means active)."""
    area = e.area
    if area is not None and area[0] == "percentage":
        fh, fw, fy, fx = area[1:]
        area = (max(1, round(fh * hw[0])), max(1, round(fw * hw[1])), round(fy * hw[0]), round(fx * hw[1]))
    mask = e.mask
    if mask is not None:
        mask = mask.to(device=device, dtype=torch.float32)
        if tuple(mask.shape[1:]) != tuple(hw):
            # plain bilinear, no antialiasing, aspect ratio not kept
            mask = F.interpolate(mask.unsqueeze(1), size=tuple(hw), mode="bilinear", align_corners=False).squeeze(1)
        if e.set_area_to_bounds:
            area = mask_bounds(mask)
    hi, lo = e.sigma_start, e.sigma_end
    if e.start_percent is not None:
        hi = model_sampling.percent_to_sigma(e.start_percent)
    if e.end_percent is not None:
        lo = model_sampling.percent_to_sigma(e.end_percent)
    return replace(e, area=area, mask=mask, start_percent=None, end_percent=None,
                   sigma_start=None if hi is None else _f32(hi), sigma_end=None if lo is None else _f32(lo))


def _inside(a: tuple, b: tuple) -> bool:
    """Area a lies within area b (both (h, w, y, x))."""
    return a[2] >= b[2] and a[3] >= b[3] and a[0] + a[2] <= b[0] + b[2] and a[1] + a[3] <= b[1] + b[3]


def _add_twin(target: list[CondEntry], c: CondEntry) -> None:
    """Give `target` a copy of area entry `c` carrying the prompt of target's smallest entry that encloses c's
    area (an area-less entry counts as enclosing everything but loses to any real enclosing area); nothing
    when target already has an entry with exactly that area as its best match, or nothing encloses it."""
    if c.area is None:
        return
    best = None
    for x in target:
        if x.area is not None:
            if _inside(c.area, x.area) and (best is None or best.area is None
                                            or math.prod(best.area[:2]) > math.prod(x.area[:2])):
                best = x
        elif best is None:
            best = x
    if best is None or best.area == c.area:
        return
    target.append(replace(c, cross_attn=best.cross_attn, extras=best.extras))


def add_area_twins(positive: list[CondEntry], negative: list[CondEntry]) -> tuple[list, list]:
    """Both lists with the twins of each other's area entries appended (positive's first, then negative's,
    which then include the twins just made)."""
    pos, neg = list(positive), list(negative)
    for c in pos:
        _add_twin(neg, c)
    for c in neg:
        _add_twin(pos, c)
    return pos, neg


# ------------------------------------------------------------------------------------------------
# per-entry weights
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Item:
    entry: CondEntry
    side: int  # 0 cond, 1 uncond
    area: tuple[int, int, int, int] | None  # clipped to the latent
    weight: torch.Tensor  # (B, C, h, w), or a 0-dim tensor for a plain full-image entry

    def active(self, sigma: float) -> bool:
        e = self.entry
        return not ((e.sigma_start is not None and sigma > e.sigma_start)
                    or (e.sigma_end is not None and sigma < e.sigma_end))


def clip_area(area: tuple, hw: tuple[int, int], where: str) -> tuple[int, int, int, int]:
    h, w, y, x = area
    h, w = min(hw[0] - y, h), min(hw[1] - x, w)
    if h <= 0 or w <= 0:
        raise ValueError(f"{where} area {area} (h, w, y, x) lies outside the {hw[0]}x{hw[1]} latent")
    return (h, w, y, x)


def entry_weight(e: CondEntry, area: tuple | None, shape: tuple[int, ...], device) -> torch.Tensor:
    """mask x mask_strength x strength over the entry's area; plain areas fade in at their inner edges."""
    b, c, hh, ww = shape
    if e.mask is not None:
        m = e.mask[:b]
        if area is not None:
            h, w, y, x = area
            m = m[:, y:y + h, x:x + w]
        m = m * e.mask_strength
        m = m.unsqueeze(1).repeat(b // m.shape[0], c, 1, 1)
        return m * e.strength
    if area is None:
        return torch.tensor(e.strength, dtype=torch.float32, device=device)
    h, w, y, x = area
    weight = torch.ones((b, c, h, w), dtype=torch.float32, device=device) * e.strength
    for dim, size, offset, full in ((2, h, y, hh), (3, w, x, ww)):
        ramp = min(FEATHER, size // 4)
        if offset != 0:
            for t in range(ramp):
                weight.narrow(dim, t, 1).mul_((1.0 / ramp) * (t + 1))
        if size + offset < full:
            for t in range(ramp):
                weight.narrow(dim, size - 1 - t, 1).mul_((1.0 / ramp) * (t + 1))
    return weight


def _extras_signature(extras: dict) -> tuple:
    """What must match for entries to share a network call: tensor shapes, plain values, other objects' identity
    (e.g. one ControlNet application)."""
    sig = []
    for k in sorted(extras):
        v = extras[k]
        if isinstance(v, torch.Tensor):
            sig.append((k, "tensor", tuple(v.shape[1:]), v.dtype))
        elif isinstance(v, (bool, int, float, str, type(None))):
            sig.append((k, "value", v))
        else:
            sig.append((k, "object", id(v)))
    return tuple(sig)


def crop_extras(e: CondEntry, area: tuple | None, hw: tuple[int, int]) -> CondEntry:
    """An area entry's latent-shaped extras (e.g. an inpainting model's extra input channels) cut to its area,
    as ComfyUI crops noise-shaped conditioning."""
    if area is None or not any(_latent_shaped(v, hw) for v in e.extras.values()):
        return e
    extras = {k: _view(v, area) if _latent_shaped(v, hw) else v for k, v in e.extras.items()}
    return replace(e, extras=extras)


def _latent_shaped(v, hw) -> bool:
    return isinstance(v, torch.Tensor) and v.ndim == 4 and tuple(v.shape[-2:]) == tuple(hw)


def _view(t: torch.Tensor, area: tuple | None) -> torch.Tensor:
    if area is None:
        return t
    h, w, y, x = area
    return t[:, :, y:y + h, x:x + w]


@dataclass(frozen=True)
class _Plan:
    calls: tuple  # ((item indices in batch order), CondBatch) per network call
    counts: tuple  # per side: 1e-37 + the sum of the active entries' weights


# ------------------------------------------------------------------------------------------------
# stage 2: one model call
# ------------------------------------------------------------------------------------------------
class RegionalConditioning:
    """Both sides' entries resolved against a latent of `shape`; `predict` evaluates them at one sigma.

    Entries of one shape (crop size, prompt shape, extras) form a group, evaluated in one network call of up to
    `max_batch` entries (None: all). The sums always add up in the same order (groups in order of their first
    entry, within a group last entry first, as ComfyUI batches), so how a group is split into calls never
    changes a bit.
    """

    def __init__(self, positive: list[CondEntry], negative: list[CondEntry], model, shape: tuple[int, ...],
                 *, max_batch: int | None = None) -> None:
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch={max_batch} is out of range; accepted: None or >= 1")
        self.model = model
        self.shape = tuple(int(s) for s in shape)
        self.max_batch = max_batch
        hw = self.shape[2:]
        device = model.device
        ms = model.model_sampling
        pos = [resolve_entry(e, hw, ms, device) for e in positive]
        neg = [resolve_entry(e, hw, ms, device) for e in negative]
        pos, neg = add_area_twins(pos, neg)
        items = []
        for side, entries, name in ((0, pos, "positive"), (1, neg, "negative")):
            for i, e in enumerate(entries):
                area = None if e.area is None else clip_area(e.area, hw, f"{name}[{i}]")
                items.append(_Item(crop_extras(e, area, hw), side, area, entry_weight(e, area, self.shape, device)))
        self.items = tuple(items)
        self.timed = any(it.entry.sigma_start is not None or it.entry.sigma_end is not None for it in items)
        self._keys = tuple(
            (it.area[:2] if it.area is not None else hw, tuple(it.entry.cross_attn.shape[1:]),
             it.entry.cross_attn.dtype, _extras_signature(it.entry.extras))
            for it in items)
        self._plans: dict[tuple, _Plan] = {}

    def _plan(self, active: tuple[int, ...], sides: int) -> _Plan:
        plan = self._plans.get((active, sides))
        if plan is not None:
            return plan
        b = self.shape[0]
        device, dtype = self.model.device, self.model.dtype
        calls = []
        order = []
        remaining = list(active)
        while remaining:
            key = self._keys[remaining[0]]
            members = [i for i in remaining if self._keys[i] == key]
            remaining = [i for i in remaining if self._keys[i] != key]
            members.reverse()  # ComfyUI batches a group last entry first; its sums then add in that order
            order.extend(members)
            step = self.max_batch or len(members)
            for j in range(0, len(members), step):
                chunk = tuple(members[j:j + step])
                calls.append((chunk, CondBatch([self.items[i].entry for i in chunk], b, device, dtype)))
        counts = [torch.ones(self.shape, dtype=torch.float32, device=device) * COUNT_FLOOR for _ in range(sides)]
        for i in order:
            it = self.items[i]
            _view(counts[it.side], it.area).add_(it.weight)
        plan = _Plan(tuple(calls), tuple(counts))
        self._plans[(active, sides)] = plan
        return plan

    def predict(self, x: torch.Tensor, sigma: torch.Tensor, with_uncond: bool):
        """-> (cond, uncond or None): each side's weighted mean of its active entries' x0 predictions."""
        if tuple(x.shape) != self.shape:
            raise ValueError(f"regional conditioning was prepared for a latent {self.shape}, got {tuple(x.shape)}")
        sides = 2 if with_uncond else 1
        s = float(sigma.reshape(-1)[0]) if self.timed else 0.0
        active = tuple(i for i, it in enumerate(self.items)
                       if it.side < sides and (not self.timed or it.active(s)))
        plan = self._plan(active, sides)
        outs = [torch.zeros_like(x) for _ in range(sides)]
        for members, cb in plan.calls:
            n = len(members)
            if n == 1:
                x_in, s_in = _view(x, self.items[members[0]].area).contiguous(), sigma
            else:
                x_in = torch.cat([_view(x, self.items[i].area) for i in members])
                s_in = torch.cat([sigma] * n)
            out = self.model.apply_model(x_in, s_in, cb.context, **cb.extras)
            for i, o in zip(members, out.chunk(n) if n > 1 else (out,), strict=True):
                it = self.items[i]
                _view(outs[it.side], it.area).add_(o * it.weight)
        for side in range(sides):
            outs[side].div_(plan.counts[side])
        return outs[0], (outs[1] if with_uncond else None)
