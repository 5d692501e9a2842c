"""Running a resizing function (a VAE decoder or encoder, an upscale network) over overlapping tiles and
blending the results, as ComfyUI's tiled VAE nodes and ImageUpscaleWithModel do.

`tiled_scale(samples, fn, tile_x, tile_y, overlap, scale, out_channels)`: per image of the batch, tile origins
step by (tile - overlap) from 0 while the origin is below size - overlap (one tile at 0 when the image fits),
each origin clamped so that at least `overlap` samples remain; each tile's output is weighted by a mask that
ramps linearly from 1/f to 1 over the first and last f = round(overlap * scale) output samples of each axis
(no ramp on an axis where f is at least the tile's size), and the sum of weighted tiles is divided by the sum
of weights. `scale` < 1 (an encoder) shrinks positions and sizes the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch


def _origins(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    return list(range(0, size - overlap, tile - overlap))


def _feather_mask(shape: list[int], feather: int) -> torch.Tensor:
    mask = torch.ones([1, 1, *shape])
    for d in (2, 3):
        if feather >= mask.shape[d]:
            continue
        for t in range(feather):
            a = (t + 1) / feather
            mask.narrow(d, t, 1).mul_(a)
            mask.narrow(d, mask.shape[d] - 1 - t, 1).mul_(a)
    return mask


def _tile_one(s: torch.Tensor, fn, tile: tuple[int, int], overlap: int, scale: float, out: torch.Tensor):
    """Blend the tiles of one image `s` (1, C, H, W) into `out` (1, C', H', W')."""
    weight = torch.zeros([1, 1, *out.shape[2:]])
    out.zero_()
    positions = [_origins(s.shape[d + 2], tile[d], overlap) for d in range(2)]
    for it in itertools.product(*positions):
        part, origin = s, []
        for d in range(2):
            pos = max(0, min(s.shape[d + 2] - overlap, it[d]))
            length = min(tile[d], s.shape[d + 2] - pos)
            part = part.narrow(d + 2, pos, length)
            origin.append(round(pos * scale))
        res = fn(part).to(out.device, torch.float32)
        mask = _feather_mask(list(res.shape[2:]), round(overlap * scale))
        o, w = out, weight
        for d in range(2):
            n = min(res.shape[d + 2], o.shape[d + 2] - origin[d])
            o = o.narrow(d + 2, origin[d], n)
            w = w.narrow(d + 2, origin[d], n)
            res = res.narrow(d + 2, 0, n)
            mask = mask.narrow(d + 2, 0, n)
        o.add_(res * mask)
        w.add_(mask)
    out.div_(weight)


@torch.no_grad()
def tiled_scale(samples: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], tile_x: int = 64,
                tile_y: int = 64, overlap: int = 8, scale: float = 4.0, out_channels: int = 3) -> torch.Tensor:
    """fn applied to overlapping (tile_y, tile_x) tiles of (B, C, H, W) `samples`, blended (module doc);
    -> (B, out_channels, round(H * scale), round(W * scale)) float32 on the CPU."""
    tile = (tile_y, tile_x)
    size = [round(samples.shape[2] * scale), round(samples.shape[3] * scale)]
    output = torch.empty([samples.shape[0], out_channels, *size])
    for b in range(samples.shape[0]):
        s = samples[b:b + 1]
        if s.shape[2] <= tile[0] and s.shape[3] <= tile[1]:
            output[b:b + 1] = fn(s).to(output.device, torch.float32)
            continue
        _tile_one(s, fn, tile, overlap, scale, output[b:b + 1])
    return output


__all__ = ["tiled_scale"]
