"""Reference outputs of ComfyUI 0.30's own InstructPixToPixConditioning, DualCFGGuider, ModelSamplingContinuousEDM,
SamplerCustomAdvanced and KSampler on the tiny edit models of edit_models.py (SD1.5 InstructPix2Pix, SDXL
InstructPix2Pix with and without CosXL's EDM v-prediction markers): run ComfyUI, keep its numbers; no ComfyUI code
is copied into the project. Run it with the shared oracle's interpreter:

    source ../shared/comfy/env.sh && comfy_python tests/comfy_refs/make_edit_refs.py

Writes tests/comfy_refs/edit.safetensors (each case's sampled latent, the edit image's VAE latent) and edit.json
(the cases' settings, versions and machine). tests/test_edit_models_parity.py runs the project's nodes on the same
weights.
"""

import json
import os
import platform
import sys
from pathlib import Path

import comfy_env  # noqa: F401  (ComfyUI on the path, CPU)
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import edit_models as em  # noqa: E402

THREADS = 1
torch.set_num_threads(THREADS)
import comfy.model_detection  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.supported_models  # noqa: E402
import nodes  # noqa: E402
from comfy_extras import nodes_custom_sampler as cs  # noqa: E402
from comfy_extras import nodes_ip2p, nodes_model_advanced  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT, CASES = {}, {}
CPU = torch.device("cpu")


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def res(r):
    return tuple(r.result) if hasattr(r, "result") else tuple(r)


def sdxl_edit(markers: dict):
    """The SDXL-like edit UNet built as ComfyUI's SDXL_instructpix2pix (its detection needs SDXL's real shapes)."""
    sd = {k.removeprefix(em.PREFIX): t(v) for k, v in em.sdxl_ip2p_unet().items()}
    config = comfy.supported_models.SDXL_instructpix2pix(comfy.model_detection.detect_unet_config(sd, ""))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({**sd, **{k: torch.tensor(v) for k, v in markers.items()}}, "")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)
    model.load_model_weights(sd, "")
    return patcher


I = em.inputs()
VAE = comfy.sd.VAE(sd={k: t(v) for k, v in em.vae().items()})
IMAGE = t(I["image"])

# ------------------------------------------------------------------------------------------------ SD1.5 ip2p
SD15 = comfy.sd.load_diffusion_model_state_dict({k: t(v) for k, v in em.sd15_ip2p_unet().items()})
assert type(SD15.model).__name__ == "SD15_instructpix2pix", type(SD15.model)
POS, NEG = [[t(I["pos"]), {}]], [[t(I["neg"]), {}]]
pos, neg, latent = res(nodes_ip2p.InstructPixToPixConditioning.execute(POS, NEG, IMAGE, VAE))
OUT["ip2p/concat"] = pos[0][1]["concat_latent_image"].float().contiguous()
OUT["ip2p/latent"] = latent["samples"].float().contiguous()


def ksample(case, model, positive, negative, latent, **s):
    s = {"seed": 7, "steps": 3, "cfg": 5.0, "sampler": "euler", "scheduler": "normal", "denoise": 1.0, **s}
    (o,) = nodes.common_ksampler(model, s["seed"], s["steps"], s["cfg"], s["sampler"], s["scheduler"], positive,
                                 negative, latent, denoise=s["denoise"])
    OUT[case] = o["samples"].float().contiguous().clone()
    CASES[case] = s
    print(case, tuple(OUT[case].shape), float(OUT[case].abs().mean()))


ksample("sd15/ip2p", SD15, pos, neg, latent)
ksample("sd15/no_image", SD15, POS, NEG, {"samples": torch.zeros(1, 4, 9, 12)})  # the concat channels are zeros
ksample("sd15/ip2p_img2img", SD15, pos, neg, {"samples": OUT["ip2p/concat"].clone()}, denoise=0.6, cfg=3.0,
        sampler="dpmpp_2m", scheduler="karras")


# ------------------------------------------------------------------------------------------------ SDXL ip2p
def xl(name, pooled):
    return [[t(I[name]), {"pooled_output": t(I[pooled])}]]


def dual(case, model, s):
    """InstructPixToPixConditioning on (pos, neg) -> DualCFGGuider(cond1 = its positive, cond2 = its negative,
    negative = a third prompt without the image) -> SamplerCustomAdvanced."""
    if s.get("edm_node"):
        (model,) = res(nodes_model_advanced.ModelSamplingContinuousEDM().patch(model, "v_prediction", 120.0, 0.002))
    p, n, lat = res(nodes_ip2p.InstructPixToPixConditioning.execute(xl("pos_xl", "pooled_pos"),
                                                                     xl("neg_xl", "pooled_neg"), IMAGE, VAE))
    (guider,) = res(cs.DualCFGGuider.execute(model, p, n, xl("zero_xl", "pooled_zero"), s["cfg_conds"],
                                             s["cfg_cond2_negative"], s["style"]))
    (noise,) = res(cs.RandomNoise.execute(s["seed"]))
    (sampler,) = res(cs.KSamplerSelect.execute(s["sampler"]))
    (sigmas,) = res(cs.BasicScheduler.execute(model, s["scheduler"], s["steps"], 1.0))
    out, _ = res(cs.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, lat))
    OUT[case] = out["samples"].float().contiguous().clone()
    CASES[case] = s
    print(case, tuple(OUT[case].shape), float(OUT[case].abs().mean()))


COSXL = sdxl_edit(em.EDM_VPRED)
PLAIN = sdxl_edit({})
assert type(COSXL.model).__name__ == "SDXL_instructpix2pix", type(COSXL.model)
import comfy.model_sampling  # noqa: E402

assert isinstance(COSXL.model.model_sampling, comfy.model_sampling.ModelSamplingContinuousEDM)
assert not isinstance(PLAIN.model.model_sampling, comfy.model_sampling.ModelSamplingContinuousEDM)
base = {"seed": 11, "steps": 3, "sampler": "euler", "scheduler": "karras", "style": "regular", "edm_node": False}
dual("cosxl/regular", COSXL, {**base, "cfg_conds": 3.0, "cfg_cond2_negative": 1.5})
dual("cosxl/regular_edm_node", COSXL, {**base, "cfg_conds": 4.0, "cfg_cond2_negative": 2.0, "edm_node": True,
                                       "sampler": "dpmpp_2m"})
dual("cosxl/nested", COSXL, {**base, "cfg_conds": 2.5, "cfg_cond2_negative": 1.8, "style": "nested"})
dual("cosxl/cfg2_one", COSXL, {**base, "cfg_conds": 2.0, "cfg_cond2_negative": 1.0})
dual("cosxl/both_one", COSXL, {**base, "cfg_conds": 1.0, "cfg_cond2_negative": 1.0})
dual("sdxl_ip2p/edm_node", PLAIN, {**base, "cfg_conds": 3.0, "cfg_cond2_negative": 1.5, "edm_node": True,
                                   "scheduler": "normal"})

save_file(OUT, str(HERE / "edit.safetensors"))
import comfyui_version  # noqa: E402

cpu = platform.processor()
if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
meta = {"comfyui": comfyui_version.__version__, "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_model": cpu, "torch_threads": THREADS,
        "cases": CASES}
(HERE / "edit.json").write_text(json.dumps(meta, indent=1) + "\n")
print("wrote", len(OUT), "tensors")
