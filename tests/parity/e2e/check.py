"""End-to-end ComfyUI parity on seeded checkpoints: run each case with `twosamplers` and compare with ComfyUI's.

    python tests/parity/e2e/check.py [--families sd15,sd2v,sdxl,refiner] [--cases REGEX] [--cache DIR] [-v]

Builds the checkpoints once (checkpoints.py, into the cache folder), runs every case of cases.py through the
workflow runner's own node classes (each node's outputs captured as the ComfyUI kit dumps them), and prints per
case the largest latent, image and conditioning differences against references/ (made by ComfyUI 0.30.0 with
make_references.py) and, when a key is over its tolerance, the first node where the runs part. Exit 1 when a
case fails. Tolerances: refs.py (latent 2e-3, image 1e-3). The references record the CPU capability and torch
thread count they were made with; this run prints its own.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cases as case_defs  # noqa: E402
import checkpoints  # noqa: E402
import refs  # noqa: E402

REFS = HERE / "references"
INPUTS = HERE / "inputs"


@dataclass
class CaseResult:
    name: str
    ok: bool
    worst: dict[str, float] = field(default_factory=dict)  # kind -> max |diff|
    first_bad: str | None = None
    missing: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def line(self) -> str:
        if self.error:
            return f"{'FAIL':4} {self.name}: {self.error}"
        parts = [f"{k} {v:.2e}" for k, v in sorted(self.worst.items())]
        tail = f"; first difference over tolerance at {self.first_bad}" if self.first_bad else ""
        if self.missing:
            tail += f"; missing {', '.join(self.missing[:4])}"
        return f"{'ok' if self.ok else 'FAIL':4} {self.name}: {', '.join(parts)} ({self.seconds:.1f} s){tail}"


def capture_run(workflow: dict, folders) -> dict[str, np.ndarray]:
    """Run a workflow with our node classes, capturing every node's outputs under the kit's keys."""
    import torch

    from twosamplers.workflow.execute import load, run_node
    from twosamplers.workflow.graph import plan

    wf = load(workflow, folders)
    prompt = wf.prompt
    p = plan(prompt, folders)
    hidden = {"PROMPT": prompt, "EXTRA_PNGINFO": {}}
    cache: dict[str, tuple] = {}
    out: dict[str, np.ndarray] = {}
    folders.defer_writes, folders.pending, folders.disable_pbar = True, [], True
    try:
        for nid in p.order:
            ct = prompt[nid]["class_type"]
            if ct in ("SaveImage", "PreviewImage", "SaveLatent"):
                src = prompt[nid]["inputs"]["images" if ct != "SaveLatent" else "samples"]
                v = cache[str(src[0])][src[1]]
                out[f"saved/{nid}"] = (v["samples"] if isinstance(v, dict) else v).float().numpy()
                cache[nid] = ()
                continue
            cache[nid], _ = run_node(prompt, nid, p.types[nid], cache, folders, hidden)
            ncond = 0
            for i, v in enumerate(cache[nid]):
                key = f"node/{nid}/{i}"
                if isinstance(v, dict) and isinstance(v.get("samples"), torch.Tensor):
                    out[key] = v["samples"].float().numpy()
                    if isinstance(v.get("noise_mask"), torch.Tensor):
                        out[key + "/noise_mask"] = v["noise_mask"].float().numpy()
                elif isinstance(v, torch.Tensor):
                    out[key] = v.float().numpy()
                elif _is_cond(v):
                    out[f"cond/{nid}" if ncond == 0 else f"cond/{nid}/{i}"] = v[0][0].float().numpy()
                    ncond += 1
    finally:
        folders.pending, folders.defer_writes = [], False
    return out


def _is_cond(v) -> bool:
    import torch

    return (isinstance(v, list) and len(v) > 0 and isinstance(v[0], (list, tuple)) and len(v[0]) == 2
            and isinstance(v[0][0], torch.Tensor) and isinstance(v[0][1], dict))


def compare(name: str, entry: dict, ours: dict[str, np.ndarray], ref: dict[str, np.ndarray],
            verbose: bool = False) -> CaseResult:
    wf = entry["workflow"]
    res = CaseResult(name, True)
    order = {nid: i for i, nid in enumerate(refs.dependency_order(wf))}
    keys = sorted(entry["keys"], key=lambda k: (order.get(k.split("/")[1], 1 << 30), refs.natural_key(k)))
    for key in keys:
        kind = refs.kind_of(key, wf)
        if key not in ours:
            res.missing.append(key)
            res.ok = False
            res.first_bad = res.first_bad or f"{key} (missing)"
            continue
        d, tol, within = refs.diff(kind, ours[key], ref[entry["keys"][key]])
        res.worst[kind] = max(res.worst.get(kind, 0.0), d)
        if verbose:
            print(f"    {key:28} {kind:6} max|diff| {d:.3e} (tol {tol:.1e}){'' if within else '  <-- over'}")
        if not within:
            res.ok = False
            if res.first_bad is None:
                nid = key.split("/")[1]
                res.first_bad = f"node {nid} ({wf.get(nid, {}).get('class_type', '?')}), {key}"
    return res


def run_cases(families: list[str] | None = None, pattern: str | None = None, cache: str | None = None,
              verbose: bool = False, out=print) -> list[CaseResult]:
    import torch
    from safetensors.numpy import load_file

    from twosamplers.models import ModelCache
    from twosamplers.nodes.folders import Folders

    manifest = json.loads((REFS / "manifest.json").read_text())
    models = checkpoints.build(checkpoints.cache_dir(cache), verbose=verbose)
    machines = {json.dumps(c["machine"], sort_keys=True) for c in manifest["cases"].values()}
    out(f"references made by: {'; '.join(sorted(machines))}")
    out(f"this run: cpu_capability {torch.backends.cpu.get_cpu_capability()}, torch_threads "
        f"{torch.get_num_threads()}, torch {torch.__version__}")
    results = []
    for family, cases in case_defs.all_cases(families).items():
        ref = load_file(str(REFS / f"{family}.safetensors"))
        model_cache = ModelCache()
        for name, wf, opts in cases:
            if pattern and not re.search(pattern, name):
                continue
            entry = manifest["cases"].get(name)
            if entry is None:
                results.append(CaseResult(name, False, error="no reference (run make_references.py)"))
                out(results[-1].line())
                continue
            if entry["workflow"] != json.loads(json.dumps(wf)):
                results.append(CaseResult(name, False, error="the reference was made from another workflow"))
                out(results[-1].line())
                continue
            options = {"device": "cpu", **({"fp32_text_enc": True} if opts.get("fp32_text_enc") else {})}
            folders = Folders.create(models, input_dir=INPUTS, load_options=options, cache=model_cache)
            t0 = time.perf_counter()
            try:
                ours = capture_run(wf, folders)
            except Exception as e:  # noqa: BLE001  (a failing case is a result)
                results.append(CaseResult(name, False, error=f"{type(e).__name__}: {e}"))
                out(results[-1].line())
                continue
            res = compare(name, entry, ours, ref, verbose)
            res.seconds = time.perf_counter() - t0
            results.append(res)
            out(res.line())
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", help="comma-separated: " + ",".join(case_defs.FAMILY_CASES))
    ap.add_argument("--cases", help="only cases whose name matches this regex")
    ap.add_argument("--cache", help="checkpoint cache folder (default: $TWOSAMPLERS_PARITY_CACHE or "
                                    "~/.cache/twosamplers/parity-e2e)")
    ap.add_argument("-v", "--verbose", action="store_true", help="every key's difference")
    a = ap.parse_args(argv)
    import warnings

    warnings.simplefilter("ignore")  # unknown-embedding warnings are part of the cases
    results = run_cases(a.families.split(",") if a.families else None, a.cases, a.cache, a.verbose)
    bad = [r for r in results if not r.ok]
    print(f"e2e parity: {len(results) - len(bad)}/{len(results)} cases within tolerance")
    return 1 if bad or not results else 0


if __name__ == "__main__":
    raise SystemExit(main())
