# ruff: noqa: I001  (comfy_env must be imported before any ComfyUI module)
"""Reference tensors for the Flux.1 / SD3.5 transformers and KSampler runs on them, made by ComfyUI 0.30.0.

    python tests/flow_models.py /tmp/flowmodels                  # the tiny model files (project venv)
    source ../shared/comfy/env.sh
    comfy_python tests/comfy_oracle/flow_transformers.py /tmp/flowmodels tests/data/flow_transformers.safetensors

ComfyUI loads each tiny transformer file with its own UNETLoader (its model detection, weight dtype rules and
model classes), then:
- fwd/<file>/<weight_dtype>: BaseModel.apply_model (x0 prediction) on in/x at in/sigma with in/context and
  in/pooled (Flux dev: guidance in/guidance);
- ks/<file>/<case>: nodes.common_ksampler (seed 5, 4 steps) from an empty latent (16 x 8 x 8 or the odd
  16 x 9 x 7), with a soft noise mask on in/latent, with denoise 0.6, through ModelSamplingFlux (640 x 512)
  and ModelSamplingSD3 (shift 2.0); conditioning [[in/context, {pooled_output, guidance}]] and
  [[in/negative, {pooled_output: in/neg_pooled}]].
"""

import sys

import comfy_env  # noqa: F401
import torch
from safetensors.torch import save_file

import folder_paths
import nodes
import comfy.sample
from comfy_extras.nodes_model_advanced import ModelSamplingFlux, ModelSamplingSD3

FILES = {  # file -> (family, weight dtypes to load it with)
    "flux_dev.safetensors": ("flux", ("default", "fp8_e4m3fn")),
    "flux_schnell.safetensors": ("flux", ("default",)),
    "flux_dev_bf16.safetensors": ("flux", ("default",)),
    "sd35_large.safetensors": ("sd3", ("default", "fp8_e4m3fn")),
    "sd35_medium.safetensors": ("sd3", ("default",)),
    "sd35_large_fp16.safetensors": ("sd3", ("default",)),
}
KSAMPLER_FILES = ("flux_dev.safetensors", "flux_schnell.safetensors", "sd35_large.safetensors",
                  "sd35_medium.safetensors")
CASES = {  # case -> (sampler, scheduler, latent shape, mask?, denoise, model patch)
    "euler_simple": ("euler", "simple", (1, 16, 8, 8), False, 1.0, None),
    "euler_normal_odd": ("euler", "normal", (1, 16, 9, 7), False, 1.0, None),
    "dpmpp_2m_beta": ("dpmpp_2m", "beta", (1, 16, 8, 8), False, 1.0, None),
    "euler_ancestral_simple": ("euler_ancestral", "simple", (1, 16, 8, 8), False, 1.0, None),
    "dpmpp_2m_sde_karras_mask": ("dpmpp_2m_sde", "karras", (1, 16, 8, 8), True, 1.0, None),
    "euler_simple_denoise": ("euler", "simple", (1, 16, 8, 8), False, 0.6, None),
    "euler_simple_msflux": ("euler", "simple", (1, 16, 8, 8), False, 1.0, "flux"),
    "euler_simple_mssd3": ("euler", "simple", (1, 16, 8, 8), False, 1.0, "sd3"),
}


def main(models_dir, out_path):
    folder_paths.folder_names_and_paths["diffusion_models"] = ([f"{models_dir}/diffusion_models"],
                                                               folder_paths.supported_pt_extensions)
    g = torch.Generator().manual_seed(3)
    out = {
        "in/x": torch.randn(2, 16, 8, 6, generator=g),
        "in/sigma": torch.tensor([0.8, 0.35]),
        "in/context": torch.randn(1, 5, 128, generator=g),
        "in/negative": torch.randn(1, 5, 128, generator=g),
        "in/pooled_flux": torch.randn(1, 32, generator=g),
        "in/pooled_sd3": torch.randn(1, 80, generator=g),
        "in/neg_pooled_sd3": torch.randn(1, 80, generator=g),
        "in/latent": torch.randn(1, 16, 8, 8, generator=g) * 0.5,
        "in/mask": torch.linspace(0, 1, 64).reshape(1, 8, 8),
        "in/guidance": torch.tensor([3.5, 5.0]),
    }
    for name, (family, dtypes) in FILES.items():
        for wd in dtypes:
            model = nodes.UNETLoader().load_unet(name, wd)[0]
            base = model.model
            x, sigma = out["in/x"], out["in/sigma"]
            ctx = out["in/context"].repeat(2, 1, 1)
            kw = {}
            if family == "flux":
                kw["y"] = out["in/pooled_flux"].repeat(2, 1)
                if base.diffusion_model.params.guidance_embed:
                    kw["guidance"] = out["in/guidance"]
            else:
                kw["y"] = out["in/pooled_sd3"].repeat(2, 1)
            comfy.model_management.load_models_gpu([model])
            with torch.no_grad():
                den = base.apply_model(x, sigma, c_crossattn=ctx, **kw)
            out[f"fwd/{name}/{wd}"] = den.float()
            if wd != "default" or name not in KSAMPLER_FILES:
                continue
            pooled = out["in/pooled_flux" if family == "flux" else "in/pooled_sd3"]
            neg_pooled = out["in/pooled_flux" if family == "flux" else "in/neg_pooled_sd3"] * -1.0
            pos = [[out["in/context"], {"pooled_output": pooled, "guidance": 4.0}]]
            neg = [[out["in/negative"], {"pooled_output": neg_pooled}]]
            cfg = 1.0 if "schnell" in name else (2.0 if family == "flux" else 4.5)
            for case, (sampler, sched, shape, masked, denoise, patch) in CASES.items():
                if patch == "flux" and family != "flux" or patch == "sd3" and family != "sd3":
                    continue
                m = model
                if patch == "flux":
                    m = ModelSamplingFlux().patch(model, 1.15, 0.5, 640, 512)[0]
                elif patch == "sd3":
                    m = ModelSamplingSD3().patch(model, 2.0)[0]
                if masked or denoise < 1.0:
                    latent = {"samples": out["in/latent"].clone()}
                else:
                    latent = {"samples": torch.zeros(shape)}
                if masked:
                    latent["noise_mask"] = out["in/mask"]
                res = nodes.common_ksampler(m, 5, 4, cfg, sampler, sched, pos, neg, latent, denoise=denoise)[0]
                out[f"ks/{name}/{case}"] = res["samples"].float()
    save_file({k: v.clone().contiguous() for k, v in out.items()}, out_path)
    print(f"wrote {len(out)} tensors to {out_path}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
