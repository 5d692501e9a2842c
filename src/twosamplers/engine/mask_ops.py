"""Operations on region masks for the two-sampler flows: inversion, grow/shrink, feather, Impact's region
dilation, bounding boxes with crop/paste, compositing, and the Differential-Diffusion threshold.

Contract: these functions trust their callers. A mask given to them is a valid MASK (a float tensor shaped
[H, W], [B, H, W] or [B, 1, H, W] with values in [0, 1], as `_checks.check_mask` guarantees) and numeric
arguments are in range; the entrances (the front door, the node classes, `Pass`/`Job`) validate user input
once. Every function returns a new tensor and never modifies its input; functions that change values keep
the input's shape unless they say otherwise. Distances (grow, feather) are in pixels of the tensor they are
applied to; `pixel_scale` converts image pixels to mask pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .noise_mask import fit_mask, repeat_to_batch_size

Box = tuple[int, int, int, int]  # (top, left, bottom, right), bottom/right exclusive


# ------------------------------------------------------------------------------------------------
# shapes
# ------------------------------------------------------------------------------------------------
def as_bchw(mask: torch.Tensor) -> torch.Tensor:
    """View a MASK as [B, 1, H, W]."""
    return mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))


def to_latent(mask: torch.Tensor, latent_shape) -> torch.Tensor:
    """The mask at the latent's resolution as [B, 1, h, w], resized like ComfyUI (bilinear, no antialias).
    Contract: the mask's batch is 1 or the latent's (checked at the entrance)."""
    b, _, h, w = (int(s) for s in latent_shape)
    return fit_mask(mask, (b, 1, h, w))


# ------------------------------------------------------------------------------------------------
# inversion
# ------------------------------------------------------------------------------------------------
INVERSIONS = ("binary", "soft")  # Impact's TwoSamplersForMask (binary) and the fix (soft)


def inverse(mask: torch.Tensor, inversion: str) -> torch.Tensor:
    """The base pass's area for `inversion` (one of INVERSIONS)."""
    return binary_inverse(mask) if inversion == "binary" else soft_inverse(mask)


def binary_inverse(mask: torch.Tensor) -> torch.Tensor:
    """Impact Pack's inverse: 1 where mask != 1.0, else 0 (exact compare at the mask's own resolution)."""
    return torch.where(mask != 1.0, torch.tensor(1.0, device=mask.device), torch.tensor(0.0, device=mask.device))


def soft_inverse(mask: torch.Tensor) -> torch.Tensor:
    """1 - mask: the complement that lets a soft mask blend both passes."""
    return 1.0 - mask


# ------------------------------------------------------------------------------------------------
# grow / shrink / feather
# ------------------------------------------------------------------------------------------------
def _pair(v):
    return (v[0], v[1]) if isinstance(v, (tuple, list)) else (v, v)


def grow(mask: torch.Tensor, pixels) -> torch.Tensor:
    """Grow (pixels > 0) or shrink (pixels < 0) a mask by a square (Chebyshev) distance.

    Grey-scale morphology: growing takes the maximum over a (2r+1)x(2r+1) window, shrinking the minimum, so
    binary masks stay binary and soft edges move as a whole. `pixels` may be a pair (vertical, horizontal).
    Pixels beyond the border count as "not in the mask" for growing and "in the mask" for shrinking, so a mask
    touching the border keeps touching it.
    """
    ry, rx = _pair(pixels)
    m = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
    if ry == 0 and rx == 0:
        return mask.clone()
    if (ry > 0 and rx < 0) or (ry < 0 and rx > 0):
        raise ValueError(f"pixels={pixels!r}: grow and shrink at once is not supported")
    shrink = ry < 0 or rx < 0
    # a window wider than the mask covers all of it: growing by more than the mask's side is the same as
    # growing by its side (exactly), so huge values cost no more than that
    ry, rx = min(abs(ry), m.shape[-2]), min(abs(rx), m.shape[-1])
    src = 1.0 - m if shrink else m
    out = F.max_pool2d(F.pad(src, (rx, rx, ry, ry), value=0.0), (2 * ry + 1, 2 * rx + 1), stride=1)
    if shrink:
        out = 1.0 - out
    return out.reshape(mask.shape)


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).float()


