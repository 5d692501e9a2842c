"""A model per pass (`base_model` / `mask_model`): the job's `model` is the passes' default and the VAE; a pass's
own model samples that pass (checked against the front door driven by hand), loads once, must share the job
model's latent format, round-trips through the PNG and the CLI, normalises away when equal to `model`, and
groups batch jobs by the set of models they load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from twosamplers.engine import front
from twosamplers.engine.front import SamplerSettings
from twosamplers.engine.latent import empty_latent
from twosamplers.job import Job, JobError, ModelCache, Outputs, job_keys, prepare_job, run_job
from twosamplers.job.imageio import load_image, load_mask, read_settings
from twosamplers.models import defaults_for, load

BASE = {"base_prompt": "grass", "mask_prompt": "brick"}


def mask_png(path, size=32):
    yy, xx = np.mgrid[:size, :size]
    m = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.3 * size) ** 2).astype(np.uint8) * 255
    Image.fromarray(m).save(path)
    return str(path)


def job(tmp_path, **kw) -> Job:
    return Job.from_dict({**BASE, "mask": mask_png(tmp_path / "m.png"), "width": 32, "height": 32,
                          "base_steps": 3, "mask_steps": 3, "base_seed": 1, "mask_seed": 2, **kw})


def by_hand(j: Job, base_model, mask_model, vae, controlnets=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(samples, image) of `j` through the front door, each pass given its model (and `controlnets[pass]`) by
    hand, `vae` decoding."""
    def settings(model, prompt, spec, which):
        return SamplerSettings(model, model.encode_prompt(prompt), model.encode_prompt(spec.negative),
                               seed=spec.seed, steps=spec.steps, cfg=spec.cfg, sampler_name=spec.sampler,
                               scheduler=spec.scheduler, denoise=spec.denoise, comfyui_version=j.comfyui_version,
                               controlnets=(controlnets or {}).get(which, []))

    fmt = vae.latent_format
    latent = empty_latent(j.width, j.height, channels=fmt.channels, downscale=int(fmt.downscale))
    out = front.two_samplers_for_mask(
        latent, load_mask(j.mask, j.mask_channel, j.invert_mask), settings(base_model, j.base_prompt, j.base, "base"),
        settings(mask_model, j.mask_prompt, j.inside, "mask"), mode=j.mode, inversion=j.inversion,
        base_covers_mask=j.base_covers_mask, grow=j.grow, feather=j.feather, differential=j.differential,
        crop_to_mask=j.crop_to_mask, crop_context=j.crop_context, overlap_factor=j.overlap_factor,
        base_only_steps=j.base_only_steps, inpaint_conditioning=j.inpaint_conditioning, disable_pbar=True)
    return out["samples"], vae.decode_latent(out["samples"])


# ---------------------------------------------------------------------------------------------- the job fields
def test_the_embedded_models_share_a_latent_format():
    a, b = load("textures").latent_format, load("ideal").latent_format
    assert (a.channels, a.downscale) == (b.channels, b.downscale)


def test_pass_models_are_pass_keys_and_normalise_to_none(tmp_path):
    assert {"base_model", "mask_model"} <= set(job_keys())
    plain = job(tmp_path)
    same = job(tmp_path, base_model="textures", mask_model="textures")  # the job's model stated again
    assert same.base.model is same.inside.model is None and same.to_dict() == plain.to_dict()
    assert same.hash() == plain.hash() and "base_model" not in plain.to_dict()
    own = job(tmp_path, mask_model="ideal")
    assert own.inside.model == "ideal" and own.base.model is None and own.hash() != plain.hash()
    assert own.to_dict()["mask_model"] == "ideal" and "base_model" not in own.to_dict()
    assert own.pass_model("base") == "textures" and own.pass_model("mask") == "ideal"
    assert own.models() == ("textures", "ideal")
    assert Job.from_dict(own.to_dict()) == own
    # a pass model equal to the job's model (whatever the job's model is) is the same job
    a = Job.from_dict({**BASE, "mask": "m.png", "model": "ideal", "base_model": "ideal"})
    assert a.to_dict() == Job.from_dict({**BASE, "mask": "m.png", "model": "ideal"}).to_dict()


