"""Flux.1 and SD3.5 through every front end: the Python front door (TwoSamplersForMask, a 3-region joint render,
crop-to-mask), the CLI (`--model` a file or a folder, LoRAs, --from), `twosamplers run` on a workflow, the job's
checks (latent formats, memory), and determinism. Tiny models: tests/flow_models.py."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from flow_workflows import WORKFLOWS, write_inputs
from PIL import Image

import twosamplers as ts
from twosamplers.cli import main
from twosamplers.job import Job, run_job
from twosamplers.job.imageio import load_image
from twosamplers.job.spec import JobError
from twosamplers.models import ModelCache, defaults_for, load

FLUX = "checkpoints/flux_dev_aio.safetensors"
SD3 = "checkpoints/sd35_large_aio.safetensors"


def _disc(path, w=64, h=64):
    yy, xx = np.mgrid[:h, :w]
    m = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.3 * min(w, h)) ** 2).astype(np.uint8) * 255
    Image.fromarray(np.stack([m] * 3, axis=-1)).save(path)
    return path


@pytest.fixture(scope="module")
def models(flow_models_dir):
    cache = ModelCache()
    return {name: cache.get(flow_models_dir / path, device="cpu") for name, path in (("flux", FLUX), ("sd3", SD3))}


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_front_door_two_samplers_and_three_region_joint(models, family):
    m = models[family]
    latent = ts.empty_latent(64, 64, channels=16)
    cfg = 1.0 if family == "flux" else 3.0
    base = ts.SamplerSettings(m, m.encode_prompt("a meadow"), m.encode_prompt(""), seed=1, steps=3, cfg=cfg)
    inside = ts.SamplerSettings(m, m.encode_prompt("a barn"), m.encode_prompt(""), seed=2, steps=3, cfg=cfg,
                                sampler_name="dpmpp_2m", scheduler="simple")
    mask = torch.zeros(64, 64)
    mask[16:48, 16:48] = 1.0
    two = ts.two_samplers_for_mask(latent, mask, base, inside, feather=2.0)["samples"]
    cropped = ts.two_samplers_for_mask(latent, mask, base, inside, crop_to_mask=True)["samples"]
    assert two.shape == cropped.shape == (1, 16, 8, 8)
    assert torch.isfinite(two).all() and torch.isfinite(cropped).all()
    # a 3-region joint render: two regions and the base, in one sampler
    masks = [torch.zeros(64, 64), torch.zeros(64, 64)]
    masks[0][:, :32] = 1.0
    masks[1][40:, 32:] = 1.0
    regions = [(masks[0], inside), (masks[1], ts.SamplerSettings(m, m.encode_prompt("a pond"), m.encode_prompt(""),
                                                                 seed=2, steps=3, cfg=cfg))]
    with pytest.warns(UserWarning, match="not used"):  # joint mode samples with the base's sampler
        joint = ts.regional_sample(latent, base, regions, mode="joint")["samples"]
        again = ts.regional_sample(latent, base, regions, mode="joint")["samples"]
    assert joint.shape == (1, 16, 8, 8) and torch.equal(joint, again)
    img = m.decode_latent(joint)
    assert img.shape == (1, 64, 64, 3) and float(img.min()) >= 0 and float(img.max()) <= 1


def test_defaults_and_memory_estimate_are_the_familys(flow_models_dir, models):
    assert defaults_for(flow_models_dir / FLUX).cfg == 1.0 and defaults_for(flow_models_dir / SD3).cfg == 4.5
    assert defaults_for(flow_models_dir / FLUX).size == 1024
    from twosamplers.job.memory import estimate_bytes

    small, big = (estimate_bytes(models["flux"], s, s) for s in (64, 1024))
    assert 0 < small < big < 3 * 1024**3  # tiny weights; at 1024 px mostly the VAE decoder's feature maps


@pytest.mark.parametrize("family, extra", [("flux", ["--crop-to-mask", "--mask-sampler", "euler_ancestral"]),
                                           ("sd3", ["--mode", "joint", "--cfg", "3"])])
def test_cli_generate_and_from_png(flow_models_dir, tmp_path, capsys, family, extra):
    mask = _disc(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    argv = ["generate", "--model", flow_models_dir / (FLUX if family == "flux" else SD3), "--base-prompt",
            "a meadow", "--mask-prompt", "a red barn", "--mask", mask, "--steps", 3, "--width", 64, "--height", 64,
            "--seed", 4, *extra, "-o", out, "--json", "-q"]
    assert main([str(a) for a in argv]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["outputs"]["image"] == str(out)
    assert main(["generate", "--from", str(out), "-o", str(tmp_path / "again.png"), "-q"]) == 0
    a, b = load_image(out), load_image(tmp_path / "again.png")
    assert a.shape == (1, 64, 64, 3) and torch.equal(a, b)


def test_cli_model_folder_with_loras(flow_models_dir, tmp_path, capsys):
    folder = tmp_path / "flux"
    folder.mkdir()
    for f in ("diffusion_models/flux_lora_base.safetensors", "text_encoders/clip_l.safetensors",
              "text_encoders/t5xxl.safetensors", "vae/ae.safetensors"):
        shutil.copy(flow_models_dir / f, folder)
    mask = _disc(tmp_path / "mask.png", 32, 32)
    out = tmp_path / "out.png"
    code = main(["generate", "--model", str(folder), "--base-prompt", "a meadow", "--mask-prompt",
                 "a red barn <lora:flux_kohya:0.7>", "--lora-dir", str(flow_models_dir / "loras"), "--mask",
                 str(mask), "--mask-lora", str(flow_models_dir / "loras" / "flux_kohya.safetensors") + ":0.5",
                 "--steps", "2", "--width", "32", "--height", "32", "-o", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    assert load_image(out).shape == (1, 32, 32, 3)


def test_job_refuses_a_pass_model_of_another_latent_space(flow_models_dir, tmp_path):
    mask = _disc(tmp_path / "mask.png", 32, 32)
    job = Job.from_dict({"model": str(flow_models_dir / FLUX), "mask_model": str(flow_models_dir / SD3),
                         "base_prompt": "a", "mask_prompt": "b", "mask": str(mask), "width": 32, "height": 32,
                         "base_steps": 2, "mask_steps": 2})
    with pytest.raises(JobError, match="scale 0.3611, shift 0.1159"):
        run_job(job, ModelCache(), load_options={"device": "cpu"})


def test_cli_runs_a_flux_workflow(flow_models_dir, tmp_path, capsys):
    write_inputs(tmp_path / "input")
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(WORKFLOWS["flux_two_samplers"]()))
    code = main(["run", str(wf), "--models", str(flow_models_dir), "--input-dir", str(tmp_path / "input"),
                 "--output-dir", str(tmp_path / "out"), "-q"])
    assert code == 0, capsys.readouterr().err
    assert [p.suffix for p in (tmp_path / "out").iterdir()] == [".latent"]


def test_loading_keeps_one_copy_for_both_passes(flow_models_dir):
    cache = ModelCache()
    a = cache.get(flow_models_dir / FLUX, device="cpu")
    b = cache.get(flow_models_dir / FLUX, device="cpu")
    shifted = a.with_model_sampling(ts.ModelSamplingFlux(shift=0.7))
    assert a is b and shifted.network is a.network and shifted.model_sampling is not a.model_sampling
    assert load(flow_models_dir / "diffusion_models" / "flux_schnell.safetensors", device="cpu").text is None
