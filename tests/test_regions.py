"""Regions are part of the job (issue 24): N regions from the CLI, a batch line and the PNG render the bits of
`regional_sample` called directly; old jobs keep their hashes; one mask reader; the preview's masks are the
sampler's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from twosamplers.cli import main
from twosamplers.job import Job, JobError, ModelCache, preview_masks, run_job
from twosamplers.job.imageio import load_image, load_mask, mask_from_image, read_png_job

SIZE = 32


def band_masks(folder, n: int = 3) -> list[str]:
    """n overlapping horizontal bands (and one soft-edged), saved as 8-bit PNGs."""
    paths = []
    for i in range(n):
        m = np.zeros((SIZE, SIZE), np.uint8)
        m[i * 10:i * 10 + 12, 3:29] = 255
        m[i * 10 + 12:i * 10 + 14, 3:29] = 100
        path = folder / f"m{i}.png"
        Image.fromarray(m).save(path)
        paths.append(str(path))
    return paths


def cli(args) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # the argument parser's one-line errors
            code = e.code
    return code, out.getvalue(), err.getvalue()


def three_regions(masks, out, *extra) -> list:
    return ["generate", "--base-prompt", "grass", "--region", masks[0], "brick", "--region", masks[1], "water",
            "--region", masks[2], "sand", "--width", SIZE, "--height", SIZE, "--steps", 3, "--seed", 2,
            "--region-seed", 2, 7, "--region-cfg", 3, 2.0, "--region-sampler", 3, "heun", "-o", out, "-q", *extra]


def direct(masks, mode: str, grow: int = 0, feather: float = 0.0):
    """The same three regions through the front door itself."""
    from twosamplers.engine.front import SamplerSettings, regional_sample
    from twosamplers.engine.latent import empty_latent
    from twosamplers.models import load

    m = load("textures")

    def s(prompt, seed, cfg=1.0, sampler="euler"):
        return SamplerSettings(m, m.encode_prompt(prompt), m.encode_prompt(""), seed=seed, steps=3, cfg=cfg,
                               sampler_name=sampler, scheduler="normal")

    regions = [(load_mask(masks[0]), s("brick", 2)), (load_mask(masks[1]), s("water", 7)),
               (load_mask(masks[2]), s("sand", 2, 2.0, "heun"))]
    with pytest.warns(UserWarning) if mode == "joint" else _nothing():
        out = regional_sample(empty_latent(SIZE, SIZE, channels=3, downscale=1), s("grass", 2), regions, mode=mode,
                              grow=grow, feather=feather)
    return m.decode_latent(out["samples"])


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def pixels(image: torch.Tensor) -> np.ndarray:
    """An IMAGE as the uint8 pixels a PNG of it holds."""
    from twosamplers.job.imageio import to_uint8

    return to_uint8(image[:1])


def png_pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------------------------------------- CLI, PNG, batch
@pytest.mark.parametrize("mode", ["regional", "joint"])
def test_three_regions_from_the_cli_are_regional_sample_bit_for_bit(tmp_path, mode):
    masks = band_masks(tmp_path)
    out = tmp_path / "o.png"
    extra = ["--grow", 1, "--feather", 1.5] + (["--mode", mode] if mode != "regional" else [])
    with pytest.warns(UserWarning, match="not used: regions") if mode == "joint" else _nothing():
        code, stdout, err = cli(three_regions(masks, out, *extra, "--json"))
    assert code == 0, err
    settings = json.loads(stdout)["settings"]
    assert settings["mode"] == mode and [r["prompt"] for r in settings["regions"]] == ["brick", "water", "sand"]
    assert [r["seed"] for r in settings["regions"]] == [2, 7, 2] and settings["regions"][2]["sampler"] == "heun"
    assert "mask_prompt" not in settings and settings["base_seed"] == 2
    expected = direct(masks, "interleaved" if mode == "regional" else mode, grow=1, feather=1.5)
    assert np.array_equal(png_pixels(out), pixels(expected))


def test_a_three_region_png_renders_again_from_its_metadata(tmp_path):
    masks = band_masks(tmp_path)
    out, again = tmp_path / "o.png", tmp_path / "again.png"
    assert cli(three_regions(masks, out, "--preview", tmp_path / "p.png"))[0] == 0
    settings, embedded, chunks = read_png_job(out)
    assert len(settings["regions"]) == 3 and len(embedded) == 3 and "twosamplers-mask-3" in chunks
    assert all(torch.equal(e, load_mask(m)) for e, m in zip(embedded, masks, strict=True))
    assert Image.open(tmp_path / "p.png").size == (4 * SIZE + 3 * 4, SIZE)  # masks | result
    for m in masks:  # --from needs no mask file: every region's mask is in the PNG
        (tmp_path / m).unlink()
    assert cli(["generate", "--from", out, "-o", again, "-q"])[0] == 0
    assert torch.equal(load_image(again), load_image(out))
    assert read_png_job(again)[0]["regions"] == settings["regions"]
    # one region's field changes from the command line; the others stay as stored
    code, stdout, _ = cli(["generate", "--from", out, "--region-seed", 2, 8, "--region-prompt", 2, "gravel", "-o",
                           tmp_path / "x.png", "--json"])
    regions = json.loads(stdout)["settings"]["regions"]
    assert code == 0 and [r["seed"] for r in regions] == [2, 8, 2]
    assert [r["prompt"] for r in regions] == ["brick", "gravel", "sand"]
    assert not torch.equal(load_image(tmp_path / "x.png"), load_image(out))
    # a plain flag sets every pass, stored ones included
    code, stdout, _ = cli(["generate", "--from", out, "--seed", 9, "-o", tmp_path / "y.png", "--json"])
    s = json.loads(stdout)["settings"]
    assert code == 0 and s["base_seed"] == 9 and [r["seed"] for r in s["regions"]] == [9, 9, 9]


@pytest.mark.slow
def test_a_batch_line_with_three_regions_renders_the_cli_bits(tmp_path):
    masks = band_masks(tmp_path)
    assert cli(three_regions(masks, tmp_path / "cli.png"))[0] == 0
    region = [{"mask": "m0.png", "prompt": "brick"}, {"mask": "m1.png", "prompt": "water", "seed": {"grid": [7, 8]}},
              {"mask": "m2.png", "prompt": "sand", "cfg": 2.0, "sampler": "heun"}]
    line = {"base_prompt": "grass", "regions": region, "width": SIZE, "height": SIZE, "steps": 3, "seed": 2}
    (tmp_path / "jobs.jsonl").write_text(json.dumps(line) + "\n")
    code, stdout, err = cli(["batch", tmp_path / "jobs.jsonl", "-o", tmp_path / "out", "--workers", 1, "--json",
                             "-q"])
    assert code == 0, err
    assert json.loads(stdout)["rendered"] == 2  # the grid inside region 2: seed 7 and 8
    records = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    seven = next(r for r in records if r["settings"]["regions"][1]["seed"] == 7)
    assert torch.equal(load_image(tmp_path / "out" / seven["output"]), load_image(tmp_path / "cli.png"))
    # the job's hash covers every region's mask file: a changed region 3 is a new job
    Image.fromarray(np.full((SIZE, SIZE), 255, np.uint8)).save(tmp_path / "m2.png")
    code, stdout, _ = cli(["batch", tmp_path / "jobs.jsonl", "-o", tmp_path / "out", "--workers", 1, "--json", "-q"])
    assert code == 0 and json.loads(stdout)["rendered"] == 2 and json.loads(stdout)["skipped"] == 0


def test_region_flags_and_their_errors(tmp_path):
    masks = band_masks(tmp_path)
    out = tmp_path / "o.png"
    (tmp_path / "regions.json").write_text(json.dumps([{"mask": "m1.png", "prompt": "water", "steps": 2},
                                                        {"mask": "m2.png", "prompt": "sand"}]))
    # --mask / --mask-prompt are region 1, the file's regions follow (paths relative to the file)
    code, stdout, err = cli(["generate", "--base-prompt", "grass", "--mask", masks[0], "--mask-prompt", "brick",
                             "--regions", tmp_path / "regions.json", "--steps", 3, "--mask-seed", 4, "--width", SIZE,
                             "--height", SIZE, "-o", out, "--json", "-q"])
    assert code == 0, err
    regions = json.loads(stdout)["settings"]["regions"]
    assert [r["mask"] for r in regions] == masks and [r["steps"] for r in regions] == [3, 2, 3]
    assert regions[0]["seed"] == 4
    for args, expect in [
        (["--region-seed", 4, 1], "--region-seed 4: there is no region 4"),
        (["--region-steps", 2, 0], "--region-steps 2: 0 is out of range"),
        (["--region-sampler", 1, "nope"], "--region-sampler 1: unknown value 'nope'"),
        (["--region-seed", 0, 1], "N must be a region number"),
        (["--mode", "two-pass"], "--mode: two-pass renders one region, this job has 3"),
        (["--mode", "regional", "--crop-to-mask"], "--crop-to-mask: is only available in mode two-pass"),
    ]:
        code, _, err = cli(three_regions(masks, out, *args))
        assert code == 2 and expect in err and len(err.strip().splitlines()) == 1, (args, err)
    code, _, err = cli(three_regions([masks[0], tmp_path / "nope.png", masks[2]], out))
    assert code == 2 and "regions[1].mask" not in err and "not found" in err


# ---------------------------------------------------------------------------------------------- the job
def test_one_region_is_the_two_pass_job_and_old_jobs_hash_as_before(tmp_path, monkeypatch):
    """Pinned digests, computed with the job layer before regions existed: the same dicts hash the same."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.png").write_bytes(b"mask-bytes\x00\x01")
    (tmp_path / "hint.png").write_bytes(b"hint-bytes")
    jobs = {
        "6d9b4171dd155954eba83f7d1d9ff5c4a35484982b05e003c416848816a7a7a4": (
            {"base_prompt": "grass", "mask_prompt": "brick", "mask": "m.png", "base_seed": 3, "mask_steps": 7,
             "feather": 1.5, "mode": "joint"}, None),
        "019ef6a12b0611a5e33c4111a7de493276284a1fdbae900f9f8fe7acc59b288e": (
            {"base_prompt": "a", "mask_prompt": "b", "mask": "demo-disc", "width": 64, "height": 64,
             "crop_to_mask": True}, torch.linspace(0, 1, 64).reshape(8, 8)),
        "97a9b74789ab93057f8a102a83e7b1e7e26aeee9da3e06fb3d796c468afef485": (
            {"base_prompt": "a", "mask_prompt": "b", "mask": "m.png", "model": "x.safetensors", "mask_model": "ideal",
             "mask_controlnets": ["cn.safetensors:hint.png:0.5"], "base_loras": ["style.safetensors:0.5"],
             "mask_negative": "blurry", "comfyui_version": "0.3.64"}, None),
    }
    for digest, (d, tensor) in jobs.items():
        job = Job.from_dict(d, mask_tensor=tensor)
        assert job.hash() == digest
        # the same job written as one region of a `regions` list is the same job
        flat = {k: v for k, v in d.items() if not k.startswith("mask") or k == "mask_channel"}
        region = {"mask": d["mask"], "prompt": d["mask_prompt"],
                  **{k[5:]: v for k, v in d.items() if k.startswith("mask_") and k not in ("mask_prompt",)}}
        as_list = Job.from_dict({**flat, "regions": [region]}, mask_tensors=[tensor])
        assert as_list == job and as_list.hash() == digest and "regions" not in as_list.to_dict()


