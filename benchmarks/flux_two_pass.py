"""Flux schnell, one pass vs TwoSamplersForMask (two passes on the same loaded model): time and peak memory.

    python benchmarks/flux_two_pass.py --size full --side 1024      # GPU: full-size Flux.1 schnell, random weights
    python benchmarks/flux_two_pass.py --checkpoint flux1-schnell.safetensors --side 1024   # a real file
    python benchmarks/flux_two_pass.py --size tiny --side 256        # CPU smoke run (the test models' size)

The issue's target, measured side by side in one process: 4 steps (euler, simple, cfg 1) at side x side;
two-pass time (base pass over the whole image + mask pass over a centred disc, each 4 steps) <= 2.05x the
one-pass time, and peak memory of the two-pass render within 5 % of the one-pass render (both samplers share
the one loaded transformer: nothing is loaded twice). Timing does not depend on the weights' values, so with no
checkpoint the transformer is Flux.1 schnell's full-size layout (19 double + 38 single blocks, width 3072,
12 B parameters, bf16 on the GPU) filled with seeded random numbers; the conditioning is random T5 / CLIP-L
output of the real widths. Text encoding and VAE decoding are not part of either figure (they are the same
for both). Runs are interleaved: one, two, one, two, ... (--repeats pairs after one warm-up pair); medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def random_schnell(size: str, device, dtype):
    """A Flux.1 schnell transformer of the full (or tiny) layout with seeded random weights, as a FlowModel."""
    from flow_models import flux_transformer  # the tests' builder: BFL layout

    from twosamplers.models.flow import FlowModel, build_transformer

    if size == "full":
        sd = _full_size_schnell(device, dtype)
    else:
        sd = flux_transformer("schnell", context_dim=4096, vec_dim=768)
    net, variant = build_transformer(sd, "flux", storage_dtype=dtype, compute_dtype=dtype, device=device)
    return FlowModel(net, "flux", variant, source=f"random {size} Flux.1 schnell")


def _full_size_schnell(device, dtype) -> dict:
    """Flux.1 schnell's tensors (BFL names and shapes), N(0, 1/fan_in), made on `device` directly."""
    h, mlp, g = 3072, 12288, torch.Generator(device=device).manual_seed(0)
    shapes = {"img_in": (h, 64), "time_in.in_layer": (h, 256), "time_in.out_layer": (h, h),
              "vector_in.in_layer": (h, 768), "vector_in.out_layer": (h, h), "txt_in": (h, 4096),
              "final_layer.linear": (64, h), "final_layer.adaLN_modulation.1": (2 * h, h)}
    for i in range(19):
        for s in ("img", "txt"):
            p = f"double_blocks.{i}.{s}_"
            shapes.update({p + "mod.lin": (6 * h, h), p + "attn.qkv": (3 * h, h), p + "attn.proj": (h, h),
                           p + "mlp.0": (mlp, h), p + "mlp.2": (h, mlp)})
    for i in range(38):
        p = f"single_blocks.{i}."
        shapes.update({p + "linear1": (3 * h + mlp, h), p + "linear2": (h, h + mlp), p + "modulation.lin": (3 * h, h)})
    sd = {}
    for name, (o, i) in shapes.items():
        sd[name + ".weight"] = torch.randn((o, i), generator=g, device=device, dtype=dtype) * i ** -0.5
        sd[name + ".bias"] = torch.zeros((o,), device=device, dtype=dtype)
    for i in range(19):
        for s in ("img", "txt"):
            for n in ("query_norm", "key_norm"):
                sd[f"double_blocks.{i}.{s}_attn.norm.{n}.scale"] = torch.ones(128, device=device, dtype=dtype)
    for i in range(38):
        for n in ("query_norm", "key_norm"):
            sd[f"single_blocks.{i}.norm.{n}.scale"] = torch.ones(128, device=device, dtype=dtype)
    return sd


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("full", "tiny"), default="full")
    ap.add_argument("--checkpoint", help="a real Flux schnell file (transformer alone or all-in-one)")
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)

    import twosamplers as ts

    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    t0 = time.perf_counter()
    if args.checkpoint:
        from twosamplers.models import load

        model = load(args.checkpoint, device=dev)
    else:
        model = random_schnell(args.size, dev, dtype)
    load_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(1)
    ctx = model.network.context_dim
    cond = [[torch.randn(1, 256, ctx, generator=g), {"pooled_output": torch.randn(1, 768, generator=g)}]]
    latent = ts.empty_latent(args.side, args.side, channels=16)
    yy, xx = torch.meshgrid(torch.arange(args.side), torch.arange(args.side), indexing="ij")
    mask = (((yy - args.side / 2) ** 2 + (xx - args.side / 2) ** 2) < (args.side / 4) ** 2).float()
    base = ts.SamplerSettings(model, cond, cond, seed=1, steps=args.steps, cfg=1.0, sampler_name="euler",
                              scheduler="simple")
    inside = ts.SamplerSettings(model, cond, cond, seed=2, steps=args.steps, cfg=1.0, sampler_name="euler",
                                scheduler="simple")

    def one() -> None:
        ts.common_ksampler(model, 1, args.steps, 1.0, "euler", "simple", cond, cond, latent, disable_pbar=True)

    def two() -> None:
        ts.two_samplers_for_mask(latent, mask, base, inside, disable_pbar=True)

    times: dict[str, list[float]] = {"one": [], "two": []}
    peaks: dict[str, list[int]] = {"one": [], "two": []}
    for r in range(args.repeats + 1):
        for name, fn in (("one", one), ("two", two)):
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            _sync(dev)
            t = time.perf_counter()
            fn()
            _sync(dev)
            if r:  # the first pair warms up
                times[name].append(time.perf_counter() - t)
                if dev.type == "cuda":
                    peaks[name].append(torch.cuda.max_memory_allocated(dev))
    res = {"device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
           "model": getattr(model, "source", ""), "side": args.side, "steps": args.steps, "load_s": round(load_s, 2),
           "one_pass_s": statistics.median(times["one"]), "two_pass_s": statistics.median(times["two"])}
    res["time_ratio"] = res["two_pass_s"] / res["one_pass_s"]
    if peaks["one"]:
        res["one_pass_peak_gb"] = max(peaks["one"]) / 1024**3
        res["two_pass_peak_gb"] = max(peaks["two"]) / 1024**3
        res["memory_ratio"] = res["two_pass_peak_gb"] / res["one_pass_peak_gb"]
    res["targets"] = {"time_ratio <= 2.05": res["time_ratio"] <= 2.05,
                      "memory_ratio <= 1.05": res.get("memory_ratio", 1.0) <= 1.05}
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
