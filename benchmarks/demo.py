"""Benchmark of the README's first command and of the `textures` model.

    python benchmarks/demo.py            # demo at 256x256, 20 steps per pass, + per-call times at 64/128/256 px

Prints the demo's wall time (whole process: import, sampling, writing) and its peak RSS, then the textures
model's time per apply_model call at each size: one conditional row (cfg 1) and a cond + uncond batch (cfg != 1),
median over the noise levels of a 20-step normal schedule. Target on a 2-core CPU: demo <= 30 s, <= 1.5 GB.
The numbers need a quiet machine: other processes on the same cores slow torch's thread pool a lot.
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


def bench_demo(size: int, steps: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo.png"
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "twosamplers", "demo", "-o", str(out), "--size", str(size),
                        "--steps", str(steps), "-q"], check=True)
        wall = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    return wall, peak_mb


def bench_calls(sizes: list[int], repeats: int) -> list[tuple[int, float, float]]:
    import torch

    from twosamplers import compute_sigmas
    from twosamplers.models import load

    model = load("textures")
    pos, neg = model.encode_prompt("grass")[0][0], model.encode_prompt("")[0][0]
    sigmas = [float(s) for s in compute_sigmas(model.model_sampling, "euler", "normal", 20)[:-1]]
    rows = []
    for size in sizes:
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        model.apply_model(x, torch.tensor([1.0]), pos)  # build the banks outside the timing
        one, two = [], []
        for s in sigmas:
            xs = x * s
            batch = xs.repeat(2, 1, 1, 1)
            for store, xx, ss, ctx in ((one, xs, [s], pos), (two, batch, [s, s], torch.cat([pos, neg]))):
                best = float("inf")
                for _ in range(repeats):
                    t = time.perf_counter()
                    model.apply_model(xx, torch.tensor(ss), ctx)
                    best = min(best, time.perf_counter() - t)
                store.append(best)
        rows.append((size, statistics.median(one) * 1000, statistics.median(two) * 1000))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--call-sizes", type=int, nargs="*", default=[64, 128, 256])
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    wall, peak = bench_demo(a.size, a.steps)
    print(f"demo {a.size}x{a.size}, {a.steps} steps per pass: wall {wall:.1f} s, peak RSS {peak:.0f} MB")
    for size, one, two in bench_calls(a.call_sizes, a.repeats):
        print(f"textures apply_model {size}x{size}: {one:.0f} ms per call (cfg 1), {two:.0f} ms (cfg != 1, "
              "cond + uncond batch; uncond = all textures)")


if __name__ == "__main__":
    main()
