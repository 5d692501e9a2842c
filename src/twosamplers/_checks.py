"""Argument checks and named limits shared by every entrance: each check raises a clear error naming the argument.

Entrances (the front door, node inputs, `Pass`, `Job`) validate here once; functions below them trust their
callers (their docstrings say what they expect). A failed check raises `BadValue` (a ValueError) or `BadType` (a
TypeError); both carry the argument's `name` and a `detail` that reads after it ("0 is out of range; accepted:
1 .. 10000"), so the job layer reports the same check as "base_steps: <detail>" (`job.spec.JobError`) while the
engine's message stays "steps=0 is out of range; ...".
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch

SEED_MAX = 2**64 - 1          # seeds are unsigned 64-bit, as ComfyUI's widgets
MAX_STEPS = 10000             # ComfyUI's KSampler widget maximum
MAX_CFG = 100.0               # ComfyUI's KSampler widget maximum
MAX_SIGMA_FACTOR = 10.0       # Impact's KSamplerAdvancedProvider widget maximum
MAX_OVERLAP = 10000           # Impact's overlap_factor widget maximum
MAX_IMAGE_SIDE = 16384        # ComfyUI's MAX_RESOLUTION
MAX_REGIONS = 64              # regions of one job (each is a sampler pass per step in the interleaved mode)
ASPECT_TOLERANCE = 0.01       # a mask whose aspect ratio differs more than this (relative) would be stretched
MODEL_PROTOCOL = ("apply_model", "model_sampling", "latent_format")


class _Bad:
    """A failed check: `name` (the argument) and `detail` (the problem, worded to follow the name)."""

    def __init__(self, name: str, detail: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.detail = detail


class BadValue(_Bad, ValueError):
    """An argument of the right type whose value is not accepted."""


class BadType(_Bad, TypeError):
    """An argument of the wrong type."""


def check_choice(name: str, value: object, valid: Iterable[str]) -> str:
    valid = list(valid)
    if not isinstance(value, str) or value not in valid:
        raise BadValue(name, f"unknown value {value!r}; valid: {', '.join(valid)}",
                       f"{name}={value!r} is not known; valid names: {', '.join(valid)}")
    return value


def check_int(name: str, value: object, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
            value = int(value)
        elif isinstance(value, numbers.Integral) and not isinstance(value, bool):  # numpy integers
            value = int(value)
        else:
            raise BadType(name, f"must be an integer, got {value!r}",
                          f"{name} must be an int, got {type(value).__name__}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise BadValue(name, f"{value} is out of range; accepted: {_range_text(lo, hi)}",
                       f"{name}={value} is out of range; accepted: {_range_text(lo, hi)}")
    return value


def check_float(name: str, value: object, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadType(name, f"must be a number, got {value!r}", f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise BadValue(name, f"{value:g} is out of range; accepted: {_range_text(lo, hi)}",
                       f"{name}={value} is out of range; accepted: {_range_text(lo, hi)}")
    return value


def check_str(name: str, value: object, optional: bool = False) -> str | None:
    """Text (None too when `optional`)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise BadType(name, f"must be a string, got {value!r}", f"{name} must be a string, got {type(value).__name__}")
    return value


def check_seed(name: str, value: object) -> int:
    return check_int(name, value, 0, SEED_MAX)


