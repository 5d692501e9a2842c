"""Batch lines that run a ComfyUI workflow with `set` overrides: grids over `set`, every line checked before any
work, hashed outputs (several files per job, written together, stamped), skip/redo, and the Ray GPU path on a
local cluster with logical GPUs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from workflow_cases import api_t2i, api_two_samplers, ui_t2i

from twosamplers.batch import run_batch
from twosamplers.batch.adapter import parse
from twosamplers.batch.jobs_file import parse_lines
from twosamplers.batch.manifest import read_records
from twosamplers.batch.plan import plan
from twosamplers.batch.stamp import JOB_HASH_KEY, OUTPUTS_KEY, read_stamp, stamp
from twosamplers.cli import main
from twosamplers.engine.latent import load_latent
from twosamplers.workflow import Workflow, load, run

SRC = str(Path(__file__).resolve().parents[1] / "src")
TESTS = str(Path(__file__).resolve().parent)
SIZE = 32


def make_folder(folder: Path) -> Path:
    """Workflows two.json (TwoSamplersForMask on a LoadImageMask mask; SaveImage + SaveLatent), t2i_ui.json (UI
    format) and preview.json (PreviewImage only), and the input folder they read."""
    (folder / "input").mkdir(exist_ok=True)
    m = np.zeros((SIZE, SIZE, 3), np.uint8)
    m[8:24, 6:22, 0] = 255
    Image.fromarray(m).save(folder / "input" / "mask.png")
    (folder / "two.json").write_text(json.dumps(api_two_samplers()))
    (folder / "t2i_ui.json").write_text(json.dumps(ui_t2i()))
    preview = api_t2i()
    preview["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    (folder / "preview.json").write_text(json.dumps(preview))
    return folder


def write_jobs(folder: Path, lines: list, name: str = "jobs.jsonl") -> Path:
    path = folder / name
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


GOOD = [{"workflow": "two.json", "set": {"23.seed": {"range": [0, 3]}}},
        {"workflow": "t2i_ui.json"},
        {"workflow": "t2i_ui.json", "set": {"3.seed": 5, "6.text": "brick"}}]


# ---------------------------------------------------------------------------------------------- planning
def test_set_grids_expand_and_the_hash_is_normalised(tmp_path):
    make_folder(tmp_path)
    lines, errors = parse_lines(json.dumps({"workflow": "two.json", "set": {"23.seed": {"range": [0, 4]},
                                                                          "16.text": ["brick", "sand"],
                                                                          "24.cfg": 4.0}}),
                                nested=frozenset({"set"}))
    assert errors == [] and len(lines) == 8
    assert [(ln.fields["set"]["23.seed"], ln.fields["set"]["16.text"]) for ln in lines[:3]] == [
        (0, "brick"), (0, "sand"), (1, "brick")]
    assert all(ln.fields["set"]["24.cfg"] == 4.0 for ln in lines)
    tasks, errors, _ = plan("\n".join(json.dumps(ln.fields) for ln in lines), tmp_path)
    assert errors == [] and len({t.digest for t in tasks}) == 8

    a = parse({"workflow": "two.json"}, tmp_path)
    assert parse({"workflow": str(tmp_path / "two.json"), "set": {"24.cfg": 4, "23.seed": 3.0}},
                 tmp_path).digest == a.digest  # values the workflow has, as other JSON numbers
    assert parse({"workflow": "two.json", "set": {"23.seed": 4}}, tmp_path).digest != a.digest
    assert a.files == (("mask.png", str(tmp_path / "input" / "mask.png")),)
    Image.new("RGB", (SIZE, SIZE)).save(tmp_path / "input" / "unused.png")  # not read by the workflow
    assert parse({"workflow": "two.json"}, tmp_path).digest == a.digest
    Image.fromarray(np.full((SIZE, SIZE, 3), 255, np.uint8)).save(tmp_path / "input" / "mask.png")
    assert parse({"workflow": "two.json"}, tmp_path).digest != a.digest  # the mask's contents count
    ideal = parse({"workflow": "two.json", "set": {"4.ckpt_name": "ideal"}}, tmp_path)
    assert ideal.model_key != a.model_key and "ckpt_name=ideal" in ideal.model_key


def test_bad_workflow_lines_are_all_reported_and_nothing_runs(tmp_path, capsys):
    make_folder(tmp_path)
    (tmp_path / "broken.json").write_text('{"3": {"class_type": ')
    lines = [
        {"workflow": "two.json"},
        {"workflow": "missing.json"},
        {"workflow": "broken.json"},
        {"workflow": "two.json", "set": {"99.seed": 1}},
        {"workflow": "two.json", "set": {"23.colour": 1}},
        {"workflow": "two.json", "set": {"4.ckpt_name": "nosuch.safetensors"}},
        {"workflow": "two.json", "set": {"12.image": "nosuch.png"}},
        {"workflow": "two.json", "set": {"23.steps": {"range": [0, 2]}}},
        {"workflow": "preview.json"},
        {"workflow": "two.json", "seed": 3},
        {"workflow": "two.json", "set": {"seed": 3}},
        {"workflow": "two.json", "models": "no-models-here"},
        {"workflow": "two.json", "set": {"23.seed": []}},
    ]
    path = write_jobs(tmp_path, lines)
    out = tmp_path / "out"
    assert main(["batch", str(path), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert not out.exists()
    got = [ln for ln in err.splitlines() if ln.startswith("twosamplers: error: line ")]
    expected = {2: "workflow: file not found", 3: "not valid JSON", 4: "there is no node 99",
                5: "has no input 'colour'", 6: "checkpoint 'nosuch.safetensors' not found",
                7: "input file 'nosuch.png' not found", 8: "'steps' = 0 is out of range",
                9: "saves no file", 10: "seed: is not a field of a workflow line", 11: "must look like NODE_ID.input",
                12: "models: folder not found", 13: "an empty list gives no jobs"}
    assert [int(ln.split()[3].rstrip(":")) for ln in got] == sorted(expected)
    for number, words in expected.items():
        assert any(ln.startswith(f"twosamplers: error: line {number}: ") and words in ln for ln in got), (number, err)


def test_batch_flags_give_workflow_lines_their_folders(tmp_path, capsys, monkeypatch):
    """--models / --comfyui / --input-dir are defaults for workflow lines (relative to the current folder, as
    for `twosamplers run`); a line's own field wins."""
    make_folder(tmp_path)
    other = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "input", other)
    line = {"workflow": "two.json"}
    tasks, errors, _ = plan(json.dumps(line), tmp_path, {"input_dir": str(other)})
    assert errors == [] and tasks[0].job.files == (("mask.png", str(other / "mask.png")),)
    tasks, _, _ = plan(json.dumps({**line, "input_dir": "input"}), tmp_path, {"input_dir": str(other)})
    assert tasks[0].job.files == (("mask.png", str(tmp_path / "input" / "mask.png")),)
    path = write_jobs(tmp_path, [line, {"base_prompt": "grass", "mask_prompt": "brick", "mask": "input/mask.png"}])
    monkeypatch.chdir(tmp_path)
    assert main(["batch", str(path), "-o", str(tmp_path / "out"), "--models", "nowhere", "-q"]) == 2
    err = capsys.readouterr().err
    assert f"line 1: models: folder not found: {tmp_path / 'nowhere'}" in err and "line 2: " not in err


