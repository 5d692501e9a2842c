"""CONDITIONING in ComfyUI's shape ([[tensor(1, L, D), {options}], ...]): parsing, validation and batching.

Each entry is a prompt tensor plus options. The options ComfyUI's conditioning nodes set are parsed into
`CondEntry` fields: "strength", "mask" / "mask_strength" / "set_area_to_bounds", "area", "start_percent" /
"end_percent" (and the sigma thresholds "timestep_start" / "timestep_end" ComfyUI derives from them). What they
mean at each model call lives in `regional_cond.py`. Any other option is a model input (e.g. SDXL's
"pooled_output") handed to the model as a keyword argument, except the ComfyUI options this engine does not
implement (GLIGEN, hooks, ...): those raise NotImplementedError instead of being silently ignored. ControlNets
come through `Pass.controlnets`: models/control.py attaches them to the entries under "control"; inpainting
models read "concat_latent_image" / "concat_mask" (models/inpaint.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from numbers import Integral

import torch

from .._checks import check_float, check_mask_values

# ComfyUI options that change the model call in ways this engine does not implement. ("control" is ours:
# Pass.controlnets attaches models/control.py's ControlApply objects under it.)
UNSUPPORTED_KEYS = (
    "control_apply_to_uncond", "hooks", "default", "concat_image", "noise_augmentation",
    "reference_latents", "attention_mask", "clip_vision_output", "transformer_options", "uuid",
)


class _NegativePlaceholder:
    """Impact Pack's "Negative Cond Placeholder" (ImpactNegativeConditioningPlaceholder): no negative at all."""

    def __repr__(self) -> str:
        return "NegativePlaceholder"


NEGATIVE_PLACEHOLDER = _NegativePlaceholder()
PLACEHOLDER_SAMPLERS = ("Impact Pack's samplers (ImpactKSamplerBasicPipe, KSamplerProvider, KSamplerAdvancedProvider "
                        "and what they feed)")


def without_negative_placeholder(positive, negative, cfg: float) -> tuple[object, object, float]:
    """(positive, negative, cfg) as Impact's samplers use them: given the negative placeholder, they sample with
    the positive alone (ComfyUI's basic guider: no unconditional prediction, so cfg 1) and set their cfg as the
    positive's "guidance" (Flux dev's guidance embedding; models without one ignore it). Anything else is
    returned unchanged."""
    if negative is not NEGATIVE_PLACEHOLDER:
        return positive, negative, cfg
    if positive is NEGATIVE_PLACEHOLDER:
        raise TypeError("positive is Impact's negative placeholder: it only stands in for a negative")
    if not isinstance(positive, (list, tuple)) or not positive:
        return positive, positive, 1.0  # not a CONDITIONING list: the usual check names the problem
    guided = [[item[0], {**item[1], "guidance": float(cfg)}]
              if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], dict) else item
              for item in positive]
    return guided, guided, 1.0


_REGIONAL_KEYS = ("strength", "mask", "mask_strength", "set_area_to_bounds", "area", "start_percent", "end_percent",
                  "timestep_start", "timestep_end")


@dataclass(frozen=True)
class CondEntry:
    """One CONDITIONING entry. `mask` is (B, H, W) at any resolution (resized to the latent when sampling);
    `area` is (h, w, y, x) in latent pixels or ("percentage", h, w, y, x) as fractions of the latent;
    `sigma_start` / `sigma_end` are ComfyUI's "timestep_start" / "timestep_end" (sigmas, despite the name)."""

    cross_attn: torch.Tensor  # (1 or B, L, D)
    extras: dict = field(default_factory=dict)
    strength: float = 1.0
    mask: torch.Tensor | None = None
    mask_strength: float = 1.0
    set_area_to_bounds: bool = False
    area: tuple | None = None
    start_percent: float | None = None
    end_percent: float | None = None
    sigma_start: float | None = None
    sigma_end: float | None = None

    @property
    def regional(self) -> bool:
        """True when the entry needs the per-pixel / per-sigma evaluation (anything beyond a plain strength)."""
        return (self.mask is not None or self.area is not None or self.start_percent is not None
                or self.end_percent is not None or self.sigma_start is not None or self.sigma_end is not None)


