"""The job layer: Job dict/PNG round trips, validation naming the field, hashes, run_job and atomic outputs."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from twosamplers.job import Job, JobError, ModelCache, Outputs, job_keys, run_job
from twosamplers.job.imageio import load_image, read_settings
from twosamplers.models import defaults_for

BASE = {"base_prompt": "grass", "mask_prompt": "brick"}


def mask_png(path, value=255, size=16):
    m = np.zeros((size, size), np.uint8)
    m[4:12, 4:12] = value
    Image.fromarray(m).save(path)
    return str(path)


def job(tmp_path, **kw):
    return Job.from_dict({**BASE, "mask": mask_png(tmp_path / "m.png"), "base_steps": 2, "mask_steps": 2, **kw})


def test_dict_round_trip_is_normalised(tmp_path):
    j = job(tmp_path, base_seed=3, feather=1)
    d = j.to_dict()
    assert set(d) == set(job_keys()) - {"base_model", "mask_model"}  # no pass model of its own: left out
    assert d["feather"] == 1.0 and isinstance(d["feather"], float)
    assert d["base_cfg"] == d["mask_cfg"] == defaults_for("textures").cfg == 1.0
    json.dumps(d)  # JSON-able
    assert Job.from_dict(d) == j and Job.from_dict(d).to_dict() == d


def test_model_defaults_come_from_the_registry(tmp_path):
    j = Job.from_dict({**BASE, "mask": "m.png", "model": "some/checkpoint.safetensors"})
    assert j.base.cfg == 8.0 == defaults_for("x.safetensors").cfg


@pytest.mark.parametrize("change, field", [
    ({"base_steps": 0}, "base_steps"),
    ({"mask_cfg": 101}, "mask_cfg"),
    ({"mask_sampler": "nope"}, "mask_sampler"),
    ({"base_scheduler": "nope"}, "base_scheduler"),
    ({"base_seed": -1}, "base_seed"),
    ({"mask_denoise": "1"}, "mask_denoise"),
    ({"width": 0}, "width"),
    ({"overlap_factor": 10001}, "overlap_factor"),
    ({"crop_to_mask": "false"}, "crop_to_mask"),
    ({"mode": "joint?"}, "mode"),
    ({"inversion": "hard"}, "inversion"),
    ({"feather": float("nan")}, "feather"),
    ({"colour": 1}, "colour"),
])
def test_validation_names_the_field(tmp_path, change, field):
    with pytest.raises(JobError) as e:
        job(tmp_path, **change)
    assert e.value.field == field and str(e.value).startswith(field)


def test_required_fields():
    with pytest.raises(JobError, match="mask_prompt"):
        Job.from_dict({"base_prompt": "a", "mask": "m.png"})
    with pytest.raises(JobError, match="mask"):
        Job.from_dict(BASE)


def test_hash_is_stable_and_sensitive(tmp_path):
    j = job(tmp_path)
    h = j.hash()
    assert len(h) == 64 and h == job(tmp_path).hash() == Job.from_dict(j.to_dict()).hash()
    assert job(tmp_path, mask_seed=1).hash() != h
    assert job(tmp_path, grow=1).hash() != h
    mask_png(tmp_path / "m.png", value=128)  # same path, other content
    assert j.hash() != h


def test_hash_counts_an_embedded_mask_by_content():
    a = Job.from_dict({**BASE, "mask": "demo"}, mask_tensor=torch.zeros(8, 8))
    b = Job.from_dict({**BASE, "mask": "demo"}, mask_tensor=torch.ones(8, 8))
    assert a.hash() != b.hash() and a.hash() == Job.from_dict({**BASE, "mask": "demo"},
                                                              mask_tensor=torch.zeros(8, 8)).hash()


def test_run_job_writes_all_outputs_and_png_round_trip(tmp_path):
    j = job(tmp_path, crop_to_mask=True, width=16, height=16)
    out = Outputs(image=str(tmp_path / "o.png"), preview=str(tmp_path / "p.png"), latent=str(tmp_path / "o.latent"))
    cache = ModelCache()
    r = run_job(j, cache, outputs=out, disable_pbar=True)
    assert r.job.width == r.job.height == 16 and r.image.shape == (1, 16, 16, 3)
    assert all((tmp_path / n).is_file() for n in ("o.png", "p.png", "o.latent"))
    stored, embedded = read_settings(tmp_path / "o.png")
    assert {k: v for k, v in stored.items() if k != "twosamplers_version"} == r.job.to_dict()
    again = Job.from_png(tmp_path / "o.png")
    assert again.to_dict() == r.job.to_dict() and torch.equal(again.mask_tensor, embedded)
    r2 = run_job(again, cache, outputs=Outputs(image=str(tmp_path / "again.png")), disable_pbar=True)
    assert torch.equal(load_image(tmp_path / "again.png"), load_image(tmp_path / "o.png"))
    assert len(cache) == 1  # one model load for both jobs
    assert torch.equal(r2.samples, r.samples)
    over = Job.from_png(tmp_path / "o.png", overrides={"mask_seed": 5})
    assert over.inside.seed == 5 and over.base == again.base


def test_bad_output_is_refused_before_any_work(tmp_path, monkeypatch):
    import twosamplers.job.run as run_mod

    def boom(*a, **k):
        raise AssertionError("must not prepare")

    monkeypatch.setattr(run_mod, "prepare_job", boom)
    with pytest.raises(JobError) as e:
        run_job(job(tmp_path), outputs=Outputs(image=str(tmp_path / "no" / "o.png")))
    assert e.value.field == "output"


def test_outputs_are_written_together(tmp_path, monkeypatch):
    """A failure while writing one output leaves every target as it was and no temporary file."""
    import twosamplers.engine.latent as latent_mod

    (tmp_path / "o.png").write_bytes(b"old")

    def broken(latent, metadata=None):
        def write(tmp):
            raise OSError("disk full")
        return write

    monkeypatch.setattr(latent_mod, "latent_writer", broken)
    with pytest.raises(OSError, match="disk full"):
        run_job(job(tmp_path), outputs=Outputs(image=str(tmp_path / "o.png"), latent=str(tmp_path / "o.latent")),
                disable_pbar=True)
    assert (tmp_path / "o.png").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png", "o.png"]


def test_model_cache_loads_once_per_key():
    calls = []

    def loader(name, **kw):
        calls.append((name, kw))
        return object()

    cache = ModelCache(loader)
    a = cache.get("textures")
    assert cache.get("textures") is a and len(calls) == 1
    assert cache.get(" Textures ") is not a and len(calls) == 2  # names are exact: that one is a path
    calls.pop()
    b = cache.get("textures", device="cpu")
    assert b is not a and len(calls) == 2 and len(cache) == 3
    cache.clear()
    assert len(cache) == 0


def test_from_json():
    j = Job.from_json(json.dumps({**BASE, "mask": "m.png", "base_seed": 4}))
    assert j.base.seed == 4
    with pytest.raises(JobError, match="not valid JSON"):
        Job.from_json("{")
    with pytest.raises(JobError, match="JSON object"):
        Job.from_json("[1]")