def test_jobs_without_pass_models_hash_as_before(tmp_path, monkeypatch):
    """The digest of this job dict, computed by the code before pass models existed (commit e8485de): batch
    outputs and PNGs made then keep their names and hashes."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.png").write_bytes(b"not really a png: the hash reads bytes")
    d = {**BASE, "mask": "m.png", "model": "ideal", "base_seed": 3, "mask_steps": 4}
    golden = "c0e5c3c42b967834cc87595ab30029b128c3c429decb1d21cb002613fecf444b"
    assert Job.from_dict(d).hash() == golden
    assert Job.from_dict({**d, "base_model": "ideal", "mask_model": "ideal"}).hash() == golden
    assert Job.from_dict({**d, "base_model": None}).hash() == golden  # JSON null: not given


def test_guidance_default_comes_from_the_pass_model(tmp_path):
    j = Job.from_dict({**BASE, "mask": "m.png", "mask_model": "some/checkpoint.safetensors"})
    assert j.base.cfg == defaults_for("textures").cfg == 1.0
    assert j.inside.cfg == defaults_for("x.safetensors").cfg == 8.0
    j = Job.from_dict({**BASE, "mask": "m.png", "model": "a.safetensors", "base_model": "ideal", "mask_cfg": 5})
    assert j.base.cfg == 1.0 and j.inside.cfg == 5.0


@pytest.mark.parametrize("value, field", [("", "base_model"), ("  ", "mask_model"), (3, "mask_model"),
                                          (["ideal"], "base_model")])
def test_bad_pass_model_values_name_the_field(value, field):
    with pytest.raises(JobError) as e:
        Job.from_dict({**BASE, "mask": "m.png", field: value})
    assert e.value.field == field


# ---------------------------------------------------------------------------------------------- rendering
@pytest.mark.parametrize("which", ["mask", "base"])
def test_a_pass_samples_with_its_own_model(tmp_path, which):
    tex, ide = load("textures"), load("ideal")
    single = job(tmp_path)
    per_pass = job(tmp_path, **{f"{which}_model": "ideal"})
    cache = ModelCache()
    r1 = run_job(single, cache, disable_pbar=True)
    r2 = run_job(per_pass, cache, disable_pbar=True)
    assert len(cache) == 2  # textures (job model, also the single-model job's) and ideal, each loaded once
    assert not torch.equal(r1.samples, r2.samples)
    models = {"base": tex, "mask": tex, which: ide}
    samples, image = by_hand(r2.job, models["base"], models["mask"], tex)
    assert torch.equal(r2.samples, samples) and torch.equal(r2.image, image)
    outside = load_mask(single.mask, "gray", False) == 0
    if which == "mask":  # the base pass is untouched: outside the mask the single-model run's pixels stay
        assert torch.equal(r1.samples[0][:, outside], r2.samples[0][:, outside])
        assert not torch.equal(r1.samples[0][:, ~outside], r2.samples[0][:, ~outside])


def test_both_passes_on_other_models_load_each_model_once(tmp_path):
    j = job(tmp_path, base_model="ideal", mask_model="ideal")
    cache = ModelCache()
    prep = prepare_job(j, cache)
    assert len(cache) == 2 and prep.model is cache.get("textures")  # the job's model: the VAE
    assert prep.pass_models["base"] is prep.pass_models["mask"] is cache.get("ideal")


def test_a_pass_model_that_does_not_load_names_its_field(tmp_path):
    with pytest.raises(JobError) as e:
        prepare_job(job(tmp_path, base_model=str(tmp_path / "missing.safetensors")), ModelCache())
    assert e.value.field == "base_model" and "missing.safetensors" in e.value.message


def test_pass_model_errors_come_before_any_sampling(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("sampled")

    monkeypatch.setattr(front, "two_samplers_for_mask", boom)
    with pytest.raises(JobError) as e:
        run_job(job(tmp_path, mask_model="nope"), ModelCache(), outputs=Outputs(image=str(tmp_path / "o.png")))
    assert e.value.field == "mask_model" and not (tmp_path / "o.png").exists()


def test_memory_estimate_counts_every_model(tmp_path):
    from twosamplers.job import memory

    class Weights(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(n))

    def fake(n):
        return type("M", (), {"latent_format": load("textures").latent_format, "unet": Weights(n)})()

    a, b = fake(1000), fake(3000)
    one = memory.estimate_bytes(a, 64, 64)
    assert memory.estimate_many([a], 64, 64) == one == memory.estimate_many([a, a], 64, 64)
    assert memory.estimate_many([a, b], 64, 64) == memory.estimate_bytes(b, 64, 64) + 1000 * 4


# ---------------------------------------------------------------------------------------------- the CLI
def test_cli_flags_png_metadata_and_from_reproduce(tmp_path, capsys):
    from twosamplers.cli import main

    mask = mask_png(tmp_path / "m.png")
    common = ["generate", "--base-prompt", "grass", "--mask-prompt", "brick", "--mask", mask, "--width", "32",
              "--height", "32", "--steps", "3", "-q", "--json"]
    out = tmp_path / "o.png"
    assert main(common + ["--mask-model", "ideal", "-o", str(out)]) == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert settings["mask_model"] == "ideal" and settings["model"] == "textures" and "base_model" not in settings
    assert read_settings(out)[0]["mask_model"] == "ideal"
    again = tmp_path / "again.png"
    assert main(["generate", "--from", str(out), "-o", str(again), "-q"]) == 0
    assert torch.equal(load_image(again), load_image(out))
    assert read_settings(again)[0] == read_settings(out)[0]
    # --model is the job's field: it does not become a pass model (so it cannot undo --from's mask_model)
    plain = tmp_path / "plain.png"
    assert main(common + ["--model", "textures", "--base-model", "textures", "-o", str(plain)]) == 0
    s = json.loads(capsys.readouterr().out)["settings"]
    assert "base_model" not in s and "mask_model" not in s
    assert not torch.equal(load_image(plain), load_image(out))


def test_cli_bad_pass_model_names_the_flag(tmp_path, capsys):
    from twosamplers.cli import main

    code = main(["generate", "--base-prompt", "a", "--mask-prompt", "b", "--mask", mask_png(tmp_path / "m.png"),
                 "--mask-model", "no-such-model", "-o", str(tmp_path / "o.png"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "--mask-model" in err and "no-such-model" in err


def test_cli_help_says_what_the_flags_mean(capsys):
    from twosamplers.cli import main

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--base-model" in text and "--mask-model" in text
    assert "the model the mask pass samples with instead of --model" in text
    assert "VAE encodes --image and decodes the result" in text


# ---------------------------------------------------------------------------------------------- batch
def test_batch_groups_jobs_by_the_models_they_load(tmp_path):
    from twosamplers.batch import adapter
    from twosamplers.batch.plan import Task
    from twosamplers.batch.scheduler import Scheduler

    mask_png(tmp_path / "m.png")
    line = {**BASE, "mask": "m.png", "steps": 2}

    def parsed(**kw):
        return adapter.parse({**line, **kw}, tmp_path)

    plain, same = parsed(), parsed(base_model="textures", seed=4)
    mixed, mixed2 = parsed(mask_model="ideal"), parsed(model="ideal", base_model="textures", seed=5)
    other = parsed(model="ideal")
    assert plain.model_key == same.model_key  # textures alone
    assert mixed.model_key == mixed2.model_key != plain.model_key  # textures + ideal, whichever does what
    assert other.model_key not in (plain.model_key, mixed.model_key)
    assert parsed(mask_model="ideal", dtype="fp16").model_key != mixed.model_key  # loading options too
    tasks = [Task(i, j, f"{i}.png") for i, j in enumerate([plain, mixed, other, same, mixed2])]
    s = Scheduler(tasks, tmp_path, retries=0)
    assert [s.next_task(mixed.model_key).line for _ in range(2)] == [1, 4]
    assert s.next_task(plain.model_key).line == 0 and s.next_task(plain.model_key).line == 3


def test_batch_line_resolves_a_pass_checkpoint_path(tmp_path):
    from twosamplers.batch import adapter

    mask_png(tmp_path / "m.png")
    with pytest.raises(JobError) as e:
        adapter.parse({**BASE, "mask": "m.png", "mask_model": "ckpt/missing.safetensors"}, tmp_path)
    assert e.value.field == "mask_model" and str(tmp_path / "ckpt" / "missing.safetensors") in e.value.message


def test_batch_render_uses_the_pass_model(tmp_path):
    from twosamplers.batch import adapter

    mask_png(tmp_path / "m.png")
    bj = adapter.parse({**BASE, "mask": "m.png", "width": 32, "height": 32, "steps": 3, "mask_model": "ideal"},
                       tmp_path)
    png = adapter.render(bj, adapter.read_inputs(bj), ModelCache())["image"]
    (tmp_path / "b.png").write_bytes(png)
    direct = run_job(bj.job, ModelCache(), disable_pbar=True)
    assert read_settings(tmp_path / "b.png")[0]["mask_model"] == "ideal"
    assert torch.equal(load_image(tmp_path / "b.png"), load_image_of(direct, tmp_path))


def load_image_of(result, tmp_path) -> torch.Tensor:
    from twosamplers.job import write_outputs

    write_outputs(result, Outputs(image=str(tmp_path / "direct.png")))
    return load_image(tmp_path / "direct.png")


# ---------------------------------------------------------------------------------------------- SD checkpoints
@pytest.fixture(scope="module")
def sd1_pair(tiny_sd_files, tmp_path_factory):
    """Two different tiny SD1 checkpoints (same latent format): the session's, and a copy with another UNet."""
    from safetensors.torch import load_file, save_file

    a = tiny_sd_files["sd1_file"]
    g = torch.Generator().manual_seed(5)
    sd = load_file(str(a))
    for k, v in sd.items():
        if k.startswith("model.diffusion_model.") and v.is_floating_point():
            sd[k] = (v + 0.05 * torch.randn(v.shape, generator=g, dtype=torch.float32).to(v.dtype)).contiguous()
    b = tmp_path_factory.mktemp("sd1_b") / "sd1_b.safetensors"
    save_file(sd, str(b))
    return str(a), str(b)


