# ruff: noqa: I001  (tiny_patches imports comfy_env first)
"""Runs tests/flow_control_workflows.py's workflows (Flux / SD3 ControlNets) on ComfyUI 0.30.0 with the shared
runner (run_workflow.py) and keeps what their SaveLatent nodes got.

    python tests/flow_models.py /tmp/flowmodels && python tests/flow_control_models.py /tmp/flowmodels
    python tests/flow_workflows.py /tmp/flowinput
    source ../shared/comfy/env.sh
    (cd tests/comfy_oracle && comfy_python flow_controlnet.py /tmp/flowmodels /tmp/flowinput \\
        ../data/flow_controlnet.safetensors)

(further arguments: only these workflows, e.g. to check one case.)

Keys: <workflow>/saved/<node id> (float32).
"""

import os
import sys

import tiny_patches  # noqa: F401
from run_saved import run_saved
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from flow_control_workflows import WORKFLOWS  # noqa: E402


def main(models_dir, input_dir, out_path, names=None):
    todo = {n: m for n, m in WORKFLOWS.items() if not names or n in names}
    out = run_saved(todo, models_dir, input_dir)
    save_file(out, out_path)
    print(f"wrote {len(out)} tensors to {out_path}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
