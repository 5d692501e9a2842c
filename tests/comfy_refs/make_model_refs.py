"""Reference outputs of ComfyUI 0.30's own MODEL patch, merge, hypernetwork and diff-ControlNet nodes, sampled by its
KSampler on the random SD1.5-like UNets of random_models.py (run ComfyUI, keep its numbers; no ComfyUI code is copied
into the project). Run it with the shared oracle's interpreter:

    source ../shared/comfy/env.sh && comfy_python tests/comfy_refs/make_model_refs.py

Writes tests/comfy_refs/models.safetensors (each case's KSampler latent, 1x4x8x8) and models.json (the cases'
settings and versions). tests/test_model_nodes_parity.py runs the project's node classes on the same weights.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import comfy_env  # noqa: F401  (ComfyUI on the path, CPU)
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import random_models as rm  # noqa: E402

torch.set_num_threads(1)
import comfy.controlnet  # noqa: E402
import comfy.sd  # noqa: E402
import folder_paths  # noqa: E402
import nodes  # noqa: E402
from comfy_extras import (  # noqa: E402
    nodes_differential_diffusion,
    nodes_hypernetwork,
    nodes_model_advanced,
    nodes_model_merging,
    nodes_model_merging_model_specific,
)

OUT, CASES = {}, {}


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def res(r):
    return tuple(r.result) if hasattr(r, "result") else tuple(r)


def load_unet(name):
    sd = {k: t(v) for k, v in rm.unet(name).items()}
    m = comfy.sd.load_diffusion_model_state_dict(sd)
    assert type(m.model).__name__ == "BaseModel", type(m.model)
    return m


C = rm.conditioning()
POS, NEG = [[t(C["positive"]), {}]], [[t(C["negative"]), {}]]
EMPTY = {"samples": torch.zeros(1, 4, 8, 8)}
LATENT = {"samples": t(C["latent"])}


def sample(case, model, settings, positive=POS, negative=NEG, latent=EMPTY):
    s = {"seed": 7, "steps": 3, "cfg": 5.0, "sampler": "euler", "scheduler": "normal", "denoise": 1.0, **settings}
    (o,) = nodes.common_ksampler(model, s["seed"], s["steps"], s["cfg"], s["sampler"], s["scheduler"], positive,
                                 negative, latent, denoise=s["denoise"])
    OUT[case] = o["samples"].detach().float().contiguous().clone()
    CASES[case] = s
    print(case, float(OUT[case].abs().mean()))


A, B, Cm = load_unet("a"), load_unet("b"), load_unet("c")
sample("base", A, {})

MSD = nodes_model_advanced.ModelSamplingDiscrete()
for sampling, zsnr, st in (("lcm", False, {"sampler": "lcm", "scheduler": "sgm_uniform", "cfg": 1.8}),
                           ("x0", False, {}), ("v_prediction", False, {}), ("eps", True, {"scheduler": "karras"}),
                           ("v_prediction", True, {"scheduler": "karras"}), ("lcm", True, {"sampler": "lcm"})):
    (m,) = res(MSD.patch(A, sampling, zsnr))
    sample(f"ModelSamplingDiscrete/{sampling}/{zsnr}", m, st)
(m,) = res(nodes_model_advanced.ModelSamplingContinuousEDM().patch(A, "edm", 80.0, 0.002))
sample("ModelSamplingContinuousEDM/edm", m, {"scheduler": "karras"})
(m,) = res(nodes_model_advanced.ModelSamplingContinuousEDM().patch(A, "v_prediction", 120.0, 0.002))
sample("ModelSamplingContinuousEDM/v_prediction", m, {"scheduler": "exponential"})
(v,) = res(MSD.patch(A, "v_prediction", False))
(m,) = res(nodes_model_advanced.RescaleCFG().patch(v, 0.7))
sample("RescaleCFG/0.7", m, {})
(m,) = res(nodes_differential_diffusion.DifferentialDiffusion.execute(A, 1.0))
masked = {"samples": t(C["latent"]), "noise_mask": t(C["mask"]).reshape(1, 1, 64, 64)}
sample("DifferentialDiffusion/1.0", m, {"denoise": 0.8}, latent=masked)
(m,) = res(nodes_differential_diffusion.DifferentialDiffusion.execute(A, 0.4))
sample("DifferentialDiffusion/0.4", m, {"denoise": 0.8}, latent=masked)

MM = nodes_model_merging
(m,) = res(MM.ModelMergeSimple().merge(A, B, 0.3))
sample("ModelMergeSimple/0.3", m, {})
(m,) = res(MM.ModelMergeBlocks().merge(A, B, input=0.2, middle=0.6, out=0.9))
sample("ModelMergeBlocks/0.2/0.6/0.9", m, {})
(m,) = res(MM.ModelAdd().merge(A, B))
sample("ModelMergeAdd", m, {})
(m,) = res(MM.ModelSubtract().merge(A, B, 0.7))
sample("ModelMergeSubtract/0.7", m, {})
(d,) = res(MM.ModelSubtract().merge(B, Cm, 1.0))
(m,) = res(MM.ModelAdd().merge(A, d))
sample("ModelMergeAdd(A, Subtract(B, C))", m, {})
sd1 = {k: 1.0 for k in nodes_model_merging_model_specific.ModelMergeSD1.INPUT_TYPES()["required"]
       if k not in ("model1", "model2")}
sd1.update({"time_embed.": 0.1, "input_blocks.1.": 0.35, "middle_block.1.": 0.8, "output_blocks.0.": 0.55,
            "out.": 0.25})
(m,) = res(nodes_model_merging_model_specific.ModelMergeSD1().merge(A, B, **sd1))
CASES_SD1 = {k: v for k, v in sd1.items() if v != 1.0}
sample("ModelMergeSD1", m, {})
CASES["ModelMergeSD1"]["ratios"] = CASES_SD1

with tempfile.TemporaryDirectory() as tmp:
    hn = rm.hypernetwork()
    obj = {k: ([{n: t(a) for n, a in s.items()} for s in v] if isinstance(k, int) else v) for k, v in hn.items()}
    torch.save(obj, os.path.join(tmp, "hn.pt"))
    folder_paths.add_model_folder_path("hypernetworks", tmp)
    for strength in (0.8, -0.5):
        (m,) = res(nodes_hypernetwork.HypernetworkLoader.execute(A, "hn.pt", strength))
        sample(f"HypernetworkLoader/{strength}", m, {})

    from safetensors.torch import save_file

    base_a = rm.unet("a")
    save_file({k: t(v) for k, v in rm.controlnet().items()}, os.path.join(tmp, "cn.safetensors"))
    save_file({k: t(v) for k, v in rm.diff_controlnet(base_a).items()}, os.path.join(tmp, "diff_cn.safetensors"))
    hint = t(C["hint"])
    for case, net in (("ControlNet", comfy.controlnet.load_controlnet(os.path.join(tmp, "cn.safetensors"))),
                      ("DiffControlNet/A", comfy.controlnet.load_controlnet(os.path.join(tmp, "diff_cn.safetensors"),
                                                                             A))):
        (p,) = res(nodes.ControlNetApply().apply_controlnet(POS, net, hint, 0.9))
        sample(case, A, {}, positive=p)
    # a diff ControlNet loaded for a merged MODEL takes the merged weights
    (merged,) = res(MM.ModelMergeSimple().merge(A, B, 0.5))
    net = comfy.controlnet.load_controlnet(os.path.join(tmp, "diff_cn.safetensors"), merged)
    (p,) = res(nodes.ControlNetApply().apply_controlnet(POS, net, hint, 0.9))
    sample("DiffControlNet/merged", A, {}, positive=p)

# ------------------------------------------------------------------------------------------ image prompts
import comfy.clip_model  # noqa: E402
import comfy.clip_vision  # noqa: E402
import comfy.model_base  # noqa: E402
from comfy.ldm.modules.encoders.noise_aug_modules import CLIPEmbeddingNoiseAugmentation  # noqa: E402

for name, key, crop in (("wide", "image", True), ("wide_none", "image", False), ("batch", "image2", True)):
    for size in ((224, 56) if name == "wide" else (56,)):
        pre = comfy.clip_model.clip_preprocess(t(C[key]), size=size, crop=crop)
        OUT[f"clip_preprocess/{name}/{size}"] = pre.contiguous()

vcfg = dict(rm.shapes()["clip_vision_config"], model_type="clip_vision_model")
vision = comfy.clip_vision.ClipVisionModel(vcfg)
missing, unexpected = vision.load_sd({k: t(v) for k, v in rm.clip_vision().items()})
assert not missing and not unexpected, (missing, unexpected)
for name, key, crop in (("center", "image", "center"), ("none", "image", "none"), ("batch", "image2", "center")):
    (o,) = res(nodes.CLIPVisionEncode().encode(vision, t(C[key]), crop))
    for field in ("last_hidden_state", "penultimate_hidden_states", "image_embeds"):
        OUT[f"CLIPVisionEncode/{name}/{field}"] = o[field].float().contiguous()

aug = CLIPEmbeddingNoiseAugmentation(noise_schedule_config={"timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"},
                                     timestep_dim=32)


class Embeds:
    def __init__(self, e):
        self.image_embeds = e


E = t(C["embeds"])
adm_cases = {"one": [{"clip_vision_output": Embeds(E[:1]), "strength": 0.7, "noise_augmentation": 0.3}],
             "two": [{"clip_vision_output": Embeds(E[:1]), "strength": 0.75, "noise_augmentation": 0.0},
                     {"clip_vision_output": Embeds(E[1:]), "strength": 0.5, "noise_augmentation": 0.6}],
             "batch": [{"clip_vision_output": Embeds(E), "strength": 1.2, "noise_augmentation": 0.125}]}
for name, unclip in adm_cases.items():
    for merge, seed in ((0.05, 7 - 10), (0.0, 123456 - 10)):
        adm = comfy.model_base.unclip_adm(unclip, "cpu", aug, merge, seed)
        OUT[f"unclip_adm/{name}/{merge}/{seed}"] = adm.contiguous()

U = comfy.sd.load_diffusion_model_state_dict({k: t(v) for k, v in rm.unclip_unet().items()})
assert type(U.model).__name__ == "SD21UNCLIP", type(U.model)
P1024, N1024 = [[t(C["positive_1024"]), {}]], [[t(C["negative_1024"]), {}]]
(vo,) = res(nodes.CLIPVisionEncode().encode(vision, t(C["image"]), "center"))
(vo2,) = res(nodes.CLIPVisionEncode().encode(vision, t(C["image2"]), "center"))
sample("unCLIP/no_image", U, {}, positive=P1024, negative=N1024)
(p,) = res(nodes.unCLIPConditioning().apply_adm(P1024, vo, 0.8, 0.25))
sample("unCLIP/one", U, {}, positive=p, negative=N1024)
(p,) = res(nodes.unCLIPConditioning().apply_adm(p, vo2, 1.1, 0.0))
sample("unCLIP/merged", U, {"seed": 3}, positive=p, negative=N1024)

# ------------------------------------------------------------------------------------------ GLIGEN
class PhraseClip:  # stands in for a CLIP: the phrases' pooled embeddings are drawn, not encoded
    def __init__(self):
        self.i = 0

    def tokenize(self, text):
        return text

    def encode_from_tokens(self, tokens, return_pooled=False):
        pooled = t(C["phrases"][self.i])
        self.i += 1
        return None, pooled


with tempfile.TemporaryDirectory() as tmp:
    save_file({k: t(v) for k, v in rm.gligen().items()}, os.path.join(tmp, "gligen.safetensors"))
    G = comfy.sd.load_gligen(os.path.join(tmp, "gligen.safetensors"))
    clip = PhraseClip()
    (p,) = res(nodes.GLIGENTextBoxApply().append(POS, clip, G, "a", 64, 48, 16, 32))
    (p,) = res(nodes.GLIGENTextBoxApply().append(p, clip, G, "b", 40, 40, 80, 8))
    sample("GLIGEN/two_boxes", A, {}, positive=p, latent={"samples": torch.zeros(1, 4, 16, 16)})

# ------------------------------------------------------------------------------------------ FreeU
from comfy_extras import nodes_freelunch  # noqa: E402

g = np.random.default_rng(1234)
for cls, b1, b2, s1, s2 in ((nodes_freelunch.FreeU, 1.1, 1.2, 0.9, 0.2),
                            (nodes_freelunch.FreeU_V2, 1.3, 1.4, 0.7, 0.4)):
    (m,) = res(cls.execute(A, b1, b2, s1, s2))
    patch = m.model_options["transformer_options"]["patches"]["output_block_patch"][0]
    for ch, hw in ((1280, (4, 6)), (640, (7, 5)), (640, (1, 3)), (320, (4, 4))):
        h = t(g.standard_normal((2, ch, *hw)).astype(np.float32))
        s = t(g.standard_normal((2, ch // 2, *hw)).astype(np.float32))
        OUT[f"FreeU/{cls.__name__}/{ch}/{hw[0]}x{hw[1]}/h_in"] = h.clone()
        OUT[f"FreeU/{cls.__name__}/{ch}/{hw[0]}x{hw[1]}/s_in"] = s.clone()
        ho, so = patch(h, s, {})
        OUT[f"FreeU/{cls.__name__}/{ch}/{hw[0]}x{hw[1]}/h"] = ho.contiguous()
        OUT[f"FreeU/{cls.__name__}/{ch}/{hw[0]}x{hw[1]}/s"] = so.contiguous()

# ------------------------------------------------------------------------------------------ image filters
from comfy_extras import nodes_post_processing as PP  # noqa: E402

photo = t(C["photo"])
for r, s in ((1, 1.0), (3, 2.5), (5, 0.3)):
    OUT[f"ImageBlur/{r}/{s}"] = res(PP.Blur.execute(photo, r, s))[0].contiguous()
for r, s, a in ((1, 1.0, 1.0), (2, 0.5, 2.5), (4, 3.0, 0.2)):
    OUT[f"ImageSharpen/{r}/{s}/{a}"] = res(PP.Sharpen.execute(photo, r, s, a))[0].contiguous()
for m, mp, st in (("bilinear", 0.01, 1), ("area", 0.02, 8), ("lanczos", 0.013, 4), ("nearest-exact", 0.011, 1)):
    (scaled,) = res(PP.ImageScaleToTotalPixels.execute(photo[:1], m, mp, st))
    OUT[f"ImageScaleToTotalPixels/{m}/{mp}/{st}"] = scaled.contiguous()

from safetensors.torch import save_file  # noqa: E402

save_file(OUT, str(HERE / "models.safetensors"))
import comfyui_version  # noqa: E402

(HERE / "models.json").write_text(json.dumps({"comfyui": comfyui_version.__version__, "torch": torch.__version__,
                                              "threads": 1, "cases": CASES}, indent=1, sort_keys=True))