def sd_job(tmp_path, **kw) -> Job:
    m = np.zeros((64, 64), np.uint8)
    m[16:48, 16:48] = 255
    Image.fromarray(m).save(tmp_path / "sdmask.png")
    return Job.from_dict({"base_prompt": "grass", "mask_prompt": "a cat", "mask": str(tmp_path / "sdmask.png"),
                          "width": 64, "height": 64, "base_steps": 2, "mask_steps": 2, "base_cfg": 4.0,
                          "mask_cfg": 4.0, "base_seed": 1, "mask_seed": 2, **kw})


def test_latent_formats_must_match(sd1_pair, tmp_path):
    with pytest.raises(JobError) as e:
        prepare_job(job(tmp_path, mask_model=sd1_pair[0]), ModelCache(), load_options={"device": "cpu"})
    msg = e.value.message
    assert e.value.field == "mask_model" and "4 channels at 1/8 scale" in msg and "3 channels at 1/1 scale" in msg
    assert "'textures'" in msg and sd1_pair[0] in msg
    with pytest.raises(JobError) as e:
        prepare_job(sd_job(tmp_path, model=sd1_pair[0], base_model="ideal"), ModelCache(),
                    load_options={"device": "cpu"})
    assert e.value.field == "base_model" and "3 channels at 1/1 scale" in e.value.message


