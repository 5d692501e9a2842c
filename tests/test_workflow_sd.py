"""Workflows on a tiny random-weight SD1.x checkpoint under --models DIR/checkpoints/: a diffusers folder and a
single-file .safetensors in a subfolder."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from safetensors.torch import save_file  # noqa: E402
from test_controlnet import tiny_controlnet, to_ldm_controlnet  # noqa: E402
from test_lora import make_lora  # noqa: E402
from test_sd_backend import folder_to_single_file, save_folder  # noqa: E402

from twosamplers.engine.ksampler import common_ksampler  # noqa: E402
from twosamplers.models.control import apply_controlnet  # noqa: E402
from twosamplers.models.controlnet import load_controlnet  # noqa: E402
from twosamplers.models.inpaint import inpaint_model_conditioning  # noqa: E402
from twosamplers.models.sd import load_sd  # noqa: E402
from twosamplers.workflow import run  # noqa: E402

pytestmark = pytest.mark.slow  # Stable Diffusion checkpoints through the workflow runner


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    (root / "checkpoints").mkdir()
    folder = save_folder(root / "checkpoints" / "tiny_sd1", sdxl=False)
    (root / "checkpoints" / "sd1").mkdir()
    folder_to_single_file(folder, root / "checkpoints" / "sd1" / "tiny.safetensors", False)
    from diffusers import UNet2DConditionModel

    (root / "controlnet").mkdir()
    cn = tiny_controlnet(UNet2DConditionModel.from_pretrained(folder / "unet"))
    save_file(to_ldm_controlnet(cn), str(root / "controlnet" / "tiny_cn.safetensors"))
    (root / "loras" / "style").mkdir(parents=True)
    model = load_sd(folder, device="cpu", dtype="fp32")
    save_file(make_lora(model, rank=4, alpha=2.0, seed=3)[0], str(root / "loras" / "style" / "tiny.safetensors"))
    return root


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory):
    import numpy as np
    from PIL import Image

    d = tmp_path_factory.mktemp("input")
    g = np.random.default_rng(5)
    rgba = g.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[16:40, 20:48, 3] = 0
    Image.fromarray(rgba).save(d / "photo.png")
    return d


@pytest.mark.parametrize("ckpt", ["tiny_sd1", "sd1/tiny.safetensors"])
def test_sd_checkpoint_workflow_matches_direct_calls(models_dir, tmp_path, ckpt):
    wf = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "10": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["4", 1], "stop_at_clip_layer": -2}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red barn", "clip": ["10", 0]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["10", 0]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": 11, "steps": 3, "cfg": 6.0, "sampler_name": "dpmpp_2m", "scheduler": "karras",
            "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0], "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "sd"}},
        "12": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "sd"}},
    }
    out = {o["class_type"]: o for o in run(wf, models_dir, output_dir=tmp_path, device="cpu", dtype="fp32")}
    model = load_sd(models_dir / "checkpoints" / ckpt, device="cpu", dtype="fp32")
    pos = model.encode_prompt("a red barn", clip_skip=-2)
    neg = model.encode_prompt("", clip_skip=-2)
    ref = common_ksampler(model, 11, 3, 6.0, "dpmpp_2m", "karras", pos, neg, {"samples": torch.zeros(1, 4, 8, 8)},
                          disable_pbar=True)
    assert torch.equal(out["SaveLatent"]["samples"]["samples"], ref["samples"])
    assert torch.equal(out["SaveImage"]["images"], model.decode_latent(ref["samples"]))
    assert out["SaveImage"]["images"].shape == (1, 64, 64, 3)


def _base(ckpt="tiny_sd1"):
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red barn", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": 2, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0], "denoise": 0.9}},
        "12": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "sd"}},
        "10": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
    }


def test_controlnet_workflow_matches_direct_calls(models_dir, input_dir, tmp_path):
    wf = _base()
    wf.update({
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "20": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "tiny_cn.safetensors"}},
        "21": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["6", 0], "negative": ["7", 0], "control_net": ["20", 0], "image": ["10", 0],
            "strength": 0.8, "start_percent": 0.0, "end_percent": 0.7}},
    })
    wf["3"]["inputs"].update(positive=["21", 0], negative=["21", 1])
    got = run(wf, models_dir, input_dir=input_dir, output_dir=tmp_path, device="cpu", dtype="fp32")[0]
    model = load_sd(models_dir / "checkpoints" / "tiny_sd1", device="cpu", dtype="fp32")
    from twosamplers.job.imageio import load_image

    cn = load_controlnet(models_dir / "controlnet" / "tiny_cn.safetensors")
    pos, neg = apply_controlnet(model.encode_prompt("a red barn"), model.encode_prompt(""), cn,
                                load_image(input_dir / "photo.png"), 0.8, 0.0, 0.7)
    ref = common_ksampler(model, 2, 3, 5.0, "euler", "normal", pos, neg, {"samples": torch.zeros(1, 4, 8, 8)},
                          denoise=0.9, disable_pbar=True)
    plain = common_ksampler(model, 2, 3, 5.0, "euler", "normal", model.encode_prompt("a red barn"),
                            model.encode_prompt(""), {"samples": torch.zeros(1, 4, 8, 8)}, denoise=0.9,
                            disable_pbar=True)
    assert torch.equal(got["samples"]["samples"], ref["samples"])
    assert not torch.equal(ref["samples"], plain["samples"])


def test_inpaint_model_conditioning_workflow(models_dir, input_dir, tmp_path):
    wf = _base()
    wf["30"] = {"class_type": "InpaintModelConditioning", "inputs": {
        "positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2], "pixels": ["10", 0], "mask": ["10", 1],
        "noise_mask": True}}
    wf["3"]["inputs"].update(positive=["30", 0], negative=["30", 1], latent_image=["30", 2])
    got = run(wf, models_dir, input_dir=input_dir, output_dir=tmp_path, device="cpu", dtype="fp32")[0]
    model = load_sd(models_dir / "checkpoints" / "tiny_sd1", device="cpu", dtype="fp32")
    from twosamplers.job.imageio import load_image, load_mask

    pixels, mask = load_image(input_dir / "photo.png"), load_mask(input_dir / "photo.png", "alpha")[None]
    pos, neg, latent = inpaint_model_conditioning(model.encode_prompt("a red barn"), model.encode_prompt(""), model,
                                                  pixels, mask, True)
    ref = common_ksampler(model, 2, 3, 5.0, "euler", "normal", pos, neg, latent, denoise=0.9, disable_pbar=True)
    assert torch.equal(got["samples"]["samples"], ref["samples"])


def test_lora_workflow_matches_direct_node_class_calls(models_dir, tmp_path):
    from twosamplers.nodes.loras import LoraLoader, LoraLoaderModelOnly

    wf = _base()
    del wf["10"]
    wf.update({
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "40": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1],
                                                      "lora_name": "style/tiny.safetensors", "strength_model": 0.8,
                                                      "strength_clip": 0.6}},
        "41": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["40", 0],
                                                               "lora_name": "style/tiny.safetensors",
                                                               "strength_model": -0.3}},
        "42": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["40", 1], "stop_at_clip_layer": -2}},
    })
    wf["6"]["inputs"]["clip"] = wf["7"]["inputs"]["clip"] = ["42", 0]
    wf["3"]["inputs"]["model"] = ["41", 0]
    got = run(wf, models_dir, output_dir=tmp_path, device="cpu", dtype="fp32")[0]["samples"]["samples"]
    model = load_sd(models_dir / "checkpoints" / "tiny_sd1", device="cpu", dtype="fp32")
    path = str(models_dir / "loras" / "style" / "tiny.safetensors")
    m, clip = LoraLoader().load_lora(model, model, path, 0.8, 0.6)
    (m,) = LoraLoaderModelOnly().load_lora_model_only(m, path, -0.3)
    pos, neg = clip.encode_prompt("a red barn", clip_skip=-2), clip.encode_prompt("", clip_skip=-2)
    ref = common_ksampler(m, 2, 3, 5.0, "euler", "normal", pos, neg, {"samples": torch.zeros(1, 4, 8, 8)},
                          denoise=0.9, disable_pbar=True)["samples"]
    plain = common_ksampler(model, 2, 3, 5.0, "euler", "normal", model.encode_prompt("a red barn", clip_skip=-2),
                            model.encode_prompt("", clip_skip=-2), {"samples": torch.zeros(1, 4, 8, 8)},
                            denoise=0.9, disable_pbar=True)["samples"]
    assert torch.equal(got, ref)
    assert not torch.equal(ref, plain)


def test_missing_lora_is_reported_before_running(models_dir, tmp_path):
    from twosamplers.workflow import WorkflowError

    wf = _base()
    del wf["10"]
    wf["5"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    wf["40"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["4", 0], "lora_name": "nope.safetensors",
                                                                "strength_model": 1.0}}
    wf["3"]["inputs"]["model"] = ["40", 0]
    with pytest.raises(WorkflowError, match=r"node 40 \(LoraLoaderModelOnly\): LoRA 'nope.safetensors' not found"):
        run(wf, models_dir, output_dir=tmp_path)
    assert not any(tmp_path.iterdir())
