"""Cost of switching a LoRA in and out of one shared network, against one UNet call, side by side.

An SD1.5-sized UNet (diffusers' UNet2DConditionModel with SD1.5's config, random weights) and a rank-32 LoRA
in kohya's format on every linear / 1x1 layer of its transformer blocks (attention q/k/v/out, feed-forward,
proj_in/out: what kohya's default LoRA trains). Measured in one run on the same device:
- one UNet call at 512x512 (latent 64x64, batch 1, 77-token context, inference mode),
- patch + restore of the LoRA (`twosamplers.models.lora.patched` entered and left),
- the extra memory the patch holds while active (the originals of the patched tensors) against the size of
  those tensors, and the resident-set growth of the process across a patch.
Targets (issue 11): switching < one UNet call; extra memory <= the patched tensors.

    python benchmarks/lora_switch.py [--device cpu|cuda] [--dtype fp32|fp16] [--repeats 3] [--rank 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    except OSError:
        return 0


def sd15_unet(device, dtype):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64)
    unet = unet.to_empty(device=device)
    if dtype != torch.float32:
        unet = unet.to(dtype)
    g = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():
        for p in unet.parameters():
            p.copy_((torch.randn(p.shape, generator=g) * 0.02).to(dtype))
    return unet.eval().requires_grad_(False)


def kohya_lora(unet, rank: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    sd = {}
    for name, m in unet.named_modules():
        if ".attentions." not in name or not isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        w = m.weight
        if w.ndim == 4 and w.shape[2:] != (1, 1):
            continue
        extra = [1, 1] if w.ndim == 4 else []
        key = "lora_unet_" + name.replace(".", "_")
        sd[key + ".lora_down.weight"] = (torch.randn(rank, w.shape[1], *extra, generator=g) * 0.01).half()
        sd[key + ".lora_up.weight"] = (torch.randn(w.shape[0], rank, *extra, generator=g) * 0.01).half()
        sd[key + ".alpha"] = torch.tensor(float(rank) / 2)
    return sd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["fp32", "fp16"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rank", type=int, default=32)
    args = ap.parse_args(argv)
    from safetensors.torch import save_file

    from twosamplers.models import lora as L

    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[args.dtype or ("fp16" if device.type == "cuda" else "fp32")]
    print(f"device {device}, dtype {dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    t0 = time.perf_counter()
    unet = sd15_unet(device, dtype)
    n_params = sum(p.numel() for p in unet.parameters())
    print(f"SD1.5-sized UNet: {n_params / 1e6:.0f} M parameters, built in {time.perf_counter() - t0:.1f} s")
    model = SimpleNamespace(unet=unet, text_encoders=[], family="sd1")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rank32.safetensors"
        save_file(kohya_lora(unet, args.rank), str(path))
        t0 = time.perf_counter()
        f = L.load_lora(model, path)
        load_s = time.perf_counter() - t0
    lora_bytes = sum(t.numel() * t.element_size() for a in f.patches.values() for t in a.tensors.values())
    params = dict(unet.named_parameters())
    patched_bytes = sum(params[L._param_of(t)].numel() * params[L._param_of(t)].element_size() for t in f.patches)
    print(f"LoRA rank {args.rank}: {len(f.patches)} patched tensors, {patched_bytes / 2**20:.0f} MiB of weights "
          f"({patched_bytes / (n_params * unet.dtype.itemsize) * 100:.0f}% of the UNet); file tensors "
          f"{lora_bytes / 2**20:.1f} MiB; read + mapped in {load_s:.2f} s")

    x = torch.randn(1, 4, 64, 64, device=device, dtype=dtype)
    t = torch.tensor([500.0], device=device)
    ctx = torch.randn(1, 77, 768, device=device, dtype=dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def unet_call():
        with torch.inference_mode():
            unet(x, t, encoder_hidden_states=ctx, return_dict=False)
        sync()

    def switch():
        with L.patched(model, [(f, 1.0, 1.0)]):
            sync()
        sync()

    unet_call()  # warm-up
    switch()
    call_s, switch_s = [], []
    for _ in range(args.repeats):  # interleaved, so that machine noise hits both alike
        t0 = time.perf_counter()
        unet_call()
        call_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        switch()
        switch_s.append(time.perf_counter() - t0)
    call, sw = statistics.median(call_s), statistics.median(switch_s)
    print(f"one UNet call 512x512 batch 1: median {call:.3f} s   (runs {', '.join(f'{v:.3f}' for v in call_s)})")
    print(f"patch + restore:               median {sw:.3f} s   (runs {', '.join(f'{v:.3f}' for v in switch_s)})")
    print(f"switch / UNet call = {sw / call:.2f}  (target < 1: {'met' if sw < call else 'NOT met'})")

    before = L._ACTIVE.copy()
    rss0 = rss_bytes()
    with L.patched(model, [(f, 1.0, 1.0)]):
        held = sum(v.numel() * v.element_size() for key, entry in L._ACTIVE.items() if key not in before
                   for v in entry[2].values())
        rss1 = rss_bytes()
    rss2 = rss_bytes()
    ok = "met" if held <= patched_bytes else "NOT met"
    print(f"held while patched: {held / 2**20:.0f} MiB of originals (on the CPU) vs {patched_bytes / 2**20:.0f} MiB "
          f"patched tensors (ratio {held / patched_bytes:.2f}, target <= 1: {ok})")
    mib = 2**20
    print(f"process RSS: +{(rss1 - rss0) / mib:.0f} MiB while patched, +{(rss2 - rss0) / mib:.0f} MiB after restore")
    return 0 if sw < call and held <= patched_bytes else 1


if __name__ == "__main__":
    sys.exit(main())
