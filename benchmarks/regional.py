#!/usr/bin/env python
"""Time per image of regional sampling with 1, 2 and 4 regions: interleaved mode vs joint mode, side by side.

    python benchmarks/regional.py [--steps 10] [--repeats 2] [--size 48] [--region 64]

Two networks, both run through `regional_sample`: a tiny SD-style diffusers UNet (block_out_channels 32/64,
cross-attention at the lower level as in SDXL; tests/test_sd_backend.py builds the same kind) and the 3-layer
conv network of crop_to_mask.py.
Latent 1x4xSxS (S = --size, image 8*S px), euler / normal, cfg 7, the base prompt plus N regions: squares of
--region image px centred in the four quadrants (N = 1: the top-left one), each with its own prompt.
Interleaved: one sampler per region and one for the base, every step over the whole image (RegionalSampler).
Joint: one sampler; region prompts as masked conditioning run on their boxes (rounded up to 8 latent px), all
region boxes in one network call. Timings alternate the modes; best of --repeats after a 2-step warm-up.
Time is the process's CPU time (one torch thread: the compute itself), which other load on a shared machine
barely changes; the wall time of the same runs is printed too.
Targets (issue 12): joint with 4 regions <= 2x joint with 1 region; joint >= 2.5x faster than interleaved
with 4 regions.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings

import torch
from crop_to_mask import ConvNet

import twosamplers as ts
from twosamplers.models import NetworkModel


def tiny_sd_unet() -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    from twosamplers.models.sd import UNetAdapter

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                attention_head_dim=8, cross_attention_dim=64, norm_num_groups=32)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return UNetAdapter(unet.eval().requires_grad_(False), sdxl=False)


def regions_for(n: int, image: int, side: int, prompt_dim: int, model, gen) -> list:
    out = []
    for k in range(n):
        qy, qx = divmod(k, 2)
        cy, cx = image // 4 + qy * image // 2, image // 4 + qx * image // 2
        m = torch.zeros(image, image)
        m[cy - side // 2:cy + side // 2, cx - side // 2:cx + side // 2] = 1.0
        s = ts.SamplerSettings(model, torch.randn(1, 77, prompt_dim, generator=gen),
                               torch.zeros(1, 77, prompt_dim), seed=k + 2, steps=1, cfg=7.0)
        out.append((m, s))
    return out


def bench(name: str, model, prompt_dim: int, args) -> dict:
    gen = torch.Generator().manual_seed(1)
    image = args.size * 8
    base = ts.SamplerSettings(model, torch.randn(1, 77, prompt_dim, generator=gen), torch.zeros(1, 77, prompt_dim),
                              seed=1, steps=args.steps, cfg=7.0)
    warm = dataclasses.replace(base, steps=2)
    latent = {"samples": torch.zeros(1, 4, args.size, args.size)}
    all_regions = regions_for(4, image, args.region, prompt_dim, model, gen)
    result = {}
    for n in (1, 2, 4):
        regions = all_regions[:n]
        times = {"interleaved": [], "joint": []}
        for mode in times:  # warm-up: new shapes pick their kernels
            ts.regional_sample(latent, warm, regions, mode=mode, disable_pbar=True)
        for _ in range(args.repeats):
            for mode in times:
                t0, c0 = time.perf_counter(), time.process_time()
                ts.regional_sample(latent, base, regions, mode=mode, disable_pbar=True)
                times[mode].append((time.process_time() - c0, time.perf_counter() - t0))
        result[n] = {m: min(v) for m, v in times.items()}
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", type=int, default=48, help="latent side (default 48: a 384 px image)")
    ap.add_argument("--region", type=int, default=64, help="region square side in image px (default 64)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # joint mode notes that region cfg/seed are the base's

    box = -(-(args.region // 8 + 6) // 8) * 8  # region + feather ramp, rounded up to 8 latent px
    print(f"latent 1x4x{args.size}x{args.size}, {args.steps} euler steps, cfg 7, regions {args.region} px squares "
          f"(joint box about {box}x{box} latent px = {box * box / args.size ** 2:.0%} of the image each); "
          f"torch threads {torch.get_num_threads()}; best of {args.repeats}")
    print(f"{'network':<10} {'regions':>7} {'interleaved cpu s':>18} {'joint cpu s':>12} {'speedup':>8} "
          f"{'joint / joint(1)':>17} {'wall s (inter / joint)':>23}")
    ok = True
    for name, net, dim in (("tiny-sd", tiny_sd_unet(), 64), ("conv", ConvNet(160), 8)):
        r = bench(name, NetworkModel(net), dim, args)
        for n in (1, 2, 4):
            (inter, inter_w), (joint, joint_w) = r[n]["interleaved"], r[n]["joint"]
            print(f"{name:<10} {n:>7} {inter:18.3f} {joint:12.3f} {inter / joint:7.2f}x "
                  f"{joint / r[1]['joint'][0]:16.2f}x {inter_w:11.2f} / {joint_w:.2f}")
        scale, speed = r[4]["joint"][0] / r[1]["joint"][0], r[4]["interleaved"][0] / r[4]["joint"][0]
        met = scale <= 2.0 and speed >= 2.5
        ok &= met
        print(f"{name}: joint 4 / joint 1 = {scale:.2f} (target <= 2), interleaved / joint at 4 regions = "
              f"{speed:.2f}x (target >= 2.5): {'met' if met else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
