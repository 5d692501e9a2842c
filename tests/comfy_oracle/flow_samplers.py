# ruff: noqa: I001  (comfy_env must be imported before any ComfyUI module)
"""Reference tensors for the flow (CONST) model samplings and samplers, made by running ComfyUI 0.30.0.

Run under the ComfyUI oracle (it imports ComfyUI's modules; nothing of ComfyUI is copied here):

    source ../shared/comfy/env.sh
    comfy_python tests/comfy_oracle/flow_samplers.py tests/data/flow_samplers.safetensors

What it records (float32 tensors, keys as tests/test_flow_samplers.py reads them):
- ms/<name>/sigmas, ms/<name>/percent (percent_to_sigma of `PERCENTS`), ms/<name>/timestep (of `PROBE`)
  for the three flow samplings: sd3 (ModelSamplingDiscreteFlow shift 3, multiplier 1000), schnell (shift 1,
  multiplier 1), flux (ModelSamplingFlux, shift 1.15) and flux_res (ModelSamplingFlux node at 768 x 512).
- sigmas/<name>/<scheduler>/steps<N>: calculate_sigmas.
- run/<name>/<sampler>/<scheduler>[/mask]: ComfyUI's KSAMPLER.sample (noise scaling, sampler, inverse noise
  scaling) over a closed-form CFG denoiser, seed 7, batch 2, 16 channels; `/mask` with a soft noise mask, which
  also exercises the flow inpainting blend. Inputs: in/noise, in/latent, in/mask.
The closed-form model: D_c(x, s) = x*v/(v + s^2) + m_c*s^2/(v + s^2), v = 0.25, m_cond = 0.3, m_uncond = -0.2,
guided D = D_u + (D_c - D_u) * 3.0.
"""

import sys

import comfy_env  # noqa: F401  (ComfyUI on the path, CPU)
import torch
from safetensors.torch import save_file

import comfy.model_sampling as cms
import comfy.samplers as cs
import comfy.sample

SAMPLINGS = {"sd3": ("flow", 3.0, 1000), "schnell": ("flow", 1.0, 1.0), "flux": ("flux", 1.15, None),
             "flux_res": ("flux", None, None)}
SCHEDULERS = ("simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
              "linear_quadratic", "kl_optimal")
PERCENTS = (0.0, 1e-4, 0.2, 0.5, 0.8, 0.999, 1.0)
DISCARD = {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}
RUN_SCHEDULERS = ("simple", "beta", "normal")
MASK_SAMPLERS = ("euler", "euler_ancestral", "dpmpp_2m_sde", "lcm", "ddim", "uni_pc", "res_multistep")


def model_sampling(kind, shift, multiplier):
    if kind == "flow":
        class MS(cms.ModelSamplingDiscreteFlow, cms.CONST):
            pass
        ms = MS()
        ms.set_parameters(shift=shift, multiplier=multiplier)
        return ms

    class MSF(cms.ModelSamplingFlux, cms.CONST):
        pass
    ms = MSF()
    if shift is None:  # the ModelSamplingFlux node's rule at 768 x 512
        x1, x2 = 256, 4096
        mm = (1.15 - 0.5) / (x2 - x1)
        b = 0.5 - mm * x1
        shift = (768 * 512 / (8 * 8 * 2 * 2)) * mm + b
    ms.set_parameters(shift=shift)
    return ms


class Inner:
    def __init__(self, ms):
        self.model_sampling = ms

    def scale_latent_inpaint(self, sigma, noise, latent_image, **kwargs):  # model_base.BaseModel's rule
        return self.model_sampling.noise_scaling(sigma.reshape([sigma.shape[0]] + [1] * (len(noise.shape) - 1)),
                                                 noise, latent_image)


class Patcher:
    def __init__(self, ms):
        self.ms = ms
        self.model = Inner(ms)

    def get_model_object(self, name):
        assert name == "model_sampling"
        return self.ms


class ClosedFormGuider:
    """What KSAMPLER.sample's model_wrap provides: inner_model.model_sampling, model_patcher, and a call that
    returns the CFG-guided x0 prediction with ComfyUI's post-CFG hooks."""

    def __init__(self, ms, cfg=3.0):
        self.inner_model = Inner(ms)
        self.model_patcher = Patcher(ms)
        self.cfg = cfg

    @staticmethod
    def _d(x, sigma, m):
        v = 0.25
        s2 = sigma.reshape(-1, 1, 1, 1) ** 2
        return x * v / (v + s2) + m * s2 / (v + s2)

    def __call__(self, x, sigma, model_options=None, seed=None, **kwargs):
        model_options = model_options or {}
        cond, uncond = self._d(x, sigma, 0.3), self._d(x, sigma, -0.2)
        denoised = uncond + (cond - uncond) * self.cfg
        for fn in model_options.get("sampler_post_cfg_function", []):
            denoised = fn({"denoised": denoised, "cond_denoised": cond, "uncond_denoised": uncond, "model": None,
                           "uncond": None, "cond": None, "cond_scale": self.cfg, "sigma": sigma, "input": x,
                           "model_options": model_options})
        return denoised


def main(out_path):
    torch.manual_seed(0)
    out = {}
    latent = torch.randn(2, 16, 4, 4) * 0.5
    mask = torch.linspace(0, 1, 16).reshape(1, 1, 4, 4).repeat(2, 1, 1, 1)
    noise = comfy.sample.prepare_noise(latent, 7)
    out["in/latent"], out["in/mask"], out["in/noise"] = latent, mask, noise
    probe = torch.tensor([0.001, 0.25, 0.5, 0.9991, 1.0])
    out["in/probe"] = probe
    for name, (kind, shift, mult) in SAMPLINGS.items():
        ms = model_sampling(kind, shift, mult)
        out[f"ms/{name}/sigmas"] = ms.sigmas.float()
        out[f"ms/{name}/percent"] = torch.tensor([float(ms.percent_to_sigma(p)) for p in PERCENTS], dtype=torch.float64)
        out[f"ms/{name}/timestep"] = ms.timestep(probe).float()
        for sched in SCHEDULERS:
            for steps in (1, 4, 9):
                out[f"sigmas/{name}/{sched}/steps{steps}"] = cs.calculate_sigmas(ms, sched, steps).float()
        if name not in ("sd3", "flux"):
            continue
        guider = ClosedFormGuider(ms)
        for sampler in cs.KSampler.SAMPLERS:
            for sched in RUN_SCHEDULERS:
                for with_mask in (False, True):
                    if with_mask and (sampler not in MASK_SAMPLERS or sched != "simple"):
                        continue
                    n = 5
                    sig = cs.calculate_sigmas(ms, sched, n + 1 if sampler in DISCARD else n)
                    if sampler in DISCARD:
                        sig = torch.cat([sig[:-2], sig[-1:]])
                    ks = cs.sampler_object(sampler)
                    latent_in = latent * 1.0 if with_mask else torch.zeros_like(latent)
                    x = ks.sample(guider, sig, {"seed": 7, "model_options": {}}, None, noise, latent_in,
                                  mask if with_mask else None, True)
                    key = f"run/{name}/{sampler}/{sched}" + ("/mask" if with_mask else "")
                    out[key] = x.float()
    save_file({k: v.clone().contiguous() for k, v in out.items()}, out_path)
    print(f"wrote {len(out)} tensors to {out_path}")


if __name__ == "__main__":
    main(sys.argv[1])
