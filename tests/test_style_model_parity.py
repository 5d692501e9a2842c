"""StyleModelLoader + StyleModelApply against ComfyUI 0.30.0: the same seeded T2I-Adapter style model and Flux Redux
model (tests/style_model_cases.py) on the same image tokens give ComfyUI's conditioning (references:
tests/parity/style_model/, made by tests/comfy_oracle/style_model_refs.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file
from style_model_cases import CASES, T2I, case_inputs, redux_state, t2i_style_state

from twosamplers.models.style_model import StyleModelError, load_style_model, style_model_from_state
from twosamplers.nodes.folders import Folders
from twosamplers.nodes.style_model_nodes import StyleModelApply, StyleModelLoader

REF = load_file(str(Path(__file__).parent / "parity" / "style_model" / "references.safetensors"))
TOL = 2e-4  # float reordering of the same float32 math (measured: under 1e-5)


@pytest.fixture(scope="module")
def style_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("style_models")
    for kind, make in (("t2i", t2i_style_state), ("redux", redux_state)):
        save_file({k: torch.from_numpy(v) for k, v in make().items()}, str(d / f"{kind}.safetensors"))
    return d


@pytest.mark.parametrize("name", list(CASES))
def test_apply_matches_comfyui(style_files, name):
    kind, _img, _txt, strength, strength_type = CASES[name]
    model = load_style_model(style_files / f"{kind}.safetensors")
    img, txt = case_inputs(name)
    cond = [[torch.from_numpy(txt), {"pooled_output": torch.zeros(1, 8)}]]
    before = cond[0][0].clone()
    (out,) = StyleModelApply().apply_stylemodel(cond, model, SimpleNamespace(last_hidden_state=torch.from_numpy(img)),
                                                strength, strength_type)
    ref = REF[name]
    assert tuple(out[0][0].shape) == tuple(ref.shape)
    diff = float((out[0][0] - ref).abs().max())
    assert diff <= TOL * max(1.0, float(ref.abs().max())), f"{name}: max |diff| {diff:.3e}"
    assert torch.equal(cond[0][0], before) and out[0][1] == cond[0][1] and out[0][1] is not cond[0][1]


def test_loader_node_finds_the_file(style_files, tmp_path):
    models = tmp_path / "models"
    (models / "style_models" / "sub").mkdir(parents=True)
    (models / "style_models" / "sub" / "style.safetensors").symlink_to(style_files / "t2i.safetensors")
    node = StyleModelLoader(Folders.create(models))
    node.check_inputs("sub\\style.safetensors")
    (model,) = node.load_style_model("sub/style.safetensors")
    assert model.kind == "t2i_style" and model.context_dim == T2I["context"]
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        node.check_inputs("nope.safetensors")


def test_refusals_are_clear():
    with pytest.raises(StyleModelError, match="not a style model"):
        style_model_from_state({"conv_in.weight": torch.zeros(1)}, "x.safetensors")
    sd = {k: torch.from_numpy(v) for k, v in redux_state().items()}
    sd["redux_down.weight"] = sd["redux_down.weight"][:, :100]
    with pytest.raises(StyleModelError, match="do not fit"):
        style_model_from_state(sd, "bad.safetensors")
    model = style_model_from_state({k: torch.from_numpy(v) for k, v in redux_state().items()}, "redux")
    wrong = SimpleNamespace(last_hidden_state=torch.zeros(1, 4, 1024))
    with pytest.raises(ValueError, match="SigLIP"):
        StyleModelApply().apply_stylemodel([[torch.zeros(1, 3, 4096), {}]], model, wrong, 1.0, "multiply")
    ok = SimpleNamespace(last_hidden_state=torch.zeros(1, 4, 1152))
    with pytest.raises(ValueError, match="attn_bias"):
        StyleModelApply().apply_stylemodel([[torch.zeros(1, 3, 4096), {}]], model, ok, 0.5, "attn_bias")
    with pytest.raises(ValueError, match="768"):
        StyleModelApply().apply_stylemodel([[torch.zeros(1, 3, 768), {}]], model, ok, 1.0, "multiply")
    with pytest.raises(ValueError, match="strength"):
        StyleModelApply().apply_stylemodel([[torch.zeros(1, 3, 4096), {}]], model, ok, 11.0, "multiply")
