"""Stable Diffusion 1.5 on a CPU: ComfyUI 0.30.0 and twosamplers side by side, same workflows, one run.

    python benchmarks/sd_cpu.py [--models DIR] [--repeats 2] [--cases REGEX] [--threads N] [--keep]

Runs the SD1.5 workflows of the end-to-end parity set (tests/parity/e2e/cases.py: txt2img, prompt weighting with a
long prompt and clip skip, embeddings, LoRA on UNet and text encoder, img2img, inpainting masks, KSamplerAdvanced,
TwoSamplersForMask, regional conditioning, latent composite; the ControlNet case is left out: there is no full-size
ControlNet) on a FULL-SIZE SD1.5 checkpoint with random seeded weights (ComfyUI's make_sd15_random.py from
../shared/comfy: real UNet, CLIP-L and VAE, fp16, 2.1 GB; built once into --models, 6.6 GB peak), each side as one
process that loads the checkpoint once and runs every workflow (ComfyUI through the kit's run_workflow.py, its own
node classes; us through `twosamplers.workflow`), alternating which side goes first in each repeat. Prints each
process's wall time and peak RSS, the medians, the ratios (ComfyUI / ours: > 1 means we are faster or leaner), and
the largest difference of the final images and latents between the two (tolerance: latent 2e-3, image 1e-3).
Never run two of these at once on a shared machine: each side holds a full-size model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
E2E = ROOT / "tests" / "parity" / "e2e"
CKPT = "sd15_random.safetensors"
RENAME = {"sd15_mini.safetensors": CKPT, "sd15_mini_lora.safetensors": "sd15_random_lora.safetensors",
          "pe_sd15": "rand_emb"}


def workflows(pattern: str | None) -> dict[str, dict]:
    sys.path.insert(0, str(E2E))
    import cases

    out = {}
    for name, wf, opts in cases.sd15_cases():
        if "controlnet" in name or opts or (pattern and not re.search(pattern, name)):
            continue
        text = json.dumps(wf)
        for a, b in RENAME.items():
            text = text.replace(a, b)
        out[name] = json.loads(text)
    return out


def comfy_prefix() -> tuple[list[str], dict]:
    sys.path.insert(0, str(E2E))
    from make_references import comfy_env

    return comfy_env()


def ensure_checkpoint(models: Path, inputs: Path) -> None:
    if (models / "checkpoints" / CKPT).is_file():
        return
    prefix, env = comfy_prefix()
    maker = Path(prefix[1]).with_name("make_sd15_random.py")
    print(f"building the full-size random SD1.5 checkpoint into {models} (once; ~40 s, 6.6 GB peak) ...", flush=True)
    subprocess.run([prefix[0], str(maker), str(models), str(inputs)], env=env, check=True)


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit status) of a child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read() if p.stderr else ""
    if p.returncode != 0:
        print(err[-3000:], file=sys.stderr)
    return wall, usage.ru_maxrss / 1024.0, p.returncode


def ours_worker(wf_dir: Path, models: Path, inputs: Path, out: Path, threads: int | None) -> int:
    """One process: every workflow through twosamplers' runner, models loaded once (a shared ModelCache), the
    images SaveImage received dumped for the comparison."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    import warnings

    from safetensors.torch import save_file

    from twosamplers.models import ModelCache
    from twosamplers.workflow import run

    warnings.simplefilter("ignore")
    cache = ModelCache()
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(wf_dir.glob("*.json")):
            outputs = run(str(path), models, input_dir=inputs, output_dir=tmp, device="cpu", cache=cache)
            save_file({f"saved/{o['node']}": o["images"].float().contiguous() for o in outputs if "images" in o},
                      str(out / f"{path.stem}.safetensors"))
    return 0


