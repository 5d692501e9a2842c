"""T2I-Adapters through ControlNetLoader / ControlNetApply(Advanced) against ComfyUI 0.30's own: comfy_refs/t2i.*
hold the KSampler latents and adapter features ComfyUI gave (made by comfy_refs/make_t2i_refs.py with the shared
oracle) on the tiny SD1.5-like / SDXL-like UNets and adapters of comfy_refs/t2i_models.py; the same weights are
drawn here, the adapters saved as files in each layout and run through this project's node classes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")

from safetensors.torch import load_file, save_file  # noqa: E402

from twosamplers.engine.schedules import ModelSamplingDiscrete  # noqa: E402
from twosamplers.models.base import NetworkModel  # noqa: E402
from twosamplers.models.sd import UNetAdapter  # noqa: E402
from twosamplers.nodes.folders import Folders  # noqa: E402
from twosamplers.nodes.registry import NODES  # noqa: E402

REFS = Path(__file__).parent / "comfy_refs"
sys.path.insert(0, str(REFS))
import t2i_models as tm  # noqa: E402

REF = load_file(str(REFS / "t2i.safetensors"))
CASES = json.loads((REFS / "t2i.json").read_text())["cases"]
RTOL = 2e-5  # of the latent's scale (|latent| ~ 200-540 at cfg 5 on these random UNets); measured: <= 1.8e-3 abs
C = {k: torch.from_numpy(v) for k, v in tm.conditioning().items()}
SIZES = {"width": 64, "height": 64, "crop_w": 0, "crop_h": 0, "target_width": 64, "target_height": 64}
POS, NEG = [[C["positive"], {}]], [[C["negative"], {}]]
POS_XL = [[C["positive_xl"], {"pooled_output": C["pooled_pos"], **SIZES}]]
NEG_XL = [[C["negative_xl"], {"pooled_output": C["pooled_neg"], **SIZES}]]
FILES = {"sd1_full": "t2iadapter_full.safetensors", "sd1_full_diffusers": "t2i_diffusers.safetensors",
         "sd1_grey_conv": "t2iadapter_grey.pth", "sdxl_full": "xl/t2i_xl.safetensors",
         "sdxl_grey": "xl/t2i_xl_grey.safetensors", "light": "t2i_light.safetensors",
         "sd1_controlnet": "cn.safetensors"}


def _t(sd):
    return {k: torch.from_numpy(v.copy()) for k, v in sd.items()}


def _unet(name: str):
    from diffusers import UNet2DConditionModel
    from test_sd_backend import to_ldm_unet

    unet = UNet2DConditionModel(**tm.shapes()[name + "_config"])
    names = dict(zip(to_ldm_unet(unet), unet.state_dict(), strict=True))  # LDM key -> diffusers key
    weights = tm.weights(name)
    unet.load_state_dict({names[k]: torch.from_numpy(v) for k, v in weights.items()})
    sdxl = name.startswith("sdxl")
    return NetworkModel(UNetAdapter(unet.eval().requires_grad_(False), sdxl, 8), ModelSamplingDiscrete("eps"),
                        latent_scale=0.13025 if sdxl else 0.18215)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i")
    cn = root / "controlnet"
    (cn / "xl").mkdir(parents=True)
    for name, file in FILES.items():
        if name == "sd1_full_diffusers":
            sd = _t(tm.diffusers_layout(tm.weights("sd1_full")))
        else:
            sd = _t(tm.weights(name))
        if file.endswith(".pth"):  # TencentARC's pickles: {"adapter": state dict} in some releases
            torch.save({"adapter": sd}, str(cn / file))
        else:
            save_file(sd, str(cn / file))
    folders = Folders.create(models=root, load_options={"device": "cpu", "dtype": "fp32", "allow_pickle": True})
    load = NODES["ControlNetLoader"](folders)
    nets = {name: load.load_controlnet(file)[0] for name, file in FILES.items()}
    return {"sd1": _unet("sd1_unet"), "sdxl": _unet("sdxl_unet"), "nets": nets, "folders": folders}


def apply(env, positive, negative, controls):
    for name, hint, strength, start, end in controls:
        positive, negative = NODES["ControlNetApplyAdvanced"]().apply_controlnet(
            positive, negative, env["nets"][name], C[hint], strength, start, end)
    return positive, negative


def run(env, case, positive, negative):
    s, model = CASES[case], env[case.split("/")[0]]
    if s["masked"]:
        latent = {"samples": C["latent"], "noise_mask": C["mask"].reshape(1, 1, 64, 64)}
    else:
        latent = {"samples": torch.zeros(s["latent"])}
    (out,) = NODES["KSampler"]().sample(model, s["seed"], s["steps"], s["cfg"], s["sampler"], s["scheduler"],
                                        positive, negative, latent, s["denoise"], disable_pbar=True)
    ref = REF[case]
    diff = (out["samples"] - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert diff <= RTOL * max(scale, 1.0), f"{case}: max |diff| {diff:.3g} at |ref| {scale:.3g}"
    return out["samples"]


SAMPLED = [c for c in CASES if not c.startswith("features/") and CASES[c]["controls"]
           and CASES[c]["controls"][0][-1] != "ControlNetApply"]


def test_without_adapter_matches(env):
    run(env, "sd1/none", POS, NEG)
    run(env, "sdxl/none", POS_XL, NEG_XL)


@pytest.mark.parametrize("case", SAMPLED)
def test_adapter_sampling_matches_comfyui(env, case):
    pos, neg = (POS_XL, NEG_XL) if case.startswith("sdxl") else (POS, NEG)
    out = run(env, case, *apply(env, pos, neg, CASES[case]["controls"]))
    base = REF[case.split("/")[0] + "/none"]
    if out.shape == base.shape and not CASES[case]["masked"]:  # the adapter does change the result
        assert (out - base).abs().max() > 1e-2


def test_older_apply_node_guides_uncond_too(env):
    (cond,) = NODES["ControlNetApply"]().apply_controlnet(POS, env["nets"]["sd1_full"], C["hint"], 0.9)
    run(env, "sd1/apply_old_node", cond, NEG)


@pytest.mark.parametrize("name", sorted({k.split("/")[1] for k in CASES if k.startswith("features/")}))
def test_features_match_comfyui(env, name):
    from twosamplers.models.control import ControlApply

    case = CASES[f"features/{name}"]
    h, w = case["latent_hw"]
    apply_ = ControlApply(env["nets"][name], C[case["hint"]], case["strength"])
    feats = apply_.adapter_features(1, h * 8, w * 8, 1, torch.device("cpu"), torch.float32)
    assert len(feats) == case["count"]
    for i, f in enumerate(feats):
        ref = REF[f"features/{name}/{i}"]
        assert f.shape == ref.shape
        torch.testing.assert_close(f * case["strength"], ref, rtol=1e-5, atol=1e-5)


def test_adapter_runs_once_per_hint(env, monkeypatch):
    net = env["nets"]["sd1_full"]
    calls = []
    real = net.features
    monkeypatch.setattr(net, "features", lambda *a, **k: calls.append(1) or real(*a, **k))
    run(env, "sd1/full", *apply(env, POS, NEG, [["sd1_full", "hint", 1.0, 0.0, 1.0]]))
    assert len(calls) == 1  # 3 steps, cond + uncond batched: one adapter run


def test_kinds_and_layouts_are_read(env):
    nets = env["nets"]
    assert (nets["sd1_full"].kind, nets["sd1_full"].channels_in, nets["sd1_full"].xl) == ("full", 3, False)
    assert (nets["sd1_grey_conv"].channels_in, nets["sd1_grey_conv"].unshuffle) == (1, 8)
    assert (nets["sdxl_grey"].channels_in, nets["sdxl_grey"].unshuffle, nets["sdxl_grey"].xl) == (1, 16, True)
    assert nets["light"].kind == "light"
    for a, b in zip(nets["sd1_full"].network.state_dict().values(),
                    nets["sd1_full_diffusers"].network.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_adapter_of_another_family_is_refused(env):
    pos, neg = apply(env, POS, NEG, [["sdxl_full", "hint", 1.0, 0.0, 1.0]])
    with pytest.raises(Exception, match="SDXL T2I-Adapter .* does not fit this SD1.x"):
        NODES["KSampler"]().sample(env["sd1"], 1, 1, 5.0, "euler", "normal", pos, neg,
                                   {"samples": torch.zeros(1, 4, 8, 8)}, 1.0, disable_pbar=True)


def test_bad_files_are_named_as_the_workflow_names_them(env, tmp_path):
    cn = tmp_path / "controlnet"
    cn.mkdir()
    sd = _t(tm.weights("sd1_full"))
    del sd["body.3.block2.weight"]
    save_file(sd, str(cn / "broken_t2iadapter.safetensors"))
    light = _t(tm.diffusers_layout(tm.weights("sd1_full")))
    light["adapter.body.0.in_conv.weight"] = torch.zeros(8, 192, 1, 1)
    save_file(light, str(cn / "light_diffusers.safetensors"))
    # widths that would take tens of GB to lay out (4096 x (1, 2, 4, 4)): refused before any memory is taken
    save_file({"conv_in.weight": torch.zeros(4096, 64, 3, 3, dtype=torch.float16),
               "body.0.block2.weight": torch.zeros(1, 1, 1, 1)}, str(cn / "huge_t2iadapter.safetensors"))
    load = NODES["ControlNetLoader"](Folders.create(models=tmp_path, load_options={"device": "cpu"}))
    with pytest.raises(Exception, match=r"huge_t2iadapter\.safetensors.*do not fit its layout \(missing"):
        load.load_controlnet("huge_t2iadapter.safetensors")
    with pytest.raises(Exception, match=r"broken_t2iadapter\.safetensors.*missing: body\.3\.block2\.weight"):
        load.load_controlnet("broken_t2iadapter.safetensors")
    with pytest.raises(Exception, match=r"light_diffusers\.safetensors.*light T2I-Adapter in diffusers' layout"):
        load.load_controlnet("light_diffusers.safetensors")
    (cn / "sub").mkdir()
    save_file(sd, str(cn / "sub" / "broken_t2iadapter.pth"))
    with pytest.raises(Exception, match=r"^sub\\broken_t2iadapter\.pth: a T2I-Adapter whose weights do not fit"):
        load.load_controlnet("sub\\broken_t2iadapter.pth")  # the workflow's (Windows) name, once


# ------------------------------------------------------------------------------------------------ in workflows
@pytest.fixture(scope="module")
def wf_dirs(tiny_sd_files, tmp_path_factory):
    """models/ (the tiny SD1.x checkpoint, a 3-channel adapter for its widths 32 / 64 as a TencentARC pickle name,
    an SDXL adapter) and input/ (a hint photo, a mask)."""
    import numpy as np
    from PIL import Image

    from twosamplers.models.t2i_adapter import FullAdapter

    root = tmp_path_factory.mktemp("t2i_wf")
    (root / "checkpoints").mkdir()
    (root / "controlnet").mkdir()
    (root / "checkpoints" / "sd1.safetensors").symlink_to(tiny_sd_files["sd1_file"])
    torch.manual_seed(3)
    save_file(FullAdapter(192, 32, 1, False, False).state_dict(), str(root / "controlnet" / "t2iadapter_depth.pth"))
    save_file(FullAdapter(768, 32, 1, False, True).state_dict(), str(root / "controlnet" / "t2i_xl.safetensors"))
    inp = root / "input"
    inp.mkdir()
    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(inp / "photo.png")
    m = np.zeros((64, 64, 3), np.uint8)
    m[16:48, 8:40] = 255
    Image.fromarray(m).save(inp / "mask.png")
    return root, inp


def two_samplers_with_adapters(adapter="t2iadapter_depth.pth", strength=0.8) -> dict:
    """Impact's TwoSamplersForMask, the base sampler's conditioning through ControlNetApplyAdvanced and the mask
    sampler's positive through the older ControlNetApply, both with one T2I-Adapter."""
    from workflow_cases import api_two_samplers

    wf = api_two_samplers()
    wf["4"]["inputs"]["ckpt_name"] = "sd1.safetensors"
    wf.update({
        "40": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": adapter}},
        "41": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "42": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["6", 0], "negative": ["7", 0], "control_net": ["40", 0], "image": ["41", 0],
            "strength": strength, "start_percent": 0.0, "end_percent": 1.0}},
        "43": {"class_type": "ControlNetApply", "inputs": {"conditioning": ["16", 0], "control_net": ["40", 0],
                                                           "image": ["41", 0], "strength": strength / 2}},
    })
    wf["20"]["inputs"].update(positive=["42", 0], negative=["42", 1])
    wf["21"]["inputs"]["positive"] = ["43", 0]
    return wf


