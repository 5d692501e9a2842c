"""ComfyUI's custom-sampling family: a sampler, a sigma schedule, noise and a guider given as separate nodes
and put together by SamplerCustom / SamplerCustomAdvanced, all on the engine's own pieces
(`passes.common_ksampler` with an explicit schedule). Also ConditioningZeroOut, which these templates use
for an empty negative.

Types: SAMPLER (`SamplerChoice`: a sampler name), SIGMAS (a 1-D float tensor), NOISE (`SeededNoise` or
`NoNoise`), GUIDER (`Guider`: model, conditioning, cfg; DualCFGGuider's adds a second prompt and scale).
Both samplers return (output, denoised_output):
the sampled latent, and the model's x0 prediction at the last step (the output when no step ran).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import MAX_CFG, MAX_STEPS, SEED_MAX, check_choice, check_float, check_int, check_seed, check_tensor
from ..engine.ksampler import DualCFG
from ..engine.latent import check_latent, remake_empty_latent
from ..engine.passes import as_entries, common_ksampler
from ..engine.schedules import SCHEDULER_NAMES, calculate_sigmas, exponential_scheduler, karras_scheduler
from ..samplers import SAMPLER_NAMES
from .core import _check_model

SIGMA_LIMIT = 5000.0
CFG = ("FLOAT", {"default": 8.0, "min": 0.0, "max": MAX_CFG, "step": 0.1, "round": 0.01})
NOISE_SEED = ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True})
SIGMA_MAX = ("FLOAT", {"default": 14.614642, "min": 0.0, "max": SIGMA_LIMIT, "step": 0.01, "round": False})
SIGMA_MIN = ("FLOAT", {"default": 0.0291675, "min": 0.0, "max": SIGMA_LIMIT, "step": 0.01, "round": False})


@dataclass(frozen=True)
class SamplerChoice:
    """SAMPLER: which sampler function runs (KSamplerSelect's choice)."""

    name: str


@dataclass(frozen=True)
class SeededNoise:
    """NOISE: ComfyUI's seeded initial noise (per batch_index)."""

    seed: int


@dataclass(frozen=True)
class NoNoise:
    """NOISE: zeros (DisableNoise); the samplers' own noise is then seeded with 0."""

    seed: int = 0


@dataclass(frozen=True)
class Guider:
    """GUIDER: the model and conditioning a sampler denoises with; cfg 1 with no negative is BasicGuider;
    `dual` set is DualCFGGuider (positive = cond1, cfg = cfg_conds)."""

    model: object
    positive: list
    negative: list | None
    cfg: float = 1.0
    dual: DualCFG | None = None


def check_sigmas(sigmas, name: str = "sigmas") -> torch.Tensor:
    sigmas = check_tensor(name, sigmas, ndims=(1,))
    if sigmas.numel() and (not torch.isfinite(sigmas).all() or (sigmas < 0).any()):
        raise ValueError(f"{name} must be finite and >= 0, got {sigmas.tolist()[:8]}")
    return sigmas


def _sample(model, positive, negative, cfg, sampler, sigmas, latent_image, seed, add_noise, disable_pbar, dual=None):
    """Run the custom sampler -> (output LATENT, denoised_output LATENT)."""
    _check_model(model)
    if not isinstance(sampler, SamplerChoice):
        raise TypeError(f"sampler must be a SAMPLER (from KSamplerSelect), got {type(sampler).__name__}")
    sigmas = check_sigmas(sigmas)
    latent = remake_empty_latent(check_latent(latent_image, "latent_image"), model.latent_format)
    if negative is None:  # BasicGuider: no unconditional prediction (cfg 1 never asks for it)
        negative = positive
    if sigmas.numel() < 2 or float(sigmas[0]) <= 0.0:
        out = dict(latent)
        return out, dict(out)
    last = {}

    def keep_x0(step, x0, x, total):
        last["x0"] = x0

    out = common_ksampler(model, seed, sigmas.numel() - 1, cfg, sampler.name, "normal", positive, negative, latent,
                          disable_noise=not add_noise, sigmas=sigmas, callback=keep_x0, disable_pbar=disable_pbar,
                          dual=dual)
    denoised = dict(latent)
    if "x0" in last:
        denoised["samples"] = model.latent_format.process_out(last["x0"].float()).to(out["samples"].device)
    else:
        denoised = dict(out)
    return out, denoised


class SamplerCustom:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",), "add_noise": ("BOOLEAN", {"default": True}), "noise_seed": NOISE_SEED, "cfg": CFG,
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "sampler": ("SAMPLER",),
            "sigmas": ("SIGMAS",), "latent_image": ("LATENT",)}}

    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("output", "denoised_output")
    FUNCTION = "sample"
    CATEGORY = "sampling/custom_sampling"

    def sample(self, model, add_noise, noise_seed, cfg, positive, negative, sampler, sigmas, latent_image, *,
               disable_pbar=None):
        seed = check_seed("noise_seed", noise_seed)
        cfg = check_float("cfg", cfg, 0.0, MAX_CFG)
        return _sample(model, positive, negative, cfg, sampler, sigmas, latent_image, seed, bool(add_noise),
                       disable_pbar)


