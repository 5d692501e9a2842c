"""Noise masks: resizing a MASK to a latent the way ComfyUI does, plus validation.

`prepare_mask` follows ComfyUI exactly (bilinear, no antialias, no rounding; channels repeated; the batch
tiled or cut to the latent's). `check_mask` is what our public entry points call first: it rejects
NaN, values outside [0, 1] and wrong ranks with an error that names the argument.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._checks import check_mask_values, check_tensor


def check_mask(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """Validate a MASK ([H, W], [B, H, W] or [B, 1, H, W], float in [0, 1]); returns it as float."""
    check_tensor(name, mask, ndims=(2, 3, 4))
    if mask.ndim == 4 and mask.shape[1] != 1:
        raise ValueError(f"{name} must be [H, W], [B, H, W] or [B, 1, H, W]; got shape {tuple(mask.shape)}")
    return check_mask_values(name, mask)


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


def repeat_to_batch_size(tensor: torch.Tensor, batch_size: int, dim: int = 0) -> torch.Tensor:
    """Tile along `dim` ceil(batch_size / n) times and cut to batch_size (ComfyUI's rule)."""
    n = tensor.shape[dim]
    if n > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if n < batch_size:
        reps = [1] * tensor.ndim
        reps[dim] = math.ceil(batch_size / n)
        return tensor.repeat(reps).narrow(dim, 0, batch_size)
    return tensor


def prepare_mask(mask: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Resize `mask` to a latent of `shape` (B, C, H, W): ComfyUI's noise-mask preparation.

    The mask is reshaped to (-1, 1, h, w), resized bilinearly (align_corners False, no antialias,
    no rounding), repeated over channels and tiled or cut to the batch size. The input is not modified.
    """
    mask = check_mask(mask)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4:
        raise ValueError(f"shape must be a 4-D latent shape (B, C, H, W), got {shape}")
    return resize_mask(mask, shape)


def resize_mask(mask: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """`prepare_mask` without the checks, for callers that validated the mask already."""
    m = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
    m = F.interpolate(m, size=shape[2:], mode="bilinear")
    if m.shape[1] < shape[1]:
        m = m.repeat((1, shape[1], 1, 1))[:, : shape[1]]
    return repeat_to_batch_size(m, shape[0])