def feather(mask: torch.Tensor, sigma) -> torch.Tensor:
    """Gaussian blur of the mask with standard deviation `sigma` pixels (a pair for vertical, horizontal).

    The kernel is cut at 3 sigma; the border is replicated, so a mask touching the image edge is not faded
    there. The result is clamped to [0, 1].
    """
    sy, sx = _pair(sigma)
    m = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
    out = m
    if sy > 0:
        k = gaussian_kernel1d(sy).to(m)
        r = k.numel() // 2
        out = F.conv2d(F.pad(out, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    if sx > 0:
        k = gaussian_kernel1d(sx).to(m)
        r = k.numel() // 2
        out = F.conv2d(F.pad(out, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return out.clamp(0.0, 1.0).reshape(mask.shape)


def feather_outward(mask: torch.Tensor, sigma) -> torch.Tensor:
    """max(mask, feather(mask, sigma)): a soft ramp outside the mask that leaves its inside at full strength."""
    return torch.maximum(mask, feather(mask, sigma))


def pixel_scale(mask: torch.Tensor, latent_hw: tuple[int, int], downscale: int) -> tuple[float, float]:
    """Mask pixels per image pixel, per axis (1.0 for an image-resolution mask, 1/downscale for a
    latent-resolution one)."""
    h, w = latent_hw
    return mask.shape[-2] / (h * downscale), mask.shape[-1] / (w * downscale)


# ------------------------------------------------------------------------------------------------
# Impact Pack's region dilation (RegionalPrompt.get_mask_erosion)
# ------------------------------------------------------------------------------------------------
def dilate_region(mask: torch.Tensor, overlap_factor: int, threshold: str = "round") -> torch.Tensor:
    """The region mask RegionalSampler uses for a region: binarized, then grown by a box of SIZE
    `overlap_factor` at the mask's own resolution. Returns [B, 1, H, W] with values 0/1.

    threshold "round": as upstream, the mask is rounded half-to-even (0.5 -> 0) before and after the box
    filter; "nonzero": every pixel with m > 0 belongs to the region (closes upstream's soft-mask hole).
    The box: padding ceil((k-1)/2) then cut to H x W, so the region grows floor((k-1)/2) pixels up/left and
    ceil((k-1)/2) down/right (k = 10: 4 up/left, 5 down/right; k = 0 or 1: no growth; k = 2: 1 down/right).
    Unlike upstream, a non-square mask keeps its orientation and each image of a batch gets its own mask.
    """
    k = int(overlap_factor)
    m = as_bchw(mask)
    h, w = m.shape[-2:]
    if threshold == "round":
        binarize = torch.round
    elif threshold == "nonzero":
        def binarize(t):
            return (t > 0).to(t.dtype)
    else:
        raise ValueError(f"threshold={threshold!r} is not known; valid: round, nonzero")
    if k == 0:
        out = m
    else:
        # A box wider than twice the mask covers all of it, so k is capped there (the same result, at a bounded
        # cost). On a binary mask "box sum, clamped to 1" is the box maximum: two 1-D max-pools, O(k) per pixel.
        k = min(k, 2 * max(h, w) + 1)
        pad = math.ceil((k - 1) / 2)
        padded = F.pad(binarize(m), (pad, pad, pad, pad))
        out = F.max_pool2d(F.max_pool2d(padded, (k, 1), stride=1), (1, k), stride=1)[:, :, :h, :w]
    return binarize(out)


def region_union_inverse(masks: list[torch.Tensor]) -> torch.Tensor:
    """The base sampler's area in RegionalSampler: 1 where no region mask is > 0 (upstream: ceil, then OR).

    Masks of different resolutions (upstream crashes) are brought to the largest one by nearest-neighbour
    resizing of their binarized values. Returns [B, 1, H, W].
    """
    bins = [as_bchw(m) > 0 for m in masks]
    if not bins:
        raise ValueError("regions is empty: give at least one (mask, sampler) region")
    h = max(b.shape[-2] for b in bins)
    w = max(b.shape[-1] for b in bins)
    batch = max(b.shape[0] for b in bins)
    union = None
    for i, b in enumerate(bins):
        if b.shape[0] not in (1, batch):
            raise ValueError(f"regions[{i}] mask has batch {b.shape[0]}; region masks must have batch 1 or {batch}")
        if tuple(b.shape[-2:]) != (h, w):
            b = F.interpolate(b.float(), size=(h, w), mode="nearest") > 0
        union = b if union is None else (union | b)
    return (~union).float()


# ------------------------------------------------------------------------------------------------
# compositing (ComfyUI's LatentCompositeMasked at x = y = 0, same size)
# ------------------------------------------------------------------------------------------------
def composite(destination: torch.Tensor, source: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """mask * source + (1 - mask) * destination, with the mask resized bilinearly to the latent (a new tensor)."""
    source = repeat_to_batch_size(source.to(destination.device), destination.shape[0])
    if mask is None:
        return source.clone()
    m = mask.to(destination.device).reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
    m = F.interpolate(m, size=(source.shape[2], source.shape[3]), mode="bilinear")
    m = repeat_to_batch_size(m, source.shape[0])
    return m * source + (torch.ones_like(m) - m) * destination


# ------------------------------------------------------------------------------------------------
# bounding boxes, crop and paste
# ------------------------------------------------------------------------------------------------
def bbox(mask: torch.Tensor) -> Box | None:
    """(top, left, bottom, right) of the pixels > 0 over the whole batch; None for an all-zero mask."""
    m = as_bchw(mask)
    nz = (m > 0).any(dim=0).any(dim=0)
    if not bool(nz.any()):
        return None
    rows = torch.nonzero(nz.any(dim=1)).reshape(-1)
    cols = torch.nonzero(nz.any(dim=0)).reshape(-1)
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _expand(lo: int, hi: int, size: int, context: int, multiple: int) -> tuple[int, int]:
    lo, hi = max(0, lo - context), min(size, hi + context)
    length = hi - lo
    target = min(size, -(-length // multiple) * multiple)
    extra = target - length
    lo = lo - extra // 2
    hi = hi + (extra - extra // 2)
    if lo < 0:
        hi, lo = hi - lo, 0
    if hi > size:
        lo, hi = lo - (hi - size), size
    return max(0, lo), hi


def crop_box(box: Box, height: int, width: int, context: int = 0, multiple: int = 1) -> Box:
    """`box` grown by `context` pixels on each side, clipped to the image, then widened (centred where the
    border allows) so that each side is a multiple of `multiple` (or the whole image side)."""
    top, left, bottom, right = box
    top, bottom = _expand(top, bottom, height, context, multiple)
    left, right = _expand(left, right, width, context, multiple)
    return top, left, bottom, right


def crop(t: torch.Tensor, box: Box) -> torch.Tensor:
    top, left, bottom, right = box
    return t[..., top:bottom, left:right]


def paste(destination: torch.Tensor, source: torch.Tensor, box: Box) -> torch.Tensor:
    """A copy of `destination` with `source` written into `box`."""
    top, left, bottom, right = box
    out = destination.clone()
    out[..., top:bottom, left:right] = source
    return out


# ------------------------------------------------------------------------------------------------
# Differential Diffusion
# ------------------------------------------------------------------------------------------------
def differential_denoise_mask(sigma: torch.Tensor, denoise_mask: torch.Tensor, extra_options: dict) -> torch.Tensor:
    """ComfyUI's Differential Diffusion, as a `model_options["denoise_mask_function"]`.

    threshold = (t_cur - t_end) / (t_start - t_end) on the model's timesteps, with t_start the timestep of the
    schedule's first sigma and t_end that of max(sigma_min, last sigma); a pixel is denoised at this step when
    mask >= threshold. So grey m starts denoising once the schedule is a fraction 1 - m through: m is the
    pixel's denoise strength.
    """
    model = extra_options["model"]
    sigmas = extra_options["sigmas"]
    ms = model.model_sampling
    sigma_to = ms.sigma_min
    if sigmas[-1] > sigma_to:
        sigma_to = sigmas[-1]
    sigma_from = sigmas[0]
    ts_from = ms.timestep(torch.as_tensor(sigma_from).reshape(1).cpu())
    ts_to = ms.timestep(torch.as_tensor(sigma_to).reshape(1).cpu())
    ts_cur = ms.timestep(sigma.reshape(-1)[:1].cpu())
    if bool(ts_from == ts_to):
        threshold = torch.zeros(1)
    else:
        threshold = (ts_cur - ts_to) / (ts_from - ts_to)
    return (denoise_mask >= threshold.to(denoise_mask.device)).to(denoise_mask.dtype)


__all__ = [
    "INVERSIONS",
    "inverse",
    "as_bchw",
    "bbox",
    "binary_inverse",
    "composite",
    "crop",
    "crop_box",
    "differential_denoise_mask",
    "dilate_region",
    "feather",
    "feather_outward",
    "grow",
    "paste",
    "pixel_scale",
    "region_union_inverse",
    "soft_inverse",
    "to_latent",
]