class SamplerCustomAdvanced:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"noise": ("NOISE",), "guider": ("GUIDER",), "sampler": ("SAMPLER",),
                             "sigmas": ("SIGMAS",), "latent_image": ("LATENT",)}}

    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("output", "denoised_output")
    FUNCTION = "sample"
    CATEGORY = "sampling/custom_sampling"

    def sample(self, noise, guider, sampler, sigmas, latent_image, *, disable_pbar=None):
        if not isinstance(noise, (SeededNoise, NoNoise)):
            raise TypeError(f"noise must be a NOISE (from RandomNoise or DisableNoise), got {type(noise).__name__}")
        if not isinstance(guider, Guider):
            raise TypeError(f"guider must be a GUIDER (from CFGGuider, BasicGuider or DualCFGGuider), got "
                            f"{type(guider).__name__}")
        return _sample(guider.model, guider.positive, guider.negative, guider.cfg, sampler, sigmas, latent_image,
                       noise.seed, isinstance(noise, SeededNoise), disable_pbar, guider.dual)


class KSamplerSelect:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sampler_name": (list(SAMPLER_NAMES),)}}

    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"
    CATEGORY = "sampling/custom_sampling/samplers"

    def get_sampler(self, sampler_name):
        return (SamplerChoice(check_choice("sampler_name", sampler_name, SAMPLER_NAMES)),)


