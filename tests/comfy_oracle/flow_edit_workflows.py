# ruff: noqa: I001  (tiny_patches imports comfy_env first)
"""Runs tests/flow_edit_workflows.py's workflows (Flux Fill / Canny-Depth extra input channels,
InstructPixToPixConditioning) on ComfyUI 0.30.0 with the shared runner (run_workflow.py) and keeps what their
SaveLatent nodes got, with a manifest of the versions and the machine (ComfyUI's last bits depend on them).

    python tests/flow_edit_workflows.py /tmp/flowedit/models /tmp/flowedit/input
    source ../shared/comfy/env.sh
    (cd tests/comfy_oracle && comfy_python flow_edit_workflows.py /tmp/flowedit/models /tmp/flowedit/input \\
        ../parity/flow_edit)

Writes OUT_DIR/references.safetensors (keys <workflow>/saved/<node id>, float32) and OUT_DIR/manifest.json.
"""

import json
import os
import platform
import sys

import tiny_patches  # noqa: F401
import torch
from run_saved import run_saved
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from flow_edit_workflows import WORKFLOWS  # noqa: E402


def main(models_dir, input_dir, out_dir, threads=2):
    os.makedirs(out_dir, exist_ok=True)
    kept = run_saved(WORKFLOWS, models_dir, input_dir, extra_args=("--threads", str(threads)),
                     keep=lambda k: k.startswith("saved/") or k == "node/13/2")  # + the IP2P node's latent
    out = {k: v.float().contiguous() for k, v in kept.items()}
    save_file(out, os.path.join(out_dir, "references.safetensors"))
    import comfyui_version

    cpu = platform.processor()
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    meta = {"comfyui": comfyui_version.__version__, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_model": cpu,
            "torch_threads": threads, "device": "cpu", "workflows": sorted(WORKFLOWS), "keys": sorted(out)}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"wrote {len(out)} tensors to {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
