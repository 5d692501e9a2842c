"""Argument checks and named limits shared by every entrance: each check raises a clear error naming the argument.

Entrances (the front door, node inputs, `Pass`, `Job`) validate here once; functions below them trust their
callers (their docstrings say what they expect).
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
MODEL_PROTOCOL = ("apply_model", "model_sampling", "latent_format")


def check_choice(name: str, value: object, valid: Iterable[str]) -> str:
    valid = list(valid)
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"{name}={value!r} is not known; valid names: {', '.join(valid)}")
    return value


def check_int(name: str, value: object, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
            value = int(value)
        elif isinstance(value, numbers.Integral) and not isinstance(value, bool):  # numpy integers
            value = int(value)
        else:
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name}={value} is out of range; accepted: {_range_text(lo, hi)}")
    return value


def check_float(name: str, value: object, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name}={value} is out of range; accepted: {_range_text(lo, hi)}")
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


def check_mask_aspect(mask: torch.Tensor, latent_hw: tuple[int, int], name: str = "mask",
                      tolerance: float = 0.01) -> None:
    """Raise ValueError when `mask`'s aspect ratio differs from the latent's by more than `tolerance`
    (relative): resizing it would stretch the shape. Callers that want the stretch skip this check."""
    mh, mw = int(mask.shape[-2]), int(mask.shape[-1])
    h, w = int(latent_hw[0]), int(latent_hw[1])
    if abs((mw / mh) / (w / h) - 1.0) > tolerance:
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
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


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
