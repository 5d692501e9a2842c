"""What real, shared workflows need beyond our own (issue 23): VAE files, checkpoint names as ComfyUI resolves them,
checkpoint configs, old node names, stored control values, older Impact widget layouts, non-node API keys,
clipspace images, PreviewBridge, wildcards, the pipe samplers, and refusals that say what and why."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from safetensors.torch import save_file  # noqa: E402

from twosamplers.models.sd import load_sd  # noqa: E402
from twosamplers.workflow import WorkflowError, load, run  # noqa: E402


@pytest.fixture(scope="module")
def models(tiny_sd_files, tmp_path_factory):
    """checkpoints/sd1.safetensors and sub/sd1.safetensors, vae/ldm.safetensors and vae/diffusers.safetensors (the
    checkpoint's own VAE in both layouts), loras/style.safetensors, wildcards/."""
    from diffusers import AutoencoderKL
    from test_lora import make_lora
    from test_sd_backend import to_ldm_vae

    root = tmp_path_factory.mktemp("models")
    for sub in ("checkpoints/sub", "vae", "loras", "wildcards/people", "configs"):
        (root / sub).mkdir(parents=True)
    (root / "checkpoints" / "sd1.safetensors").symlink_to(tiny_sd_files["sd1_file"])
    (root / "checkpoints" / "sub" / "tiny.safetensors").symlink_to(tiny_sd_files["sd1_file"])
    vae = AutoencoderKL.from_pretrained(tiny_sd_files["sd1_folder"] / "vae")
    save_file({k.removeprefix("first_stage_model."): v for k, v in to_ldm_vae(vae).items()},
              str(root / "vae" / "ldm.safetensors"))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(root / "vae" / "diffusers.safetensors"))
    save_file({"decoder.conv_in.weight": torch.zeros(4, 16, 3, 3), "encoder.conv_in.weight": torch.zeros(4, 3, 3, 3),
               "encoder.down.0.block.0.conv1.weight": torch.zeros(4, 4, 3, 3)},
              str(root / "vae" / "sixteen.safetensors"))
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(root / "vae" / "a_lora.safetensors"))
    sd1 = load_sd(tiny_sd_files["sd1_file"], device="cpu", cache=False)
    save_file(make_lora(sd1, "kohya", "lora", seed=1, every=2)[0], str(root / "loras" / "style.safetensors"))
    (root / "wildcards" / "color.txt").write_text("# a comment\nred\ngreen\nblue\n")
    (root / "wildcards" / "people" / "job.txt").write_text("knight\nbaker\n")
    (root / "wildcards" / "more.yaml").write_text("animal:\n  pet: [cat, dog]\n")
    (root / "configs" / "mine-v.yaml").write_text("model:\n  params:\n    parameterization: v\n"
                                                  "    cond_stage_config:\n      params:\n        layer_idx: -2\n")
    return root


