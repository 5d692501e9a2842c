# ruff: noqa: I001  (tiny_patches imports comfy_env first)
"""Runs tests/flow_workflows.py's workflows on ComfyUI 0.30.0 with the shared runner (run_workflow.py), the tiny
text encoders and VAE made loadable by tiny_patches.py, and keeps what their SaveLatent / SaveImage nodes got.

    python tests/flow_models.py /tmp/flowmodels && python tests/flow_workflows.py /tmp/flowinput
    source ../shared/comfy/env.sh
    (cd tests/comfy_oracle && comfy_python flow_workflows.py /tmp/flowmodels /tmp/flowinput \\
        ../data/flow_workflows.safetensors)

Keys: <workflow>/saved/<node id> (float32), as run_workflow.py names them.
"""

import os
import sys

import tiny_patches  # noqa: F401
from run_saved import run_saved
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from flow_workflows import WORKFLOWS  # noqa: E402


def main(models_dir, input_dir, out_path):
    out = run_saved(WORKFLOWS, models_dir, input_dir)
    save_file(out, out_path)
    print(f"wrote {len(out)} tensors to {out_path}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
