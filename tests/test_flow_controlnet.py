"""Flux / SD3 ControlNets (models/flow_control.py) as ComfyUI 0.30 runs them: the layouts its ControlNetLoader
reads (XLabs, InstantX, Union, SD3 diffusers), ControlNetApplyAdvanced with its vae, SetUnionControlNetType, chains
and step windows, TwoSamplersForMask and the CLI's --controlnet; one-line refusals for the other layouts.

References: tests/data/flow_controlnet.safetensors, made by tests/comfy_oracle/flow_controlnet.py (ComfyUI 0.30.0)
from the same tiny files (tests/flow_models.py, tests/flow_control_models.py; their digests are checked here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from flow_control_models import (
    FILES,
    digests,
    flux_instantx,
    flux_mistoline,
    flux_xlabs,
    sd3_controlnet,
    sd35_controlnet,
    write_controlnets,
)
from flow_control_workflows import WORKFLOWS
from flow_workflows import write_inputs
from safetensors.torch import load_file, save_file

from twosamplers.cli import main
from twosamplers.job.imageio import load_image
from twosamplers.models import load
from twosamplers.models.control import apply_controlnet
from twosamplers.models.flow_control import (
    UNION_TYPES,
    FlowControlNet,
    UnsupportedControlNetError,
    flow_controlnet_kind,
    load_flow_controlnet,
)
from twosamplers.workflow import NODES, run

DATA = Path(__file__).parent / "data"
REF = load_file(str(DATA / "flow_controlnet.safetensors"))
TOL = 2e-3  # the tolerance for latents at the end of sampling
FLUX = "checkpoints/flux_dev_aio.safetensors"


@pytest.fixture(scope="module")
def cn_dir(flow_models_dir):
    write_controlnets(flow_models_dir)
    return flow_models_dir


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("flow_cn_input")
    write_inputs(d)
    return d


@pytest.fixture(scope="module")
def flux(cn_dir):
    return load(cn_dir / FLUX, device="cpu")


def test_tiny_controlnets_are_the_ones_the_references_were_made_from():
    assert digests() == json.loads((DATA / "flow_controlnet_models.json").read_text())


@pytest.mark.parametrize("name", list(WORKFLOWS))
def test_controlnet_workflow_matches_comfyui(cn_dir, inputs, tmp_path, name):
    wf = WORKFLOWS[name]()
    assert not {n["class_type"] for n in wf.values()} - set(NODES)
    outputs = run(wf, models=cn_dir, input_dir=inputs, output_dir=tmp_path)
    latents = [o for o in outputs if o["class_type"] == "SaveLatent"]
    assert len(latents) == 1
    ref = REF[f"{name}/saved/{latents[0]['node']}"]
    ours = latents[0]["samples"]["samples"].float()
    assert tuple(ours.shape) == tuple(ref.shape)
    diff = float((ours - ref).abs().max())
    assert diff <= TOL, f"{name}: max |diff| {diff:.3e}"


# ------------------------------------------------------------------------------------------------ layouts
def test_layouts_are_told_apart_as_comfyui_does():
    assert flow_controlnet_kind(flux_xlabs(hidden=128, depth=1)) == "flux-xlabs"
    assert flow_controlnet_kind(flux_instantx(hidden=128, depth=1, single=1)) == "flux-instantx"
    assert flow_controlnet_kind(flux_instantx(union=True, hidden=128, depth=1, single=1)) == "flux-instantx"
    assert flow_controlnet_kind(sd3_controlnet()) == "sd3"
    assert flow_controlnet_kind(sd35_controlnet()) == "sd35"
    assert flow_controlnet_kind(flux_mistoline(hidden=128)) == "flux-mistoline"
    assert flow_controlnet_kind(flux_instantx(inpaint=True, hidden=128, depth=1, single=1)) == "flux-instantx"
    assert flow_controlnet_kind({"zero_convs.0.0.weight": 0, "input_hint_block.0.weight": 0}) is None


@pytest.mark.parametrize("keys, match", [
    (["controlnet_blocks.0.weight", "transformer_blocks.0.img_mlp.net.0.proj.weight"], "Qwen-Image"),
])
def test_other_layouts_are_refused_in_one_line(keys, match):
    with pytest.raises(UnsupportedControlNetError, match=match) as e:
        flow_controlnet_kind(dict.fromkeys(keys))
    assert "\n" not in str(e.value)


def test_hints_of_other_widths_are_refused_at_load(tmp_path):
    sd = flux_instantx(hidden=128, depth=1, single=1)
    sd["controlnet_x_embedder.weight"] = torch.zeros(128, 80)
    save_file(sd, str(tmp_path / "wide.safetensors"))
    with pytest.raises(UnsupportedControlNetError, match="20-channel hint is not supported"):
        load_flow_controlnet(tmp_path / "wide.safetensors", device="cpu")


def test_broken_files_are_refused_in_one_line(tmp_path):
    sd = flux_xlabs(hidden=128, depth=1)
    sd["input_hint_block.2.weight"] = torch.zeros(16, 16, 5, 5)
    sd35 = sd35_controlnet()
    sd35["control_type"] = torch.zeros(0)
    for name, bad in (("xlabs", sd), ("sd35", sd35), ("short", {k: v for k, v in sd.items() if "txt_in" not in k})):
        save_file(bad, str(tmp_path / f"{name}.safetensors"))
        with pytest.raises(UnsupportedControlNetError) as e:
            load_flow_controlnet(tmp_path / f"{name}.safetensors", device="cpu")
        assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)


def test_sd35_double_y_embedder_layout_is_refused(tmp_path):
    sd = sd35_controlnet()
    sd["time_text_embed.text_embedder.linear_1.weight"] = torch.zeros(128, 128)
    save_file(sd, str(tmp_path / "dy.safetensors"))
    with pytest.raises(UnsupportedControlNetError, match="double_y_emb"):
        load_flow_controlnet(tmp_path / "dy.safetensors", device="cpu")


def test_sd35_controlnet_maps_its_hint_by_its_control_type(cn_dir):
    canny = load_flow_controlnet(cn_dir / FILES_PATH["sd35_canny"], device="cpu")
    depth = load_flow_controlnet(cn_dir / FILES_PATH["sd35_depth"], device="cpu")
    assert (canny.kind, canny.preprocess, depth.preprocess) == ("sd35", "canny", "depth")
    assert canny.title == "SD3.5 ControlNet (Stability)"


def test_controlnet_loader_node_names_the_file_when_it_refuses(tmp_path):
    (tmp_path / "controlnet").mkdir()
    save_file({"controlnet_blocks.0.weight": torch.zeros(2, 2),
               "transformer_blocks.0.img_mlp.net.0.proj.weight": torch.zeros(2, 2)},
              str(tmp_path / "controlnet" / "misto.safetensors"))
    from twosamplers.nodes.folders import Folders

    node = NODES["ControlNetLoader"](Folders.create(models=tmp_path))
    with pytest.raises(UnsupportedControlNetError, match="^misto.safetensors: Qwen-Image ControlNets") as e:
        node.load_controlnet("misto.safetensors")
    assert "\n" not in str(e.value)


def test_sd_loader_says_a_flux_controlnet_is_not_for_stable_diffusion(cn_dir):
    from twosamplers.models.controlnet import load_controlnet
    from twosamplers.models.sd_loading import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="Flux / SD3 ControlNet"):
        load_controlnet(cn_dir / FILES_PATH["xlabs"], device="cpu")


FILES_PATH = {"xlabs": "controlnet/flux_xlabs_cn.safetensors", "instantx": "controlnet/flux_instantx_cn.safetensors",
              "union": "controlnet/flux_union_cn.safetensors", "sd3": "controlnet/sd3_cn.safetensors",
              "sd35_canny": "controlnet/sd35_canny_cn.safetensors",
              "sd35_depth": "controlnet/sd35_depth_cn.safetensors",
              "mistoline": "controlnet/flux_mistoline_cn.safetensors",
              "inpaint": "controlnet/flux_inpaint_cn.safetensors",
              "sd3_inpaint": "controlnet/sd3_inpaint_cn.safetensors"}
assert set(FILES_PATH.values()) == set(FILES)


# ------------------------------------------------------------------------------------------------ behaviour
def _denoised(model, positive, x, sigma):
    entry = positive[0]
    extras = model.extra_conds(entry[1], latent_image=x, denoise_mask=None)
    return model.apply_model(x, torch.tensor([sigma]), entry[0], **extras)


def _hint(h=64, w=64):
    g = torch.Generator().manual_seed(3)
    return torch.rand((1, h, w, 3), generator=g)


@pytest.mark.parametrize("which", ["xlabs", "instantx", "union", "mistoline", "inpaint"])
def test_a_controlnet_changes_the_prediction_inside_its_window_only(flux, cn_dir, which):
    cn = flux.load_controlnet(cn_dir / FILES_PATH[which])
    assert isinstance(cn, FlowControlNet) and cn.family == "flux"
    pos = flux.encode_prompt("a house")
    x = torch.randn((1, 16, 8, 8), generator=torch.Generator().manual_seed(1))
    plain = _denoised(flux, pos, x, 0.7)
    guided, _ = apply_controlnet(pos, [], cn, _hint(), 0.9, 0.0, 0.5)
    on = _denoised(flux, guided, x, 0.9)  # sigma 0.9: inside the first half of the schedule
    assert float((on - _denoised(flux, pos, x, 0.9)).abs().max()) > 1e-2
    assert torch.equal(_denoised(flux, guided, x, 0.7 * 0.1), _denoised(flux, pos, x, 0.7 * 0.1))  # outside
    zero, _ = apply_controlnet(pos, [], cn, _hint(), 0.0)
    assert zero is pos and torch.equal(_denoised(flux, zero, x, 0.7), plain)
    again, _ = apply_controlnet(pos, [], cn, _hint(), 0.9, 0.0, 0.5)
    assert torch.equal(_denoised(flux, again, x, 0.9), on)  # deterministic


def test_alimama_node_masks_the_hint_and_adds_the_mask_channel(flux, cn_dir):
    cn = flux.load_controlnet(cn_dir / FILES_PATH["inpaint"])
    assert cn.concat_mask
    pos = flux.encode_prompt("a house")
    mask = torch.zeros((1, 64, 64))
    mask[:, :, 32:] = 1.0
    node = NODES["ControlNetInpaintingAliMamaApply"]()
    from twosamplers.nodes.handles import VaeHandle

    got, _ = node.apply_inpaint_controlnet(pos, [], cn, VaeHandle(flux.vae), _hint(), mask, 1.0, 0.0, 1.0)
    c = got[0][1]["control"]
    assert torch.equal(c.extra_concat, 1.0 - mask.reshape(1, 1, 64, 64))
    assert torch.all(c.image[:, :, 32:] == 0) and torch.equal(c.image[:, :, :32], _hint()[:, :, :32])
    x = torch.randn((1, 16, 8, 8), generator=torch.Generator().manual_seed(5))
    plain = apply_controlnet(pos, [], cn, _hint(), 1.0, vae=flux.vae)[0]
    assert not torch.equal(_denoised(flux, got, x, 0.8), _denoised(flux, plain, x, 0.8))
    sd_like = NODES["ControlNetInpaintingAliMamaApply"]().apply_inpaint_controlnet(
        pos, [], flux.load_controlnet(cn_dir / FILES_PATH["instantx"]), VaeHandle(flux.vae), _hint(), mask, 1.0,
        0.0, 1.0)[0]
    assert sd_like[0][1]["control"].extra_concat is None  # not an inpainting ControlNet: ControlNetApplyAdvanced


def test_union_type_is_its_embedding_and_auto_is_none(flux, cn_dir):
    cn = flux.load_controlnet(cn_dir / FILES_PATH["union"])
    assert cn.num_modes == 10 and cn.control_type == []
    pos = flux.encode_prompt("a house")
    x = torch.randn((1, 16, 8, 8), generator=torch.Generator().manual_seed(2))
    outs = {}
    for t in ("auto", "depth", "canny/lineart/anime_lineart/mlsd"):
        typed = cn.with_control_type(t)
        outs[t] = _denoised(flux, apply_controlnet(pos, [], typed, _hint(), 1.0)[0], x, 0.8)
    assert cn.control_type == [] and cn.with_control_type("depth").control_type == [UNION_TYPES["depth"]]
    assert not torch.equal(outs["auto"], outs["depth"]) and not torch.equal(outs["depth"], outs[
        "canny/lineart/anime_lineart/mlsd"])
    with pytest.raises(ValueError, match="type must be"):
        cn.with_control_type("pose")
    node = NODES["SetUnionControlNetType"]()
    assert node.set_controlnet_type(cn, "tile")[0].control_type == [6]


def test_a_latent_hint_needs_a_vae(cn_dir):
    bare = load(cn_dir / "diffusion_models/flux_dev.safetensors", device="cpu")
    text = load(cn_dir / FLUX, device="cpu")
    cn = bare.load_controlnet(cn_dir / FILES_PATH["instantx"])
    pos = apply_controlnet(text.encode_prompt("a"), [], cn, _hint(), 1.0)[0]
    with pytest.raises(ValueError, match="vae"):
        _denoised(bare, pos, torch.zeros((1, 16, 8, 8)), 0.5)
    with_vae = apply_controlnet(text.encode_prompt("a"), [], cn, _hint(), 1.0, vae=text.vae)[0]
    assert torch.isfinite(_denoised(bare, with_vae, torch.zeros((1, 16, 8, 8)), 0.5)).all()


@pytest.mark.parametrize("which", ["sd3", "sd35_canny"])
def test_sd3_controlnets_change_the_prediction(cn_dir, which):
    sd3 = load(cn_dir / "diffusion_models/sd35_large_4096.safetensors", device="cpu")
    text = load(cn_dir / "checkpoints/sd35_large_aio.safetensors", device="cpu")
    from twosamplers.models.flow_text import SD3TextEncoders

    clips = SD3TextEncoders(text.text.clip_l, text.text.clip_g, None)  # DualCLIPLoader(sd3): 4096-wide context
    pos = clips.encode_prompt("a castle")
    cn = sd3.load_controlnet(cn_dir / FILES_PATH[which])
    x = torch.randn((1, 16, 8, 8), generator=torch.Generator().manual_seed(4))
    guided = apply_controlnet(pos, [], cn, _hint(), 1.0, vae=text.vae)[0]
    diff = (_denoised(sd3, guided, x, 0.6) - _denoised(sd3, pos, x, 0.6)).abs().max()
    assert float(diff) > 1e-2


def test_a_controlnet_of_the_other_family_is_refused(cn_dir):
    sd3 = load(cn_dir / "checkpoints/sd35_large_aio.safetensors", device="cpu")
    with pytest.raises(Exception, match="is a Flux ControlNet; it cannot guide this SD3.5 large model"):
        sd3.load_controlnet(cn_dir / FILES_PATH["xlabs"])
    flux_cn = load_flow_controlnet(cn_dir / FILES_PATH["xlabs"], device="cpu")
    pos = apply_controlnet(sd3.encode_prompt("a"), [], flux_cn, _hint(), 1.0)[0]
    with pytest.raises(UnsupportedControlNetError, match="cannot guide this SD3.5 large model"):
        _denoised(sd3, pos, torch.zeros((1, 16, 8, 8)), 0.5)


# ------------------------------------------------------------------------------------------------ the CLI
def test_cli_controlnets_on_flux_both_passes_deterministic(cn_dir, inputs, tmp_path, capsys):
    hint = str(inputs / "src.png")
    argv = ["generate", "--model", str(cn_dir / FLUX), "--base-prompt", "a meadow", "--mask-prompt", "a barn",
            "--mask", str(inputs / "mask.png"), "--steps", "2", "--width", "64", "--height", "64", "--seed", "5",
            "--controlnet", f"{cn_dir / FILES_PATH['instantx']}:{hint}:0.8",
            "--mask-controlnet", f"{cn_dir / FILES_PATH['xlabs']}:{hint}:0.6:0:0.7", "-q"]
    outs = []
    for i in range(2):
        out = tmp_path / f"out{i}.png"
        assert main([*argv, "-o", str(out)]) == 0, capsys.readouterr().err
        outs.append(load_image(out))
    plain = tmp_path / "plain.png"
    assert main([*argv[:argv.index("--controlnet")], "-q", "-o", str(plain)]) == 0
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], load_image(plain))


def test_cli_refuses_a_controlnet_of_the_other_family_in_one_line(cn_dir, inputs, tmp_path, capsys):
    code = main(["generate", "--model", str(cn_dir / "checkpoints/sd35_large_aio.safetensors"), "--base-prompt",
                 "a", "--mask-prompt", "b", "--mask", str(inputs / "mask.png"), "--steps", "1", "--width", "32",
                 "--height", "32", "--controlnet", f"{cn_dir / FILES_PATH['union']}:{inputs / 'src.png'}",
                 "-o", str(tmp_path / "x.png"), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "is a Flux ControlNet" in err


# ------------------------------------------------------------------------------------------------ ControlNetApplySD3
def test_controlnet_apply_sd3_inputs_are_comfyuis():
    """ComfyUI 0.30's deprecated "Apply Controlnet with VAE" (its INPUT_TYPES, run on the oracle): the vae is
    required and comes before the image; the widgets are ControlNetApplyAdvanced's."""
    spec = NODES["ControlNetApplySD3"].INPUT_TYPES()
    assert list(spec) == ["required"]
    assert list(spec["required"]) == ["positive", "negative", "control_net", "vae", "image", "strength",
                                      "start_percent", "end_percent"]
    adv = NODES["ControlNetApplyAdvanced"].INPUT_TYPES()["required"]
    for k in ("strength", "start_percent", "end_percent"):
        assert spec["required"][k] == adv[k]
    assert spec["required"]["strength"][1] == {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}
    assert NODES["ControlNetApplySD3"].RETURN_NAMES == ("positive", "negative")