@pytest.fixture()
def inputs(tmp_path):
    d = tmp_path / "input"
    (d / "clipspace").mkdir(parents=True)
    rgba = np.random.default_rng(1).integers(0, 256, (64, 64, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[16:40, 20:48, 3] = 0
    Image.fromarray(rgba, "RGBA").save(d / "clipspace" / "clipspace-mask-1.png")
    Image.fromarray(rgba[..., :3], "RGB").save(d / "photo.png")
    return d


def t2i(ckpt="sd1.safetensors", text="a red barn", steps=2) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "seed": 3, "steps": steps, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0], "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }


def image_of(outputs) -> torch.Tensor:
    return next(o["images"] for o in outputs if o["class_type"] in ("PreviewImage", "SaveImage"))


def go(wf, models, tmp_path, **kw):
    return run(wf, models, output_dir=tmp_path / "out", device="cpu", dtype="fp32", **kw)


# ------------------------------------------------------------------------------------------------ VAE files
@pytest.mark.parametrize("name", ["ldm.safetensors", "diffusers.safetensors"])
def test_vae_loader_decodes_like_the_checkpoints_own_vae(models, tmp_path, name):
    base = image_of(go(t2i(), models, tmp_path))
    wf = t2i()
    wf["10"] = {"class_type": "VAELoader", "inputs": {"vae_name": name}}
    wf["8"]["inputs"]["vae"] = ["10", 0]
    assert torch.allclose(image_of(go(wf, models, tmp_path)), base, atol=1e-6)


# 16-channel (Flux / SD3) VAE files load since issue 26: this one, its keys without the network's weights, is refused
# as a file that cannot be read, named as the workflow names it
@pytest.mark.parametrize("name, words", [("sixteen.safetensors", "cannot read the VAE"),
                                         ("a_lora.safetensors", "looks like a LoRA")])
def test_vae_loader_refuses_other_files_by_the_workflows_name(models, tmp_path, name, words):
    wf = t2i()
    wf["10"] = {"class_type": "VAELoader", "inputs": {"vae_name": name}}
    wf["8"]["inputs"]["vae"] = ["10", 0]
    with pytest.raises(WorkflowError, match=words) as e:
        go(wf, models, tmp_path)
    assert name in str(e.value) and str(models) not in str(e.value)


def test_tiled_vae_nodes_run_in_a_workflow(models, tmp_path):
    wf = t2i()
    wf["8"] = {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["3", 0], "vae": ["4", 2], "tile_size": 64,
                                                          "overlap": 16}}
    wf["11"] = {"class_type": "VAEEncodeTiled", "inputs": {"pixels": ["8", 0], "vae": ["4", 2], "tile_size": 64,
                                                           "overlap": 16}}
    wf["12"] = {"class_type": "SaveLatent", "inputs": {"samples": ["11", 0], "filename_prefix": "t"}}
    out = {o["class_type"]: o for o in go(wf, models, tmp_path)}
    assert out["PreviewImage"]["images"].shape == (1, 64, 64, 3)
    assert out["SaveLatent"]["samples"]["samples"].shape == (1, 4, 8, 8)


# ------------------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_names_with_backslashes_and_subfolders(models, tmp_path):
    ref = image_of(go(t2i(), models, tmp_path))
    assert torch.equal(image_of(go(t2i("sub\\tiny.safetensors"), models, tmp_path)), ref)
    assert torch.equal(image_of(go(t2i("sub/tiny.safetensors"), models, tmp_path)), ref)


def test_missing_checkpoint_names_the_workflows_name_and_a_lookalike(models, tmp_path):
    with pytest.raises(WorkflowError) as e:
        go(t2i("SD1.5\\tiny.safetensors"), models, tmp_path)
    msg = str(e.value)
    assert "'SD1.5\\\\tiny.safetensors'" in msg and "checkpoints/sub/tiny.safetensors" in msg


@pytest.mark.parametrize("config, prediction, skip", [("v1-inference.yaml", "eps", None),
                                                      ("v2-inference-v.yaml", "v", None),
                                                      ("anything_v3.yaml", "eps", -2), ("mine-v.yaml", "v", -2)])
def test_checkpoint_loader_takes_the_configs_prediction_and_clip_layer(models, tmp_path, config, prediction, skip):
    from twosamplers.nodes.folders import Folders
    from twosamplers.nodes.vae_nodes import CheckpointLoader

    m, clip, _vae = CheckpointLoader(Folders.create(models)).load_checkpoint(config, "sd1.safetensors")
    assert m.model_sampling.prediction == prediction and clip.clip_skip == skip


def test_checkpoint_loader_unknown_config_is_named(models, tmp_path):
    wf = t2i()
    wf["4"] = {"class_type": "CheckpointLoader", "inputs": {"config_name": "nope.yaml", "ckpt_name": "sd1.safetensors"}}
    with pytest.raises(WorkflowError, match="config 'nope.yaml' not found"):
        go(wf, models, tmp_path)


# ------------------------------------------------------------------------------------------------ file quirks
def _ui_node(nid, type_, widgets=None, inputs=(), outputs=()):
    return {"id": nid, "type": type_, "mode": 0, "order": nid, "inputs": list(inputs), "outputs": list(outputs),
            "widgets_values": widgets or []}


