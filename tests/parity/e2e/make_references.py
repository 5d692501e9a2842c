"""Regenerate the end-to-end parity references: ComfyUI 0.30.0 runs every case of cases.py on the seeded checkpoints.

    python tests/parity/e2e/make_references.py [--families sd15,sd2v,sdxl,refiner] [--cache DIR] [--threads N]

Run from the repository root with the project's venv; ComfyUI runs in its own environment (../shared/comfy: set
COMFY_KIT and the variables of its env.sh, or let this script source it), through the kit's run_workflow.py, which
calls ComfyUI's own node classes (Impact Pack's ToBasicPipe / KSamplerProvider / TwoSamplersForMask are emulated
there as shared/spec/two-samplers.md states). Nothing of ComfyUI is copied here: only its output tensors are kept.

Writes tests/parity/e2e/references/<family>.safetensors and manifest.json: per case the keys ComfyUI dumped
(`node/<id>/<i>` outputs, `cond/<id>` conditioning, `saved/<id>` what SaveImage got), the class of each node,
the options, and the machine (CPU capability, CPU model, torch thread count: ComfyUI's last bits depend on them).
Conditioning tensors are stored as sketches (refs.py: they are diagnostics; latents and images, the parity
criterion, stay whole, float32); a tensor equal to one stored before is stored once (the manifest maps each key
to its stored name). ComfyUI's raw dumps stay in CACHE/comfy-dumps/<family> (`--reuse` compacts them again
without running ComfyUI).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cases as case_defs  # noqa: E402
import checkpoints  # noqa: E402
import refs  # noqa: E402

REFS = HERE / "references"
INPUTS = HERE / "inputs"


def make_inputs(folder: Path = INPUTS) -> None:
    """src.png (96x64 RGB), mask.png (96x64 L: 255 inside a box, a 128 row above it), mask_rgb.png (the same as
    RGB). Made with numpy + Pillow (the same bytes on every machine); kept when they exist."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "src.png").exists():
        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:64, 0:96]
        img = np.stack([x / 95.0, y / 63.0, 0.5 + 0.5 * np.sin(x / 7.0 + y / 5.0)], -1) * 200 \
            + rng.random((64, 96, 3)) * 55
        Image.fromarray(img.clip(0, 255).astype("uint8")).save(folder / "src.png")
    if not (folder / "mask.png").exists():
        m = np.zeros((64, 96), "uint8")
        m[16:48, 32:72] = 255
        m[14:16, 32:72] = 128
        Image.fromarray(m).save(folder / "mask.png")
    if not (folder / "mask_rgb.png").exists():
        m = np.asarray(Image.open(folder / "mask.png"))
        Image.fromarray(np.stack([m, m, m], -1)).save(folder / "mask_rgb.png")


def comfy_env() -> tuple[list[str], dict]:
    """The command prefix and environment that run ComfyUI's python (../shared/comfy/env.sh's comfy_python)."""
    kit = os.environ.get("COMFY_KIT") or str(HERE.parents[2].parent / "shared" / "comfy")  # beside the checkout
    script = f"source {kit}/env.sh >/dev/null && env | grep -E '^COMFY_(HOME|ROOT|PY|KIT)='"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"cannot set up ComfyUI from {kit}/env.sh (set COMFY_KIT): {out.stderr.strip()}")
    env = dict(line.split("=", 1) for line in out.stdout.split())
    run_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")}
    run_env.update(env)
    run_env["PYTHONPATH"] = f"{env['COMFY_KIT']}:{env['COMFY_KIT']}/stubs:{env['COMFY_ROOT']}"
    run_env["PYTHONPYCACHEPREFIX"] = f"{env['COMFY_HOME']}/pycache"
    return [env["COMFY_PY"], f"{env['COMFY_KIT']}/run_workflow.py"], run_env


def _store_key(case: str, key: str, arr: np.ndarray, seen: dict[str, str]) -> tuple[str, bool]:
    digest = hashlib.sha256(arr.dtype.str.encode() + str(arr.shape).encode() + arr.tobytes()).hexdigest()
    if digest in seen:
        return seen[digest], False
    name = f"{case}/{key}"
    seen[digest] = name
    return name, True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default=",".join(case_defs.FAMILY_CASES))
    ap.add_argument("--cache", help="checkpoint cache folder (default: checkpoints.cache_dir())")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for ComfyUI (recorded)")
    ap.add_argument("--reuse", action="store_true", help="compact the dumps of an earlier run, do not run ComfyUI")
    ap.add_argument("--cases", help="run ComfyUI only on the cases matching this regex (the others' dumps are reused)")
    a = ap.parse_args(argv)
    from safetensors.numpy import load_file, save_file

    families = [f for f in a.families.split(",") if f]
    cache = checkpoints.cache_dir(a.cache)
    models = checkpoints.build(cache)
    make_inputs()
    prefix, env = (None, None) if a.reuse else comfy_env()
    REFS.mkdir(exist_ok=True)
    manifest_path = REFS / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"cases": {}}
    for family, cases in case_defs.all_cases(families).items():
        dumps = cache / "comfy-dumps" / family
        with tempfile.TemporaryDirectory(prefix=f"e2e-{family}-") as tmp:
            groups: dict[bool, list[Path]] = {}
            for name, wf, opts in cases:
                if a.cases and not re.search(a.cases, name):
                    continue
                p = Path(tmp) / f"{name}.json"
                p.write_text(json.dumps(wf, indent=1))
                groups.setdefault(bool(opts.get("fp32_text_enc")), []).append(p)
            for fp32, paths in ([] if a.reuse else groups.items()):
                cmd = [*prefix, *map(str, paths), "--models", str(models), "--input", str(INPUTS),
                       "--out", str(dumps), "--threads", str(a.threads)] + (["--fp32-text-enc"] if fp32 else [])
                print(f"[{family}] ComfyUI: {len(paths)} workflow(s){' --fp32-text-enc' if fp32 else ''}", flush=True)
                r = subprocess.run(cmd, env=env)
                if r.returncode != 0:
                    raise SystemExit(f"ComfyUI failed on {family} (exit {r.returncode})")
        tensors: dict[str, np.ndarray] = {}
        seen: dict[str, str] = {}
        for name, wf, opts in cases:
            dump = load_file(str(dumps / f"{name}.safetensors"))
            meta = json.loads((dumps / f"{name}.json").read_text())
            keys = {}
            for key in sorted(dump):
                arr = dump[key]
                if key.startswith("cond/"):
                    arr = refs.sketch(arr)
                stored, new = _store_key(name, key, arr, seen)
                if new:
                    tensors[stored] = np.ascontiguousarray(arr)
                keys[key] = stored
            manifest["cases"][name] = {
                "family": family, "options": opts, "workflow": wf, "keys": keys,
                "machine": {k: meta.get(k) for k in ("comfyui_version", "torch", "cpu_capability", "cpu_model",
                                                     "torch_threads", "fp32_text_enc")},
                "comfyui_seconds": meta.get("total_s")}
        save_file(tensors, str(REFS / f"{family}.safetensors"))
        size = (REFS / f"{family}.safetensors").stat().st_size
        print(f"[{family}] {len(cases)} cases, {len(tensors)} tensors, {size / 1e6:.2f} MB", flush=True)
    manifest["checkpoints"] = json.loads(checkpoints.hashes_file().read_text())
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