def normalize_conditioning(cond: object, name: str) -> list[CondEntry]:
    """Accept a bare tensor (B, L, D) or ComfyUI CONDITIONING; return validated entries (inputs untouched)."""
    if isinstance(cond, torch.Tensor):
        cond = [[cond, {}]]
    if cond is NEGATIVE_PLACEHOLDER:
        raise TypeError(f"{name} is Impact's negative placeholder (ImpactNegativeConditioningPlaceholder): only "
                        f"{PLACEHOLDER_SAMPLERS} take it (ComfyUI's own samplers fail on it); give this sampler a "
                        "conditioning (ConditioningZeroOut of the positive), or use a BasicGuider")
    if not isinstance(cond, (list, tuple)) or len(cond) == 0:
        raise TypeError(f"{name} must be a CONDITIONING list [[tensor(1, L, D), {{}}], ...] or a tensor (B, L, D)")
    entries = []
    for i, item in enumerate(cond):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise TypeError(f"{name}[{i}] must be a pair [tensor, dict], got {type(item).__name__}")
        tensor, options = item
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3 or not tensor.is_floating_point():
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{name}[{i}][0] must be a float tensor (B, L, D), got {shape}")
        if not isinstance(options, dict):
            raise TypeError(f"{name}[{i}][1] must be a dict, got {type(options).__name__}")
        entries.append(_parse_entry(tensor, options, f"{name}[{i}]"))
    return entries


def _parse_entry(tensor: torch.Tensor, options: dict, where: str) -> CondEntry:
    bad = [k for k in UNSUPPORTED_KEYS if k in options]
    if bad:
        raise NotImplementedError(f"{where} uses {', '.join(bad)}: not supported by this engine")
    extras = {k: v for k, v in options.items() if k not in _REGIONAL_KEYS}
    kw: dict = {}
    if "strength" in options:
        kw["strength"] = check_float(f"{where}['strength']", options["strength"], 0.0)
    if "mask_strength" in options:
        kw["mask_strength"] = check_float(f"{where}['mask_strength']", options["mask_strength"], 0.0)
    if "set_area_to_bounds" in options:
        v = options["set_area_to_bounds"]
        if not isinstance(v, bool):
            raise TypeError(f"{where}['set_area_to_bounds'] must be a bool, got {type(v).__name__}")
        kw["set_area_to_bounds"] = v
    if options.get("mask") is not None:
        kw["mask"] = _parse_mask(options["mask"], f"{where}['mask']")
    if options.get("area") is not None:
        kw["area"] = _parse_area(options["area"], f"{where}['area']")
    for key, attr in (("start_percent", "start_percent"), ("end_percent", "end_percent")):
        if options.get(key) is not None:
            kw[attr] = check_float(f"{where}[{key!r}]", options[key], 0.0, 1.0)
    for key, attr in (("timestep_start", "sigma_start"), ("timestep_end", "sigma_end")):
        if options.get(key) is not None:
            kw[attr] = check_float(f"{where}[{key!r}]", options[key], 0.0)
    return CondEntry(tensor, extras, **kw)


