"""InstructPix2Pix / CosXL edit models in workflows: the published CosXL edit example runs under the corpus harness
on an 8-channel EDM checkpoint, DualCFGGuider's inputs as ComfyUI 0.30 reads them, and the edit layouts ComfyUI has
no model for are refused by name. (Numbers against ComfyUI: test_edit_models_parity.py.)"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from twosamplers.models.sd_loading import UnsupportedModelError, detect_family, edm_vpred_range  # noqa: E402
from twosamplers.nodes.registry import NODES, scope_note  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _harness():
    spec = importlib.util.spec_from_file_location("real_workflows", ROOT / "benchmarks" / "real_workflows.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(("name", "family", "what"), [
    ("cosxl_edit.safetensors", "sdxl", "edit:sdxl:edm"),
    ("instruct-pix2pix-00-22000.safetensors", "sd1", "edit:sd1"),
    ("sdxl_ip2p.safetensors", "sdxl", "edit:sdxl"),
    ("my_edit_model.safetensors", "sdxl", "edit:sdxl"),
    ("credit_xl.safetensors", "sdxl", "sdxl"),
    ("sd_xl_base_1.0.safetensors", "sdxl", "sdxl"),
])
def test_harness_names_edit_checkpoints(name, family, what):
    assert _harness()._model_kind("checkpoints", name, family) == what


def test_harness_edit_checkpoints_load_as_edit_models(tmp_path):
    from twosamplers.models.sd import load_sd

    pool = _harness().ModelPool(tmp_path)
    cosxl = load_sd(pool.get("edit:sdxl:edm"), device="cpu", dtype=torch.float32)
    assert cosxl.ip2p and cosxl.ip2p_scaled and cosxl.model_sampling.prediction == "v"
    sd1 = load_sd(pool.get("edit:sd1"), device="cpu", dtype=torch.float32)
    assert sd1.ip2p and not sd1.ip2p_scaled and sd1.family == "sd1"


def test_sdxl_edit_example_runs_in_the_harness(tmp_path):
    """ComfyUI_examples' edit_models/sdxl_edit_model (CosXL edit: InstructPixToPixConditioning, DualCFGGuider and
    SamplerCustomAdvanced inside a group node, DualCFGGuider saved without `style`) runs."""
    out = tmp_path / "r.json"
    assert _harness().main(["--only", "sdxl_edit_model", "--json", str(out)]) == 0
    assert [r["status"] for r in json.loads(out.read_text())["results"]] == ["ran"]


def test_dual_cfg_guider_inputs_and_checks(toy_model, conds):
    from twosamplers.nodes.custom_sampling import DualCFGGuider, Guider

    req = DualCFGGuider.INPUT_TYPES()["required"]
    assert list(req) == ["model", "cond1", "cond2", "negative", "cfg_conds", "cfg_cond2_negative", "style"]
    assert req["style"][0] == ["regular", "nested"] and req["cfg_conds"][1]["default"] == 8.0
    pos, neg = conds
    (g,) = DualCFGGuider().get_guider(toy_model, pos, neg, neg, 3.0, 1.5)  # saved before `style` existed
    assert isinstance(g, Guider) and g.cfg == 3.0 and g.dual.cfg2 == 1.5 and not g.dual.nested
    assert DualCFGGuider().get_guider(toy_model, pos, neg, neg, 3.0, 1.5, "nested")[0].dual.nested
    with pytest.raises(ValueError, match="style"):
        DualCFGGuider().get_guider(toy_model, pos, neg, neg, 3.0, 1.5, "fancy")
    with pytest.raises(ValueError, match="cfg_cond2_negative"):
        DualCFGGuider().get_guider(toy_model, pos, neg, neg, 3.0, -1.0)
    with pytest.raises(TypeError, match="cond2"):
        DualCFGGuider().get_guider(toy_model, pos, "text", neg, 3.0, 1.0)


@pytest.mark.parametrize(("cfg1", "cfg2", "nested", "area"), [
    (3.0, 1.5, False, False), (2.5, 1.8, True, False), (2.0, 1.0, False, False), (1.0, 1.0, False, False),
    (1.0, 4.0, True, False), (3.0, 1.5, False, True), (2.5, 1.8, True, True)])
def test_dual_cfg_formulas(toy_model, cfg1, cfg2, nested, area):
    """regular: cfg(cond2 vs negative, cfg2) + (cond1 - cond2) * cfg1, skipped prompts (cfg 1) predicting zeros;
    nested: negative + cfg2 * (cfg(cond1 vs cond2, cfg1) - negative). `area`: cond2 set to a box (regional path)."""
    from twosamplers.engine.ksampler import DualCFG, GuidedDenoiser
    from twosamplers.engine.passes import as_entries

    g = torch.Generator().manual_seed(3)
    c1, c2, neg = ([[torch.randn(1, 3, 8, generator=g), {}]] for _ in range(3))
    if area:
        c2 = [[c2[0][0], {"area": (4, 4, 0, 2), "strength": 0.7}], [torch.randn(1, 3, 8, generator=g), {}]]
    c1, c2, neg = (as_entries(c, "c") for c in (c1, c2, neg))
    x, sigma = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([2.0])
    lat = torch.zeros_like(x)

    def pred(c):
        return GuidedDenoiser(toy_model, c, c, 1.0, lat, x, sigma)(x, sigma)

    d = GuidedDenoiser(toy_model, c1, neg, cfg1, lat, x, sigma, DualCFG(c2, cfg2, nested))(x, sigma)
    p1, p2, pn = pred(c1), pred(c2), pred(neg)
    if nested:
        want = pn + cfg2 * ((p2 + (p1 - p2) * cfg1) - pn)
    else:
        pn = pn if cfg2 != 1.0 else torch.zeros_like(pn)
        p2 = p2 if (cfg2, cfg1) != (1.0, 1.0) else torch.zeros_like(p2)
        want = pn + (p2 - pn) * cfg2 + (p1 - p2) * cfg1
    assert torch.allclose(d, want, atol=1e-5, rtol=1e-5)


def test_flux_kontext_is_named_by_its_family():
    assert "DualCFGGuider" in NODES and "InstructPixToPixConditioning" in NODES
    assert scope_note("ReferenceLatent") == "out of scope: Flux Kontext edit models"
    assert scope_note("FluxKontextImageScale") == "out of scope: Flux Kontext edit models"
    assert scope_note("FluxKontextMultiReferenceLatentMethod") == "out of scope: Flux Kontext edit models"


def _fake_checkpoint(in_ch: int, kind: str) -> dict:
    z = torch.zeros(1)
    sd = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, in_ch, 3, 3)}
    if kind == "sd1":
        sd["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = z
    elif kind == "sd2":
        sd["cond_stage_model.model.token_embedding.weight"] = z
    elif kind == "refiner":
        sd.update({"model.diffusion_model.label_emb.0.0.weight": z, "conditioner.embedders.0.model.ln_final.weight": z})
    return sd


def test_edit_unets_load_for_sd1_and_sdxl_only():
    assert detect_family(_fake_checkpoint(8, "sd1")).name == "sd1"
    with pytest.raises(UnsupportedModelError, match="8 input channels"):
        detect_family(_fake_checkpoint(8, "sd2"))
    with pytest.raises(UnsupportedModelError, match="8 input channels"):
        detect_family(_fake_checkpoint(8, "refiner"))
    with pytest.raises(UnsupportedModelError, match="7 input channels"):
        detect_family(_fake_checkpoint(7, "sd1"))


def test_edm_vpred_markers_as_comfyui_reads_them():
    assert edm_vpred_range({}) is None
    assert edm_vpred_range({"edm_vpred.sigma_max": torch.tensor(120.0)}) == pytest.approx((0.002, 120.0))
    assert edm_vpred_range({"edm_vpred.sigma_max": torch.tensor(80.0), "edm_vpred.sigma_min": torch.tensor(0.01)}) \
        == pytest.approx((0.01, 80.0))
