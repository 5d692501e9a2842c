"""Reference outputs of ComfyUI 0.30's own T2I-Adapter support (ControlNetLoader's loader, ControlNetApply /
ControlNetApplyAdvanced, its KSampler) on the tiny random SD1.5-like and SDXL-like UNets and adapters of
t2i_models.py (run ComfyUI, keep its numbers; no ComfyUI code is copied into the project). Run it with the shared
oracle's interpreter:

    source ../shared/comfy/env.sh && comfy_python tests/comfy_refs/make_t2i_refs.py

ComfyUI recognises SD1.5 / SDXL UNets by their real width (320); these tiny ones (width 32, so that the adapters'
four levels fit in a few MB) are given to it as SD15 / SDXL by replacing model_detection's final match, the only
change. Writes tests/comfy_refs/t2i.safetensors (each case's KSampler latent, and adapter features for the
feature cases) and t2i.json (settings and versions). tests/test_t2i_adapter.py runs the project on the same
weights.
"""

import json
import sys
from pathlib import Path

import comfy_env  # noqa: F401  (ComfyUI on the path, CPU)
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import t2i_models as tm  # noqa: E402

torch.set_num_threads(1)
import comfy.controlnet  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.supported_models  # noqa: E402
import comfyui_version  # noqa: E402
import nodes  # noqa: E402
from safetensors.torch import save_file  # noqa: E402


def forced_match(unet_config, state_dict=None, unet_key_prefix=""):
    cls = comfy.supported_models.SDXL if unet_config.get("adm_in_channels") else comfy.supported_models.SD15
    return cls(unet_config)


comfy.model_detection.model_config_from_unet_config = forced_match

OUT, CASES = {}, {}


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def state(name):
    return {k: t(v) for k, v in tm.weights(name).items()}


def load_unet(name):
    m = comfy.sd.load_diffusion_model_state_dict(state(name))
    want = "SDXL" if name.startswith("sdxl") else "BaseModel"
    assert type(m.model).__name__ == want, type(m.model)
    return m


def load_control(sd):
    net = comfy.controlnet.load_controlnet_state_dict(sd)
    assert net is not None
    return net


C = tm.conditioning()
SIZES = {"width": 64, "height": 64, "crop_w": 0, "crop_h": 0, "target_width": 64, "target_height": 64}
POS, NEG = [[t(C["positive"]), {}]], [[t(C["negative"]), {}]]
POS_XL = [[t(C["positive_xl"]), {"pooled_output": t(C["pooled_pos"]), **SIZES}]]
NEG_XL = [[t(C["negative_xl"]), {"pooled_output": t(C["pooled_neg"]), **SIZES}]]
ADV = nodes.ControlNetApplyAdvanced()


def image(name):
    return t(C[name])


def apply(positive, negative, net, hint, strength, start=0.0, end=1.0):
    out = ADV.apply_controlnet(positive, negative, net, image(hint), strength, start, end)
    return tuple(out.result) if hasattr(out, "result") else tuple(out)


def sample(case, model, positive, negative, controls, latent_hw=(8, 8), batch=1, mask=None, **settings):
    s = {"seed": 7, "steps": 3, "cfg": 5.0, "sampler": "euler", "scheduler": "normal", "denoise": 1.0, **settings}
    latent = {"samples": torch.zeros(batch, 4, *latent_hw)}
    if mask is not None:
        latent = {"samples": t(C["latent"]), "noise_mask": mask}
    (o,) = nodes.common_ksampler(model, s["seed"], s["steps"], s["cfg"], s["sampler"], s["scheduler"], positive,
                                 negative, latent, denoise=s["denoise"])
    OUT[case] = o["samples"].detach().float().contiguous().clone()
    CASES[case] = {**s, "controls": controls, "latent": [batch, 4, *latent_hw], "masked": mask is not None}
    print(case, tuple(OUT[case].shape), float(OUT[case].abs().mean()))
    return o


SD1, SDXL = load_unet("sd1_unet"), load_unet("sdxl_unet")
FULL, GREY = load_control(state("sd1_full")), load_control(state("sd1_grey_conv"))
DIFF = load_control({k: t(v) for k, v in tm.diffusers_layout(tm.weights("sd1_full")).items()})
XL, XL_GREY = load_control(state("sdxl_full")), load_control(state("sdxl_grey"))
CN = load_control(state("sd1_controlnet"))
assert type(FULL).__name__ == "T2IAdapter" and type(CN).__name__ == "ControlNet"

