"""Convolutions with weights packed once (models/packed_conv.py) against torch's ordinary per-call path.

    python benchmarks/packed_conv.py [--repeats 10]

The convolutions of an SD1.5 UNet at the small latents of a CPU run (batch 2: cond and uncond), each timed both
ways side by side in one process (alternating), with the largest difference of their outputs. Prints each time and
the ratio (ordinary / packed: > 1 means packing is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from twosamplers.models.packed_conv import available, packed_convolutions

CASES = [(320, 320, 8), (640, 640, 4), (1280, 1280, 2), (1280, 1280, 8), (2560, 1280, 4), (320, 320, 32)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args(argv)
    if not available():
        print("this torch has no oneDNN packed convolution (or TWOSAMPLERS_PACKED_CONV=0)")
        return 1
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads")
    torch.manual_seed(0)
    for cin, cout, hw in CASES:
        conv = torch.nn.Conv2d(cin, cout, 3, padding=1)
        x = torch.randn(2, cin, hw, hw)
        plain, packed = [], []
        with torch.inference_mode():
            ref = conv(x)
            with packed_convolutions(conv):
                out = conv(x)
            for _ in range(a.repeats):
                t = time.perf_counter()
                conv(x)
                plain.append(time.perf_counter() - t)
                with packed_convolutions(conv):
                    conv(x)  # the first call after packing: warm
                    t = time.perf_counter()
                    conv(x)
                    packed.append(time.perf_counter() - t)
        p, q = statistics.median(plain) * 1e3, statistics.median(packed) * 1e3
        print(f"{cin:>5} -> {cout:<5} 3x3 at {hw:>2} x {hw:<2}  ordinary {p:7.2f} ms  packed {q:7.2f} ms  "
              f"ratio {p / q:5.2f}x  max |diff| {(out - ref).abs().max().item():.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