def test_region_fields_are_checked_and_named():
    base = {"base_prompt": "a", "regions": [{"mask": "a.png", "prompt": "x"}, {"mask": "b.png", "prompt": "y"}]}
    assert Job.from_dict(base).mode == "regional"  # several regions: RegionalSampler's mode unless told
    for change, field in [
        ({"regions": [{"mask": "a.png", "prompt": "x"}, {"mask": "b.png", "prompt": "y", "steps": 0}]},
         "regions[1].steps"),
        ({"regions": [{"mask": "a.png", "prompt": "x"}, {"mask": "b.png", "prompt": "y", "colour": 1}]},
         "regions[1].colour"),
        ({"regions": [{"mask": "a.png", "prompt": "x"}, {"prompt": "y"}]}, "regions[1].mask"),
        ({"regions": [{"mask": "a.png", "prompt": "x"}, {"mask": "b.png"}]}, "regions[1].prompt"),
        ({"regions": []}, "regions"),
        ({"regions": "a.png"}, "regions"),
        ({"regions": [{"mask": "a.png", "prompt": "x"}] * 65}, "regions"),
        ({"mode": "two-pass"}, "mode"),
        ({"mode": "joint", "differential": True}, "differential"),
    ]:
        with pytest.raises(JobError) as e:
            Job.from_dict({**base, **change})
        assert e.value.field == field, (change, e.value)
    # the shorthand: a plain key sets every pass without its own value; lists come first
    j = Job.from_dict({**base, "seed": 5, "loras": ["a.safetensors"], "regions": [
        {"mask": "a.png", "prompt": "x", "seed": 1, "loras": ["b.safetensors"]}, {"mask": "b.png", "prompt": "y"}]})
    assert (j.base.seed, j.regions[0].spec.seed, j.regions[1].spec.seed) == (5, 1, 5)
    assert [e["file"] for e in j.regions[0].spec.loras] == ["a.safetensors", "b.safetensors"]