def check_tensor(name: str, value: object, ndims: Iterable[int] | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_complex():
        raise TypeError(f"{name} must be a real tensor, got {value.dtype}")
    if value.device.type == "meta":
        raise TypeError(f"{name} is on the 'meta' device (it has no data); give a tensor on the cpu or a GPU")
    if ndims is not None:
        ndims = tuple(ndims)
        if value.ndim not in ndims:
            want = " or ".join(f"{n}-D" for n in ndims)
            raise ValueError(f"{name} must be {want}, got shape {tuple(value.shape)}")
    return value


def check_finite(name: str, value: torch.Tensor) -> torch.Tensor:
    """Reject NaN and +-inf: sampling would silently turn them into an all-NaN result."""
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        n_nan = int(torch.isnan(value).sum())
        n_inf = int(torch.isinf(value).sum())
        raise ValueError(f"{name} contains {n_nan} NaN and {n_inf} infinite values; every value must be finite")
    return value


def check_model(name: str, model: object) -> object:
    """A twosamplers model: anything with the protocol attributes of `models/base.py`."""
    for attr in MODEL_PROTOCOL:
        if not hasattr(model, attr):
            raise TypeError(f"{name} must implement the twosamplers model protocol (missing {attr!r}); "
                            "wrap a plain network with twosamplers.models.NetworkModel")
    return model


def check_mask(mask: object, name: str = "mask") -> torch.Tensor:
    """A MASK: [H, W], [B, H, W] or [B, 1, H, W], values in [0, 1]; returned as float (the input is untouched)."""
    check_tensor(name, mask, ndims=(2, 3, 4))
    if mask.ndim == 4 and mask.shape[1] != 1:
        raise ValueError(f"{name} must be [H, W], [B, H, W] or [B, 1, H, W]; got shape {tuple(mask.shape)}")
    return check_mask_values(name, mask)


def check_mask_batch(mask: torch.Tensor, batch: int, name: str = "mask") -> None:
    """One mask for all images (batch 1) or one per image (batch == latent batch); anything else is an error."""
    b = mask.reshape((-1, mask.shape[-2], mask.shape[-1])).shape[0]
    if b not in (1, batch):
        raise ValueError(f"{name} has batch {b}, which cannot broadcast to the latent batch {batch} "
                         "(give one mask, or one mask per image)")


def same_aspect(a_hw: tuple[int, int], b_hw: tuple[int, int], tolerance: float = ASPECT_TOLERANCE) -> bool:
    """The one aspect rule of masks: (h, w) sizes whose width/height ratios differ by at most `tolerance`
    (relative) resize into each other without visible stretch (the front door, the job and the page use it)."""
    (ah, aw), (bh, bw) = (int(v) for v in a_hw), (int(v) for v in b_hw)
    return abs((aw / ah) / (bw / bh) - 1.0) <= tolerance


def check_mask_aspect(mask: torch.Tensor, latent_hw: tuple[int, int], name: str = "mask",
                      tolerance: float = ASPECT_TOLERANCE) -> None:
    """Raise ValueError when `mask`'s aspect ratio differs from the latent's (`same_aspect`): resizing it would
    stretch the shape. Callers that want the stretch skip this check."""
    mh, mw = int(mask.shape[-2]), int(mask.shape[-1])
    h, w = int(latent_hw[0]), int(latent_hw[1])
    if not same_aspect((mh, mw), (h, w), tolerance):
        raise ValueError(f"{name} is {mw}x{mh} but the latent is {w}x{h} (aspect ratios {mw / mh:.4g} vs "
                         f"{w / h:.4g}): resizing would stretch it; crop or pad the mask to the image's shape, "
                         "or pass stretch_mask=True to resize it anyway")


def check_mask_values(name: str, mask: torch.Tensor) -> torch.Tensor:
    """A mask is a float tensor with every value in [0, 1] (no NaN)."""
    check_tensor(name, mask)
    if not mask.is_floating_point():
        mask = mask.float()
    if mask.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(mask.shape)})")
    lo, hi = (float(v) for v in torch.aminmax(mask))  # NaN propagates into both: one pass over the mask
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{name} contains NaN; mask values must lie in [0, 1]")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} has values in [{lo:g}, {hi:g}]; mask values must lie in [0, 1]")
    return mask


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{lo} .. {hi}"
    if lo is not None:
        return f">= {lo}"
    return f"<= {hi}"


def check_bool(name: str, value) -> bool:
    """A real boolean (not 0/1, not a string such as "false")."""
    if not isinstance(value, bool):
        raise BadType(name, f"must be true or false, got {value!r}", f"{name} must be True or False, got {value!r}")
    return value


def check_feather_width(feather_px: float, width: int, height: int) -> None:
    """A feather (Gaussian sigma, image px) at most as wide as the image: its cost grows with it, and beyond the
    image it only flattens the mask. One rule and one message for the job and the front door."""
    side = max(int(width), int(height))
    if feather_px > side:
        raise BadValue("feather", f"{feather_px:g} is wider than the image ({width}x{height} px); accepted: 0 .. "
                       f"{side}", f"feather={feather_px:g} is wider than the image ({width}x{height} px); accepted: "
                       f"0 .. {side}")


MAX_JSON_DEPTH = 64  # workflows, jobs and settings nest a few levels; far deeper is hostile (recursion, memory)


def check_depth(value: object, what: str, max_depth: int = MAX_JSON_DEPTH) -> object:
    """Refuse JSON-like data (dicts and lists) nested deeper than `max_depth`, walking it without recursion, so
    that nothing later (copying, hashing, printing) recurses on untrusted structure."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, (list, tuple)):
            children = v
        else:
            continue
        if depth > max_depth:
            raise ValueError(f"{what} is nested more than {max_depth} levels deep")
        stack.extend((c, depth + 1) for c in children)
    return value


def loads_json(text: str | bytes, what: str, max_depth: int = MAX_JSON_DEPTH):
    """json.loads for untrusted text: a ValueError naming `what` for bad JSON and for nesting beyond `max_depth`
    (the decoder's own RecursionError included), never a traceback."""
    import json

    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply to be read (more than {max_depth} levels)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} is not valid JSON: {e}") from None
    return check_depth(data, what, max_depth)
