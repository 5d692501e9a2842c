"""The shared step of the oracle scripts: write a set of API workflows to a temporary folder, run them all in one
ComfyUI 0.30.0 process with the kit's run_workflow.py, and return the tensors each kept (by default what its
SaveLatent / SaveImage nodes got), keyed <workflow>/<run_workflow.py's key>. Run under comfy_python after
`import tiny_patches`."""

import json
import os
import runpy
import sys
import tempfile

from safetensors.torch import load_file


def saved_only(key: str) -> bool:
    return key.startswith("saved/")


def run_saved(workflows: dict, models_dir: str, input_dir: str, *, keep=saved_only, extra_args=()) -> dict:
    """workflows: name -> a function making the API workflow. Raises if ComfyUI fails on any of them."""
    kit = os.environ["COMFY_KIT"]
    with tempfile.TemporaryDirectory() as d:
        files = []
        for name, make in workflows.items():
            p = os.path.join(d, name + ".json")
            with open(p, "w") as f:
                json.dump(make(), f)
            files.append(p)
        sys.argv = ["run_workflow.py", *files, "--models", models_dir, "--input", input_dir, "--out",
                    os.path.join(d, "out"), *extra_args]
        try:
            runpy.run_path(os.path.join(kit, "run_workflow.py"), run_name="__main__")
        except SystemExit as e:
            if e.code:
                raise
        out = {}
        for name in workflows:
            for k, v in load_file(os.path.join(d, "out", name + ".safetensors")).items():
                if keep(k):
                    out[f"{name}/{k}"] = v
    return out