# ---------------------------------------------------------------------------------------------- running
@pytest.fixture(scope="module")
def wf_run(tmp_path_factory):
    """Three good lines (five jobs: a seed grid over a two-file workflow, a UI-format workflow with and without
    overrides) and one that fails when it runs (an unknown prompt word), on two local workers."""
    folder = make_folder(tmp_path_factory.mktemp("wfbatch"))
    bad = {"workflow": "two.json", "set": {"16.text": "unicorn"}}
    path = write_jobs(folder, [*GOOD, bad])
    result = run_batch(str(path), folder / "out", workers=2, threads=1, quiet=True)
    return folder, result


def test_outputs_are_the_workflow_runners_files_stamped(wf_run, tmp_path):
    """Each job's files are what `twosamplers.workflow.run` writes for the same workflow and overrides, byte for
    byte, plus the stamp (hash, list of the job's files); pixels, tensors and the prompt chunk untouched."""
    folder, result = wf_run
    out = folder / "out"
    assert (result.total, result.rendered, len(result.failed)) == (6, 5, 1)
    assert "unknown prompt word 'unicorn'" in read_records(out / "failures.jsonl")[0]["error"]
    records = read_records(out / "manifest.jsonl")
    assert sorted(len(r["outputs"]) for r in records) == [1, 1, 2, 2, 2]
    for i, r in enumerate(records):
        settings = r["settings"]
        wf = load(settings["workflow"])
        if "set" in settings:  # the batch leaves out the UI workflow, whose values the overrides changed
            wf = Workflow(wf.prompt, None, wf.source)
        files = run(wf, overrides=settings.get("set"), input_dir=folder / "input", output_dir=tmp_path / str(i))
        mine = [f for o in files for f in o["files"]]
        assert [Path(f).suffix for f in mine] == [Path(n).suffix for n in r["outputs"]]
        text = {JOB_HASH_KEY: r["job"], OUTPUTS_KEY: json.dumps(r["outputs"])}
        for name, theirs in zip(r["outputs"], mine, strict=True):
            assert name.startswith(r["job"][:20] + "-")
            data = Path(theirs).read_bytes()
            assert (out / name).read_bytes() == stamp(data, Path(name).suffix, text)
            assert read_stamp(out / name)[JOB_HASH_KEY] == r["job"]
            if name.endswith(".latent"):
                assert torch.equal(load_latent(out / name)["samples"], load_latent(theirs)["samples"])
        with Image.open(out / r["output"]) as im:
            chunks = dict(im.text)
        assert json.loads(chunks["prompt"]) == json.loads(Image.open(mine[0]).text["prompt"])
        # the UI workflow only where it shows what ran (no overrides)
        assert ("workflow" in chunks) == (settings["workflow"].endswith("t2i_ui.json") and "set" not in settings)


