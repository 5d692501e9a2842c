"""Issue 22's three fixes on the tiny SD1.x checkpoint: `embedding:NAME` under `twosamplers run`, text-encoder
weights held (and LoRA-merged) in float16 as ComfyUI holds them, and ComfyUI 0.30's LoadImage / LoadImageMask
decoding (tests/test_load_image_modes.py has the per-mode references)."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from twosamplers.engine.ksampler import common_ksampler  # noqa: E402
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


# ------------------------------------------------------------------------------ text-encoder dtype (fix b)
@pytest.fixture(scope="module")
def fp16_sd1(tiny_sd_files, tmp_path_factory):
    """The tiny SD1.x checkpoint stored in float16 (as real checkpoints are), and a text-encoder LoRA for it."""
    from safetensors.torch import load_file, save_file
    from test_lora import make_lora

    d = tmp_path_factory.mktemp("fp16")
    sd = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(tiny_sd_files["sd1_file"])).items()}
    save_file(sd, str(d / "sd1_fp16.safetensors"))
    model = load_sd(d / "sd1_fp16.safetensors", device="cpu", cache=False)
    lora, _ = make_lora(model, "kohya", "lora", seed=4, every=1)
    assert any(k.startswith("lora_te") for k in lora)
    save_file(lora, str(d / "te_lora.safetensors"))
    return d / "sd1_fp16.safetensors", d / "te_lora.safetensors"


def _te_params(model):
    return list(model.text_encoders[0].model.parameters())


def test_dtype_plan_is_comfyuis():
    from twosamplers.models.sd import dtype_plan

    cpu = dtype_plan("cpu")
    assert (cpu.unet, cpu.text_storage, cpu.text_compute, cpu.vae) == (torch.float32, torch.float16, torch.float32,
                                                                       torch.float32)
    assert dtype_plan("cpu", fp32_text_enc=True).text_storage == torch.float32
    if torch.cuda.is_available():
        gpu = dtype_plan("cuda")
        bf16 = torch.cuda.is_bf16_supported()
        assert (gpu.unet, gpu.text_storage, gpu.text_compute, gpu.vae) == (
            torch.float16, torch.float16, torch.float32, torch.bfloat16 if bf16 else torch.float32)


def test_text_encoder_is_held_in_fp16_and_computes_in_fp32(fp16_sd1):
    ckpt, _ = fp16_sd1
    m = load_sd(ckpt, device="cpu", cache=False)
    m32 = load_sd(ckpt, device="cpu", fp32_text_enc=True, cache=False)
    assert {p.dtype for p in _te_params(m)} == {torch.float16}
    assert {p.dtype for p in _te_params(m32)} == {torch.float32}
    assert next(m.unet.parameters()).dtype == torch.float32 and next(m.vae.parameters()).dtype == torch.float32
    a, b = m.encode_prompt("a (red:1.2) barn"), m32.encode_prompt("a (red:1.2) barn")
    assert a[0][0].dtype == torch.float32
    # an fp16 checkpoint: the same bits either way (ComfyUI measured the same)
    assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1]["pooled_output"], b[0][1]["pooled_output"])


def test_lora_merged_text_encoder_weights_are_rounded_to_fp16(fp16_sd1):
    """ComfyUI merges a LoRA into the fp16 text-encoder weights in float32 and rounds the sum to fp16 once; the
    conditioning is then that of the fp32 merge with every weight rounded to fp16 (the 1.9e-3 of issue 22)."""
    from twosamplers import Lora
    from twosamplers.models.lora import patched

    ckpt, lora = fp16_sd1
    m = load_sd(ckpt, device="cpu", cache=False)
    m32 = load_sd(ckpt, device="cpu", fp32_text_enc=True, cache=False)
    got = m.with_loras([Lora(lora, 0.0, 0.8)]).encode_prompt("a red barn")[0][0]
    lm32 = m32.with_loras([Lora(lora, 0.0, 0.8)])
    exact32 = lm32.encode_prompt("a red barn")[0][0]
    with patched(m32, lm32.loras, unet=False, clip=True), torch.no_grad():
        for p in _te_params(m32):
            p.copy_(p.half().float())
        want = m32.encode_prompt("a red barn")[0][0]
    assert torch.equal(got, want)
    assert not torch.equal(got, exact32)  # the rounding is there, and --fp32-text-enc avoids it


def test_sdxl_text_encoders_both_fp16(tiny_sd_files):
    m = load_sd(tiny_sd_files["sdxl_file"], device="cpu", cache=False)
    assert [{p.dtype for p in e.model.parameters()} for e in m.text_encoders] == [{torch.float16}] * 2
    m32 = load_sd(tiny_sd_files["sdxl_file"], device="cpu", fp32_text_enc=True, cache=False)
    assert [{p.dtype for p in e.model.parameters()} for e in m32.text_encoders] == [{torch.float32}] * 2
    assert m.encode_prompt("a cat")[0][0].dtype == torch.float32


# ------------------------------------------------------------------------------ SD2-v and the SDXL nodes
def test_sd2_v_detection_is_comfyuis():
    """ComfyUI 0.30: v when the UNet takes 4 channels and std(norm bias, in the file's dtype) > 0.09; SD1.x and
    the refiner ignore a 'v_pred' key; SDXL reads it."""
    from twosamplers.models.sd_loading import SD2_V_KEY, UNET, guess_prediction

    g = torch.Generator().manual_seed(0)
    bias = (torch.rand(1280, generator=g) * 2 - 1) * 0.25  # std ~0.144
    four = {UNET + "input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3), SD2_V_KEY: bias.half()}
    nine = {UNET + "input_blocks.0.0.weight": torch.zeros(320, 9, 3, 3), SD2_V_KEY: bias.half()}
    assert guess_prediction(four, "sd2")[0] == "v"
    assert guess_prediction(nine, "sd2")[0] == "eps"  # SD2 inpainting models are eps
    assert guess_prediction({**four, SD2_V_KEY: bias.half() * 0.5}, "sd2")[0] == "eps"
    assert guess_prediction({"v_pred": torch.zeros(())}, "sd1")[0] == "eps"
    assert guess_prediction({"v_pred": torch.zeros(())}, "sdxl_refiner")[0] == "eps"
    assert guess_prediction({"v_pred": torch.zeros(())}, "sd2")[0] == "eps"
    assert guess_prediction({"v_pred": torch.zeros(())}, "sdxl")[0] == "v"


def test_sdxl_nodes(tiny_sd_files):
    from twosamplers.nodes.core import CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner
    from twosamplers.nodes.handles import ClipHandle

    xl = ClipHandle(load_sd(tiny_sd_files["sdxl_file"], device="cpu"))
    (c,) = CLIPTextEncodeSDXL().encode(xl, 1024, 768, 16, 8, 896, 640, "a fox", "a fox, snow, " + "x " * 90)
    assert c[0][0].shape[1] == 154  # text_g padded with an empty chunk to text_l's two
    assert {k: float(v) for k, v in c[0][1].items() if k != "pooled_output"} == {
        "width": 1024.0, "height": 768.0, "crop_w": 16.0, "crop_h": 8.0, "target_width": 896.0,
        "target_height": 640.0}
    (r,) = CLIPTextEncodeSDXLRefiner().encode(xl, 7.5, 512, 256, "a fox")  # on a base CLIP: the size, no score
    assert float(r[0][1]["width"]) == 512.0 and float(r[0][1]["target_height"]) == 256.0
    assert "aesthetic_score" not in r[0][1]
    sd1 = ClipHandle(load_sd(tiny_sd_files["sd1_file"], device="cpu"))
    with pytest.raises(ValueError, match="CLIPTextEncodeSDXL needs the CLIP of an SDXL checkpoint"):
        CLIPTextEncodeSDXL().encode(sd1, 1024, 1024, 0, 0, 1024, 1024, "a", "b")
    with pytest.raises(ValueError, match="width"):
        CLIPTextEncodeSDXLRefiner().encode(xl, 6.0, -1, 1024, "a")
