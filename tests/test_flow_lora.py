"""LoRAs on Flux.1 and SD3.5 merge as ComfyUI 0.30.0 merges them, tensor by tensor: kohya, diffusers and ComfyUI
key formats (fused q/k/v split over diffusers' projections, linear1_qkv, shift/scale swaps, LoHa, .diff,
.diff_b), text-encoder LoRAs through the conditioning, and XLabs files (which ComfyUI 0.30 does not convert for
files this small: compared with the same LoRA in kohya's names). References: tests/data/flow_lora.safetensors
from tests/comfy_oracle/flow_lora.py (ComfyUI's patched weights: the patch as fp16 and the SHA-256 of the exact
float32 result)."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
import torch
from flow_models import flux_lora
from safetensors.torch import load_file, save_file

from twosamplers.models.flow_loading import load_diffusion_model, load_text_encoders
from twosamplers.models.lora import Lora, LoraError, LoraModel, load_lora, patched

REF = load_file(str(Path(__file__).parent / "data" / "flow_lora.safetensors"))
PROMPT = "a (red:1.2) fox in the snow"
BASES = {"flux": "flux_lora_base.safetensors", "sd3": "sd35_large.safetensors"}
_CACHE: dict = {}


def _model(root: Path, family: str):
    if family not in _CACHE:
        _CACHE[family] = load_diffusion_model(root / "diffusion_models" / BASES[family], device="cpu")
    return _CACHE[family]


def source_layout(model) -> dict[str, torch.Tensor]:
    """The transformer's weights in the checkpoint's layout (BFL / MMDiT names, ComfyUI's "_norm.weight")."""
    sd = model.network.transformer.state_dict()
    out = {}
    for src, pieces in model.network.key_map.items():
        parts = []
        for p in pieces:
            t = sd[p.target].float()
            if p.swap:
                a, b = t.chunk(2, dim=0)
                t = torch.cat([b, a], dim=0)
            parts.append(t)
        name = src[: -len(".scale")] + ".weight" if src.endswith("_norm.scale") else src
        out[name] = torch.cat(parts, dim=0)
    return out


def _check_against_comfyui(model, lora: str, plain: dict, merged: dict) -> int:
    keys = sorted(k[len(f"w/{lora}/"):] for k in REF if k.startswith(f"w/{lora}/"))
    changed = sorted(k for k in merged if not torch.equal(merged[k], plain[k]))
    assert changed == keys, f"{lora}: we patch {changed}, ComfyUI patches {keys}"
    exact = 0
    for k in keys:
        ref = REF[f"w/{lora}/{k}"].float()
        ours = merged[k] - plain[k]
        assert float((ours - ref).abs().max()) <= 2e-3 * float(ref.abs().max()) + 1e-6, k
        exact += hashlib.sha256(merged[k].contiguous().numpy().tobytes()).digest() == bytes(
            REF[f"sha/{lora}/{k}"].tolist())
    return exact


@pytest.mark.parametrize("lora, family", [("flux_kohya", "flux"), ("flux_diffusers", "flux"), ("flux_comfy", "flux"),
                                          ("sd3_kohya", "sd3"), ("sd3_diffusers", "sd3")])
def test_merged_transformer_weights_are_comfyuis(flow_models_dir, lora, family):
    m = _model(flow_models_dir, family)
    plain = source_layout(m)
    f = load_lora(m, flow_models_dir / "loras" / f"{lora}.safetensors")
    with patched(m, [(f, 0.8, 0.7)], unet=True, clip=False):
        merged = source_layout(m)
    after = source_layout(m)
    assert all(torch.equal(after[k], plain[k]) for k in plain), "the weights were not restored bit for bit"
    exact = _check_against_comfyui(m, lora, plain, merged)
    # same float32 formula in the same order on this machine's BLAS: all bit-equal (measured: all of them)
    assert exact == len([k for k in REF if k.startswith(f"sha/{lora}/")])


def test_xlabs_lora_equals_its_kohya_twin(flow_models_dir, tmp_path):
    m = _model(flow_models_dir, "flux")
    xl = flux_lora("xlabs")
    twin = {}
    for k, v in xl.items():  # the same patches under kohya names
        k = k.replace("double_blocks.0.processor.qkv_lora1", "lora_unet_double_blocks_0_img_attn_qkv")
        k = k.replace("double_blocks.0.processor.proj_lora2", "lora_unet_double_blocks_0_txt_attn_proj")
        twin[k.replace(".down.weight", ".lora_down.weight").replace(".up.weight", ".lora_up.weight")] = v
    save_file(twin, str(tmp_path / "twin.safetensors"))
    out = []
    for path in (flow_models_dir / "loras" / "flux_xlabs.safetensors", tmp_path / "twin.safetensors"):
        f = load_lora(m, path)
        assert not f.unmatched
        with patched(m, [(f, 0.8, 0.0)], unet=True, clip=False):
            out.append(source_layout(m))
    assert all(torch.equal(out[0][k], out[1][k]) for k in out[0])


@pytest.mark.parametrize("lora", ["flux_kohya", "flux_comfy"])
def test_text_encoder_loras_give_comfyuis_conditioning(flow_models_dir, lora):
    names = ("clip_l.safetensors", "t5xxl.safetensors")
    te = load_text_encoders([flow_models_dir / "text_encoders" / n for n in names], "flux", device="cpu")
    base = te.encode_prompt(PROMPT)
    assert float((base[0][0] - REF["cond/none"]).abs().max()) < 1e-4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the transformer keys match nothing in text encoders alone
        with_lora = LoraModel(te, [(load_lora(te, flow_models_dir / "loras" / f"{lora}.safetensors"), 0.8, 0.7)])
    c = with_lora.encode_prompt(PROMPT)
    assert float((c[0][0] - REF[f"cond/{lora}"]).abs().max()) < 1e-4
    assert float((c[0][1]["pooled_output"] - REF[f"pooled/{lora}"]).abs().max()) < 1e-4
    assert torch.equal(te.encode_prompt(PROMPT)[0][0], base[0][0])  # restored


def test_with_loras_on_a_checkpoint_and_wrong_family_is_an_error(flow_models_dir):
    with pytest.raises(LoraError, match="no key"):
        load_lora(_model(flow_models_dir, "flux"), flow_models_dir / "loras" / "sd3_kohya.safetensors")
    m = _model(flow_models_dir, "sd3")
    lm = m.with_loras([Lora(flow_models_dir / "loras" / "sd3_kohya.safetensors", 0.5)])
    assert isinstance(lm, LoraModel) and lm.base is m
