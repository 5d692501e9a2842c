"""`twosamplers batch`: grids, line-numbered validation, hashed outputs, resume after a crash, failures, Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from twosamplers.batch import run_batch
from twosamplers.batch.adapter import output_matches, parse
from twosamplers.batch.jobs_file import expand, parse_lines
from twosamplers.batch.manifest import Journal, read_records
from twosamplers.batch.plan import plan
from twosamplers.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")


def disc_png(path, w=16, h=16):
    yy, xx = np.mgrid[:h, :w]
    m = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.3 * min(w, h)) ** 2).astype(np.uint8) * 255
    Image.fromarray(m).save(path)
    return path


def job(**kw):
    base = {"base_prompt": "grass", "mask_prompt": "brick", "mask": "mask.png", "steps": 2, "width": 16,
            "height": 16}
    base.update(kw)
    return base


def write_jobs(folder: Path, jobs: list[dict]) -> Path:
    disc_png(folder / "mask.png")
    path = folder / "jobs.jsonl"
    path.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    return path


def done_counts(folder: Path) -> Counter:
    return Counter(r["job"] for r in read_records(folder / "manifest.jsonl") if r.get("status") in ("done", "found"))


# ---------------------------------------------------------------------------------------------- parsing
def test_grid_expansion_cartesian_in_field_order():
    jobs = expand({"seed": {"range": [0, 4]}, "mask_prompt": ["sand", "water"], "steps": 3,
                   "cfg": {"range": [10, 4, -3]}})
    assert len(jobs) == 4 * 2 * 2
    assert [(j["seed"], j["mask_prompt"], j["cfg"]) for j in jobs[:5]] == [
        (0, "sand", 10), (0, "sand", 7), (0, "water", 10), (0, "water", 7), (1, "sand", 10)]
    assert all(j["steps"] == 3 for j in jobs)
    assert expand({"seed": 5}) == [{"seed": 5}]
    lines, errors = parse_lines('# comment\n\n{"seed": [1, 2]}\n{"seed": {"range": [0, 2]}}\n')
    assert [(line.number, line.fields["seed"]) for line in lines] == [(3, 1), (3, 2), (4, 0), (4, 1)]
    assert errors == []


def test_hash_normalised_and_by_content(tmp_path):
    disc_png(tmp_path / "mask.png")
    a = parse(job(seed=3), tmp_path)
    b = parse({**{k: v for k, v in reversed(job().items())}, "base_seed": 3, "mask_seed": 3, "sampler": "euler"},
              tmp_path)
    assert a.digest == b.digest  # field order, per-pass spelling and explicit defaults do not matter
    assert parse(job(seed=4), tmp_path).digest != a.digest
    assert parse(job(seed=3, mask=str(tmp_path / "mask.png")), tmp_path).digest == a.digest  # paths resolved
    disc_png(tmp_path / "mask.png", 32, 32)  # same path, other contents
    assert parse(job(seed=3), tmp_path).digest != a.digest


def test_validation_reports_every_bad_line_and_runs_nothing(tmp_path, capsys):
    disc_png(tmp_path / "mask.png")
    lines = [
        json.dumps(job()),
        '{"base_prompt": "grass", ',
        json.dumps(job(colour="red")),
        json.dumps(job(mask="missing.png")),
        json.dumps(job(seed={"range": [5, 5]})),
        json.dumps(job(steps=[2, 0])),
        json.dumps(job(model="no/such/model.safetensors")),
        json.dumps(job(width=32)),  # 32x16 output for a square mask
        "[1, 2]",
    ]
    (tmp_path / "jobs.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    code = main(["batch", str(tmp_path / "jobs.jsonl"), "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert not out.exists()
    got = [ln for ln in err.splitlines() if ln.startswith("twosamplers: error: line ")]
    assert [int(ln.split()[3].rstrip(":")) for ln in got] == [2, 3, 4, 5, 6, 7, 8, 9]
    for number, words in {2: "not valid JSON", 3: "colour: unknown field", 4: "mask: file not found",
                          5: "range [5, 5] is empty", 6: "steps: 0 is out of range", 7: "model: file not found",
                          8: "aspect ratio", 9: "JSON object"}.items():
        assert any(ln.startswith(f"twosamplers: error: line {number}: ") and words in ln for ln in got), (number, err)
    assert "8 bad line(s)" in err


def test_journal_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text('{"job": "a"}\n{"job": "b", "outp')
    j = Journal(path)
    j.append({"job": "c"})
    j.close()
    assert [r["job"] for r in read_records(path)] == ["a", "c"]


# ---------------------------------------------------------------------------------------------- local pool
@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """Three good jobs and one that fails when rendered (an unknown prompt word), on two local workers."""
    folder = tmp_path_factory.mktemp("batch")
    jobs = [job(seed={"range": [0, 3]}), job(mask_prompt="unicorn")]
    path = write_jobs(folder, jobs)
    result = run_batch(str(path), folder / "out", workers=2, retries=1, quiet=True)
    return folder, path, result


def test_failures_are_recorded_and_the_rest_finishes(local_run):
    folder, _, result = local_run
    out = folder / "out"
    assert (result.total, result.rendered, result.skipped, len(result.failed)) == (4, 3, 0, 1)
    failures = read_records(out / "failures.jsonl")
    assert len(failures) == 1 and failures[0]["line"] == 2 and failures[0]["attempts"] == 2  # --retries 1
    assert "unknown prompt word 'unicorn'" in failures[0]["error"]
    manifest = read_records(out / "manifest.jsonl")
    assert sorted(r["settings"]["base_seed"] for r in manifest) == [0, 1, 2]
    for r in manifest:
        assert output_matches(out / r["output"], parse(job(seed=r["settings"]["base_seed"]), folder))
        assert r["worker"] and r["status"] == "done"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        [r["output"] for r in manifest] + ["failures.jsonl", "manifest.jsonl"])


def test_rerun_does_nothing(local_run, tmp_path):
    folder, _, _ = local_run
    out = folder / "out"
    good = folder / "good.jsonl"
    good.write_text(json.dumps(job(seed={"range": [0, 3]})) + "\n")
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    t0 = time.perf_counter()
    result = run_batch(str(good), out, workers=2, quiet=True)
    assert (result.rendered, result.skipped, result.failed) == (0, 3, [])
    assert time.perf_counter() - t0 < 10  # no worker was started
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before


def test_outputs_reproduce_the_cli(local_run, tmp_path, capsys):
    """A batch output is what `generate --from` renders again from its own metadata."""
    folder, _, _ = local_run
    first = read_records(folder / "out" / "manifest.jsonl")[0]
    png = folder / "out" / first["output"]
    assert main(["generate", "--from", str(png), "--mask", str(folder / "mask.png"), "-o", str(tmp_path / "again.png"),
                 "-q"]) == 0
    a, b = Image.open(png), Image.open(tmp_path / "again.png")
    assert np.array_equal(np.asarray(a), np.asarray(b))


def _wait_for(predicate, timeout, what):
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_resume_after_killed_worker_and_killed_batch(tmp_path):
    """Kill one worker mid-batch (its job is recorded as failed, the rest goes on), then kill the whole batch;
    a restart finishes the rest: every job done exactly once, no partial or temporary files. Job lines and
    workflow lines (two files per job) together."""
    from workflow_cases import api_two_samplers

    n = 16
    (tmp_path / "input").mkdir()
    disc_png(tmp_path / "input" / "mask.png", 32, 32)
    (tmp_path / "two.json").write_text(json.dumps(api_two_samplers()))
    path = write_jobs(tmp_path, [job(seed={"range": [0, 10]}, steps=4),
                                 {"workflow": "two.json", "set": {"23.seed": {"range": [0, 6]}}}])
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "twosamplers", "batch", str(path), "-o", str(out), "--workers", "2",
                             "--threads", "1", "-q"], env=env, start_new_session=True, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: len(done_counts(out)) >= 1, 240, "a first output")
        victim = int(read_records(out / "manifest.jsonl")[0]["worker"].rsplit(":", 1)[1])
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: read_records(out / "failures.jsonl"), 60, "the killed worker's job to be recorded")
        _wait_for(lambda: len(done_counts(out)) >= 3, 240, "more outputs")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-job
        proc.wait()
    failed = read_records(out / "failures.jsonl")
    assert len(failed) == 1 and "worker process died" in failed[0]["error"]
    first = done_counts(out)
    assert len(first) < n

    result = run_batch(str(path), out, workers=2, threads=1, quiet=True)
    assert result.failed == [] and result.rendered + result.skipped == n
    assert result.skipped >= sum(first.values())  # finished jobs were not redone
    counts = done_counts(out)
    tasks, _, _ = plan(path.read_text(), tmp_path)
    assert set(counts) == {t.digest for t in tasks} and set(counts.values()) == {1}
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    names = {p.name for p in out.iterdir()}
    for t in tasks:
        assert t.job.done_outputs(out, names) is not None
    written = [name for r in read_records(out / "manifest.jsonl") for name in r["outputs"]]
    assert sorted(p for p in names if p.endswith((".png", ".latent"))) == sorted(set(written))


# ---------------------------------------------------------------------------------------------- Ray
@pytest.mark.slow
def test_ray_local_cluster_gives_the_same_bytes(local_run, tmp_path, monkeypatch):
    """A local cluster started here; the CLI joins it through RAY_ADDRESS from another process (as a driver on
    a laptop joins a remote head) and writes the same bytes as the local path."""
    ray = pytest.importorskip("ray")
    folder, path, _ = local_run
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the driver below joins without Ray's token file
    address = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                       configure_logging=False).address_info["address"]
    try:
        env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.run([sys.executable, "-m", "twosamplers", "batch", str(path), "-o", str(tmp_path / "ray"),
                               "--ray", "--workers", "2", "--json", "-q"], env=env, capture_output=True, text=True,
                              timeout=300)
    finally:
        ray.shutdown()
    assert proc.returncode == 1, proc.stderr[-2000:]  # the unicorn job fails, the others are written
    summary = json.loads(proc.stdout)
    assert (summary["rendered"], summary["failed"]) == (3, 1)
    local = {r["output"] for r in read_records(folder / "out" / "manifest.jsonl")}
    records = read_records(tmp_path / "ray" / "manifest.jsonl")
    assert {r["output"] for r in records} == local
    for name in local:
        assert (tmp_path / "ray" / name).read_bytes() == (folder / "out" / name).read_bytes()
    assert "unknown prompt word" in read_records(tmp_path / "ray" / "failures.jsonl")[0]["error"]


def test_jobs_from_stdin_resolve_paths_from_the_current_folder(tmp_path, capsys, monkeypatch):
    import io

    disc_png(tmp_path / "mask.png")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(job()) + "\n" + json.dumps(job(steps=-1)) + "\n"))
    assert main(["batch", "-", "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "line 2: " in err and "line 1: " not in err and not (tmp_path / "out").exists()


def test_a_line_can_start_from_a_png(local_run):
    """{"from": PNG} takes the job a twosamplers PNG records (embedded mask included); other fields override."""
    folder, _, _ = local_run
    rec = read_records(folder / "out" / "manifest.jsonl")[0]
    again = parse({"from": "out/" + rec["output"]}, folder)
    assert again.job.mask_tensor is not None and again.job.base.seed == rec["settings"]["base_seed"]
    other = parse({"from": "out/" + rec["output"], "mask_seed": 99}, folder)
    assert other.job.inside.seed == 99 and other.digest != again.digest


def test_scheduler_keeps_workers_on_their_model_and_retries(tmp_path):
    from types import SimpleNamespace

    from twosamplers.batch.plan import Task
    from twosamplers.batch.scheduler import Outcome, Scheduler

    def task(i, model):
        return Task(i, SimpleNamespace(model_key=model, digest=f"{i:064x}", to_dict=dict), f"{i}.png")

    s = Scheduler([task(1, "a"), task(2, "b"), task(3, "a"), task(4, "b"), task(5, "b")], tmp_path, retries=1)
    first = s.next_task(None)
    assert first.job.model_key == "b"  # the biggest group first: fewest model switches
    assert [s.next_task("a").line, s.next_task("a").line, s.next_task("a").line] == [1, 3, 4]  # then the rest
    s.finish(first, Outcome(False, None, "boom", "w", 0.0))  # retried once, after the jobs waiting...
    assert s.next_task("a").line == 5
    again = s.next_task("a")
    assert again is first and again.attempts == 2
    s.finish(again, Outcome(False, None, "boom", "w", 0.0))  # ...then recorded
    assert [r["attempts"] for r in read_records(tmp_path / "failures.jsonl")] == [2]
    last = task(6, "a")
    s.queues["a"].append(last)
    assert s.next_task(None) is last
    s.give_back(last)  # never reached a worker: not an attempt
    assert s.next_task("a") is last and last.attempts == 1
    s.finish(last, Outcome(True, {last.output: b"png"}, None, "w", 0.1))
    assert (tmp_path / last.output).read_bytes() == b"png" and s.remaining() == 0
    assert [r["line"] for r in read_records(tmp_path / "manifest.jsonl")] == [last.line]


def test_list_valued_fields_are_values_unless_marked_as_a_grid():
    lora_fields = frozenset({"loras", "base_loras"})
    one = expand({"loras": ["a.safetensors", "b.safetensors"], "seed": [1, 2]}, lora_fields)
    assert [(j["loras"], j["seed"]) for j in one] == [(["a.safetensors", "b.safetensors"], 1),
                                                      (["a.safetensors", "b.safetensors"], 2)]
    grid = expand({"base_loras": {"grid": [[], ["a.safetensors"]]}, "cfg": {"grid": [2, 3]}}, lora_fields)
    assert [(j["base_loras"], j["cfg"]) for j in grid] == [([], 2), ([], 3), (["a.safetensors"], 2),
                                                          (["a.safetensors"], 3)]
    from twosamplers.batch.adapter import list_fields

    assert {"loras", "controlnets", "base_loras", "mask_controlnets"} <= list_fields()