def test_old_trailing_space_name_runs(models, tmp_path):
    wf = t2i()
    wf["20"] = {"class_type": "ConditioningAverage ", "inputs": {"conditioning_to": ["6", 0],
                                                                  "conditioning_from": ["7", 0],
                                                                  "conditioning_to_strength": 1.0}}
    wf["3"]["inputs"]["positive"] = ["20", 0]
    assert torch.equal(image_of(go(wf, models, tmp_path)), image_of(go(t2i(), models, tmp_path)))


def test_unknown_names_are_quoted_with_their_family(models, tmp_path):
    wf = t2i()
    wf["30"] = {"class_type": "ConditioningAverage  ", "inputs": {}}
    wf["31"] = {"class_type": "SAMLoader", "inputs": {}}
    with pytest.raises(WorkflowError) as e:
        go(wf, models, tmp_path)
    msg = str(e.value)
    assert '"ConditioningAverage  " (node 30)' in msg
    assert '"SAMLoader" (node 31) (out of scope: detection and segmentation)' in msg


def test_stored_control_after_generate_true_is_skipped():
    from twosamplers.nodes.core import KSampler
    from twosamplers.workflow.formats import widget_values

    v = widget_values({"widgets_values": [5, True, 12, 7.5, "euler", "karras", 0.8]}, KSampler.INPUT_TYPES())
    assert v == {"seed": 5, "steps": 12, "cfg": 7.5, "sampler_name": "euler", "scheduler": "karras", "denoise": 0.8}


def test_older_regional_sampler_widgets_are_read_by_their_layout():
    from twosamplers.nodes.regional import RegionalSampler
    from twosamplers.workflow.formats import widget_values

    types = RegionalSampler.INPUT_TYPES()
    old = widget_values({"widgets_values": [1019854126263754, "randomize", 30, 1, 5]}, types,
                        RegionalSampler.LEGACY_WIDGETS)
    assert (old["seed"], old["steps"], old["base_only_steps"], old["overlap_factor"]) == (1019854126263754, 30, 1, 5)
    assert old["denoise"] == 1.0 and old["seed_2nd"] == 0  # the widgets it did not have take their defaults
    new = widget_values({"widgets_values": [7, "fixed", 3, "ignore", 20, 2, 1.0, 10, True, "ratio between", "AUTO",
                                            0.3]}, types, RegionalSampler.LEGACY_WIDGETS)
    assert (new["seed"], new["seed_2nd"], new["steps"], new["overlap_factor"]) == (7, 3, 20, 10)
    # a frontend that stored a control value after seed_2nd too: one value more than the layout, so it is one
    both = widget_values({"widgets_values": [7, "fixed", 3, "fixed", "ignore", 20, 2, 1.0, 10, True, "ratio between",
                                             "AUTO", 0.3]}, types, RegionalSampler.LEGACY_WIDGETS)
    assert both == new


def test_top_level_api_keys_that_are_not_nodes_are_skipped_with_a_warning():
    wf = t2i()
    wf["version"] = "1.0"
    wf["extra"] = {"note": "saved by a tool"}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        loaded = load(wf)
    assert "version" not in loaded.prompt and "3" in loaded.prompt
    assert any("not a node" in str(x.message) and "'version'" in str(x.message) for x in w)


def test_api_prompt_of_an_older_comfyui_gets_new_widgets_defaults():
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
          "2": {"class_type": "VAEEncodeForInpaint", "inputs": {"pixels": ["1", 0], "vae": ["1", 0], "mask": ["1", 1]}}}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        p = load(wf).prompt
    assert p["2"]["inputs"]["grow_mask_by"] == 6 and any("grow_mask_by" in str(x.message) for x in w)


def test_clipspace_load_image_names(models, inputs, tmp_path):
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "clipspace/clipspace-mask-1.png [input]"}},
          "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    out = run(wf, models, input_dir=inputs, output_dir=tmp_path / "o")
    assert out[0]["images"].shape == (1, 64, 64, 3)


# ------------------------------------------------------------------------------------------------ Impact nodes
@pytest.mark.parametrize("widget, painted", [({"filename": "clipspace-mask-1.png", "subfolder": "clipspace",
                                               "type": "input"}, True), ("", False), ("$35-0", False)])
