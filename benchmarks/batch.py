#!/usr/bin/env python
"""Batch throughput: 32 textures-model jobs at 128x128 on 1 and 2 local workers and on 2 local Ray actors.

    python benchmarks/batch.py [--jobs 32] [--size 128] [--steps 8] [--no-ray]

Each configuration renders the same jobs (one grid line, seeds 0..jobs-1) into a fresh folder, one torch
thread per worker, side by side in one run. Reported per configuration:
- wall: the whole `run_batch` call (planning, starting workers / actors, loading models, rendering, writing);
- jobs/s = jobs / wall, and the scaling factor against 1 local worker;
- render: the mean wall time of one job inside a worker (the manifest's `seconds`; the first job of a worker
  includes its model load), and CPU s its CPU time (`cpu_seconds`): when render grows with more workers but
  CPU s does not, the workers are waiting for cores (other load), not doing more work;
- overhead/job: what a job costs a worker beyond its render, = wall * workers / jobs - render, in all and in
  steady state (between the first and the last result, so without worker start-up), also as % of render.
The Ray cluster (`ray.init(num_cpus=2)`) is started before its configuration and not counted in its wall.
On a shared 2-core machine the 2-worker figures are bounded by the cores; read the ratios, not the seconds.
Overheads are against each configuration's own render times, so load changing between configurations (a
shared machine) does not bias them; wall times and the scaling factor do move with it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from twosamplers.batch import run_batch, scheduler
from twosamplers.batch.manifest import read_records


def disc(path: Path, size: int) -> None:
    yy, xx = np.mgrid[:size, :size]
    Image.fromarray(((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.3 * size) ** 2).astype(np.uint8) * 255).save(path)


def measure(folder: Path, jobs_file: Path, n_jobs: int, workers: int, ray: bool) -> dict:
    finished: list[tuple[float, float]] = []
    original = scheduler.Scheduler.finish

    def finish(self, task, outcome):  # the driver's clock at each result, for the steady-state rate
        finished.append((time.perf_counter(), outcome.seconds))
        return original(self, task, outcome)

    scheduler.Scheduler.finish = finish
    try:
        t0 = time.perf_counter()
        result = run_batch(str(jobs_file), folder, workers=workers, ray=ray, threads=1, quiet=True)
        wall = time.perf_counter() - t0
    finally:
        scheduler.Scheduler.finish = original
    assert result.rendered == n_jobs and not result.failed, result
    records = read_records(folder / "manifest.jsonl")
    render = statistics.mean(r["seconds"] for r in records)
    cpu = statistics.mean(r["cpu_seconds"] for r in records)
    steady = finished[workers:]  # results after each worker's first one (start-up and warm-up excluded)
    steady_wall = finished[-1][0] - finished[workers - 1][0]
    steady_render = statistics.mean(s for _, s in steady) if steady else float("nan")
    overhead = wall * workers / n_jobs - render
    steady_overhead = steady_wall * workers / len(steady) - steady_render if steady else float("nan")
    return {"workers": workers, "ray": ray, "wall_s": wall, "jobs_per_s": n_jobs / wall, "render_s": render,
            "cpu_s": cpu, "overhead_s": overhead, "overhead_pct": 100 * overhead / render,
            "steady_overhead_s": steady_overhead, "steady_overhead_pct": 100 * steady_overhead / steady_render}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--jobs", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        disc(tmp / "mask.png", args.size)
        line = {"base_prompt": "grass", "mask_prompt": "brick", "mask": "mask.png", "width": args.size,
                "height": args.size, "steps": args.steps, "seed": {"range": [0, args.jobs]}}
        jobs_file = tmp / "jobs.jsonl"
        jobs_file.write_text(json.dumps(line) + "\n")
        rows = [measure(tmp / "local1", jobs_file, args.jobs, 1, False),
                measure(tmp / "local2", jobs_file, args.jobs, 2, False)]
        ray_start = None
        if not args.no_ray:
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
            ray_start = time.perf_counter() - t0
            try:
                rows.append(measure(tmp / "ray2", jobs_file, args.jobs, 2, True))
            finally:
                ray.shutdown()
        ref = {p.name: p.read_bytes() for p in (tmp / "local1").glob("*.png")}
        same = all({p.name: p.read_bytes() for p in (tmp / d).glob("*.png")} == ref
                   for d in ("local2", "ray2") if (tmp / d).is_dir())

    base = rows[0]["jobs_per_s"]
    print(f"{args.jobs} jobs, textures model, {args.size}x{args.size}, {args.steps} steps per pass, "
          "1 thread per worker")
    print(f"{'configuration':<16}{'wall s':>8}{'jobs/s':>8}{'scaling':>9}{'render s':>10}{'CPU s':>8}"
          f"{'overhead/job':>22}{'steady overhead/job':>26}")
    for r in rows:
        name = f"{'ray' if r['ray'] else 'local'} x{r['workers']}"
        print(f"{name:<16}{r['wall_s']:>8.1f}{r['jobs_per_s']:>8.2f}{r['jobs_per_s'] / base:>8.2f}x"
              f"{r['render_s']:>10.3f}{r['cpu_s']:>8.3f}{r['overhead_s']:>13.3f} s {r['overhead_pct']:>5.1f}%"
              f"{r['steady_overhead_s']:>17.3f} s {r['steady_overhead_pct']:>5.1f}%")
    if ray_start is not None:
        r = rows[2]
        print(f"Ray cluster start (not in the wall times): {ray_start:.1f} s")
        print(f"Ray path per-job overhead: {r['steady_overhead_s']:.3f} s = {r['steady_overhead_pct']:.1f}% of a job "
              f"in steady state, {r['overhead_pct']:.1f}% with actor start-up and model loads spread over "
              f"{args.jobs} jobs (target <= 5%)")
    print(f"all outputs byte-identical across configurations: {same}")


if __name__ == "__main__":
    main()