def lora_file(model, tmp_path, name, seed) -> str:
    from test_lora import make_lora, save

    return str(save(tmp_path, name, make_lora(model, "kohya", "lora", seed=seed, every=2)[0]))


def test_loras_patch_their_pass_model(sd1_pair, tmp_path):
    from twosamplers.models.lora import Lora, LoraModel, with_loras

    a_path, b_path = sd1_pair
    cache = ModelCache()
    a, b = cache.get(a_path, device="cpu"), cache.get(b_path, device="cpu")
    lora = lora_file(b, tmp_path, "style.safetensors", 1)
    j = sd_job(tmp_path, model=a_path, mask_model=b_path, mask_loras=[f"{lora}:0.7"])
    r = run_job(j, cache, load_options={"device": "cpu"}, disable_pbar=True)
    assert len(cache) == 2
    prep = prepare_job(j, cache, load_options={"device": "cpu"})
    assert prep.model is a and prep.pass_models["base"] is a
    assert isinstance(prep.pass_models["mask"], LoraModel) and prep.pass_models["mask"].base is b
    samples, image = by_hand(r.job, a, with_loras(b, [Lora(lora, 0.7, 0.7)]), a)
    assert torch.equal(r.samples, samples) and torch.equal(r.image, image)
    single = run_job(replace_mask_model(j, None), cache, load_options={"device": "cpu"}, disable_pbar=True)
    assert not torch.equal(single.samples, r.samples)


