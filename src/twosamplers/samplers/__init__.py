"""Samplers by ComfyUI name.

`get_sampler(name)` returns a k-diffusion style function
`fn(model, x, sigmas, extra_args=None, callback=None, disable=None, **options) -> x`.
`SAMPLER_NAMES` lists the implemented names in ComfyUI 0.30.x's order.
"""

from __future__ import annotations

from collections.abc import Callable

from .._checks import check_choice
from . import ancestral, cfg_pp, dpm_solver, dpmpp, exponential, multistep, ode, sa_solver, unipc

# ComfyUI 0.30.x's KSampler list, in its order.
COMFYUI_SAMPLER_NAMES: tuple[str, ...] = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "exp_heun_2_x0", "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive",
    "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m",
    "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
    "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp",
    "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver",
    "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)  # fmt: skip

# Samplers that KSampler gives steps + 1 sigmas with the second-to-last dropped.
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})

# Samplers whose inpaint blend uses fresh noise from seed + 1 instead of the initial noise (ComfyUI's ddim).
RANDOM_INPAINT_NOISE_SAMPLERS = frozenset({"ddim"})

# Samplers that, in ComfyUI, overwrite a final sigma of 0 with 0.001 in the schedule (ksampler._last_sigma).
UNIPC_SAMPLERS = frozenset({"uni_pc", "uni_pc_bh2"})

SamplerFn = Callable[..., object]


def _gpu(fn: SamplerFn) -> SamplerFn:
    """The `_gpu` twin of an SDE sampler: Brownian tree kept on x's device."""

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
        return fn(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, cpu_noise=False,
                  **options)

    sample.__name__ = fn.__name__ + "_gpu"
    sample.__doc__ = fn.__doc__
    return sample


def _heun_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
    return dpmpp.sample_dpmpp_2m_sde(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                                     solver_type="heun", **options)


_REGISTRY: dict[str, SamplerFn] = {
    "euler": ode.sample_euler,
    "euler_ancestral": ancestral.sample_euler_ancestral,
    "heun": ode.sample_heun,
    "heunpp2": ode.sample_heunpp2,
    "dpm_2": ode.sample_dpm_2,
    "dpm_2_ancestral": ancestral.sample_dpm_2_ancestral,
    "lms": ode.sample_lms,
    "dpm_fast": dpm_solver.sample_dpm_fast,
    "dpm_adaptive": dpm_solver.sample_dpm_adaptive,
    "dpmpp_2s_ancestral": ancestral.sample_dpmpp_2s_ancestral,
    "dpmpp_sde": dpmpp.sample_dpmpp_sde,
    "dpmpp_sde_gpu": _gpu(dpmpp.sample_dpmpp_sde),
    "dpmpp_2m": dpmpp.sample_dpmpp_2m,
    "dpmpp_2m_sde": dpmpp.sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": _gpu(dpmpp.sample_dpmpp_2m_sde),
    "dpmpp_2m_sde_heun": _heun_2m_sde,
    "dpmpp_2m_sde_heun_gpu": _gpu(_heun_2m_sde),
    "dpmpp_3m_sde": dpmpp.sample_dpmpp_3m_sde,
    "dpmpp_3m_sde_gpu": _gpu(dpmpp.sample_dpmpp_3m_sde),
    "ddpm": ancestral.sample_ddpm,
    "lcm": ancestral.sample_lcm,
    "ddim": ode.sample_euler,
    "uni_pc": unipc.sample_uni_pc,
    "uni_pc_bh2": unipc.sample_uni_pc_bh2,
    "euler_cfg_pp": cfg_pp.sample_euler_cfg_pp,
    "euler_ancestral_cfg_pp": cfg_pp.sample_euler_ancestral_cfg_pp,
    "dpmpp_2s_ancestral_cfg_pp": cfg_pp.sample_dpmpp_2s_ancestral_cfg_pp,
    "dpmpp_2m_cfg_pp": cfg_pp.sample_dpmpp_2m_cfg_pp,
    "exp_heun_2_x0": exponential.sample_exp_heun_2_x0,
    "exp_heun_2_x0_sde": exponential.sample_exp_heun_2_x0_sde,
    "ipndm": multistep.sample_ipndm,
    "ipndm_v": multistep.sample_ipndm_v,
    "deis": multistep.sample_deis,
    "res_multistep": multistep.sample_res_multistep,
    "res_multistep_cfg_pp": multistep.sample_res_multistep_cfg_pp,
    "res_multistep_ancestral": multistep.sample_res_multistep_ancestral,
    "res_multistep_ancestral_cfg_pp": multistep.sample_res_multistep_ancestral_cfg_pp,
    "gradient_estimation": multistep.sample_gradient_estimation,
    "gradient_estimation_cfg_pp": multistep.sample_gradient_estimation_cfg_pp,
    "er_sde": exponential.sample_er_sde,
    "seeds_2": exponential.sample_seeds_2,
    "seeds_3": exponential.sample_seeds_3,
    "sa_solver": sa_solver.sample_sa_solver,
    "sa_solver_pece": sa_solver.sample_sa_solver_pece,
}


SAMPLER_NAMES: tuple[str, ...] = tuple(n for n in COMFYUI_SAMPLER_NAMES if n in _REGISTRY)


def get_sampler(name: str) -> SamplerFn:
    """The sampler function for a ComfyUI sampler name; unknown names raise ValueError listing valid ones."""
    check_choice("sampler_name", name, SAMPLER_NAMES)
    return _REGISTRY[name]


__all__ = [
    "COMFYUI_SAMPLER_NAMES",
    "DISCARD_PENULTIMATE_SIGMA_SAMPLERS",
    "RANDOM_INPAINT_NOISE_SAMPLERS",
    "SAMPLER_NAMES",
    "UNIPC_SAMPLERS",
    "get_sampler",
]
