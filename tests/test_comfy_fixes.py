"""Issue 22's three fixes on the tiny SD1.x checkpoint: `embedding:NAME` under `twosamplers run`, text-encoder
weights held (and LoRA-merged) in float16 as ComfyUI holds them, and ComfyUI 0.30's LoadImage / LoadImageMask
decoding (tests/test_load_image_modes.py has the per-mode references)."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from twosamplers.ksampler import common_ksampler  # noqa: E402
from twosamplers.models.embeddings import EmbeddingLibrary  # noqa: E402
from twosamplers.models.sd import load_sd  # noqa: E402
from twosamplers.workflow import run  # noqa: E402


def _workflow(text: str) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd1.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": 3, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0], "denoise": 1.0}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "e"}},
    }


def _direct(model, text: str, embeddings) -> torch.Tensor:
    pos = model.encode_prompt(text, embeddings=embeddings)
    neg = model.encode_prompt("", embeddings=embeddings)
    return common_ksampler(model, 3, 2, 5.0, "euler", "normal", pos, neg, {"samples": torch.zeros(1, 4, 8, 8)},
                           disable_pbar=True)["samples"]


def test_run_reads_embeddings_from_the_models_folder(tiny_models_dir, tmp_path):
    """`embedding:pet` under `run` is the embedding file's vectors (it was silently dropped before issue 22)."""
    out = run(_workflow("a photo of embedding:pet in a garden"), tiny_models_dir, output_dir=tmp_path, device="cpu")
    model = load_sd(tiny_models_dir / "checkpoints" / "sd1.safetensors", device="cpu")
    lib = EmbeddingLibrary(tiny_models_dir / "embeddings")
    got = out[0]["samples"]["samples"]
    assert torch.equal(got, _direct(model, "a photo of embedding:pet in a garden", lib))
    dropped = _direct(model, "a photo of in a garden", lib)
    assert not torch.equal(got, dropped)


def test_run_unknown_embedding_is_dropped_with_a_warning_naming_it(tiny_models_dir, tmp_path):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = run(_workflow("a photo of embedding:nosuch in a garden"), tiny_models_dir, output_dir=tmp_path,
                  device="cpu")
    assert any("embedding:nosuch" in str(x.message) for x in w)
    model = load_sd(tiny_models_dir / "checkpoints" / "sd1.safetensors", device="cpu")
    # ComfyUI drops the word: the same picture as the prompt without it
    assert torch.equal(out[0]["samples"]["samples"], _direct(model, "a photo of in a garden", None))


def test_cli_run_warns_about_an_unknown_embedding(tiny_models_dir, tmp_path):
    import json
    import subprocess
    import sys

    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(_workflow("embedding:nosuch a cat")))
    r = subprocess.run([sys.executable, "-m", "twosamplers", "run", str(wf), "--models", str(tiny_models_dir),
                        "--output-dir", str(tmp_path / "out"), "--device", "cpu", "-q"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "embedding:nosuch" in r.stderr
