"""Flux / SD3 text encoders against ComfyUI 0.30.0: T5 tokenization (the shipped tokenizer, token for token),
and the CONDITIONING of CLIPTextEncode through DualCLIPLoader("flux"), DualCLIPLoader("sd3": CLIP-L + CLIP-G),
CLIPLoader(T5, "sd3") and CLIPTextEncodeFlux, on tiny encoders in the real key layouts (references:
tests/data/flow_text.safetensors from tests/comfy_oracle/flow_text.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from twosamplers.models.flow_loading import load_text_encoders
from twosamplers.models.flow_text import FluxTextEncoders, SD3TextEncoders
from twosamplers.models.sd_loading import CheckpointError
from twosamplers.models.t5 import END_TOKEN, PAD_TOKEN, t5_tokenizer, t5_tokens

REF = load_file(str(Path(__file__).parent / "data" / "flow_text.safetensors"))
PROMPTS = [  # the oracle script's list
    "a red barn in a green field",
    "",
    "(masterpiece:1.3), a (small) cat\\(s\\) on a [chair], photo",
    "A castle on a hill at sunset,\nwith  two   spaces and a newline; numbers 1234 and 3.5x zoom!",
    "an ünïcödé café — naïve façade, 東京 tower ☕",
    " ".join([f"word{i}" for i in range(90)]),
    "embedding:missing_thing in a garden",
    "((nested (weights:0.5) here:1.2)) end",
]
_ENC: dict = {}


def assert_cond(ours: torch.Tensor, key: str, tol: float = 1e-4) -> None:
    """`ours` against the reference `key`; SD3's 4096-wide conditionings are stored as their first 128 columns
    plus their shape and the sum of |values| beyond (zero here: the tiny encoders are narrower)."""
    ref = REF[key]
    if key + "_shape" in REF:
        assert tuple(ours.shape) == tuple(REF[key + "_shape"].tolist())
        assert float(ours[..., 128:].abs().sum()) == float(REF[key + "_rest_abs"])
        ours = ours[..., :128]
    assert ours.shape == ref.shape
    assert float((ours - ref).abs().max()) < tol


def _encoders(root: Path, family: str, names: tuple[str, ...]):
    key = (family, names)
    if key not in _ENC:
        _ENC[key] = load_text_encoders([root / "text_encoders" / n for n in names], family, device="cpu")
    return _ENC[key]


@pytest.mark.parametrize("i", range(len(PROMPTS)))
def test_t5_tokens_are_comfyuis(i):
    with pytest.warns(UserWarning) if "embedding:" in PROMPTS[i] else _no_warning():
        toks = t5_tokens(PROMPTS[i], min_length=256)
    assert torch.equal(torch.tensor([t for t, _ in toks]), REF[f"tok/{i}/t5xxl"])
    assert torch.equal(torch.tensor([w for _, w in toks], dtype=torch.float64), REF[f"tok/{i}/t5w"])


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_t5_tokenizer_is_shipped_and_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = t5_tokenizer()
    assert tok.convert_tokens_to_ids("</s>") == END_TOKEN and tok.convert_tokens_to_ids("<pad>") == PAD_TOKEN
    assert len(tok) == 32100
    toks = t5_tokens("hi", min_length=77)
    assert len(toks) == 77 and toks[-1] == (PAD_TOKEN, 1.0)
    assert len(t5_tokens("word " * 300, min_length=256)) == 301  # one sequence (300 + end), no chunks, no cut


@pytest.mark.parametrize("i", range(len(PROMPTS)))
@pytest.mark.parametrize("name, family, files", [
    ("flux", "flux", ("clip_l.safetensors", "t5xxl.safetensors")),
    ("sd3", "sd3", ("clip_g.safetensors", "clip_l.safetensors")),  # order does not matter: kinds come from keys
    ("sd3t5", "sd3", ("t5xxl.safetensors",)),
])
def test_conditioning_matches_comfyui(flow_models_dir, i, name, family, files):
    te = _encoders(flow_models_dir, family, files)
    with pytest.warns(UserWarning) if "embedding:" in PROMPTS[i] else _no_warning():
        cond = te.encode_prompt(PROMPTS[i])
    c, extras = cond[0]
    assert_cond(c, f"{name}/{i}/cond")
    assert float((extras["pooled_output"] - REF[f"{name}/{i}/pooled"]).abs().max()) < 1e-4


@pytest.mark.parametrize("name, family, files", [
    ("flux", "flux", ("clip_l.safetensors", "t5xxl.safetensors")),
    ("sd3", "sd3", ("clip_g.safetensors", "clip_l.safetensors")),
    ("sd3t5", "sd3", ("t5xxl.safetensors",)),
])
def test_clip_set_last_layer_matches_comfyui(flow_models_dir, name, family, files):
    """ComfyUI's CLIPSetLastLayer reaches every encoder of these CLIPs, T5 included."""
    cond = _encoders(flow_models_dir, family, files).encode_prompt(PROMPTS[0], clip_skip=-2)
    assert_cond(cond[0][0], f"skip/{name}/cond")
    assert float((cond[0][1]["pooled_output"] - REF[f"skip/{name}/pooled"]).abs().max()) < 1e-4


