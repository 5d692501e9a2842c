"""CONDITIONING in ComfyUI's shape ([[tensor(1, L, D), {extras}], ...]) and batching it for one network call.

Each entry is evaluated and the entries' predictions are averaged, weighted by their "strength" (default 1),
which is what ComfyUI does for plain (area-less) conditioning. Extras (e.g. "pooled_output") are handed to
the model as keyword arguments. Area, mask, timestep-range and ControlNet entries are not supported yet and
raise NotImplementedError instead of being silently ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

# start_percent / end_percent: ComfyUI's ConditioningSetTimestepRange (dropping them silently gives wrong numbers)
UNSUPPORTED_KEYS = ("area", "mask", "timestep_start", "timestep_end", "start_percent", "end_percent", "gligen",
                    "hooks")


@dataclass(frozen=True)
class CondEntry:
    cross_attn: torch.Tensor  # (1 or B, L, D)
    extras: dict = field(default_factory=dict)
    strength: float = 1.0


def normalize_conditioning(cond: object, name: str) -> list[CondEntry]:
    """Accept a bare tensor (B, L, D) or ComfyUI CONDITIONING; return validated entries (inputs untouched)."""
    if isinstance(cond, torch.Tensor):
        cond = [[cond, {}]]
    if not isinstance(cond, (list, tuple)) or len(cond) == 0:
        raise TypeError(f"{name} must be a CONDITIONING list [[tensor(1, L, D), {{}}], ...] or a tensor (B, L, D)")
    entries = []
    for i, item in enumerate(cond):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise TypeError(f"{name}[{i}] must be a pair [tensor, dict], got {type(item).__name__}")
        tensor, extras = item
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3 or not tensor.is_floating_point():
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{name}[{i}][0] must be a float tensor (B, L, D), got {shape}")
        if not isinstance(extras, dict):
            raise TypeError(f"{name}[{i}][1] must be a dict, got {type(extras).__name__}")
        bad = [k for k in UNSUPPORTED_KEYS if k in extras]
        if bad:
            raise NotImplementedError(f"{name}[{i}] uses {', '.join(bad)}: not supported yet")
        extras = dict(extras)
        strength = float(extras.pop("strength", 1.0))
        entries.append(CondEntry(tensor, extras, strength))
    return entries


def check_batch(entries: list[CondEntry], batch: int, name: str) -> None:
    for i, e in enumerate(entries):
        b = e.cross_attn.shape[0]
        if b not in (1, batch):
            raise ValueError(f"{name}[{i}] has batch {b}, which cannot broadcast to the latent batch {batch}")


def _repeat_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    return t if t.shape[0] == batch else t.expand(batch, *t.shape[1:])


class CondBatch:
    """Several entries stacked for one network call: contexts padded to a common length (tokens repeated,
    as ComfyUI does, which leaves attention unchanged), extras concatenated."""

    def __init__(self, entries: list[CondEntry], batch: int, device: torch.device, dtype: torch.dtype) -> None:
        self.n = len(entries)
        lengths = [e.cross_attn.shape[1] for e in entries]
        target = math.lcm(*lengths)
        ctx = []
        for e in entries:
            c = e.cross_attn.to(device=device, dtype=dtype)
            if c.shape[1] != target:
                c = c.repeat(1, target // c.shape[1], 1)
            ctx.append(_repeat_batch(c, batch))
        self.context = torch.cat(ctx, dim=0)
        self.extras: dict = {}
        keys = set(entries[0].extras)
        if any(set(e.extras) != keys for e in entries):
            raise ValueError("conditioning entries carry different extras and cannot be batched")
        if "control" in keys:  # ControlNet hints are broadcast per entry (models/control.py)
            self.extras["batched_number"] = self.n
        for k in keys:
            vals = [e.extras[k] for e in entries]
            if all(isinstance(v, torch.Tensor) for v in vals):
                self.extras[k] = torch.cat([_repeat_batch(v.to(device), batch) for v in vals], dim=0)
            elif all(v == vals[0] for v in vals):
                self.extras[k] = vals[0]
            else:
                raise ValueError(f"conditioning extra {k!r} differs between entries and cannot be batched")