def test_preview_bridge_passes_the_image_and_gives_the_painted_mask(models, inputs, tmp_path, widget, painted):
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
          "2": {"class_type": "PreviewBridge", "inputs": {"images": ["1", 0], "image": widget}},
          "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 1]}},
          "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
          "5": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    out = {o["node"]: o for o in run(wf, models, input_dir=inputs, output_dir=tmp_path / "o")}
    mask = out["4"]["images"][..., 0]
    if painted:
        assert mask.shape == (1, 64, 64) and mask[0, 20, 30] == 1.0 and mask[0, 5, 5] == 0.0
    else:
        assert mask.shape == (1, 64, 64) and torch.count_nonzero(mask) == 0
    assert out["5"]["images"].shape == (1, 64, 64, 3)


def test_preview_bridge_that_would_block_is_refused_before_running(models, inputs, tmp_path):
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
          "2": {"class_type": "PreviewBridge", "inputs": {"images": ["1", 0], "image": "", "block": True}},
          "5": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "pb"}}}
    with pytest.raises(WorkflowError, match="if_empty_mask"):
        run(wf, models, input_dir=inputs, output_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_wildcards_follow_impacts_syntax_and_the_seed():
    from twosamplers.nodes import wildcards as wc

    table = {"color": ["red", "green", "blue"], "people/job": ["knight", "baker"], "animal/pet": ["cat", "dog"]}
    a = wc.expand("a __color__ {small|big} __job__ and {2$$__animal/pet__}", 42, table)
    assert a == wc.expand("a __color__ {small|big} __job__ and {2$$__animal/pet__}", 42, table)
    words = a.split()
    assert words[1] in table["color"] and words[2] in ("small", "big") and words[3] in table["people/job"]
    assert set(a.split(" and ")[1].split(" ")) == {"cat", "dog"}
    assert set(wc.expand("{2$$, $$x|y}", 1, table).split(", ")) == {"x", "y"}
    seen = {wc.expand("{a|b|c}", s, table) for s in range(30)}
    assert seen == {"a", "b", "c"}
    assert wc.expand("{0::a|1::b}", 3, table) == "b"  # a weight of 0 is never picked
    assert wc.expand("x\n# comment\ny", 0, table) == "x y"
    assert wc.expand("__unknown__", 0, table) == "__unknown__"
    assert wc.lora_tags("<lora:style:0.5> <lora:x:1:0.2> <lora:style:2>") == [("style", 0.5, 0.5), ("x", 1.0, 0.2)]


def test_wildcard_encode_populates_loads_lora_tags_and_encodes(models, tmp_path):
    from twosamplers.nodes.core import CheckpointLoaderSimple, CLIPTextEncode
    from twosamplers.nodes.folders import Folders
    from twosamplers.nodes.impact_extra import ImpactWildcardEncode, ImpactWildcardProcessor
    from twosamplers.nodes.lora_files import LoraLoader

    f = Folders.create(models)
    model, clip, _ = CheckpointLoaderSimple(f).load_checkpoint("sd1.safetensors")
    text = ImpactWildcardProcessor(f).doit("a __color__ __job__", "", True, 5)[0]
    assert text.split()[1] in ("red", "green", "blue") and text.split()[2] in ("knight", "baker")
    assert ImpactWildcardProcessor(f).doit("a __color__", "fixed text", False, 5)[0] == "fixed text"
    select = {"Select to add LoRA": "x", "Select to add Wildcard": "y"}
    m2, c2, cond, populated = ImpactWildcardEncode(f).doit(model, clip, "a __color__ barn <lora:style:0.7>", "", True,
                                                           9, **select)
    assert "<lora:style:0.7>" in populated  # the populated text keeps its tags, as Impact returns it
    lm, lc = LoraLoader(f).load_lora(model, clip, "style.safetensors", 0.7, 0.7)
    ref = CLIPTextEncode().encode(lc, populated.replace("<lora:style:0.7>", ""))[0]
    assert torch.allclose(cond[0][0], ref[0][0], atol=1e-6)
    with pytest.raises(FileNotFoundError, match="'missing'"):
        ImpactWildcardEncode(f).doit(model, clip, "x <lora:missing:1>", "", True, 0)


def test_pipe_samplers_are_ksampler_and_ksampler_advanced(models, tmp_path):
    from twosamplers.nodes.core import CheckpointLoaderSimple, CLIPTextEncode, KSampler, KSamplerAdvanced
    from twosamplers.nodes.folders import Folders
    from twosamplers.nodes.impact_extra import ImpactKSamplerAdvancedBasicPipe, ImpactKSamplerBasicPipe

    f = Folders.create(models)
    model, clip, vae = CheckpointLoaderSimple(f).load_checkpoint("sd1.safetensors")
    pos, neg = CLIPTextEncode().encode(clip, "a barn")[0], CLIPTextEncode().encode(clip, "")[0]
    pipe = (model, clip, vae, pos, neg)
    lat = {"samples": torch.zeros(1, 4, 8, 8)}
    _, a, v = ImpactKSamplerBasicPipe().sample(pipe, 4, 3, 5.0, "euler", "karras", lat, 0.8, disable_pbar=True)
    ref = KSampler().sample(model, 4, 3, 5.0, "euler", "karras", pos, neg, lat, 0.8, disable_pbar=True)[0]
    assert torch.equal(a["samples"], ref["samples"]) and v is vae
    _, b, _ = ImpactKSamplerAdvancedBasicPipe().sample(pipe, True, 4, 4, 5.0, "euler", "normal", lat, 0, 2, True,
                                                       disable_pbar=True)
    ref = KSamplerAdvanced().sample(model, "enable", 4, 4, 5.0, "euler", "normal", pos, neg, lat, 0, 2, "enable",
                                    disable_pbar=True)[0]
    assert torch.equal(b["samples"], ref["samples"])


def test_regional_sampler_advanced_runs_and_is_deterministic(models, tmp_path):
    from twosamplers.nodes.core import CheckpointLoaderSimple, CLIPTextEncode
    from twosamplers.nodes.folders import Folders
    from twosamplers.nodes.providers import KSamplerAdvancedProvider
    from twosamplers.nodes.regional import RegionalPrompt
    from twosamplers.nodes.regional_advanced import RegionalSamplerAdvanced

    f = Folders.create(models)
    model, clip, vae = CheckpointLoaderSimple(f).load_checkpoint("sd1.safetensors")
    pos, neg = CLIPTextEncode().encode(clip, "a barn")[0], CLIPTextEncode().encode(clip, "")[0]
    base = KSamplerAdvancedProvider().doit(5.0, "euler", "normal", (model, clip, vae, pos, neg))[0]
    region = KSamplerAdvancedProvider().doit(5.0, "euler", "normal", (model, clip, vae, neg, pos))[0]
    mask = torch.zeros(64, 64)
    mask[16:48, 16:48] = 1
    rp = RegionalPrompt().doit(mask, region)[0]
    lat = {"samples": torch.zeros(1, 4, 8, 8)}
    args = (True, 3, 4, 0, 10000, 3, True, False, lat, base, rp, "ratio between", "AUTO", 0.3)
    a = RegionalSamplerAdvanced().doit(*args, disable_pbar=True)[0]
    b = RegionalSamplerAdvanced().doit(*args, disable_pbar=True)[0]
    assert torch.equal(a["samples"], b["samples"]) and "noise_mask" not in a
    assert torch.count_nonzero(lat["samples"]) == 0 and torch.isfinite(a["samples"]).all()


def test_corpus_harness_runs_kept_workflows(tmp_path):
    """benchmarks/real_workflows.py on two published workflows: both run."""
    mod = _harness()
    out = tmp_path / "r.json"
    assert mod.main(["--only", "lora/lora", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["status"] for r in results] == ["ran", "ran"]


def _harness():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "real_workflows.py"
    spec = importlib.util.spec_from_file_location("real_workflows", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(("name", "family", "layout", "kind"), [
    ("instantx_flux_canny.safetensors", "flux", "flux:instantx", "flux-instantx"),
    ("flux-canny-controlnet-v3.safetensors", "flux", "flux:xlabs", "flux-xlabs"),
    ("mistoline_flux.dev_v1.safetensors", "flux", "flux:mistoline", "flux-mistoline"),
    ("FLUX.1-dev-ControlNet-Union-Pro.safetensors", "flux", "flux:union", "flux-instantx"),
    ("FLUX.1-dev-Controlnet-Inpainting-Alpha.safetensors", "flux", "flux:inpaint", "flux-instantx"),
    ("sd3_controlnet_canny.safetensors", "sd3", "sd3:diffusers", "sd3"),
    ("SD3-Controlnet-Inpainting.safetensors", "sd3", "sd3:inpaint", "sd3"),
    ("sd3.5_large_controlnet_canny.safetensors", "sd3", "sd35:canny", "sd35"),
    ("sd3.5_large_controlnet_blur.safetensors", "sd3", "sd35:blur", "sd35"),
])
def test_corpus_harness_supplies_flow_controlnets_in_the_named_layout(tmp_path, name, family, layout, kind):
    """A working Flux / SD3 ControlNet of the layout the workflow's file name suggests (ComfyUI's loader tells it
    apart by its keys), not a stand-in."""
    from twosamplers.models.flow_control import flow_controlnet_kind, header_keys, load_flow_controlnet

    mod = _harness()
    what = mod._model_kind("controlnet", name, family)
    assert what == "flow_controlnet:" + layout
    path = mod.ModelPool(tmp_path).get(what)
    assert flow_controlnet_kind(header_keys(path)) == kind
    cn = load_flow_controlnet(path, device="cpu")
    assert cn.family == ("sd3" if family == "sd3" else "flux")
    if layout in ("flux:inpaint", "sd3:inpaint"):
        assert cn.concat_mask
    if layout == "flux:union":
        assert cn.num_modes == 10


def test_corpus_flux_and_sd3_controlnet_workflows_run(tmp_path):
    """ComfyUI_examples' Flux (InstantX, ControlNetApplySD3), SD3 (diffusers layout) and SD3.5 (Stability canny)
    ControlNet workflows run under the harness (and its SD1.x ControlNet example)."""
    mod = _harness()
    out = tmp_path / "r.json"
    assert mod.main(["--only", "controlnet_example", "--json", str(out)]) == 0
    results = {r["name"].split("/")[-1]: r["status"] for r in json.loads(out.read_text())["results"]}
    assert results == {"controlnet_example.png": "ran", "flux_controlnet_example.png": "ran",
                       "sd3.5_large_canny_controlnet_example.png": "ran", "sd3_controlnet_example.png": "ran"}


@pytest.mark.parametrize(("name", "family", "channels", "xl"), [
    ("t2iadapter_depth_sd14v1.pth", "sd1", 3, False),
    ("t2iadapter_canny_sd14v1.pth", "sd1", 1, False),
    ("t2i-adapter-sketch-sdxl-1.0.safetensors", "sdxl", 1, True),
    ("t2iadapter_openpose_sdxl.safetensors", "sd1", 3, True),
])
def test_corpus_harness_supplies_working_t2i_adapters(tmp_path, name, family, channels, xl):
    """A working tiny T2I-Adapter of the kind the file name suggests (grey hint for canny / sketch / lineart, SDXL
    for "xl" names or SDXL workflows), which ControlNetLoader's loader reads as such."""
    from twosamplers.models.controlnet import load_controlnet

    mod = _harness()
    what = mod._model_kind("controlnet", name, family)
    net = load_controlnet(mod.ModelPool(tmp_path).get(what), cache=False)
    assert (type(net).__name__, net.channels_in, net.xl) == ("T2IAdapterHandle", channels, xl)


def test_corpus_t2i_adapter_workflow_runs(tmp_path):
    """ComfyUI_examples' depth_t2i_adapter (ControlNetLoader on t2iadapter_depth_sd14v1.pth, ControlNetApply) runs."""
    mod = _harness()
    out = tmp_path / "r.json"
    assert mod.main(["--only", "depth_t2i_adapter", "--json", str(out)]) == 0
    assert [r["status"] for r in json.loads(out.read_text())["results"]] == ["ran"]