SD3_CASES = [  # the oracle's: (CLIP, clip_l, clip_g, t5xxl, empty_padding)
    ("sd3", "a red fox", "a fox in the snow, (photo:1.2)", "unused", "none"),
    ("sd3", "", "a castle", "", "none"),
    ("sd3", "", "a castle", "", "empty_prompt"),
    ("sd3", "short", " ".join(f"word{i}" for i in range(90)), "", "none"),
    ("sd3", "", "", "", "none"),
    ("sd3t5", "x", "y", "", "none"),
    ("sd3t5", "x", "y", "", "empty_prompt"),
    ("sd3t5", "x", "y", "a (tiny:1.3) mouse", "none"),
]


@pytest.mark.parametrize("i", range(len(SD3_CASES)))
def test_clip_text_encode_sd3_matches_comfyui(flow_models_dir, i):
    from twosamplers.nodes.flow import CLIPTextEncodeSD3
    from twosamplers.nodes.handles import ClipHandle

    name, l_text, g_text, t_text, pad = SD3_CASES[i]
    files = ("clip_g.safetensors", "clip_l.safetensors") if name == "sd3" else ("t5xxl.safetensors",)
    te = _encoders(flow_models_dir, "sd3", files)
    cond = CLIPTextEncodeSD3().encode(ClipHandle(te), l_text, g_text, t_text, pad)[0]
    assert_cond(cond[0][0], f"sd3enc/{i}/cond")
    assert float((cond[0][1]["pooled_output"] - REF[f"sd3enc/{i}/pooled"]).abs().max()) < 1e-4


def test_clip_text_encode_sd3_needs_sd3_encoders(flow_models_dir):
    from twosamplers.nodes.flow import CLIPTextEncodeSD3
    from twosamplers.nodes.handles import ClipHandle

    te = _encoders(flow_models_dir, "flux", ("clip_l.safetensors", "t5xxl.safetensors"))
    with pytest.raises(TypeError, match="SD3 text encoders"):
        CLIPTextEncodeSD3().encode(ClipHandle(te), "a", "b", "c", "none")


def test_clip_text_encode_flux_matches_comfyui(flow_models_dir):
    te = _encoders(flow_models_dir, "flux", ("clip_l.safetensors", "t5xxl.safetensors"))
    cond = te.encode_prompt("a castle", t5_text=PROMPTS[3], guidance=2.5)
    assert float((cond[0][0] - REF["fluxenc/cond"]).abs().max()) < 1e-4
    assert float((cond[0][1]["pooled_output"] - REF["fluxenc/pooled"]).abs().max()) < 1e-4
    assert cond[0][1]["guidance"] == 2.5


def test_weights_are_kept_as_comfyui_keeps_them(flow_models_dir):
    te = _encoders(flow_models_dir, "flux", ("clip_l.safetensors", "t5xxl.safetensors"))
    assert isinstance(te, FluxTextEncoders)
    t5_lin = te.t5.model.encoder.block[0].layer[0].SelfAttention.q
    assert t5_lin.weight.dtype == torch.float16 and te.t5.compute_dtype == torch.float32
    sd3 = _encoders(flow_models_dir, "sd3", ("clip_g.safetensors", "clip_l.safetensors"))
    assert isinstance(sd3, SD3TextEncoders) and sd3.t5 is None
    assert sd3.clip_g.projected_pooled and not sd3.clip_l.projected_pooled


def test_flux_needs_both_encoders_and_bad_files_are_named(flow_models_dir, tmp_path):
    with pytest.raises(CheckpointError, match="CLIP-L and T5"):
        load_text_encoders([flow_models_dir / "text_encoders" / "t5xxl.safetensors"], "flux", device="cpu")
    with pytest.raises(CheckpointError, match="two of the same kind"):
        load_text_encoders([flow_models_dir / "text_encoders" / "t5xxl.safetensors"] * 2, "sd3", device="cpu")
    with pytest.raises(CheckpointError, match="not a CLIP or T5"):
        load_text_encoders([flow_models_dir / "vae" / "ae.safetensors"], "sd3", device="cpu")
