"""Time per sampling step through the SD backend vs the bare diffusers UNet forward on the same input.

    python benchmarks/sd_step.py --size tiny            # tiny UNet, CPU (or CUDA when available)
    python benchmarks/sd_step.py --size sd15            # SD1.5-size UNet with random weights (GPU advised)

Three figures, each the median over --iters repetitions after --warmup:
- unet:  unet(x_in, t, encoder_hidden_states=ctx) at batch 2 (cond + uncond, as cfg runs it);
- apply: SDModel.apply_model(x, sigma, ctx) at batch 2 (NetworkModel's eps math + timestep + adapter);
- step:  one full KSampler step (euler, cfg 7, 1 latent -> batch-2 network call): per-step times from
  common_ksampler's callback (synced), against bare UNet calls timed the same way;
- engine_only: the same KSampler steps with a one-multiply stub network: the engine's own cost per step;
- controlnet: apply_model with one ControlNet (a copy of the UNet's encoder, as ControlNetModel.from_unet makes
  it) attached to the batch, against plain apply_model, interleaved. Target: <= 1.6x at SD1.5 size.
Engine overhead = engine_only / unet (and (step - bare step) / bare step, noisier). Target: <= 2 % at SD1.5
size on a GPU. Measurements are interleaved and medians reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def build(size: str, device, dtype):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from twosamplers.models.sd import SDModel

    torch.manual_seed(0)
    if size == "tiny":
        unet = UNet2DConditionModel(
            sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=8, cross_attention_dim=64, norm_num_groups=32)
        latent_hw, ctx_dim = 8, 64
    else:  # the SD1.5 UNet: diffusers' defaults are SD1.5's apart from the context width
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        latent_hw, ctx_dim = 64, 768
    vae = AutoencoderKL(block_out_channels=(32, 32, 32, 32), layers_per_block=1, norm_num_groups=32,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    unet = unet.to(device=device, dtype=dtype).eval().requires_grad_(False)
    vae = vae.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
    model = SDModel(unet, vae, [], "sd1")
    return model, unet, latent_hw, ctx_dim


def controlnet_call(model, unet, x, sigma, ctx, hw, device, dtype, iters: int, warmup: int) -> tuple[float, float]:
    """(apply_model with a ControlNet, plain apply_model), medians of interleaved single calls."""
    from diffusers import ControlNetModel

    from twosamplers.models.control import apply_controlnet
    from twosamplers.models.controlnet import ControlNetModelHandle

    net = ControlNetModel.from_unet(unet).to(device=device, dtype=dtype).eval().requires_grad_(False)
    handle = ControlNetModelHandle(net, "from_unet")
    hint = torch.rand(1, hw * 8, hw * 8, 3, generator=torch.Generator().manual_seed(1))
    pos, _ = apply_controlnet([[ctx[:1], {}]], [[ctx[1:], {}]], handle, hint, 1.0)
    control = pos[0][1]["control"]

    def with_cn():
        return model.apply_model(x, sigma, ctx, control=control, batched_number=2)

    def plain():
        return model.apply_model(x, sigma, ctx)

    for _ in range(warmup):
        with_cn(), plain()
    a, b = [], []
    for _ in range(iters):
        a.append(timed(with_cn, device, 1, 0))
        b.append(timed(plain, device, 1, 0))
    return statistics.median(a), statistics.median(b)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "sd15"], default="tiny")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None, help="fp16 / bf16 / fp32 (default fp16 on CUDA, fp32 on CPU)")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--controlnet-only", action="store_true", help="only the ControlNet ratio (quick at SD1.5 size "
                    "on a CPU)")
    ap.add_argument("--latent", type=int, default=None, help="latent side (default 8 tiny, 64 sd15)")
    args = ap.parse_args(argv)

    from twosamplers import common_ksampler
    from twosamplers.models.sd import resolve_device_dtype

    device, dtype = resolve_device_dtype(args.device, args.dtype)
    iters = args.iters or (20 if args.size == "sd15" else 50)
    torch.set_grad_enabled(False)
    model, unet, hw, ctx_dim = build(args.size, device, dtype)
    hw = args.latent or hw
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, hw, hw, generator=g).to(device)
    ctx = torch.randn(2, 77, ctx_dim, generator=g).to(device=device, dtype=dtype)
    sigma = torch.full((2,), 3.0, device=device)
    x_in = (x / (sigma[:, None, None, None] ** 2 + 1) ** 0.5).to(dtype)
    t = model.timesteps(sigma)

    if args.controlnet_only:
        t_cn = controlnet_call(model, unet, x, sigma, ctx, hw, device, dtype, iters, args.warmup)
        result = {"size": args.size, "device": str(device), "latent": [hw, hw], "batch": 2,
                  "controlnet_apply_ms": t_cn[0] * 1e3, "controlnet_plain_apply_ms": t_cn[1] * 1e3,
                  "controlnet_ratio": t_cn[0] / t_cn[1]}
        print(json.dumps(result) if args.json else "\n".join(f"{k:>26}: {v}" for k, v in result.items()))
        return result

    def bare():
        return unet(x_in, t, encoder_hidden_states=ctx).sample

    def apply():
        return model.apply_model(x, sigma, ctx)

    # interleaved, so that clock and thermal drift hit both alike
    for _ in range(args.warmup):
        bare(), apply()
    t_b, t_a = [], []
    for _ in range(iters):
        t_b.append(timed(bare, device, 1, 0))
        t_a.append(timed(apply, device, 1, 0))
    t_unet, t_apply = statistics.median(t_b), statistics.median(t_a)
    t_cn = controlnet_call(model, unet, x, sigma, ctx, hw, device, dtype, iters, args.warmup)

    latent = {"samples": torch.randn(1, 4, hw, hw, generator=g)}
    pos, neg = [[ctx[:1].float().cpu(), {}]], [[ctx[1:].float().cpu(), {}]]

    def sample_steps(m) -> tuple[list[float], float]:
        """Per-step wall times (synced at each step's callback) and the whole call's time."""
        stamps = []

        def cb(*_):
            sync(device)
            stamps.append(time.perf_counter())

        sync(device)
        t0 = time.perf_counter()
        common_ksampler(m, 0, args.steps, 7.0, "euler", "normal", pos, neg, latent, disable_pbar=True, callback=cb)
        sync(device)
        total = time.perf_counter() - t0
        return [b - a for a, b in zip(stamps, stamps[1:], strict=False)], total

    def bare_steps() -> list[float]:
        out = []
        for _ in range(args.steps):
            out.append(timed(bare, device, 1, 0))
        return out

    class Stub(torch.nn.Module):  # a "network" that costs one multiply: what is left is the engine
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros((), device=device, dtype=dtype), requires_grad=False)

        def forward(self, x, t, c, **kw):
            return x * self.p

    from twosamplers.models import NetworkModel

    stub = NetworkModel(Stub())
    sample_steps(model), sample_steps(stub)
    reps = max(3, iters // 5)
    s_model, s_bare, s_stub, totals = [], [], [], []
    for _ in range(reps):
        steps, total = sample_steps(model)
        s_model += steps
        totals.append(total)
        s_bare += bare_steps()
        s_stub += sample_steps(stub)[0]
    t_step, t_loop, t_engine = (statistics.median(v) for v in (s_model, s_bare, s_stub))
    result = {
        "size": args.size, "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda"
        else None, "dtype": str(dtype).replace("torch.", ""), "batch": 2, "latent": [hw, hw], "steps": args.steps,
        "unet_ms": t_unet * 1e3, "apply_model_ms": t_apply * 1e3,
        "apply_overhead_pct": 100 * (t_apply - t_unet) / t_unet,
        "step_ms": t_step * 1e3, "bare_step_ms": t_loop * 1e3,
        "step_overhead_pct": 100 * (t_step - t_loop) / t_loop,
        "engine_only_step_ms": t_engine * 1e3, "engine_only_pct_of_unet": 100 * t_engine / t_unet,
        "sampling_call_ms": statistics.median(totals) * 1e3,
        "controlnet_apply_ms": t_cn[0] * 1e3, "controlnet_plain_apply_ms": t_cn[1] * 1e3,
        "controlnet_ratio": t_cn[0] / t_cn[1],
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>20}: {v:.3f}" if isinstance(v, float) else f"{k:>20}: {v}")
    return result


if __name__ == "__main__":
    main()
