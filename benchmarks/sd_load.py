"""Full-size single-file loading check: write a random-weight SD1.5 or SDXL checkpoint in ComfyUI's layout
(models/checkpoints/*.safetensors), then time `load_sd` on it, prompt encoding, a TwoSamplersForMask run and
the VAE decode. Random weights make noise pictures; the point is that real shapes detect, convert and run.

    python benchmarks/sd_load.py --family sd15 [--steps 20] [--device cuda] [--dtype fp16]
    python benchmarks/sd_load.py --family sdxl

Uses the diffusers -> LDM key helpers of tests/test_sd_backend.py to write the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def write_checkpoint(family: str, path: Path) -> float:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from test_sd_backend import canonical_clip_keys, to_ldm_open_clip, to_ldm_unet, to_ldm_vae
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(dev):
        if family == "sd15":
            unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)
        else:
            unet = UNet2DConditionModel(
                block_out_channels=(320, 640, 1280), cross_attention_dim=2048, attention_head_dim=[5, 10, 20],
                use_linear_projection=True, transformer_layers_per_block=[1, 2, 10],
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                addition_embed_type="text_time", addition_time_embed_dim=256,
                projection_class_embeddings_input_dim=2816)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        clip_l = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                              num_attention_heads=12, hidden_act="quick_gelu"))
        if family == "sdxl":
            clip_g = CLIPTextModelWithProjection(CLIPTextConfig(
                hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                hidden_act="gelu", projection_dim=1280))
    half = {}

    def put(d):
        half.update({k: v.to(torch.float16).cpu().contiguous() for k, v in d.items()})

    put(to_ldm_unet(unet))
    put(to_ldm_vae(vae))
    prefix = "cond_stage_model.transformer." if family == "sd15" else "conditioner.embedders.0.transformer."
    put({prefix + k: v for k, v in canonical_clip_keys(clip_l).items()})
    if family == "sdxl":
        put(to_ldm_open_clip(clip_g, "conditioner.embedders.1.model."))
    del unet, vae, clip_l
    t0 = time.perf_counter()
    save_file(half, str(path))
    return time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=["sd15", "sdxl"], default="sd15")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    args = ap.parse_args(argv)

    from twosamplers import KSamplerWrapper, TwoSamplersForMask
    from twosamplers.models.sd import load_sd

    size = 512 if args.family == "sd15" else 1024
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{args.family}.safetensors"
        t_save = write_checkpoint(args.family, path)
        mb = path.stat().st_size / 2**20
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        model = load_sd(path, device=args.device, dtype=args.dtype, cache=False)
        t_load = time.perf_counter() - t0

    def sync():
        if model.device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    pos = model.encode_prompt("a (beautiful:1.2) landscape, " * 20)  # two 77-token chunks
    neg = model.encode_prompt("blurry")
    sync()
    t_text = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(1, size, size, 3, generator=g)
    t0 = time.perf_counter()
    latent = {"samples": model.encode_image(pixels)}
    sync()
    t_enc = time.perf_counter() - t0
    mask = torch.zeros(1, size, size)
    mask[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    base = KSamplerWrapper(model, 1, args.steps, 7.0, "euler", "normal", pos, neg, 1.0)
    inside = KSamplerWrapper(model, 2, args.steps, 7.0, "dpmpp_2m", "karras", pos, neg, 0.7)
    t0 = time.perf_counter()
    out = TwoSamplersForMask().doit(latent, base, inside, mask, disable_pbar=True)[0]
    sync()
    t_sample = time.perf_counter() - t0
    t0 = time.perf_counter()
    img = model.decode_latent(out["samples"])
    sync()
    t_dec = time.perf_counter() - t0
    result = {
        "family": model.family, "device": str(model.device), "dtype": str(model.dtype).replace("torch.", ""),
        "vae_dtype": str(model.vae_dtype).replace("torch.", ""), "checkpoint_mb": round(mb),
        "latent_scale": model.latent_format.scale_factor, "cond_shape": list(pos[0][0].shape),
        "pooled_shape": list(pos[0][1]["pooled_output"].shape), "latent_shape": list(latent["samples"].shape),
        "image_shape": list(img.shape), "finite": bool(torch.isfinite(out["samples"]).all()),
        "save_s": round(t_save, 2), "load_s": round(t_load, 2), "encode_prompts_s": round(t_text, 3),
        "vae_encode_s": round(t_enc, 3), "two_samplers_s": round(t_sample, 2),
        "steps": [args.steps, args.steps],
        "vae_decode_s": round(t_dec, 3),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
