"""Flux.1 (dev, schnell) and SD3.5 (large, medium) transformers: detection from the keys, loading in the stored
dtype (fp32, bf16, fp16 files; fp8 weight storage), and ComfyUI 0.30.0's numbers for one model call and for
whole KSampler runs (references: tests/data/flow_transformers.safetensors, made by
tests/comfy_oracle/flow_transformers.py from the same tiny files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from flow_models import FILES, digest
from safetensors.torch import load_file

from twosamplers.engine.passes import common_ksampler
from twosamplers.engine.schedules import ModelSamplingFlow, ModelSamplingFlux, flux_shift
from twosamplers.models.flow_loading import load_diffusion_model
from twosamplers.models.sd_loading import CheckpointError

DATA = Path(__file__).parent / "data"
REF = load_file(str(DATA / "flow_transformers.safetensors"))
DIGESTS = json.loads((DATA / "flow_models.json").read_text())
TOL = 2e-3  # the tolerance for latents at the end of sampling (measured: ~1e-5)
CASES = {  # as in the oracle script
    "euler_simple": ("euler", "simple", (1, 16, 8, 8), False, 1.0, None),
    "euler_normal_odd": ("euler", "normal", (1, 16, 9, 7), False, 1.0, None),
    "dpmpp_2m_beta": ("dpmpp_2m", "beta", (1, 16, 8, 8), False, 1.0, None),
    "euler_ancestral_simple": ("euler_ancestral", "simple", (1, 16, 8, 8), False, 1.0, None),
    "dpmpp_2m_sde_karras_mask": ("dpmpp_2m_sde", "karras", (1, 16, 8, 8), True, 1.0, None),
    "euler_simple_denoise": ("euler", "simple", (1, 16, 8, 8), False, 0.6, None),
    "euler_simple_msflux": ("euler", "simple", (1, 16, 8, 8), False, 1.0, "flux"),
    "euler_simple_mssd3": ("euler", "simple", (1, 16, 8, 8), False, 1.0, "sd3"),
}
_MODELS: dict = {}


def _model(root: Path, name: str, weight_dtype: str = "default"):
    key = (name, weight_dtype)
    if key not in _MODELS:
        _MODELS[key] = load_diffusion_model(root / "diffusion_models" / name, weight_dtype=weight_dtype, device="cpu")
    return _MODELS[key]


def test_tiny_files_are_the_ones_the_references_were_made_from():
    for name, make in FILES.items():
        assert digest(make()) == DIGESTS[name], f"{name}: the builder changed; remake the references"


@pytest.mark.parametrize("name, variant", [("flux_dev.safetensors", "flux-dev"),
                                           ("flux_schnell.safetensors", "flux-schnell"),
                                           ("sd35_large.safetensors", "sd3.5-large"),
                                           ("sd35_medium.safetensors", "sd3.5-medium")])
def test_family_and_variant_detected_from_keys(flow_models_dir, name, variant):
    m = _model(flow_models_dir, name)
    assert m.variant == variant
    assert m.latent_format.channels == 16 and m.latent_format.downscale == 8
    ms = m.model_sampling
    if variant == "flux-dev":
        assert isinstance(ms, ModelSamplingFlux) and ms.shift == 1.15
    elif variant == "flux-schnell":
        assert isinstance(ms, ModelSamplingFlow) and (ms.shift, ms.multiplier) == (1.0, 1.0)
    else:
        assert isinstance(ms, ModelSamplingFlow) and (ms.shift, ms.multiplier) == (3.0, 1000.0)


def test_weights_stay_in_their_stored_dtype(flow_models_dir):
    bf16 = _model(flow_models_dir, "flux_dev_bf16.safetensors")
    fp8 = _model(flow_models_dir, "flux_dev.safetensors", "fp8_e4m3fn")
    lin = bf16.network.transformer.transformer_blocks[0].attn.to_q
    assert lin.weight.dtype == torch.bfloat16 and bf16.dtype == torch.float32
    assert fp8.network.transformer.transformer_blocks[0].attn.to_q.weight.dtype == torch.float8_e4m3fn
    fp16 = _model(flow_models_dir, "sd35_large_fp16.safetensors")
    assert fp16.network.transformer.transformer_blocks[0].attn.to_q.weight.dtype == torch.float16


@pytest.mark.parametrize("key", sorted(k for k in REF if k.startswith("fwd/")))
def test_one_model_call_matches_comfyui(flow_models_dir, key):
    _, name, wd = key.split("/")
    m = _model(flow_models_dir, name, wd)
    kw = {"pooled_output": (REF["in/pooled_flux"] if m.family == "flux" else REF["in/pooled_sd3"]).repeat(2, 1)}
    if m.family == "flux" and m.network.guidance_embed:
        kw["guidance"] = REF["in/guidance"]
    with torch.no_grad():
        den = m.apply_model(REF["in/x"], REF["in/sigma"], REF["in/context"].repeat(2, 1, 1), **kw)
    assert float((den - REF[key]).abs().max()) < 1e-4


@pytest.mark.parametrize("key", sorted(k for k in REF if k.startswith("ks/")))
def test_ksampler_run_matches_comfyui(flow_models_dir, key):
    _, name, case = key.split("/")
    m = _model(flow_models_dir, name)
    sampler, sched, shape, masked, denoise, patch = CASES[case]
    fam = m.family
    pooled = REF["in/pooled_flux" if fam == "flux" else "in/pooled_sd3"]
    neg_pooled = REF["in/pooled_flux" if fam == "flux" else "in/neg_pooled_sd3"] * -1.0
    pos = [[REF["in/context"], {"pooled_output": pooled, "guidance": 4.0}]]
    neg = [[REF["in/negative"], {"pooled_output": neg_pooled}]]
    cfg = 1.0 if "schnell" in name else (2.0 if fam == "flux" else 4.5)
    if patch == "flux":
        m = m.with_model_sampling(ModelSamplingFlux(flux_shift(640, 512)))
    elif patch == "sd3":
        m = m.with_model_sampling(ModelSamplingFlow(2.0, 1000))
    latent = {"samples": REF["in/latent"].clone()} if (masked or denoise < 1) else {"samples": torch.zeros(shape)}
    if masked:
        latent["noise_mask"] = REF["in/mask"]
    out = common_ksampler(m, 5, 4, cfg, sampler, sched, pos, neg, latent, denoise=denoise, disable_pbar=True)
    diff = float((out["samples"] - REF[key]).abs().max())
    assert diff <= TOL, f"max |diff| {diff:.3e}"


def test_empty_sd_latent_is_remade_with_16_channels(flow_models_dir):
    m = _model(flow_models_dir, "flux_schnell.safetensors")
    pos = [[REF["in/context"], {"pooled_output": REF["in/pooled_flux"]}]]
    four = common_ksampler(m, 5, 2, 1.0, "euler", "simple", pos, pos, {"samples": torch.zeros(1, 4, 8, 8)},
                           disable_pbar=True)["samples"]
    sixteen = common_ksampler(m, 5, 2, 1.0, "euler", "simple", pos, pos, {"samples": torch.zeros(1, 16, 8, 8)},
                              disable_pbar=True)["samples"]
    assert four.shape == (1, 16, 8, 8) and torch.equal(four, sixteen)


def test_same_seed_same_bits(flow_models_dir):
    m = _model(flow_models_dir, "sd35_medium.safetensors")
    pos = [[REF["in/context"], {"pooled_output": REF["in/pooled_sd3"]}]]
    runs = [common_ksampler(m, 9, 3, 3.0, "dpmpp_2m_sde", "simple", pos, pos, {"samples": torch.zeros(1, 16, 8, 8)},
                            disable_pbar=True)["samples"] for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_not_a_flow_model_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "x.safetensors"
    save_file({"foo.weight": torch.zeros(2)}, str(p))
    with pytest.raises(CheckpointError, match="not a Flux.1 or SD3"):
        load_diffusion_model(p)
    with pytest.raises(ValueError, match="weight_dtype"):
        load_diffusion_model(p, weight_dtype="int4")


def test_sd3_without_pooled_output_is_a_clear_error(flow_models_dir):
    m = _model(flow_models_dir, "sd35_large.safetensors")
    with pytest.raises(ValueError, match="pooled_output"):
        common_ksampler(m, 1, 1, 1.0, "euler", "simple", [[REF["in/context"], {}]], [[REF["in/context"], {}]],
                        {"samples": torch.zeros(1, 16, 8, 8)}, disable_pbar=True)


def test_mixed_dtype_file_keeps_each_tensor_and_computes_like_its_widened_copy(tmp_path):
    """flux1-dev-fp8-style files: fp8 linear weights beside bf16 norms and biases. Each tensor stays as stored and
    the result is exactly that of the same weights widened to float32 (what ComfyUI computes from on a CPU)."""
    from flow_models import flux_transformer
    from safetensors.torch import save_file

    sd = flux_transformer("schnell", seed=9)
    mixed = {k: v.to(torch.float8_e4m3fn) if k.endswith(".weight") and v.ndim == 2 else v.to(torch.bfloat16)
             for k, v in sd.items()}
    save_file(mixed, str(tmp_path / "mixed.safetensors"))
    save_file({k: v.float() for k, v in mixed.items()}, str(tmp_path / "wide.safetensors"))
    a = load_diffusion_model(tmp_path / "mixed.safetensors", device="cpu")
    b = load_diffusion_model(tmp_path / "wide.safetensors", device="cpu")
    tr = a.network.transformer
    assert tr.transformer_blocks[0].attn.to_q.weight.dtype == torch.float8_e4m3fn
    assert tr.transformer_blocks[0].attn.to_q.bias.dtype == torch.bfloat16
    assert tr.transformer_blocks[0].attn.norm_q.weight.dtype == torch.float32  # widened exactly
    x, ctx = REF["in/x"], REF["in/context"].repeat(2, 1, 1)
    pooled = REF["in/pooled_flux"].repeat(2, 1)
    with torch.no_grad():
        assert torch.equal(a.apply_model(x, REF["in/sigma"], ctx, pooled_output=pooled),
                           b.apply_model(x, REF["in/sigma"], ctx, pooled_output=pooled))