def test_two_samplers_for_mask_workflow_with_adapters(wf_dirs, tmp_path):
    from twosamplers.workflow import run as run_wf

    models, inputs = wf_dirs

    def latent(wf):
        out = run_wf(wf, models, input_dir=inputs, output_dir=tmp_path / "out", device="cpu", dtype="fp32")
        return next(o for o in out if o["class_type"] == "SaveLatent")["samples"]["samples"]

    a = latent(two_samplers_with_adapters())
    assert torch.equal(a, latent(two_samplers_with_adapters()))  # deterministic
    plain = latent(two_samplers_with_adapters(strength=0.0))  # strength 0: the conditioning is left as it was
    assert torch.isfinite(a).all() and (a - plain).abs().max() > 1e-3


def test_workflow_with_an_adapter_of_another_family_names_it(wf_dirs, tmp_path):
    from twosamplers.workflow import WorkflowError
    from twosamplers.workflow import run as run_wf

    models, inputs = wf_dirs
    with pytest.raises(WorkflowError, match=r"SDXL T2I-Adapter t2i_xl\.safetensors .*does not fit this SD1"):
        run_wf(two_samplers_with_adapters("t2i_xl.safetensors"), models, input_dir=inputs,
               output_dir=tmp_path / "out", device="cpu", dtype="fp32")


