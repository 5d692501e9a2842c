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

import json
import os
import runpy
import sys
import tempfile

import tiny_patches  # noqa: F401
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from flow_control_workflows import WORKFLOWS  # noqa: E402


def main(models_dir, input_dir, out_path, names=None):
    kit = os.environ["COMFY_KIT"]
    todo = {n: m for n, m in WORKFLOWS.items() if not names or n in names}
    with tempfile.TemporaryDirectory() as d:
        files = []
        for name, make in todo.items():
            p = os.path.join(d, name + ".json")
            with open(p, "w") as f:
                json.dump(make(), f)
            files.append(p)
        sys.argv = ["run_workflow.py", *files, "--models", models_dir, "--input", input_dir, "--out",
                    os.path.join(d, "out")]
        try:
            runpy.run_path(os.path.join(kit, "run_workflow.py"), run_name="__main__")
        except SystemExit as e:
            if e.code:
                raise
        out = {}
        for name in todo:
            for k, v in load_file(os.path.join(d, "out", name + ".safetensors")).items():
                if k.startswith("saved/"):
                    out[f"{name}/{k}"] = v
    save_file(out, out_path)
    print(f"wrote {len(out)} tensors to {out_path}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
