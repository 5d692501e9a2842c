"""Sampler providers: KSAMPLER (a KSampler with all its settings) and KSAMPLER_ADVANCED (a KSamplerAdvanced
whose seed and steps the consuming node gives), as ComfyUI-Impact-Pack's KSamplerProvider and
KSamplerAdvancedProvider make them (`shared/spec/two-samplers.md`, "Types").

`KSamplerWrapper.sample(latent)` runs its stored `Pass` (KSampler semantics). `KSamplerAdvancedWrapper` (Impact's
"separated sample" with its recovery pass) is engine code and lives in `twosamplers.engine.regional`; it is re-exported
here because it is the KSAMPLER_ADVANCED these nodes make.
"""

from __future__ import annotations

from dataclasses import replace

from .._checks import MAX_CFG, check_float
from ..engine.conditioning import without_negative_placeholder
from ..engine.latent import check_latent
from ..engine.noise import DEFAULT_COMFYUI_VERSION
from ..engine.passes import Pass, check_noise_mask, run_pass
from ..engine.regional import (
    ADDITIONAL_SAMPLERS,
    RECOVERY_MODES,
    RECOVERY_SAMPLERS,
    KSamplerAdvancedWrapper,
    check_advanced_sampler,
    check_sampler_object,
)
from . import widgets as W

CATEGORY = "ImpactPack/Sampler"


def check_basic_pipe(basic_pipe) -> tuple:
    if not isinstance(basic_pipe, (tuple, list)) or len(basic_pipe) != 5:
        raise TypeError("basic_pipe must be a BASIC_PIPE tuple (model, clip, vae, positive, negative), got "
                        f"{type(basic_pipe).__name__}" + (f" of length {len(basic_pipe)}"
                                                          if isinstance(basic_pipe, (tuple, list)) else ""))
    return tuple(basic_pipe)


def check_ksampler(obj, name: str):
    """A KSAMPLER: an object with .sample(latent) (KSamplerWrapper)."""
    return check_sampler_object(obj, name, "KSAMPLER")


# ------------------------------------------------------------------------------------------------
# KSAMPLER
# ------------------------------------------------------------------------------------------------
class KSamplerWrapper:
    """A KSAMPLER: `.sample(latent)` == common_ksampler(model, seed, steps, cfg, sampler_name, scheduler,
    positive, negative, latent, denoise=denoise). Settings are validated here, so a bad one fails early.
    `comfyui_version` (default "0.30"): "0.3.64" reproduces the older ComfyUI's default-noise-sampler seeding.
    A negative that is Impact's placeholder samples the positive alone, cfg as its guidance
    (`engine.conditioning.without_negative_placeholder`), as Impact's samplers do."""

    def __init__(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, denoise=1.0, *,
                 comfyui_version: str = DEFAULT_COMFYUI_VERSION):
        cfg = check_float("cfg", cfg, 0.0, MAX_CFG)
        positive, negative, cfg = without_negative_placeholder(positive, negative, cfg)
        self.pass_ = p = Pass(model, positive, negative, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler_name,
                              scheduler=scheduler, denoise=denoise, comfyui_version=comfyui_version)
        self.comfyui_version = p.comfyui_version
        self.model, self.seed, self.steps, self.cfg = p.model, p.seed, p.steps, p.cfg
        self.sampler_name, self.scheduler, self.denoise = p.sampler_name, p.scheduler, p.denoise
        self.positive, self.negative = positive, negative

    @property
    def params(self) -> tuple:
        return (self.model, self.seed, self.steps, self.cfg, self.sampler_name, self.scheduler, self.positive,
                self.negative, self.denoise)

    def __repr__(self) -> str:
        return (f"KSamplerWrapper(seed={self.seed}, steps={self.steps}, cfg={self.cfg}, sampler_name="
                f"{self.sampler_name!r}, scheduler={self.scheduler!r}, denoise={self.denoise})")

    def sample(self, latent_image: dict, *, callback=None, disable_pbar=None, model_options=None) -> dict:
        """Sample `latent_image` (its noise_mask, if any, is honoured); returns a new LATENT dict."""
        check_latent(latent_image, "latent_image")
        noise_mask = check_noise_mask(latent_image, "latent_image")
        p = self.pass_ if model_options is None else replace(self.pass_, model_options=model_options)
        out = dict(latent_image)
        out["samples"] = run_pass(p, latent_image["samples"], noise_mask=noise_mask,
                                  batch_index=latent_image.get("batch_index"), callback=callback,
                                  disable_pbar=disable_pbar)
        return out


class KSamplerProvider:
    """Impact Pack's KSamplerProvider: settings + BASIC_PIPE -> KSAMPLER."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "seed": W.SEED,
                "steps": W.STEPS,
                "cfg": W.CFG,
                "sampler_name": W.SAMPLER,
                "scheduler": W.SCHEDULER,
                "denoise": W.DENOISE,
                "basic_pipe": ("BASIC_PIPE",),
            },
            "optional": {"comfyui_version": W.COMFYUI_VERSION},
        }

    RETURN_TYPES = ("KSAMPLER",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, seed, steps, cfg, sampler_name, scheduler, denoise, basic_pipe,
             comfyui_version=DEFAULT_COMFYUI_VERSION):
        model, _clip, _vae, positive, negative = check_basic_pipe(basic_pipe)
        return (KSamplerWrapper(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, denoise,
                                comfyui_version=comfyui_version),)


# ------------------------------------------------------------------------------------------------
# KSAMPLER_ADVANCED
# ------------------------------------------------------------------------------------------------
class KSamplerAdvancedProvider:
    """Impact Pack's KSamplerAdvancedProvider: cfg, sampler, scheduler, sigma_factor + BASIC_PIPE ->
    KSAMPLER_ADVANCED (optional sampler_opt: a sampler name replacing sampler_name)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "cfg": W.CFG,
                "sampler_name": W.SAMPLER,
                "scheduler": W.SCHEDULER,
                "sigma_factor": W.SIGMA_FACTOR,
                "basic_pipe": ("BASIC_PIPE",),
            },
            "optional": {"sampler_opt": ("SAMPLER",), "comfyui_version": W.COMFYUI_VERSION},
        }

    RETURN_TYPES = ("KSAMPLER_ADVANCED",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, cfg, sampler_name, scheduler, basic_pipe, sigma_factor=1.0, sampler_opt=None,
             comfyui_version=DEFAULT_COMFYUI_VERSION):
        model, _clip, _vae, positive, negative = check_basic_pipe(basic_pipe)
        return (KSamplerAdvancedWrapper(model, cfg, sampler_name, scheduler, positive, negative,
                                        sampler_opt=sampler_opt, sigma_factor=sigma_factor,
                                        comfyui_version=comfyui_version),)


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
]