def _parse_mask(mask: object, where: str) -> torch.Tensor:
    """A MASK [H, W], [B, H, W] or [B, 1, H, W] in [0, 1] -> (B, H, W) float (a view or copy; never modified)."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3, 4) or (mask.ndim == 4 and mask.shape[1] != 1):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{where} must be a mask tensor [H, W], [B, H, W] or [B, 1, H, W], got {shape}")
    mask = check_mask_values(where, mask)
    return mask.reshape(-1, mask.shape[-2], mask.shape[-1])


def _parse_area(area: object, where: str) -> tuple:
    """(h, w, y, x) ints in latent pixels, or ("percentage", h, w, y, x) fractions in [0, 1]."""
    if not isinstance(area, (tuple, list)):
        raise TypeError(f"{where} must be a tuple (h, w, y, x) or ('percentage', h, w, y, x), "
                        f"got {type(area).__name__}")
    if len(area) == 5 and area[0] == "percentage":
        return ("percentage",) + tuple(check_float(f"{where}[{j}]", v, 0.0, 1.0) for j, v in enumerate(area[1:], 1))
    if len(area) != 4:
        raise ValueError(f"{where} must have 4 numbers (h, w, y, x) in latent pixels (2-D latents only), got {area!r}")
    out = []
    for j, v in enumerate(area):
        if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_floating_point():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, Integral):
            raise TypeError(f"{where}[{j}] must be an int (latent pixels), got {v!r}")
        if v < (1 if j < 2 else 0):
            raise ValueError(f"{where}[{j}]={v} is out of range; accepted: >= {1 if j < 2 else 0}")
        out.append(int(v))
    return tuple(out)


def share_with_uncond(positive: list[CondEntry], negative: list[CondEntry], key: str,
                      wanted=lambda value: True) -> list[CondEntry]:
    """ComfyUI's sampling-time rule for ControlNets applied with the older ControlNetApply (their "apply to
    uncond" flag: `wanted`) and for GLIGEN: when no negative entry without an area has `key`, the values of the
    positive entries without an area (in order) are given to the negative entries without an area, the x-th
    value to the (x mod n)-th of them (a later value replacing an earlier one). Returns the new negative list."""
    values = [e.extras[key] for e in positive if e.area is None and e.extras.get(key) is not None
              and wanted(e.extras[key])]
    plain = [i for i, e in enumerate(negative) if e.area is None]
    if not values or not plain or any(negative[i].extras.get(key) is not None for i in plain):
        return negative
    out = list(negative)
    for x, value in enumerate(values):
        i = plain[x % len(plain)]
        out[i] = replace(negative[i], extras={**negative[i].extras, key: value})
    return out


def check_batch(entries: list[CondEntry], batch: int, name: str) -> None:
    """Prompt tensors and masks come as one for the whole batch or one per image."""
    for i, e in enumerate(entries):
        b = e.cross_attn.shape[0]
        if b not in (1, batch):
            raise ValueError(f"{name}[{i}] has batch {b}, which cannot broadcast to the latent batch {batch}")
        if e.mask is not None and e.mask.shape[0] not in (1, batch):
            raise ValueError(f"{name}[{i}]['mask'] has batch {e.mask.shape[0]}, which cannot broadcast to the "
                             f"latent batch {batch} (give one mask, or one per image)")


def _same(a, b) -> bool:
    """Whether two extras are the same value (objects holding tensors, e.g. GLIGEN boxes, compare by identity)."""
    if a is b:
        return True
    try:
        return bool(a == b)
    except (RuntimeError, TypeError, ValueError):
        return False


def _repeat_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    return t if t.shape[0] == batch else t.expand(batch, *t.shape[1:])


class CondBatch:
    """Several entries stacked for one network call: contexts padded to a common length (tokens repeated,
    as ComfyUI does for cross-attention UNets, which leaves their attention unchanged), extras concatenated.

    `repeat_context=False` (joint-attention transformers, SD3 and Flux, where ComfyUI batches only contexts of
    equal length: repeating text tokens would change their weight against the image tokens) raises ValueError
    on different lengths instead, so that the caller makes one call per entry."""

    def __init__(self, entries: list[CondEntry], batch: int, device: torch.device, dtype: torch.dtype,
                 repeat_context: bool = True) -> None:
        self.n = len(entries)
        lengths = [e.cross_attn.shape[1] for e in entries]
        if not repeat_context and len(set(lengths)) > 1:
            raise ValueError(f"contexts of {sorted(set(lengths))} tokens cannot be batched for this model")
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
            elif all(_same(v, vals[0]) for v in vals):
                self.extras[k] = vals[0]
            else:
                raise ValueError(f"conditioning extra {k!r} differs between entries and cannot be batched")