def test_adapter_runs_in_float32_beside_a_bfloat16_unet(env):
    """ComfyUI runs the adapter in the sampled latent's dtype (float32) and adds its features to the UNet's own."""
    import copy

    model = env["sd1"]
    unet = copy.deepcopy(model.network.unet).to(torch.bfloat16)
    bf16 = NetworkModel(UNetAdapter(unet, False, 8), ModelSamplingDiscrete("eps"))
    pos, neg = apply(env, POS, NEG, [["sd1_full", "hint", 1.0, 0.0, 1.0]])
    (out,) = NODES["KSampler"]().sample(bf16, 7, 3, 5.0, "euler", "normal", pos, neg,
                                        {"samples": torch.zeros(1, 4, 8, 8)}, 1.0, disable_pbar=True)
    ref = REF["sd1/full"]
    assert out["samples"].dtype == torch.float32
    assert (out["samples"] - ref).abs().max() < 0.05 * ref.abs().max()  # bfloat16's precision, not another result
    assert env["nets"]["sd1_full"].dtype == torch.float32  # the loaded weights are left as they were


def test_adapter_on_a_flux_model_is_refused_by_name(env):
    from types import SimpleNamespace

    from twosamplers.models.control import ControlApply
    from twosamplers.models.flow_control import UnsupportedControlNetError, control_residuals

    flux = SimpleNamespace(family="flux", title="Flux.1 model")
    active = [ControlApply(env["nets"]["sd1_full"], C["hint"], 1.0)]
    with pytest.raises(UnsupportedControlNetError, match="a SD1.x T2I-Adapter cannot guide this Flux.1 model"):
        control_residuals(flux, active, torch.zeros(1, 16, 8, 8), torch.zeros(1), torch.zeros(1, 4, 64), {}, 1)