def test_two_passes_on_one_other_checkpoint_with_different_loras(sd1_pair, tmp_path):
    from twosamplers.models.lora import Lora, with_loras

    a_path, b_path = sd1_pair
    cache = ModelCache()
    a, b = cache.get(a_path, device="cpu"), cache.get(b_path, device="cpu")
    one, two = lora_file(b, tmp_path, "one.safetensors", 3), lora_file(b, tmp_path, "two.safetensors", 4)
    j = sd_job(tmp_path, model=a_path, base_model=b_path, mask_model=b_path, base_loras=[one],
               mask_loras=[f"{two}:0.5"])
    r = run_job(j, cache, load_options={"device": "cpu"}, disable_pbar=True)
    prep = prepare_job(j, cache, load_options={"device": "cpu"})
    assert prep.pass_models["base"].base is prep.pass_models["mask"].base is b  # one network, patched per pass
    samples, image = by_hand(r.job, with_loras(b, [Lora(one, 1.0, 1.0)]), with_loras(b, [Lora(two, 0.5, 0.5)]), a)
    assert torch.equal(r.samples, samples) and torch.equal(r.image, image)


def replace_mask_model(j: Job, model) -> Job:
    return j.with_region(0, model=model)


def test_controlnets_attach_to_their_pass_model(sd1_pair, tiny_sd_files, tmp_path):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from test_controlnet import tiny_controlnet, to_ldm_controlnet

    from twosamplers.job.run import pass_settings
    from twosamplers.models.control import ControlNet
    from twosamplers.models.controlnet import load_controlnet

    a_path, b_path = sd1_pair
    cache = ModelCache()
    a, b = cache.get(a_path, device="cpu"), cache.get(b_path, device="cpu")
    unet = UNet2DConditionModel.from_pretrained(tiny_sd_files["sd1_folder"] / "unet")
    save_file(to_ldm_controlnet(tiny_controlnet(unet)), str(tmp_path / "cn.safetensors"))
    hint = (torch.arange(64 * 64 * 3, dtype=torch.float32).reshape(1, 64, 64, 3) % 7) / 6
    Image.fromarray((hint[0].numpy() * 255).round().astype(np.uint8)).save(tmp_path / "hint.png")
    j = sd_job(tmp_path, model=a_path, mask_model=b_path,
               mask_controlnets=[f"{tmp_path / 'cn.safetensors'}:{tmp_path / 'hint.png'}:0.8"])
    prep = prepare_job(j, cache, load_options={"device": "cpu"})
    mask_settings = pass_settings(prep, "mask")
    assert mask_settings.model is b
    assert mask_settings.controlnets[0].source is load_controlnet(str(tmp_path / "cn.safetensors"), unet=b.unet)
    r = run_job(j, cache, load_options={"device": "cpu"}, disable_pbar=True)
    cn = ControlNet(str(tmp_path / "cn.safetensors"), load_image(tmp_path / "hint.png"), 0.8, 0.0, 1.0)
    samples, image = by_hand(r.job, a, b, a, controlnets={"mask": [cn]})
    assert torch.equal(r.samples, samples) and torch.equal(r.image, image)
    plain = run_job(replace_mask_model(replace_controlnets(j), b_path), cache, load_options={"device": "cpu"},
                    disable_pbar=True)
    assert not torch.equal(plain.samples, r.samples)


def replace_controlnets(j: Job) -> Job:
    return j.with_region(0, controlnets=())


def test_an_inpainting_checkpoint_for_the_mask_pass(sd1_pair, tmp_path):
    """ComfyUI's common wiring: a plain checkpoint outside, an inpainting one inside (same latent format)."""
    import shutil

    from test_controlnet import tiny_inpaint_unet
    from test_sd_backend import folder_to_single_file, save_folder

    folder = save_folder(tmp_path / "inpaint_diffusers", False)
    shutil.rmtree(folder / "unet")
    tiny_inpaint_unet().save_pretrained(folder / "unet")
    inpaint_path = str(folder_to_single_file(folder, tmp_path / "inpaint.safetensors", False))
    cache = ModelCache()
    a, inp = cache.get(sd1_pair[0], device="cpu"), cache.get(inpaint_path, device="cpu")
    assert inp.inpainting and not getattr(a, "inpainting", False)
    j = sd_job(tmp_path, model=sd1_pair[0], mask_model=inpaint_path)
    r = run_job(j, cache, load_options={"device": "cpu"}, disable_pbar=True)
    samples, image = by_hand(r.job, a, inp, a)
    assert torch.equal(r.samples, samples) and torch.equal(r.image, image)