def test_the_hash_covers_every_region(tmp_path):
    masks = band_masks(tmp_path)
    d = {"base_prompt": "a", "regions": [{"mask": m, "prompt": "brick"} for m in masks]}
    h = Job.from_dict(d).hash()
    assert h == Job.from_dict(json.loads(json.dumps(Job.from_dict(d).to_dict()))).hash()
    d["regions"][2]["seed"] = 1
    assert Job.from_dict(d).hash() != h
    d["regions"][2]["seed"] = 0
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(masks[2])
    assert Job.from_dict(d).hash() != h
    tensors = Job.from_dict(d, mask_tensors=[None, None, torch.ones(4, 4)])
    assert tensors.hash() != Job.from_dict(d, mask_tensors=[None, None, torch.zeros(4, 4)]).hash()
    assert set(tensors.input_files()) == {"regions[0].mask", "regions[1].mask"}


def test_each_region_loads_its_own_model(tmp_path):
    masks = band_masks(tmp_path)
    j = Job.from_dict({"base_prompt": "grass", "width": SIZE, "height": SIZE, "steps": 2, "regions": [
        {"mask": masks[0], "prompt": "brick"}, {"mask": masks[1], "prompt": "water", "model": "ideal"},
        {"mask": masks[2], "prompt": "sand", "model": "textures"}]})
    assert j.regions[2].spec.model is None and j.models() == ("textures", "ideal")  # the job's model: left out
    cache = ModelCache()
    r = run_job(j, cache, disable_pbar=True)
    assert len(cache) == 2 and r.image.shape == (1, SIZE, SIZE, 3)
    with pytest.raises(JobError) as e:
        run_job(Job.from_dict({**j.to_dict(), "regions": [*j.to_dict()["regions"][:2],
                                                         {"mask": masks[2], "prompt": "x", "model": "nope"}]}),
                cache)
    assert e.value.field == "regions[2].model"