def test_diffusers_adapter_folder_loads_and_matches_diffusers_own_module(env, tmp_path):
    """A diffusers T2IAdapter folder (save_pretrained) in models/controlnet/ loads with the same weights, and
    diffusers' own FullAdapter gives the features ours gives (even sizes, where its ceil-mode pooling agrees)."""
    from diffusers import T2IAdapter

    ref = T2IAdapter(in_channels=3, channels=[32, 64, 128, 128], num_res_blocks=2, downscale_factor=8,
                     adapter_type="full_adapter")
    ref.load_state_dict(_t(tm.diffusers_layout(tm.weights("sd1_full"))))
    ref.save_pretrained(tmp_path / "controlnet" / "t2i_folder")
    load = NODES["ControlNetLoader"](Folders.create(models=tmp_path, load_options={"device": "cpu"}))
    (net,) = load.load_controlnet("t2i_folder")
    ours = env["nets"]["sd1_full"]
    hint = torch.rand(2, 3, 64, 128, generator=torch.Generator().manual_seed(0))
    theirs = ref.eval()(hint)
    for a, b, c in zip(net.features(hint, torch.float32), ours.features(hint, torch.float32), theirs, strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)


def test_per_pass_adapter_in_the_python_api(wf_dirs):
    """`ControlNet(file, image)` on a pass takes a T2I-Adapter file too (loaded for the pass's model when the
    settings are made, so an adapter of another family is refused before sampling)."""
    from twosamplers import ControlNet, SamplerSettings, two_samplers_for_mask
    from twosamplers.models.sd import load_sd
    from twosamplers.models.sd_loading import UnsupportedModelError

    models, _ = wf_dirs
    model = load_sd(models / "checkpoints" / "sd1.safetensors", device="cpu")
    hint = torch.rand(1, 96, 80, 3, generator=torch.Generator().manual_seed(2))

    def settings(prompt, seed, **kw):
        return SamplerSettings(model, model.encode_prompt(prompt), model.encode_prompt(""), seed=seed, steps=3,
                               cfg=3.0, **kw)

    adapter = ControlNet(models / "controlnet" / "t2iadapter_depth.pth", hint, 0.9)
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    mask = torch.zeros(8, 8)
    mask[2:6, 1:5] = 1.0
    base = settings("grass", 1)
    a = two_samplers_for_mask(latent, mask, base, settings("brick", 2))["samples"]
    b = two_samplers_for_mask(latent, mask, base, settings("brick", 2, controlnets=[adapter]))["samples"]
    outside = mask.eq(0).expand_as(a)
    assert torch.equal(a[outside], b[outside]) and not torch.equal(a, b)
    with pytest.raises(UnsupportedModelError, match="SDXL T2I-Adapter t2i_xl.safetensors .*does not fit"):
        settings("x", 1, controlnets=[ControlNet(models / "controlnet" / "t2i_xl.safetensors", hint)])