def test_rerun_skips_and_a_half_written_job_is_redone(wf_run, tmp_path):
    folder, _ = wf_run
    out = tmp_path / "out"
    shutil.copytree(folder / "out", out)
    shutil.copy(folder / "two.json", tmp_path)
    shutil.copy(folder / "t2i_ui.json", tmp_path)
    shutil.copytree(folder / "input", tmp_path / "input")
    good = write_jobs(tmp_path, GOOD, "good.jsonl")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".png", ".latent")}
    result = run_batch(str(good), out, workers=1, threads=1, quiet=True)
    assert (result.rendered, result.skipped, result.failed) == (0, 5, [])

    two = [r for r in read_records(out / "manifest.jsonl") if len(r["outputs"]) == 2]
    (out / two[0]["outputs"][1]).unlink()  # killed between the two renames: the PNG is there, the latent not
    for r, i in ((two[1], 0), (two[2], 1)):  # a damaged PNG, a damaged latent
        data = (out / r["outputs"][i]).read_bytes()
        (out / r["outputs"][i]).write_bytes(data[: len(data) - 40])
        assert read_stamp(out / r["outputs"][i]) is None
    result = run_batch(str(good), out, workers=1, threads=1, quiet=True)
    assert (result.rendered, result.skipped, result.failed) == (3, 2, [])
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".png", ".latent")} == before


# ---------------------------------------------------------------------------------------------- Ray GPUs
def test_actor_device_follows_cuda(monkeypatch):
    from twosamplers.batch.ray_runner import actor_count, actor_device, actor_options

    assert actor_count({"CPU": 3.0, "GPU": 2.0}, None, 10) == 2  # per GPU
    assert actor_count({"CPU": 3.0, "GPU": 2.0}, 4, 10) == 2  # never more than fit: they would wait forever
    assert actor_count({"CPU": 4.0}, None, 10) == 4 and actor_count({"CPU": 4.0}, 2, 10) == 2
    assert actor_count({"CPU": 4.0}, None, 3) == 3 and actor_count({"CPU": 1.0, "GPU": 4.0}, None, 9) == 1

    assert actor_options({"CPU": 8.0, "GPU": 2.0}) == {"num_gpus": 1, "num_cpus": 1}
    assert actor_options({"CPU": 8.0}) == {"num_cpus": 1}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert actor_device() is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert actor_device() == "cuda"


def test_ray_logical_gpus_one_actor_each_loading_on_cuda(wf_run, tmp_path, monkeypatch):
    """A local cluster with 2 logical GPUs (and 3 CPUs): the runner starts one actor per GPU (num_gpus=1), each
    sees its own CUDA_VISIBLE_DEVICES, asks for its models on "cuda" (torch.cuda.is_available() made true in
    the workers by tests/ray_fake_gpu.py, which loads on the CPU instead), and the outputs are the local run's
    bytes. What only a real GPU shows (numbers computed on CUDA, memory) is not tested here."""
    ray = pytest.importorskip("ray")
    folder, _ = wf_run
    log = tmp_path / "loads.jsonl"
    env = {"TWOSAMPLERS_TEST_LOAD_LOG": str(log), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([SRC, TESTS, os.environ.get("PYTHONPATH", "")])}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    good = write_jobs(folder, GOOD, "good_ray.jsonl")
    ray.init(num_cpus=3, num_gpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"worker_process_setup_hook": "ray_fake_gpu.setup", "env_vars": env})
    try:
        result = run_batch(str(good), tmp_path / "ray", ray=True, quiet=True)
    finally:
        ray.shutdown()
    assert (result.rendered, result.failed) == (5, [])
    loads = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert len({r["pid"] for r in loads}) == 2  # one actor per GPU (not per CPU)
    assert [sum(r["pid"] == pid for r in loads) for pid in {r["pid"] for r in loads}] == [1, 1]  # kept loaded
    assert {r["device"] for r in loads} == {"cuda"}
    assert sorted({r["cuda_visible_devices"] for r in loads}) == ["0", "1"]  # one GPU each
    records = read_records(tmp_path / "ray" / "manifest.jsonl")
    assert {r["device"] for r in records} <= {"cuda (CUDA_VISIBLE_DEVICES=0)", "cuda (CUDA_VISIBLE_DEVICES=1)"}
    for r in records:
        for name in r["outputs"]:
            assert (tmp_path / "ray" / name).read_bytes() == (folder / "out" / name).read_bytes()
