#!/usr/bin/env python
"""Mask-pass time with crop_to_mask vs without, for masks covering 5%, 20% and 50% of a 1x4x96x96 latent.

    python benchmarks/crop_to_mask.py [--steps 10] [--repeats 3]

The network is a small conv net (3 layers of 3x3 convolutions, width 160, cost proportional to the area):
one call at 1x4x64x64 takes about 20 ms on one thread of the 2-core CPU (the script prints what it measures here). Each
measurement is the mask pass alone (the base pass is done once beforehand and given denoise 0 in the timed
calls), euler / normal, cfg 8 (uncond + cond in one batch-2 call per step), crop_context 8 latent px rounded to
a multiple of 8 (the defaults). Timings alternate crop / no crop and the best of the repeats is reported (robust
to other load on a shared CPU) after one untimed warm-up of each shape; crop and no crop run in the same
process, side by side. One torch thread by default: on a shared 2-core machine a second thread mostly waits.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import twosamplers as ts
from twosamplers.engine import mask_ops as mt
from twosamplers.models import NetworkModel


class ConvNet(torch.nn.Module):
    """eps = conv(silu(conv(silu(conv(x) + t)))) + 0.1 * mean(context): three 3x3 convs, width `width`."""

    def __init__(self, width: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c1 = torch.nn.Conv2d(4, width, 3, padding=1)
        self.c2 = torch.nn.Conv2d(width, width, 3, padding=1)
        self.c3 = torch.nn.Conv2d(width, 4, 3, padding=1)
        with torch.no_grad():
            for c in (self.c1, self.c2, self.c3):
                c.weight.copy_(torch.randn(c.weight.shape, generator=g) * (1.0 / (c.weight[0].numel() ** 0.5)))
                c.bias.zero_()
        self.requires_grad_(False)

    def forward(self, x, timesteps, context, **kwargs):
        t = (timesteps.float() / 1000.0).view(-1, 1, 1, 1)
        h = torch.nn.functional.silu(self.c1(x) + t)
        h = torch.nn.functional.silu(self.c2(h))
        return self.c3(h) + 0.1 * context.float().mean(dim=(1, 2)).view(-1, 1, 1, 1)


def time_call(net: torch.nn.Module, shape, n: int = 5) -> float:
    x = torch.randn(shape)
    t = torch.full((shape[0],), 500.0)
    c = torch.zeros(shape[0], 3, 8)
    with torch.no_grad():
        net(x, t, c)
        runs = []
        for _ in range(n):
            t0 = time.perf_counter()
            net(x, t, c)
            runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--width", type=int, default=160, help="conv width (160: ~20 ms/call at 64x64, 1 thread)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)

    width = args.width
    net = ConvNet(width)
    call_s = min(time_call(net, (1, 4, 64, 64)) for _ in range(3))
    model = NetworkModel(net)
    print(f"network: 3 conv layers, width {width}: {call_s * 1e3:.1f} ms/call at 1x4x64x64, "
          f"{time_call(net, (2, 4, 96, 96)) * 1e3:.1f} ms/call at 2x4x96x96 (cfg batch); torch threads "
          f"{torch.get_num_threads()}")

    g = torch.Generator().manual_seed(1)
    pos, neg = [[torch.randn(1, 3, 8, generator=g), {}]], [[torch.randn(1, 3, 8, generator=g), {}]]
    size = 96
    latent = {"samples": torch.randn(1, 4, size, size, generator=g)}
    base = ts.SamplerSettings(model, pos, neg, seed=1, steps=args.steps, cfg=8.0)
    base_out = ts.two_samplers_for_mask(latent, torch.zeros(size, size), base, base, disable_pbar=True)
    skip_base = ts.SamplerSettings(model, pos, neg, seed=1, steps=args.steps, cfg=8.0, denoise=0.0)
    inside = ts.SamplerSettings(model, neg, pos, seed=2, steps=args.steps, cfg=8.0)

    print(f"mask pass, {args.steps} euler steps, 1x4x{size}x{size} latent, crop_context 8, multiple 8; "
          f"best of {args.repeats}")
    print(f"{'mask':>6} {'crop box':>10} {'no crop (s)':>12} {'crop (s)':>9} {'speedup':>8} {'max |diff|':>11}")
    ratios = {}
    for frac in (0.05, 0.20, 0.50):
        side = round((frac * size * size) ** 0.5)
        top = (size - side) // 2
        mask = torch.zeros(size, size)
        mask[top:top + side, top:top + side] = 1.0
        box = mt.crop_box(mt.bbox(mask), size, size, 8, 8)
        times = {False: [], True: []}
        outs = {}
        for crop in (False, True):  # warm-up (kernel selection for new shapes)
            ts.two_samplers_for_mask(base_out, mask, skip_base, inside, crop_to_mask=crop, disable_pbar=True)
        for _ in range(args.repeats):
            for crop in (False, True):
                t0 = time.perf_counter()
                outs[crop] = ts.two_samplers_for_mask(base_out, mask, skip_base, inside, crop_to_mask=crop,
                                                      disable_pbar=True)["samples"]
                times[crop].append(time.perf_counter() - t0)
        full, cropped = min(times[False]), min(times[True])
        ratios[frac] = full / cropped
        diff = float((outs[True] - outs[False]).abs().max())
        print(f"{mask.mean().item() * 100:5.1f}% {box[2] - box[0]:>4}x{box[3] - box[1]:<5} {full:12.3f} {cropped:9.3f} "
              f"{ratios[frac]:7.2f}x {diff:11.2e}")
    print("speedup: " + ", ".join(f"{int(f * 100)}% -> {r:.2f}x" for f, r in ratios.items())
          + f"  (target >= 4x at 5%: {'met' if ratios[0.05] >= 4 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
