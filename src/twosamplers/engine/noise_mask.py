"""ComfyUI's noise-mask preparation: a MASK resized to a latent's shape (bilinear, no antialias, no rounding;
channels repeated; the batch tiled or cut to the latent's), and ComfyUI's batch-repeat rule.

`prepare_mask` is the checked entrance; `fit_mask` is the same resize for callers that validated the mask
already (the KSampler core, `imageio.resize_mask`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._checks import check_mask


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
    """Resize `mask` to a latent of `shape` (B, C, H, W): ComfyUI's noise-mask preparation (checked).

    The mask is reshaped to (-1, 1, h, w), resized bilinearly (align_corners False, no antialias,
    no rounding), repeated over channels and tiled or cut to the batch size. The input is not modified.
    """
    mask = check_mask(mask)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4:
        raise ValueError(f"shape must be a 4-D latent shape (B, C, H, W), got {shape}")
    return fit_mask(mask, shape)


def fit_mask(mask: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """`prepare_mask` without the checks. Contract: `mask` is a valid float MASK, `shape` a 4-tuple of ints."""
    m = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
    m = F.interpolate(m, size=shape[2:], mode="bilinear")
    if m.shape[1] < shape[1]:
        m = m.repeat((1, shape[1], 1, 1))[:, : shape[1]]
    return repeat_to_batch_size(m, shape[0])


__all__ = ["fit_mask", "prepare_mask", "repeat_to_batch_size"]