def compare(comfy_out: Path, ours_out: Path, names: list[str]) -> dict[str, float]:
    from safetensors.numpy import load_file

    worst = {}
    for name in names:
        a, b = comfy_out / f"{name}.safetensors", ours_out / f"{name}.safetensors"
        if not (a.is_file() and b.is_file()):
            worst[name] = float("inf")
            continue
        ta, tb = load_file(str(a)), load_file(str(b))
        keys = [k for k in tb if k in ta]
        worst[name] = max((float(abs(ta[k].astype("float64") - tb[k].astype("float64")).max()) for k in keys),
                          default=float("inf"))
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=os.environ.get("TWOSAMPLERS_SD15_FULL", str(Path.home() / ".cache" /
                                                                                  "twosamplers" / "sd15-full")),
                    help="folder for the full-size checkpoint (models/ layout; built once)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cases", help="only the workflows whose name matches this regex")
    ap.add_argument("--threads", type=int, default=None, help="torch threads on both sides (default: torch's)")
    ap.add_argument("--keep", metavar="DIR", help="keep the workflows and outputs in DIR")
    ap.add_argument("--ours-worker", nargs=4, metavar=("WF_DIR", "MODELS", "INPUTS", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.ours_worker:
        wf_dir, models, inputs, out = map(Path, a.ours_worker)
        return ours_worker(wf_dir, models, inputs, out, a.threads)

    models = Path(a.models).expanduser()
    inputs = E2E / "inputs"
    full_inputs = models / "input"
    ensure_checkpoint(models, full_inputs)
    for extra in ("embeddings", "loras"):
        if not (models / extra).is_dir():
            raise SystemExit(f"{models / extra} missing: rebuild with make_sd15_random.py")
    wfs = workflows(a.cases)
    work = Path(a.keep or tempfile.mkdtemp(prefix="sd-cpu-bench-"))
    (work / "wf").mkdir(parents=True, exist_ok=True)
    for name, wf in wfs.items():
        (work / "wf" / f"{name}.json").write_text(json.dumps(wf))
    prefix, env = comfy_prefix()
    threads = ["--threads", str(a.threads)] if a.threads else []
    import platform

    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}, torch threads {a.threads or torch.get_num_threads()}; "
          f"{len(wfs)} workflows on {models / 'checkpoints' / CKPT}", flush=True)
    results: dict[str, list[tuple[float, float]]] = {"ComfyUI": [], "twosamplers": []}
    for r in range(a.repeats):
        order = ["ComfyUI", "twosamplers"] if r % 2 == 0 else ["twosamplers", "ComfyUI"]
        for side in order:
            out = work / f"out_{side}"
            out.mkdir(exist_ok=True)
            if side == "ComfyUI":
                cmd = [*prefix, *sorted(map(str, (work / "wf").glob("*.json"))), "--models", str(models), "--input",
                       str(inputs), "--out", str(out), *threads]
                wall, rss, rc = timed(cmd, env)
            else:
                cmd = [sys.executable, __file__, *threads, "--ours-worker", str(work / "wf"), str(models), str(inputs),
                       str(out)]
                wall, rss, rc = timed(cmd, {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep +
                                            os.environ.get("PYTHONPATH", "")})
            if rc != 0:
                raise SystemExit(f"{side} failed (exit {rc})")
            results[side].append((wall, rss))
            print(f"repeat {r + 1}: {side:12} {wall:8.1f} s   peak RSS {rss:7.0f} MB", flush=True)
    med = {side: (statistics.median(w for w, _ in v), statistics.median(m for _, m in v))
           for side, v in results.items()}
    c, o = med["ComfyUI"], med["twosamplers"]
    print(f"median: ComfyUI {c[0]:.1f} s, {c[1]:.0f} MB; twosamplers {o[0]:.1f} s, {o[1]:.0f} MB")
    print(f"speed: {c[0] / o[0]:.2f}x ComfyUI's (goal >= 1.5x); "
          f"peak memory: {o[1] / c[1]:.2f}x ComfyUI's (goal <= 0.8x)")
    for r, ((cw, _), (ow, _)) in enumerate(zip(results["ComfyUI"], results["twosamplers"], strict=True), 1):
        print(f"repeat {r}: speed {cw / ow:.2f}x")
    # the ComfyUI dumps hold every node; keep the saved images for the comparison
    from safetensors.numpy import load_file, save_file

    comfy_saved = work / "comfy_saved"
    comfy_saved.mkdir(exist_ok=True)
    for name in wfs:
        d = load_file(str(work / "out_ComfyUI" / f"{name}.safetensors"))
        save_file({k: v for k, v in d.items() if k.startswith("saved/")}, str(comfy_saved / f"{name}.safetensors"))
    worst = compare(comfy_saved, work / "out_twosamplers", list(wfs))
    over = {k: v for k, v in worst.items() if not v <= 1e-3}
    print(f"images: largest |ComfyUI - twosamplers| {max(worst.values()):.2e} over {len(worst)} workflows "
          f"({'all within 1e-3' if not over else 'OVER 1e-3: ' + ', '.join(over)})")
    if not a.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
