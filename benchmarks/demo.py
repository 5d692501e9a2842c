"""Benchmark of the README's first command and of the `textures` model.

    python benchmarks/demo.py            # demo at 256x256, 20 steps per pass, + per-call times at 64/128/256 px

Prints the demo's wall time (whole process: import, sampling, writing) and its peak RSS, then the textures
model's time per apply_model call at each size: one conditional row (cfg 1) and a cond + uncond batch (cfg != 1),
median over the calls of a real 20-step sampling run, and the ratio of the summed CPU times (the first,
large-sigma steps, where the classes still compete, cost more at cfg != 1). Targets on a 2-core CPU
(issue 12): demo <= 10 s whole process, <= 600 MB; a cfg != 1 call <= 1.5x a cfg 1 call.
The numbers need a quiet machine: other processes on the same cores slow torch's thread pool a lot. CPU times
are printed too: with one torch thread (OMP_NUM_THREADS=1) they hardly depend on the load.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bench_demo(size: int, steps: int) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of the whole `twosamplers demo` process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo.png"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "twosamplers", "demo", "-o", str(out), "--size", str(size),
                        "--steps", str(steps), "-q"], check=True)
        wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, after.ru_maxrss / 1024  # KiB on Linux


def bench_calls(sizes: list[int], repeats: int) -> list[tuple[int, float, float, float, float, float]]:
    """Median time per apply_model call on the inputs of a real sampling run (grass, cfg 3, 20 Euler steps):
    pure-noise inputs at small sigma would not resemble any texture, which no sampler ever feeds the model."""
    import torch

    from twosamplers import common_ksampler, empty_latent
    from twosamplers.models import load

    model = load("textures")
    pos, neg = model.encode_prompt("grass"), model.encode_prompt("")
    both = torch.cat([pos[0][0], neg[0][0]])
    rows = []
    for size in sizes:
        inputs = []
        call = model.apply_model

        def record(x, sigma, context, inputs=inputs, call=call, **extras):
            inputs.append((x[:1].clone(), sigma[:1].clone()))
            return call(x, sigma, context, **extras)

        model.apply_model = record
        try:
            common_ksampler(model, 0, 20, 3.0, "euler", "normal", pos, neg,
                            empty_latent(size, size, channels=3, downscale=1), disable_pbar=True)
        finally:
            del model.apply_model
        one, two, cpu_one, cpu_two = [], [], [], []
        for x, s in inputs:
            for store, cpu_store, xx, ss, ctx in ((one, cpu_one, x, s, pos[0][0]),
                                                  (two, cpu_two, x.repeat(2, 1, 1, 1), s.repeat(2), both)):
                best = best_cpu = float("inf")
                for _ in range(repeats):
                    t, c = time.perf_counter(), time.process_time()
                    model.apply_model(xx, ss, ctx)
                    best = min(best, time.perf_counter() - t)
                    best_cpu = min(best_cpu, time.process_time() - c)
                store.append(best)
                cpu_store.append(best_cpu)
        rows.append((size, *(statistics.median(v) * 1000 for v in (one, two, cpu_one, cpu_two)),
                     sum(cpu_two) / sum(cpu_one)))
    return rows


def import_time() -> tuple[float, float]:
    """(wall s, CPU s) of a process that imports what the demo imports."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import twosamplers, twosamplers.cli, twosamplers.engine.front, "
                    "twosamplers.models.analytic"], check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--call-sizes", type=int, nargs="*", default=[64, 128, 256])
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    wall, cpu = import_time()
    print(f"python -c 'import twosamplers (+ cli, front, analytic)': wall {wall:.2f} s, CPU {cpu:.2f} s")
    wall, cpu, peak = bench_demo(a.size, a.steps)
    print(f"demo {a.size}x{a.size}, {a.steps} steps per pass, cfg 3: wall {wall:.1f} s (target <= 10), "
          f"CPU {cpu:.1f} s, peak RSS {peak:.0f} MB (target <= 600)")
    for size, one, two, cpu_one, cpu_two, cpu_sum in bench_calls(a.call_sizes, a.repeats):
        print(f"textures apply_model {size}x{size}: cfg 1 {one:.0f} ms, cfg != 1 (cond + uncond batch, uncond = all "
              f"textures) {two:.0f} ms: ratio {two / one:.2f} (target <= 1.5); CPU {cpu_one:.0f} / {cpu_two:.0f} ms: "
              f"ratio {cpu_two / cpu_one:.2f}; CPU summed over the 20 calls: ratio {cpu_sum:.2f}")


if __name__ == "__main__":
    main()
