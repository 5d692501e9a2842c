"""Sampler providers: KSAMPLER (a KSampler with all its settings) and KSAMPLER_ADVANCED (a KSamplerAdvanced
whose seed and steps the consuming node gives), as ComfyUI-Impact-Pack's KSamplerProvider and
KSamplerAdvancedProvider make them (`shared/spec/two-samplers.md`, "Types").

`KSamplerWrapper.sample(latent)` is `common_ksampler` with the stored settings. `KSamplerAdvancedWrapper`
reproduces Impact's "separated sample": the schedule is computed for `steps` at denoise 1, sliced like
KSamplerAdvanced, multiplied by sigma_factor (and by the recovery ratio), and an optional recovery pass
re-runs the step with a deterministic sampler for the samplers that break when called one step at a time.
"""

from __future__ import annotations

import torch

from .._checks import SEED_MAX, check_choice, check_float, check_int, check_seed
from ..conditioning import check_batch, normalize_conditioning
from ..ksampler import MAX_CFG, MAX_STEPS, common_ksampler, compute_sigmas, sample_with_sigmas
from ..latent import check_latent, fit_latent_channels
from ..mask_tools import composite
from ..masks import check_mask
from ..noise import BrownianTreeNoiseSampler, prepare_noise
from ..samplers import SAMPLER_NAMES
from ..schedules import SCHEDULER_NAMES, calculate_sigmas

CATEGORY = "ImpactPack/Sampler"

# Samplers for which Impact runs a recovery pass in per-step use ("additional_mode").
RECOVERY_SAMPLERS = ("uni_pc", "uni_pc_bh2", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
                     "dpmpp_3m_sde", "dpmpp_3m_sde_gpu")
# ... of which these recover with dpm_fast (AUTO); the 2m/3m SDE ones with dpmpp_2m. Every recovery call covers
# exactly the steps of the main call: upstream's "2 steps back" compensation can never be reached (it is 0).
_RECOVER_WITH_DPM_FAST = ("uni_pc", "uni_pc_bh2", "dpmpp_sde", "dpmpp_sde_gpu")
RECOVERY_MODES = ("DISABLE", "ratio additional", "ratio between")
ADDITIONAL_SAMPLERS = ("AUTO", "euler", "heun", "heunpp2", "dpm_2", "dpm_fast", "dpmpp_2m", "ddpm")
# Impact wraps these SDE samplers so that their Brownian tree spans the FULL schedule (value: tree on the CPU).
_IMPACT_BROWNIAN = {"dpmpp_sde": True, "dpmpp_sde_gpu": False, "dpmpp_2m_sde": True, "dpmpp_2m_sde_gpu": False,
                    "dpmpp_3m_sde": True, "dpmpp_3m_sde_gpu": False}
BROWNIAN_TREE_MODES = ("schedule", "call")


def _check_model(model, name: str = "model") -> None:
    for attr in ("apply_model", "model_sampling", "latent_format"):
        if not hasattr(model, attr):
            raise TypeError(f"{name} must implement the twosamplers model protocol (missing {attr!r}); "
                            "wrap a plain network with twosamplers.models.NetworkModel")


def check_basic_pipe(basic_pipe) -> tuple:
    if not isinstance(basic_pipe, (tuple, list)) or len(basic_pipe) != 5:
        raise TypeError("basic_pipe must be a BASIC_PIPE tuple (model, clip, vae, positive, negative), got "
                        f"{type(basic_pipe).__name__}" + (f" of length {len(basic_pipe)}"
                                                          if isinstance(basic_pipe, (tuple, list)) else ""))
    return tuple(basic_pipe)


def check_ksampler(obj, name: str):
    """A KSAMPLER: an object with .sample(latent) (KSamplerWrapper)."""
    if not callable(getattr(obj, "sample", None)):
        kind = " (that is a KSAMPLER_ADVANCED; this input takes a KSAMPLER from KSamplerProvider)" \
            if callable(getattr(obj, "sample_advanced", None)) else ""
        raise TypeError(f"{name} must be a KSAMPLER (an object with .sample(latent), e.g. from KSamplerProvider); "
                        f"got {type(obj).__name__}{kind}")
    return obj


