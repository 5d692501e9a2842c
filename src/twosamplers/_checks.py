"""Argument checks shared by the public functions: each raises a clear error naming the argument."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch

SEED_MAX = 2**64 - 1


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