# each control: [file, hint, strength, start, end]
sample("sd1/none", SD1, POS, NEG, [])
sample("sd1/full", SD1, *apply(POS, NEG, FULL, "hint", 1.0), [["sd1_full", "hint", 1.0, 0.0, 1.0]])
sample("sd1/window", SD1, *apply(POS, NEG, FULL, "hint", 0.6, 0.3, 0.8), [["sd1_full", "hint", 0.6, 0.3, 0.8]])
sample("sd1/diffusers_layout", SD1, *apply(POS, NEG, DIFF, "hint", 1.0), [["sd1_full_diffusers", "hint", 1.0, 0, 1]])
sample("sd1/grey_conv_odd", SD1, *apply(POS, NEG, GREY, "hint_wide", 1.3), [["sd1_grey_conv", "hint_wide", 1.3, 0, 1]],
       latent_hw=(9, 7))
p, n = apply(POS, NEG, FULL, "hint", 0.8)
sample("sd1/chain", SD1, *apply(p, n, GREY, "hint_wide", 0.5, 0.0, 0.7),
       [["sd1_full", "hint", 0.8, 0, 1], ["sd1_grey_conv", "hint_wide", 0.5, 0.0, 0.7]])
sample("sd1/with_controlnet", SD1, *apply(p, n, CN, "hint_wide", 0.7),
       [["sd1_full", "hint", 0.8, 0, 1], ["sd1_controlnet", "hint_wide", 0.7, 0, 1]])
p2, n2 = apply(POS, NEG, CN, "hint_wide", 0.7)
sample("sd1/controlnet_then_adapter", SD1, *apply(p2, n2, FULL, "hint", 0.8),
       [["sd1_controlnet", "hint_wide", 0.7, 0, 1], ["sd1_full", "hint", 0.8, 0, 1]])
sample("sd1/batch2", SD1, *apply(POS, NEG, FULL, "hint2", 1.0), [["sd1_full", "hint2", 1.0, 0, 1]], batch=2)
(old,) = nodes.ControlNetApply().apply_controlnet(POS, FULL, image("hint"), 0.9)
sample("sd1/apply_old_node", SD1, old, NEG, [["sd1_full", "hint", 0.9, "ControlNetApply"]])
mask = t(C["mask"]).reshape(1, 1, 64, 64)
sample("sd1/masked", SD1, *apply(POS, NEG, FULL, "hint", 1.0), [["sd1_full", "hint", 1.0, 0, 1]], mask=mask,
       denoise=0.8)

sample("sdxl/none", SDXL, POS_XL, NEG_XL, [])
sample("sdxl/full", SDXL, *apply(POS_XL, NEG_XL, XL, "hint", 1.0), [["sdxl_full", "hint", 1.0, 0, 1]])
sample("sdxl/grey_odd", SDXL, *apply(POS_XL, NEG_XL, XL_GREY, "hint_wide", 1.2),
       [["sdxl_grey", "hint_wide", 1.2, 0, 1]], latent_hw=(9, 7))
p, n = apply(POS_XL, NEG_XL, XL, "hint", 0.7)
sample("sdxl/chain", SDXL, *apply(p, n, XL_GREY, "hint_wide", 0.5, 0.2, 0.9),
       [["sdxl_full", "hint", 0.7, 0, 1], ["sdxl_grey", "hint_wide", 0.5, 0.2, 0.9]])
sample("sdxl/batch2", SDXL, *apply(POS_XL, NEG_XL, XL, "hint2", 0.9), [["sdxl_full", "hint2", 0.9, 0, 1]], batch=2)

# adapter features as ComfyUI's T2IAdapter hands them to the UNet (hint resized / greyed, strength applied),
# in the order the encoder takes them
for name, hint, hw in (("light", "hint_wide", (9, 7)), ("sd1_grey_conv", "hint_wide", (9, 7)),
                       ("sdxl_grey", "hint_wide", (9, 7)), ("sd1_full", "hint", (8, 8))):
    net = load_control(state(name)).copy().set_cond_hint(image(hint).movedim(-1, 1), 0.75)
    ctrl = net.get_control(torch.zeros(1, 4, *hw), torch.tensor([999.0]), {}, 1, {})
    feats = [f for f in reversed(ctrl["input"]) if f is not None] + [f for f in ctrl.get("middle", []) if f is not None]
    for i, f in enumerate(feats):
        OUT[f"features/{name}/{i}"] = f.detach().float().contiguous().clone()
    CASES[f"features/{name}"] = {"hint": hint, "latent_hw": list(hw), "strength": 0.75, "count": len(feats)}
    print("features", name, [tuple(f.shape) for f in feats])

save_file(OUT, str(HERE / "t2i.safetensors"))
(HERE / "t2i.json").write_text(json.dumps({"comfyui_version": comfyui_version.__version__,
                                           "torch": torch.__version__, "threads": 1, "cases": CASES}, indent=1) + "\n")