def check_advanced_sampler(obj, name: str):
    """A KSAMPLER_ADVANCED: an object with .sample_advanced(...) (KSamplerAdvancedWrapper)."""
    if not callable(getattr(obj, "sample_advanced", None)):
        kind = " (that is a KSAMPLER; this input takes a KSAMPLER_ADVANCED from KSamplerAdvancedProvider)" \
            if callable(getattr(obj, "sample", None)) else ""
        raise TypeError(f"{name} must be a KSAMPLER_ADVANCED (an object with .sample_advanced(...), e.g. from "
                        f"KSamplerAdvancedProvider); got {type(obj).__name__}{kind}")
    return obj


# ------------------------------------------------------------------------------------------------
# KSAMPLER
# ------------------------------------------------------------------------------------------------
class KSamplerWrapper:
    """A KSAMPLER: `.sample(latent)` == common_ksampler(model, seed, steps, cfg, sampler_name, scheduler,
    positive, negative, latent, denoise=denoise). Settings are validated here, so a bad one fails early."""

    def __init__(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, denoise=1.0):
        _check_model(model)
        self.model = model
        self.seed = check_seed("seed", seed)
        self.steps = check_int("steps", steps, 1, MAX_STEPS)
        self.cfg = check_float("cfg", cfg, 0.0, MAX_CFG)
        self.sampler_name = check_choice("sampler_name", sampler_name, SAMPLER_NAMES)
        self.scheduler = check_choice("scheduler", scheduler, SCHEDULER_NAMES)
        normalize_conditioning(positive, "positive")
        normalize_conditioning(negative, "negative")
        self.positive, self.negative = positive, negative
        self.denoise = check_float("denoise", denoise, 0.0, 1.0)

    @property
    def params(self) -> tuple:
        return (self.model, self.seed, self.steps, self.cfg, self.sampler_name, self.scheduler, self.positive,
                self.negative, self.denoise)

    def __repr__(self) -> str:
        return (f"KSamplerWrapper(seed={self.seed}, steps={self.steps}, cfg={self.cfg}, sampler_name="
                f"{self.sampler_name!r}, scheduler={self.scheduler!r}, denoise={self.denoise})")

    def sample(self, latent_image: dict, *, callback=None, disable_pbar=None, model_options=None) -> dict:
        """Sample `latent_image` (its noise_mask, if any, is honoured); returns a new LATENT dict."""
        return common_ksampler(self.model, self.seed, self.steps, self.cfg, self.sampler_name, self.scheduler,
                               self.positive, self.negative, latent_image, denoise=self.denoise, callback=callback,
                               disable_pbar=disable_pbar, model_options=model_options)


