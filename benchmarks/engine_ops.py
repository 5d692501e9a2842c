"""Engine overhead counted in torch ops: how many ops the engine dispatches per step outside the network.

Op counts do not depend on the machine's load, so they are the steady measure of the engine's own per-step
work (wall-clock ratios are in `engine_overhead.py`). Work: common_ksampler on a 1x4x64x64 latent, karras, cfg
7.5 (cond + uncond in one call), with and without a 512x512 noise mask, for dpmpp_2m, euler and euler_ancestral.

    python benchmarks/engine_ops.py [--top 12]

Columns: `per step` = (ops of a 20-step run - ops of a 10-step run) / 10, everything the engine does per
extra step (including any per-run tables it builds); `in loop` = ops dispatched after the first network call,
per step (the ops that run right after a network call, where small ops are slowest); `syncs` = per-step
reads of a tensor's value into Python (.item(), bool(), .tolist(); a device sync on a GPU); `copies` = per-step
hidden float64 -> float32 copies torch makes for Python-float operands (aten::_to_copy, seen by the profiler
only; a dispatch mode does not see them), marginal as `per step`. Ops inside the network and
the sampler's noise draws (torch.randn on the sampler's generator) are counted too, as engine work.
"""

from __future__ import annotations

import argparse
import collections

import torch
from engine_overhead import sampling_inputs  # this folder is on sys.path when run as a script
from torch.utils._python_dispatch import TorchDispatchMode

from twosamplers.engine.ksampler import common_ksampler
from twosamplers.models import NetworkModel

SAMPLERS = ("dpmpp_2m", "euler", "euler_ancestral")
# reads of a tensor's value into Python: .item() / float(), bool(), .tolist() (which dispatches resolve_neg)
SYNC_OPS = ("item", "_local_scalar_dense", "is_nonzero", "resolve_neg")


class OpCounter(TorchDispatchMode):
    """Counts aten ops by name, except while `paused` (inside the network)."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.started = False  # set at the first network call
        self.before: collections.Counter[str] = collections.Counter()
        self.after: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.paused:
            (self.after if self.started else self.before)[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


class Network(torch.nn.Module):
    """A one-conv eps network; its own ops are not counted."""

    def __init__(self, counter: OpCounter) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.mul_(0.1)
        self.counter = counter

    def forward(self, x, timesteps, context):
        self.counter.paused = self.counter.started = True
        try:
            return self.conv(x)
        finally:
            self.counter.paused = False


def count(sampler: str, masked: bool, steps: int) -> tuple[OpCounter, int]:
    """(op counter, number of aten::_to_copy calls) of one run."""
    counter = OpCounter()
    model = NetworkModel(Network(counter))
    latent, pos, neg = sampling_inputs(masked)  # the same inputs as engine_overhead.py
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof, counter:
        common_ksampler(model, 42, steps, 7.5, sampler, "karras", pos, neg, latent, disable_pbar=True)
    copies = sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")
    return counter, copies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=int, default=0, help="also list the N most frequent in-loop ops per config")
    args = ap.parse_args()
    print(f"torch {torch.__version__}; ops outside the network (load independent)")
    print(f"{'sampler':>16} {'mask':>8} {'per step':>9} {'in loop':>8} {'syncs':>6} {'copies':>7}")
    for sampler in SAMPLERS:
        for masked in (False, True):
            (c20, copies20), (c10, copies10) = count(sampler, masked, 20), count(sampler, masked, 10)
            total20 = sum(c20.before.values()) + sum(c20.after.values())
            total10 = sum(c10.before.values()) + sum(c10.after.values())
            per_step = (total20 - total10) / 10
            in_loop = sum(c20.after.values()) / 20
            syncs = sum(c20.after[k] for k in SYNC_OPS) / 20
            copies = (copies20 - copies10) / 10
            print(f"{sampler:>16} {'512x512' if masked else 'none':>8} {per_step:>9.1f} {in_loop:>8.1f} {syncs:>6.1f} "
                  f"{copies:>7.1f}")
            if args.top:
                for name, n in c20.after.most_common(args.top):
                    print(f"{'':>26} {name:<28} {n / 20:5.2f}")


if __name__ == "__main__":
    main()
