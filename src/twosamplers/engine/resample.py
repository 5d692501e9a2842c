"""Resizing (B, C, H, W) tensors as ComfyUI's latent and image scalers do: torch interpolation, Pillow's Lanczos
on 8-bit values, and "bislerp" (spherical interpolation of the channel vectors between neighbouring samples,
one axis after the other), with an optional centre crop to the new aspect ratio first.

The formulas follow ComfyUI 0.30's behaviour (its LatentUpscale / ImageScale numbers), written from their
description: the source position of every output sample is where bilinear interpolation (half-pixel centres)
of the index ramp puts it; its lower neighbour is that position truncated, its upper neighbour the same for
the ramp shifted by one (the last index repeated), and the weight is the fractional part.
"""

from __future__ import annotations

import numpy as np
import torch

RESIZE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp", "lanczos")


def center_crop_to_aspect(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The centred part of `samples` with the aspect ratio width:height (rounded to whole pixels)."""
    old_w, old_h = samples.shape[-1], samples.shape[-2]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return samples.narrow(-2, y, old_h - 2 * y).narrow(-1, x, old_w - 2 * x)


def _slerp_rows(a: torch.Tensor, b: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Row-wise slerp of (N, C) vectors a -> b by weights r (N, 1); magnitudes interpolated linearly. Nearly
    parallel rows keep a, opposite rows fall back to a linear blend, zero rows count as direction zero."""
    c = a.shape[-1]
    na = torch.norm(a, dim=-1, keepdim=True)
    nb = torch.norm(b, dim=-1, keepdim=True)
    ua = a / na
    ub = b / nb
    ua[na.expand(-1, c) == 0.0] = 0.0
    ub[nb.expand(-1, c) == 0.0] = 0.0
    dot = (ua * ub).sum(1)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    out = (torch.sin((1.0 - r.squeeze(1)) * omega) / so).unsqueeze(1) * ua \
        + (torch.sin(r.squeeze(1) * omega) / so).unsqueeze(1) * ub
    out *= (na * (1.0 - r) + nb * r).expand(-1, c)
    same = dot > 1 - 1e-5
    out[same] = a[same]
    opposite = dot < 1e-5 - 1
    out[opposite] = (a * (1.0 - r) + b * r)[opposite]
    return out


def _neighbours(n_old: int, n_new: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weights, lower index, upper index), each of length n_new, for resampling an axis of n_old samples."""
    ramp = torch.arange(n_old, dtype=torch.float32, device=device).reshape(1, 1, 1, -1)
    pos = torch.nn.functional.interpolate(ramp, size=(1, n_new), mode="bilinear")
    weights = pos - pos.floor()
    shifted = ramp + 1
    shifted[..., -1] -= 1
    upper = torch.nn.functional.interpolate(shifted, size=(1, n_new), mode="bilinear")
    return weights.reshape(-1), pos.to(torch.int64).reshape(-1), upper.to(torch.int64).reshape(-1)


def _bislerp_axis(x: torch.Tensor, n_new: int, dim: int) -> torch.Tensor:
    """Slerp-resample (B, C, H, W) along dim 2 (height) or 3 (width)."""
    w, lo, hi = _neighbours(x.shape[dim], n_new, x.device)
    c = x.shape[1]
    a = x.index_select(dim, lo).movedim(1, -1)
    b = x.index_select(dim, hi).movedim(1, -1)
    shape = list(a.shape)
    view = [1] * len(shape)
    view[dim - 1] = n_new  # the channel axis moved to the end, so the resized axis sits one place earlier
    r = w.reshape(view[:-1]).expand(shape[:-1]).reshape(-1, 1)
    out = _slerp_rows(a.reshape(-1, c), b.reshape(-1, c), r)
    return out.reshape(shape).movedim(-1, 1)


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize (B, C, H, W) to (B, C, height, width) by slerping channel vectors, width first, then height."""
    dtype = samples.dtype
    x = samples.float()
    x = _bislerp_axis(x, width, 3)
    x = _bislerp_axis(x, height, 2)
    return x.to(dtype)


def lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pillow's Lanczos on 8-bit values (255 * x clipped and truncated), back to [0, 1] floats."""
    out = []
    for img in samples:
        arr = np.clip(255.0 * img.movedim(0, -1).detach().cpu().float().numpy(), 0, 255).astype(np.uint8)
        from PIL import Image

        pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        pil = pil.resize((width, height), resample=Image.Resampling.LANCZOS)
        t = torch.from_numpy(np.array(pil).astype(np.float32) / 255.0)
        out.append(t.reshape(height, width, -1).movedim(-1, 0))
    return torch.stack(out).to(samples.device, samples.dtype)


def resize(samples: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """(B, C, H, W) -> (B, C, height, width); crop "center" first cuts the input to the new aspect ratio."""
    if crop == "center":
        samples = center_crop_to_aspect(samples, width, height)
    if method == "bislerp":
        return bislerp(samples, width, height)
    if method == "lanczos":
        return lanczos(samples, width, height)
    return torch.nn.functional.interpolate(samples, size=(height, width), mode=method)


__all__ = ["RESIZE_METHODS", "bislerp", "center_crop_to_aspect", "lanczos", "resize"]
