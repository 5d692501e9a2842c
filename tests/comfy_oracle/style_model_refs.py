# ruff: noqa: I001  (comfy_env must be imported before any ComfyUI module)
"""ComfyUI 0.30.0's StyleModelLoader + StyleModelApply on tests/style_model_cases.py's cases (a T2I-Adapter style
model and a Flux Redux model at ComfyUI's fixed sizes, seeded weights and inputs): ComfyUI's own classes run,
their conditioning is kept; no ComfyUI code is copied.

    source ../shared/comfy/env.sh
    (cd tests/comfy_oracle && comfy_python style_model_refs.py ../parity/style_model)

Writes OUT_DIR/references.safetensors (key = case name: the conditioning tensor, float32) and manifest.json.
"""

import json
import os
import platform
import sys
import tempfile
from types import SimpleNamespace

import comfy_env  # noqa: F401
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import nodes  # noqa: E402
from style_model_cases import CASES, case_inputs, redux_state, t2i_style_state  # noqa: E402


def main(out_dir, threads=2):
    torch.set_num_threads(threads)
    os.makedirs(out_dir, exist_ok=True)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        models = {}
        for kind, make in (("t2i", t2i_style_state), ("redux", redux_state)):
            path = os.path.join(d, kind + ".safetensors")
            save_file({k: torch.from_numpy(v) for k, v in make().items()}, path)
            models[kind] = nodes.comfy.sd.load_style_model(path)
        for name, (kind, _img, _txt, strength, strength_type) in CASES.items():
            img, txt = case_inputs(name)
            cond = [[torch.from_numpy(txt), {"pooled_output": torch.zeros(1, 8)}]]
            vision = SimpleNamespace(last_hidden_state=torch.from_numpy(img))
            (res,) = nodes.StyleModelApply().apply_stylemodel(cond, models[kind], vision, strength, strength_type)
            assert len(res) == 1 and "attention_mask" not in res[0][1], name
            out[name] = res[0][0].float().contiguous()
    save_file(out, os.path.join(out_dir, "references.safetensors"))
    import comfyui_version

    cpu = platform.processor()
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    meta = {"comfyui": comfyui_version.__version__, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_model": cpu, "torch_threads": threads,
            "device": "cpu", "made_by": "tests/comfy_oracle/style_model_refs.py",
            "cases": {k: {"model": v[0], "image_tokens": v[1], "text_tokens": v[2], "strength": v[3],
                          "strength_type": v[4], "shape": list(out[k].shape)} for k, v in CASES.items()}}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"wrote {len(out)} tensors to {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1])
