"""PreviewBridgeLatent (headless) and ImpactNegativeConditioningPlaceholder in Impact's samplers, on the tiny SD1.x
checkpoint and the tiny Flux.1 dev files (the layout of Impact's flux-impact-ksampler tutorial)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from twosamplers.engine.conditioning import NEGATIVE_PLACEHOLDER  # noqa: E402
from twosamplers.workflow import WorkflowError, run  # noqa: E402


@pytest.fixture(scope="module")
def models(tiny_sd_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "sd1.safetensors").symlink_to(tiny_sd_files["sd1_file"])
    return root


@pytest.fixture()
def inputs(tmp_path):
    """clipspace/painted.png: 64 x 64 RGBA, opaque but for a transparent block (rows 16..31, columns 24..47);
    clipspace/rgb.png: the same without alpha."""
    d = tmp_path / "input"
    (d / "clipspace").mkdir(parents=True)
    rgba = np.full((64, 64, 4), 128, dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[16:32, 24:48, 3] = 0
    Image.fromarray(rgba, "RGBA").save(d / "clipspace" / "painted.png")
    Image.fromarray(rgba[..., :3], "RGB").save(d / "clipspace" / "rgb.png")
    return d


def _bridge_wf(widget, *, noise_mask: bool = False, block: bool = False, method: str = "Latent2RGB-SD15") -> dict:
    wf = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
          "3": {"class_type": "PreviewBridgeLatent", "inputs": {"latent": ["1", 0], "image": widget,
                                                                 "preview_method": method, "block": block}},
          "4": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "pbl"}},
          "5": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 1]}},
          "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}}
    if noise_mask:
        wf["2"] = {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 64, "height": 64}}
        wf["7"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["1", 0], "mask": ["2", 0]}}
        wf["3"]["inputs"]["latent"] = ["7", 0]
    return wf


def _outputs(wf, models, inputs, out):
    res = {o["node"]: o for o in run(wf, models, input_dir=inputs, output_dir=out)}
    return res["4"]["samples"], res["6"]["images"][..., 0]


@pytest.mark.parametrize("widget", ["", "$14-3", {"filename": "gone.png", "subfolder": "clipspace", "type": "input"}])
def test_nothing_painted_passes_the_latent_and_gives_a_white_latent_sized_mask(models, inputs, tmp_path, widget):
    latent, mask = _outputs(_bridge_wf(widget), models, inputs, tmp_path / "o")
    assert set(latent) == {"samples"} and latent["samples"].shape == (1, 4, 8, 8)
    assert mask.shape == (1, 8, 8) and bool((mask == 1).all())


def test_nothing_painted_gives_the_latents_own_noise_mask(models, inputs, tmp_path):
    latent, mask = _outputs(_bridge_wf("", noise_mask=True), models, inputs, tmp_path / "o")
    assert torch.equal(latent["noise_mask"], torch.full((1, 1, 64, 64), 0.5))
    assert mask.shape == (1, 64, 64) and bool((mask == 0.5).all())


@pytest.mark.parametrize("widget", ["clipspace/painted.png [input]",
                                    {"filename": "painted.png", "subfolder": "clipspace", "type": "input"}])
def test_a_painted_mask_becomes_the_noise_mask(models, inputs, tmp_path, widget):
    latent, mask = _outputs(_bridge_wf(widget, noise_mask=True), models, inputs, tmp_path / "o")
    want = torch.zeros(1, 64, 64)
    want[:, 16:32, 24:48] = 1.0
    assert torch.equal(latent["noise_mask"], want) and torch.equal(mask, want)


def test_a_clipspace_file_without_alpha_removes_the_noise_mask(models, inputs, tmp_path):
    latent, mask = _outputs(_bridge_wf("clipspace/rgb.png [input]", noise_mask=True), models, inputs, tmp_path / "o")
    assert "noise_mask" not in latent and mask.shape == (1, 8, 8) and bool((mask == 1).all())


def test_block_with_an_empty_mask_is_refused_and_writes_nothing(models, inputs, tmp_path):
    with pytest.raises(WorkflowError, match="if_empty_mask"):
        run(_bridge_wf("", block=True), models, input_dir=inputs, output_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*.*"))
    latent, _ = _outputs(_bridge_wf("clipspace/painted.png [input]", block=True), models, inputs, tmp_path / "p")
    assert "noise_mask" in latent
    latent, _ = _outputs(_bridge_wf("", noise_mask=True, block=True), models, inputs, tmp_path / "q")
    assert "noise_mask" in latent


def test_a_preview_method_of_another_latent_format_is_refused(models, inputs, tmp_path):
    with pytest.raises(WorkflowError, match="'Latent2RGB-FLUX.1' previews 16-channel latents; this latent has 4"):
        run(_bridge_wf("", method="Latent2RGB-FLUX.1"), models, input_dir=inputs, output_dir=tmp_path / "o")
    wf = _bridge_wf("", method="Latent2RGB-FLUX.1")
    wf["8"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd1.safetensors"}}
    wf["3"]["inputs"]["vae_opt"] = ["8", 2]  # a VAE decodes the preview: any method goes
    assert _outputs(wf, models, inputs, tmp_path / "p")[0]["samples"].shape == (1, 4, 8, 8)


def _pipe_sampler(latent_from: list, negative: list, cfg: float = 6.0) -> dict:
    return {"10": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd1.safetensors"}},
            "11": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["10", 1], "text": "a red barn"}},
            "12": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["10", 1], "text": "blurry"}},
            "13": {"class_type": "ImpactNegativeConditioningPlaceholder", "inputs": {}},
            "14": {"class_type": "ToBasicPipe", "inputs": {"model": ["10", 0], "clip": ["10", 1], "vae": ["10", 2],
                                                           "positive": ["11", 0], "negative": negative}},
            "15": {"class_type": "ImpactKSamplerBasicPipe", "inputs": {
                "basic_pipe": ["14", 0], "seed": 5, "steps": 3, "cfg": cfg, "sampler_name": "euler",
                "scheduler": "normal", "latent_image": latent_from, "denoise": 1.0}},
            "16": {"class_type": "SaveLatent", "inputs": {"samples": ["15", 1], "filename_prefix": "s"}}}


def test_the_painted_mask_inpaints_through_an_impact_sampler(models, inputs, tmp_path):
    wf = _bridge_wf("clipspace/painted.png [input]")
    wf.update(_pipe_sampler(["3", 0], ["12", 0]))
    out = {o["node"]: o for o in run(wf, models, input_dir=inputs, output_dir=tmp_path / "o")}
    s = out["16"]["samples"]["samples"]
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[2:4, 3:6] = True
    # outside the mask the empty latent stays (to float rounding of the last euler step, as in ComfyUI)
    assert float(s[..., ~inside].abs().max()) < 1e-6 and float(s[..., inside].abs().min()) > 1e-3


def test_the_placeholder_samples_the_positive_alone(models, tmp_path):
    latent = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}}
    got = run({**latent, **_pipe_sampler(["1", 0], ["13", 0])}, models, output_dir=tmp_path / "a")
    plain = {**latent, **_pipe_sampler(["1", 0], ["12", 0], cfg=1.0)}
    want = run(plain, models, output_dir=tmp_path / "b")  # cfg 1: the negative is never evaluated
    cfg6 = run({**latent, **_pipe_sampler(["1", 0], ["12", 0])}, models, output_dir=tmp_path / "c")
    assert torch.equal(got[0]["samples"]["samples"], want[0]["samples"]["samples"])
    assert not torch.equal(got[0]["samples"]["samples"], cfg6[0]["samples"]["samples"])


def test_comfyuis_own_sampler_refuses_the_placeholder(models, tmp_path):
    wf = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
          **_pipe_sampler(["1", 0], ["13", 0])}
    wf["15"] = {"class_type": "KSampler", "inputs": {
        "model": ["10", 0], "positive": ["11", 0], "negative": ["13", 0], "seed": 5, "steps": 3, "cfg": 6.0,
        "sampler_name": "euler", "scheduler": "normal", "latent_image": ["1", 0], "denoise": 1.0}}
    wf["16"]["inputs"]["samples"] = ["15", 0]
    with pytest.raises(WorkflowError, match=r"node 15 \(KSampler\): negative is Impact's negative placeholder"):
        run(wf, models, output_dir=tmp_path)


def test_providers_take_the_placeholder(tiny_sd_files):
    from twosamplers.models.sd import load_sd
    from twosamplers.nodes.handles import ModelHandle
    from twosamplers.nodes.registry import NODES

    model = ModelHandle(load_sd(tiny_sd_files["sd1_file"], device="cpu", cache=False))
    pos = [[torch.ones(1, 77, 32), {}]]
    pipe = (model, None, None, pos, NEGATIVE_PLACEHOLDER)
    (adv,) = NODES["KSamplerAdvancedProvider"]().doit(4.5, "euler", "normal", pipe)
    (ks,) = NODES["KSamplerProvider"]().doit(1, 2, 4.5, "euler", "normal", 1.0, pipe)
    for sampler in (adv, ks):
        assert sampler.cfg == 1.0 and sampler.negative is sampler.positive
        assert sampler.positive[0][1] == {"guidance": 4.5} and pos[0][1] == {}


def test_flux_impact_ksampler_tutorial_layout(flow_models_dir, tmp_path):
    """Impact's flux-impact-ksampler tutorial: EmptyLatentImage -> ImpactKSamplerBasicPipe (negative: the
    placeholder, cfg 3.5) -> PreviewBridgeLatent (Latent2RGB-FLUX.1) -> VAEDecode. The same bits as ComfyUI's
    KSampler at cfg 1 on FluxGuidance(positive, 3.5)."""
    base = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux_dev.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                         "clip_name2": "t5xxl.safetensors", "type": "flux"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "a rabbit in a blue hat"}},
        "4": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }
    impact = {**base,
              "6": {"class_type": "ImpactNegativeConditioningPlaceholder", "inputs": {}},
              "7": {"class_type": "ToBasicPipe", "inputs": {"model": ["1", 0], "clip": ["2", 0], "vae": ["4", 0],
                                                            "positive": ["3", 0], "negative": ["6", 0]}},
              "8": {"class_type": "ImpactKSamplerBasicPipe", "inputs": {
                  "basic_pipe": ["7", 0], "seed": 7, "steps": 3, "cfg": 3.5, "sampler_name": "euler",
                  "scheduler": "simple", "latent_image": ["5", 0], "denoise": 1.0}},
              "9": {"class_type": "PreviewBridgeLatent", "inputs": {"latent": ["8", 1], "image": "$48-0",
                                                                     "preview_method": "Latent2RGB-FLUX.1"}},
              "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["8", 2]}},
              "11": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
              "12": {"class_type": "SaveLatent", "inputs": {"samples": ["9", 0], "filename_prefix": "flux"}}}
    comfy = {**base,
             "6": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["3", 0], "guidance": 3.5}},
             "8": {"class_type": "KSampler", "inputs": {
                 "model": ["1", 0], "positive": ["6", 0], "negative": ["6", 0], "seed": 7, "steps": 3, "cfg": 1.0,
                 "sampler_name": "euler", "scheduler": "simple", "latent_image": ["5", 0], "denoise": 1.0}},
             "12": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": "flux"}}}
    got = {o["node"]: o for o in run(impact, flow_models_dir, output_dir=tmp_path / "a")}
    want = run(comfy, flow_models_dir, output_dir=tmp_path / "b")[0]["samples"]["samples"]
    assert got["12"]["samples"]["samples"].shape == (1, 16, 8, 8)
    assert torch.equal(got["12"]["samples"]["samples"], want)
    assert got["11"]["images"].shape == (1, 64, 64, 3)