@pytest.mark.parametrize("name", ["flux_cn_instantx_chain", "sd3_cn"])
def test_controlnet_apply_sd3_gives_controlnet_apply_advanceds_bits(cn_dir, inputs, tmp_path, name):
    """The same workflow with its ControlNetApplyAdvanced (given a vae) replaced by ControlNetApplySD3: the same
    bits (and so the same ComfyUI parity, test_controlnet_workflow_matches_comfyui)."""
    wf = WORKFLOWS[name]()
    assert wf["53"]["class_type"] == "ControlNetApplyAdvanced" and "vae" in wf["53"]["inputs"]
    sd3 = json.loads(json.dumps(wf))
    sd3["53"]["class_type"] = "ControlNetApplySD3"
    got = []
    for i, w in enumerate((wf, sd3)):
        outputs = run(w, models=cn_dir, input_dir=inputs, output_dir=tmp_path / str(i))
        got.append(next(o for o in outputs if o["class_type"] == "SaveLatent")["samples"]["samples"])
    assert torch.equal(got[0], got[1])
    plain = json.loads(json.dumps(wf))
    plain["53"]["inputs"]["strength"] = 0.0  # the ControlNet does something here
    outputs = run(plain, models=cn_dir, input_dir=inputs, output_dir=tmp_path / "plain")
    assert not torch.equal(next(o for o in outputs if o["class_type"] == "SaveLatent")["samples"]["samples"], got[0])


def test_controlnet_apply_sd3_without_a_vae_is_refused(cn_dir, inputs, tmp_path):
    from twosamplers.workflow import WorkflowError

    wf = WORKFLOWS["sd3_cn"]()
    wf["53"]["class_type"] = "ControlNetApplySD3"
    del wf["53"]["inputs"]["vae"]
    with pytest.raises(WorkflowError, match="vae") as e:
        run(wf, models=cn_dir, input_dir=inputs, output_dir=tmp_path / "out")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    with pytest.raises(ValueError, match="vae is required"):
        NODES["ControlNetApplySD3"]().apply_controlnet([], [], None, None, _hint(), 1.0, 0.0, 1.0)