class KSamplerProvider:
    """Impact Pack's KSamplerProvider: settings + BASIC_PIPE -> KSAMPLER."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX}),
                "steps": ("INT", {"default": 20, "min": 1, "max": MAX_STEPS}),
                "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": MAX_CFG}),
                "sampler_name": (list(SAMPLER_NAMES),),
                "scheduler": (list(SCHEDULER_NAMES),),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                "basic_pipe": ("BASIC_PIPE",),
            }
        }

    RETURN_TYPES = ("KSAMPLER",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, seed, steps, cfg, sampler_name, scheduler, denoise, basic_pipe):
        model, _clip, _vae, positive, negative = check_basic_pipe(basic_pipe)
        return (KSamplerWrapper(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, denoise),)


# ------------------------------------------------------------------------------------------------
# KSAMPLER_ADVANCED
# ------------------------------------------------------------------------------------------------
def separated_sample(model, add_noise, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                     start_at_step, end_at_step, return_with_leftover_noise, sigma_ratio=1.0, sampler_opt=None,
                     noise=None, *, total_sigmas=None, brownian_tree="schedule", callback=None, disable_pbar=None,
                     model_options=None) -> dict:
    """One KSamplerAdvanced-style call the way Impact Pack makes it (positive/negative already normalized).

    - the schedule is `steps` long at denoise 1 (steps + 1 with the penultimate dropped for dpm_2/uni_pc);
    - end slicing: sigmas[:end + 1] and, unless return_with_leftover_noise, the last sigma set to 0;
    - start slicing: if start < len - 1: sigmas[start:] * sigma_ratio (Python slicing: a negative start counts
      from the end), else the latent comes back untouched;
    - `noise` (a tensor) is used as given; otherwise seeded noise if add_noise, else zeros;
    - with return_with_leftover_noise False the result is the LAST STEP'S x0 prediction (Impact returns the
      preview callback's x0), which equals the sampler output for samplers whose last step returns it;
    - brownian_tree "schedule": dpmpp_(2m_|3m_)sde(_gpu) draw from a Brownian tree over the FULL unscaled
      schedule (Impact's wrapper); "call": over the sigmas of this call (ComfyUI's own samplers).
    """
    ms = model.model_sampling
    if total_sigmas is None:
        if sampler_opt is None:
            total_sigmas = compute_sigmas(ms, sampler_name, scheduler, steps, 1.0)
        else:
            total_sigmas = calculate_sigmas(ms, scheduler, steps)
    sigmas = total_sigmas
    if end_at_step is not None and end_at_step < len(total_sigmas) - 1:
        sigmas = total_sigmas[: end_at_step + 1].clone()
        if not return_with_leftover_noise:
            sigmas[-1] = 0
    out = dict(latent)
    if start_at_step is not None:
        if start_at_step < len(sigmas) - 1:
            sigmas = sigmas[start_at_step:] * sigma_ratio
        else:
            out["samples"] = latent["samples"].clone()
            return out
    sampler = sampler_name if sampler_opt is None else sampler_opt
    samples = fit_latent_channels(latent["samples"], model.latent_format.channels)
    if sigmas.numel() == 0 or float(sigmas[0]) <= 0.0:
        # nothing to denoise (e.g. sigma_factor 0): upstream divides by zero; we return the latent unchanged
        out["samples"] = samples.clone()
        return out
    if noise is None:
        if add_noise:
            noise = prepare_noise(samples, seed, latent.get("batch_index"))
        else:
            noise = torch.zeros(samples.size(), dtype=samples.dtype, layout=samples.layout)
    check_batch(positive, samples.shape[0], "positive")
    check_batch(negative, samples.shape[0], "negative")

    sampler_options = None
    if brownian_tree == "schedule" and sampler_opt is None and sampler_name in _IMPACT_BROWNIAN:
        positive_sigmas = total_sigmas[total_sigmas > 0]
        like = torch.zeros(samples.shape, dtype=torch.float32, device=model.device)
        sampler_options = {"noise_sampler": BrownianTreeNoiseSampler(
            like, positive_sigmas.min(), total_sigmas.max(), seed=seed, cpu=_IMPACT_BROWNIAN[sampler_name])}

    last_x0 = []

    def cb(step, x0, x, total):
        last_x0[:] = [x0]
        if callback is not None:
            callback(step, x0, x, total)

    result = sample_with_sigmas(model, noise, sigmas, samples, positive, negative, cfg, sampler, seed,
                                latent.get("noise_mask"), callback=cb, disable_pbar=disable_pbar,
                                model_options=model_options, sampler_options=sampler_options)
    if not return_with_leftover_noise and last_x0:
        result = model.latent_format.process_out(last_x0[0].to(torch.float32).cpu())
    out["samples"] = result
    return out


class KSamplerAdvancedWrapper:
    """A KSAMPLER_ADVANCED: cfg, sampler, scheduler, conditioning and sigma_factor; seed and steps come with
    each `.sample_advanced(...)` call.

    `sampler_opt` (optional) is a sampler name that replaces `sampler_name` for sampling; the schedule is then
    computed without the dpm_2/uni_pc penultimate-sigma rule (as upstream does for a custom SAMPLER).
    `brownian_tree`: "schedule" (Impact's wrapper, default) or "call" (see `separated_sample`).
    """

    def __init__(self, model, cfg, sampler_name, scheduler, positive, negative, sampler_opt=None, sigma_factor=1.0,
                 *, brownian_tree: str = "schedule"):
        _check_model(model)
        self.model = model
        self.cfg = check_float("cfg", cfg, 0.0, MAX_CFG)
        self.sampler_name = check_choice("sampler_name", sampler_name, SAMPLER_NAMES)
        self.scheduler = check_choice("scheduler", scheduler, SCHEDULER_NAMES)
        self._pos = normalize_conditioning(positive, "positive")
        self._neg = normalize_conditioning(negative, "negative")
        self.positive, self.negative = positive, negative
        if sampler_opt is not None:
            sampler_opt = check_choice("sampler_opt", sampler_opt, SAMPLER_NAMES)
        self.sampler_opt = sampler_opt
        self.sigma_factor = check_float("sigma_factor", sigma_factor, 0.0, 10.0)
        self.brownian_tree = check_choice("brownian_tree", brownian_tree, BROWNIAN_TREE_MODES)
        self._sigma_cache: dict[tuple, torch.Tensor] = {}

    @property
    def params(self) -> tuple:
        return (self.model, self.cfg, self.sampler_name, self.scheduler, self.positive, self.negative,
                self.sigma_factor)

    def __repr__(self) -> str:
        return (f"KSamplerAdvancedWrapper(cfg={self.cfg}, sampler_name={self.sampler_name!r}, scheduler="
                f"{self.scheduler!r}, sigma_factor={self.sigma_factor}, sampler_opt={self.sampler_opt!r})")

    def total_sigmas(self, sampler_name: str, steps: int) -> torch.Tensor:
        """The full schedule for `steps` at denoise 1 (cached; callers must not modify it)."""
        key = (sampler_name, self.sampler_opt is None, steps)
        if key not in self._sigma_cache:
            ms = self.model.model_sampling
            if self.sampler_opt is None:
                self._sigma_cache[key] = compute_sigmas(ms, sampler_name, self.scheduler, steps, 1.0)
            else:
                self._sigma_cache[key] = calculate_sigmas(ms, self.scheduler, steps)
        return self._sigma_cache[key]

    def _call(self, sampler_name, add_noise, seed, steps, latent, start, end, leftover, ratio, noise, callback,
              disable_pbar, model_options):
        return separated_sample(self.model, add_noise, seed, steps, self.cfg, sampler_name, self.scheduler, self._pos,
                                self._neg, latent, start, end, leftover, sigma_ratio=ratio,
                                sampler_opt=self.sampler_opt, noise=noise,
                                total_sigmas=self.total_sigmas(sampler_name, steps), brownian_tree=self.brownian_tree,
                                callback=callback, disable_pbar=disable_pbar, model_options=model_options)

    def sample_advanced(self, add_noise, seed, steps, latent_image, start_at_step, end_at_step,
                        return_with_leftover_noise, *, recovery_mode="DISABLE", recovery_sampler="AUTO",
                        recovery_sigma_ratio=0.3, noise=None, callback=None, disable_pbar=None, model_options=None):
        """KSamplerAdvanced (add_noise, seed, steps, start/end step, leftover noise) with sigmas * sigma_factor.

        recovery_mode "ratio between" / "ratio additional" (used by RegionalSampler; off by default here):
        for uni_pc(_bh2) and the dpmpp SDE samplers the step runs at sigmas * (1 - r) ("between") or * 1
        ("additional"), the result is composited into the input through the noise mask, and a recovery sampler
        (AUTO: dpm_fast for uni_pc/dpmpp_sde, dpmpp_2m for the 2m/3m SDE ones) runs the same steps at
        sigmas * r, with no noise tensor: fresh seeded noise when add_noise is true, zeros when it is false.
        `noise` overrides the main call's initial noise tensor (then add_noise is not consulted for it).
        """
        seed = check_seed("seed", seed)
        steps = check_int("steps", steps, 1, MAX_STEPS)
        check_latent(latent_image, "latent_image")
        if latent_image.get("noise_mask") is not None:
            check_mask(latent_image["noise_mask"], "latent_image['noise_mask']")
        if start_at_step is not None:
            start_at_step = check_int("start_at_step", start_at_step, 0)
        if end_at_step is not None:
            end_at_step = check_int("end_at_step", end_at_step, 0)
        check_choice("recovery_mode", recovery_mode, RECOVERY_MODES)
        check_choice("recovery_sampler", recovery_sampler, ADDITIONAL_SAMPLERS)
        r = check_float("recovery_sigma_ratio", recovery_sigma_ratio, 0.0, 1.0)
        if noise is not None and (not isinstance(noise, torch.Tensor)
                                  or tuple(noise.shape) != tuple(latent_image["samples"].shape)):
            raise ValueError(f"noise must be a tensor shaped like latent_image['samples'] "
                             f"{tuple(latent_image['samples'].shape)}")
        leftover = bool(return_with_leftover_noise)
        recover = recovery_mode != "DISABLE" and self.sampler_name in RECOVERY_SAMPLERS
        ratio = (1.0 - r if recovery_mode == "ratio between" else 1.0) if recover else 1.0
        base_image = latent_image
        latent = latent_image
        if ratio > 0:
            latent = self._call(self.sampler_name, add_noise, seed, steps, latent, start_at_step, end_at_step,
                                leftover, ratio * self.sigma_factor, noise, callback, disable_pbar, model_options)
        if recover and r > 0:
            name = recovery_sampler
            if name == "AUTO":
                name = "dpm_fast" if self.sampler_name in _RECOVER_WITH_DPM_FAST else "dpmpp_2m"
            latent = dict(latent)
            latent["samples"] = composite(base_image["samples"], latent["samples"], latent.get("noise_mask"))
            latent = self._call(name, add_noise, seed, steps, latent, start_at_step, end_at_step, leftover,
                                r * self.sigma_factor, None, callback, disable_pbar, model_options)
        if latent is latent_image:
            latent = dict(latent_image)
            latent["samples"] = latent_image["samples"].clone()
        return latent


class KSamplerAdvancedProvider:
    """Impact Pack's KSamplerAdvancedProvider: cfg, sampler, scheduler, sigma_factor + BASIC_PIPE ->
    KSAMPLER_ADVANCED (optional sampler_opt: a sampler name replacing sampler_name)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": MAX_CFG}),
                "sampler_name": (list(SAMPLER_NAMES),),
                "scheduler": (list(SCHEDULER_NAMES),),
                "sigma_factor": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}),
                "basic_pipe": ("BASIC_PIPE",),
            },
            "optional": {"sampler_opt": ("SAMPLER",)},
        }

    RETURN_TYPES = ("KSAMPLER_ADVANCED",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, cfg, sampler_name, scheduler, basic_pipe, sigma_factor=1.0, sampler_opt=None):
        model, _clip, _vae, positive, negative = check_basic_pipe(basic_pipe)
        return (KSamplerAdvancedWrapper(model, cfg, sampler_name, scheduler, positive, negative,
                                        sampler_opt=sampler_opt, sigma_factor=sigma_factor),)


__all__ = [
    "ADDITIONAL_SAMPLERS",
    "RECOVERY_MODES",
    "RECOVERY_SAMPLERS",
    "KSamplerAdvancedProvider",
    "KSamplerAdvancedWrapper",
    "KSamplerProvider",
    "KSamplerWrapper",
    "check_advanced_sampler",
    "check_ksampler",
    "separated_sample",
]
