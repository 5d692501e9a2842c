"""Workflows on a tiny random-weight SD1.x checkpoint under --models DIR/checkpoints/: a diffusers folder and a
single-file .safetensors in a subfolder."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from test_sd_backend import folder_to_single_file, save_folder  # noqa: E402

from twosamplers.ksampler import common_ksampler  # noqa: E402
from twosamplers.models.sd import load_sd  # noqa: E402
from twosamplers.workflow import run  # noqa: E402


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    (root / "checkpoints").mkdir()
    folder = save_folder(root / "checkpoints" / "tiny_sd1", sdxl=False)
    (root / "checkpoints" / "sd1").mkdir()
    folder_to_single_file(folder, root / "checkpoints" / "sd1" / "tiny.safetensors", False)
    return root


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