# ---------------------------------------------------------------------------------------------- one mask path
@pytest.mark.parametrize("mode", ["RGBA", "LA", "RGB", "L"])
@pytest.mark.parametrize("channel", ["gray", "alpha", "auto", "red"])
def test_one_mask_reader_for_files_uploads_and_arrays(tmp_path, mode, channel):
    g = np.random.default_rng(3)
    bands = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    arr = g.integers(0, 256, (12, 16, bands), dtype=np.uint8)
    if bands == 1:
        arr = arr[..., 0]
    Image.fromarray(arr).save(tmp_path / "m.png")
    if channel == "alpha" and mode in ("RGB", "L"):
        with pytest.raises(ValueError, match="no alpha channel"):
            load_mask(tmp_path / "m.png", channel)
        return
    from_file = load_mask(tmp_path / "m.png", channel)
    assert torch.equal(mask_from_image(arr, channel), from_file)  # an upload / canvas array: the same numbers
    assert torch.equal(mask_from_image(Image.open(tmp_path / "m.png"), channel), from_file)
    assert torch.equal(mask_from_image(from_file), from_file)  # a float MASK is used as it is


def test_auto_takes_alpha_only_where_there_is_transparency():
    opaque = np.full((4, 4, 4), 200, np.uint8)
    opaque[..., 3] = 255
    assert torch.equal(mask_from_image(opaque, "auto"), mask_from_image(opaque, "gray"))
    opaque[0, 0, 3] = 0
    assert torch.equal(mask_from_image(opaque, "auto"), mask_from_image(opaque, "alpha"))
    assert float(mask_from_image(opaque, "auto")[0, 0]) == 1.0  # transparent = the region, as ComfyUI