class BasicScheduler:
    """The model's schedule for `steps` steps; denoise < 1 keeps the last steps + 1 sigmas of int(steps /
    denoise) steps (denoise 0: no sigmas)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "scheduler": (list(SCHEDULER_NAMES),),
                             "steps": ("INT", {"default": 20, "min": 1, "max": MAX_STEPS}),
                             "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})}}

    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"
    CATEGORY = "sampling/custom_sampling/schedulers"

    def get_sigmas(self, model, scheduler, steps, denoise):
        _check_model(model)
        check_choice("scheduler", scheduler, SCHEDULER_NAMES)
        steps = check_int("steps", steps, 1, MAX_STEPS)
        denoise = check_float("denoise", denoise, 0.0, 1.0)
        total = steps
        if denoise < 1.0:
            if denoise <= 0.0:
                return (torch.zeros([0]),)
            total = int(steps / denoise)
        sigmas = calculate_sigmas(model.model_sampling, scheduler, total).cpu()
        return (sigmas[-(steps + 1):],)


class KarrasScheduler:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 20, "min": 1, "max": MAX_STEPS}),
                             "sigma_max": SIGMA_MAX, "sigma_min": SIGMA_MIN,
                             "rho": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.01,
                                              "round": False})}}

    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"
    CATEGORY = "sampling/custom_sampling/schedulers"

    def get_sigmas(self, steps, sigma_max, sigma_min, rho):
        steps = check_int("steps", steps, 1, MAX_STEPS)
        sigma_max = check_float("sigma_max", sigma_max, 0.0, SIGMA_LIMIT)
        sigma_min = check_float("sigma_min", sigma_min, 0.0, SIGMA_LIMIT)
        rho = check_float("rho", rho, 0.0, 100.0)
        if rho == 0.0:
            raise ValueError("rho must be > 0 (the schedule divides by it)")
        return (karras_scheduler(steps, sigma_min, sigma_max, rho),)


class ExponentialScheduler:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 20, "min": 1, "max": MAX_STEPS}),
                             "sigma_max": SIGMA_MAX, "sigma_min": SIGMA_MIN}}

    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"
    CATEGORY = "sampling/custom_sampling/schedulers"

    def get_sigmas(self, steps, sigma_max, sigma_min):
        steps = check_int("steps", steps, 1, MAX_STEPS)
        sigma_max = check_float("sigma_max", sigma_max, 0.0, SIGMA_LIMIT)
        sigma_min = check_float("sigma_min", sigma_min, 0.0, SIGMA_LIMIT)
        if sigma_min <= 0.0 or sigma_max <= 0.0:
            raise ValueError("sigma_min and sigma_max must be > 0 for the exponential schedule (it takes their log)")
        return (exponential_scheduler(steps, sigma_min, sigma_max),)


class SDTurboScheduler:
    """SD-Turbo's schedule: `steps` of the timesteps 999, 899, ..., 99, starting 10 * (1 - denoise) in."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "steps": ("INT", {"default": 1, "min": 1, "max": 10}),
                             "denoise": ("FLOAT", {"default": 1.0, "min": 0, "max": 1.0, "step": 0.01})}}

    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"
    CATEGORY = "sampling/custom_sampling/schedulers"

    def get_sigmas(self, model, steps, denoise):
        _check_model(model)
        steps = check_int("steps", steps, 1, 10)
        denoise = check_float("denoise", denoise, 0.0, 1.0)
        start = 10 - int(10 * denoise)
        timesteps = torch.flip(torch.arange(1, 11) * 100 - 1, (0,))[start:start + steps]
        sigmas = model.model_sampling.sigma(timesteps).float().cpu()
        return (torch.cat([sigmas, sigmas.new_zeros([1])]),)


class SplitSigmas:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sigmas": ("SIGMAS",), "step": ("INT", {"default": 0, "min": 0, "max": MAX_STEPS})}}

    RETURN_TYPES = ("SIGMAS", "SIGMAS")
    RETURN_NAMES = ("high_sigmas", "low_sigmas")
    FUNCTION = "get_sigmas"
    CATEGORY = "sampling/custom_sampling/sigmas"

    def get_sigmas(self, sigmas, step):
        sigmas = check_sigmas(sigmas)
        step = check_int("step", step, 0, MAX_STEPS)
        return (sigmas[:step + 1].clone(), sigmas[step:].clone())


class SplitSigmasDenoise:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sigmas": ("SIGMAS",),
                             "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})}}

    RETURN_TYPES = ("SIGMAS", "SIGMAS")
    RETURN_NAMES = ("high_sigmas", "low_sigmas")
    FUNCTION = "get_sigmas"
    CATEGORY = "sampling/custom_sampling/sigmas"

    def get_sigmas(self, sigmas, denoise):
        sigmas = check_sigmas(sigmas)
        denoise = check_float("denoise", denoise, 0.0, 1.0)
        total = round(max(sigmas.shape[-1] - 1, 0) * denoise)
        return (sigmas[:-total].clone() if total else sigmas[:0].clone(), sigmas[-(total + 1):].clone())