@pytest.mark.parametrize("mode", ["two-pass", "interleaved", "regional", "joint"])
def test_the_preview_masks_are_the_samplers_masks(tmp_path, mode, monkeypatch):
    """`preview_masks` (what a page shows as "the mask as the sampler sees it") equals, in every mode, the mask
    the engine under the front door receives."""
    import twosamplers.engine.front as front

    masks = band_masks(tmp_path, 1 if mode == "two-pass" else 3)
    regions = [{"mask": m, "prompt": "brick"} for m in masks]
    j = Job.from_dict({"base_prompt": "grass", "regions": regions, "mode": mode, "grow": 2, "feather": 1.5,
                       "overlap_factor": 3, "width": SIZE, "height": SIZE, "steps": 1})
    seen = []
    real = {name: getattr(front, name) for name in ("two_pass_sample", "interleaved_sample", "joint_sample")}
    monkeypatch.setattr(front, "two_pass_sample", lambda s, m, *a, **k: seen.append(m) or real["two_pass_sample"](
        s, m, *a, **k))
    monkeypatch.setattr(front, "interleaved_sample", lambda lat, b, rs, *a, **k: seen.extend(r[0] for r in rs) or
                        real["interleaved_sample"](lat, b, rs, *a, **k))
    monkeypatch.setattr(front, "joint_sample", lambda s, b, rs, **k: seen.extend(r[0] for r in rs) or
                        real["joint_sample"](s, b, rs, **k))
    run_job(j, ModelCache(), disable_pbar=True)
    preview = preview_masks(j, [load_mask(m) for m in masks], downscale=1)
    assert len(seen) == len(preview) == len(masks)
    for got, shown in zip(seen, preview, strict=True):
        if mode == "joint":  # the engine gets the weights at latent size
            from twosamplers.engine.mask_ops import to_latent

            shown = to_latent(shown, (1, 3, SIZE, SIZE))
        assert torch.equal(got.reshape(-1), shown.reshape(-1))


# ---------------------------------------------------------------------------------------------- the page's PNG
def test_a_page_picture_with_three_regions_renders_again_from_generate_from(tmp_path):
    from twosamplers.ui import handlers as H
    from twosamplers.ui.render import render

    masks = [load_mask(m) for m in band_masks(tmp_path)]
    f = H.default_fields()
    f.update({"width": SIZE, "height": SIZE, "base_steps": 3, "mask_steps": 3, "r2_steps": 3, "r3_steps": 3,
              "mode": "regional", "r2_seed": 5, "r3_cfg": 2.0, "r3_sampler": "heun", "grow": 1})
    page = render(H.fields_to_settings(f, 3), masks, output=tmp_path / "page.png")
    assert cli(["generate", "--from", page["image"], "-o", tmp_path / "cli.png", "-q"])[0] == 0
    assert torch.equal(load_image(tmp_path / "cli.png"), load_image(page["image"]))
    job = Job.from_png(page["image"])
    assert [r.prompt for r in job.regions] == ["brick", "water", "sand"] and job.regions[2].spec.cfg == 2.0
    # and the CLI's three-region PNG loads into the page with every region
    settings, loaded = H.load_png_settings(tmp_path / "cli.png")
    assert len(loaded) == 3 and [r["prompt"] for r in settings["regions"]] == ["brick", "water", "sand"]
    assert settings["regions"][2]["sampler"] == "heun"