class FlipSigmas:
    """The schedule reversed (for inversion); a leading 0 becomes 0.0001."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sigmas": ("SIGMAS",)}}

    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"
    CATEGORY = "sampling/custom_sampling/sigmas"

    def get_sigmas(self, sigmas):
        sigmas = check_sigmas(sigmas)
        if len(sigmas) == 0:
            return (sigmas.clone(),)
        out = sigmas.flip(0).clone()
        if out[0] == 0:
            out[0] = 0.0001
        return (out,)


class RandomNoise:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"noise_seed": NOISE_SEED}}

    RETURN_TYPES = ("NOISE",)
    FUNCTION = "get_noise"
    CATEGORY = "sampling/custom_sampling/noise"

    def get_noise(self, noise_seed):
        return (SeededNoise(check_seed("noise_seed", noise_seed)),)


class DisableNoise:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("NOISE",)
    FUNCTION = "get_noise"
    CATEGORY = "sampling/custom_sampling/noise"

    def get_noise(self):
        return (NoNoise(),)


class CFGGuider:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "cfg": CFG}}

    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"
    CATEGORY = "sampling/custom_sampling/guiders"

    def get_guider(self, model, positive, negative, cfg):
        _check_model(model)
        as_entries(positive, "positive")
        as_entries(negative, "negative")
        return (Guider(model, positive, negative, check_float("cfg", cfg, 0.0, MAX_CFG)),)


class DualCFGGuider:
    """Two prompts guided at two scales (InstructPix2Pix / CosXL edit: the text instruction against the image
    alone, the image against nothing): engine.ksampler.DualCFG gives the formulas of both styles."""

    STYLES = ("regular", "nested")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "cond1": ("CONDITIONING",), "cond2": ("CONDITIONING",),
                             "negative": ("CONDITIONING",), "cfg_conds": CFG, "cfg_cond2_negative": CFG,
                             "style": (list(cls.STYLES),)}}

    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"
    CATEGORY = "sampling/custom_sampling/guiders"

    def get_guider(self, model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative, style="regular"):
        _check_model(model)
        as_entries(cond1, "cond1")
        as_entries(cond2, "cond2")
        as_entries(negative, "negative")
        style = check_choice("style", style, self.STYLES)
        dual = DualCFG(cond2, check_float("cfg_cond2_negative", cfg_cond2_negative, 0.0, MAX_CFG), style == "nested")
        return (Guider(model, cond1, negative, check_float("cfg_conds", cfg_conds, 0.0, MAX_CFG), dual),)


class BasicGuider:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "conditioning": ("CONDITIONING",)}}

    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"
    CATEGORY = "sampling/custom_sampling/guiders"

    def get_guider(self, model, conditioning):
        _check_model(model)
        as_entries(conditioning, "conditioning")
        return (Guider(model, conditioning, None, 1.0),)


class ConditioningZeroOut:
    """The conditioning with its tensors zeroed (cond and pooled_output); other entries kept."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "zero_out"
    CATEGORY = "advanced/conditioning"

    def zero_out(self, conditioning):
        as_entries(conditioning, "conditioning")
        out = []
        for cond, extras in conditioning:
            extras = dict(extras)
            if extras.get("pooled_output") is not None:
                extras["pooled_output"] = torch.zeros_like(extras["pooled_output"])
            out.append([torch.zeros_like(cond), extras])
        return (out,)


__all__ = ["BasicGuider", "BasicScheduler", "CFGGuider", "ConditioningZeroOut", "DisableNoise", "DualCFGGuider",
           "ExponentialScheduler", "FlipSigmas", "Guider", "KSamplerSelect", "KarrasScheduler", "NoNoise",
           "RandomNoise", "SDTurboScheduler", "SamplerChoice", "SamplerCustom", "SamplerCustomAdvanced",
           "SeededNoise", "SplitSigmas", "SplitSigmasDenoise", "check_sigmas"]
