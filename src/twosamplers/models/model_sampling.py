"""Sampling patches of a model: another prediction type or noise schedule on the same network (ComfyUI's
ModelSamplingDiscrete and ModelSamplingContinuousEDM nodes), plus the MODEL-level options a node can attach
(RescaleCFG's cfg function, Differential Diffusion's mask function).

What ComfyUI does, and so what this module does:
- ModelSamplingDiscrete rebuilds the model's 1000-step discrete schedule (its own linear_start / linear_end) with
  a chosen prediction type: eps, v (v_prediction), x0 (the network predicts the clean latent) or lcm. `zsnr`
  rescales the schedule to zero terminal SNR (Lin et al. 2023): sqrt(alpha_bar) is shifted so that its last value
  is 0 and scaled so that its first is unchanged, the last alpha_bar is then set to 4.8973451890853435e-08 (a
  finite sigma of about 4519), all in float64 before the float32 tables are taken.
- lcm: the schedule keeps every 20th of the 1000 sigmas (50 "distilled" steps, from index 19 to 999); a sigma's
  timestep is 20 * its nearest index + 19, and timestep -> sigma interpolates log-sigma between those 50 entries.
  The denoised value is LCM's boundary condition on the eps estimate x0 = x - eps * sigma:
  c_out * x0 + c_skip * x with t' = 10 * timestep, c_skip = 0.25 / (t'^2 + 0.25), c_out = t' / sqrt(t'^2 + 0.25).
- ModelSamplingContinuousEDM: 1000 sigmas log-spaced from sigma_min to sigma_max (float32), timestep =
  0.25 * log(sigma); prediction eps, v_prediction (sigma_data 1) or edm (sigma_data 0.5, denoised =
  x * sd^2 / (sigma^2 + sd^2) + out * sigma * sd / sqrt(sigma^2 + sd^2)).

`SamplingModel(base, model_sampling)` is `base` with that schedule: the network is the same object; its
`apply_model` passes the schedule down to the network call (`NetworkModel.apply_model`), so the input scale,
the timestep the network sees and the denoised formula all follow it, as do the samplers and schedulers.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import torch

from .._checks import check_choice, check_float
from ..engine.schedules import ModelSamplingDiscrete

DISCRETE_SAMPLING = ("eps", "v_prediction", "lcm", "x0")
EDM_SAMPLING = ("v_prediction", "edm", "eps")
ZSNR_LAST_ALPHA_BAR = 4.8973451890853435e-08
LCM_STEPS = 50
LCM_TIMESTEP_SCALE = 10.0
LCM_SIGMA_DATA = 0.5


def zero_terminal_snr(sigmas: torch.Tensor) -> torch.Tensor:
    """The zero-terminal-SNR rescale of a float64 sigma table (see the module docstring)."""
    alphas_bar_sqrt = (1 / (sigmas * sigmas + 1)).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas_bar[-1] = ZSNR_LAST_ALPHA_BAR
    return ((1 - alphas_bar) / alphas_bar) ** 0.5


def _float64_sigmas(linear_start: float, linear_end: float, timesteps: int) -> torch.Tensor:
    betas = torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


class PatchedDiscreteSampling(ModelSamplingDiscrete):
    """A model's discrete schedule with another prediction type ("eps", "v", "x0", "lcm") and optionally
    zero terminal SNR: what ComfyUI's ModelSamplingDiscrete node gives."""

    def __init__(self, prediction: str, linear_start: float = 0.00085, linear_end: float = 0.012,
                 timesteps: int = 1000, zsnr: bool = False) -> None:
        prediction = check_choice("prediction", prediction, ("eps", "v", "x0", "lcm"))
        super().__init__("v" if prediction == "v" else "eps", linear_start, linear_end, timesteps)
        self.prediction = prediction
        self.zsnr = bool(zsnr)
        sigmas = _float64_sigmas(self.linear_start, self.linear_end, self.num_timesteps)
        if self.zsnr:
            sigmas = zero_terminal_snr(sigmas)
        sigmas = sigmas.float()
        self.skip_steps = 1
        if prediction == "lcm":  # the distilled schedule: every skip-th sigma, ending at the last
            self.skip_steps = self.num_timesteps // LCM_STEPS
            idx = [self.num_timesteps - 1 - (LCM_STEPS - 1 - i) * self.skip_steps for i in range(LCM_STEPS)]
            sigmas = sigmas[idx]
        self.sigmas = sigmas
        self.log_sigmas = sigmas.log()

    def __repr__(self) -> str:
        return (f"PatchedDiscreteSampling(prediction={self.prediction!r}, zsnr={self.zsnr}, "
                f"linear_start={self.linear_start}, linear_end={self.linear_end})")

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        t = super().timestep(sigma)
        return t if self.skip_steps == 1 else t * self.skip_steps + (self.skip_steps - 1)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        if self.skip_steps == 1:
            return super().sigma(timestep)
        timestep = torch.as_tensor(timestep)
        t = ((timestep.float() - (self.skip_steps - 1)) / self.skip_steps).float()
        return super().sigma(t.to(timestep.device)).to(timestep.device)

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, model_input: torch.Tensor):
        if self.prediction == "x0":
            return model_output
        if self.prediction != "lcm":
            return super().calculate_denoised(sigma, model_output, model_input)
        sigma = torch.as_tensor(sigma)
        shape = sigma.reshape(-1).shape[:1] + (1,) * (model_output.ndim - 1)
        timestep = self.timestep(sigma.reshape(-1)).reshape(shape).to(model_output.device)
        sigma = sigma.reshape(shape).to(model_output.device)
        x0 = model_input - model_output * sigma
        scaled = timestep * LCM_TIMESTEP_SCALE
        c_skip = LCM_SIGMA_DATA**2 / (scaled**2 + LCM_SIGMA_DATA**2)
        c_out = scaled / (scaled**2 + LCM_SIGMA_DATA**2) ** 0.5
        return c_out * x0 + c_skip * model_input


class ContinuousEDMSampling(ModelSamplingDiscrete):
    """ComfyUI's ModelSamplingContinuousEDM: log-spaced sigmas, timestep = 0.25 log(sigma), eps / v / edm."""

    def __init__(self, prediction: str, sigma_min: float = 0.002, sigma_max: float = 120.0) -> None:
        prediction = check_choice("sampling", prediction, ("eps", "v", "edm"))
        sigma_min = check_float("sigma_min", sigma_min, 1e-10, 1000.0)
        sigma_max = check_float("sigma_max", sigma_max, 1e-10, 1000.0)
        if not sigma_min < sigma_max:
            raise ValueError(f"sigma_min ({sigma_min}) must be smaller than sigma_max ({sigma_max})")
        super().__init__("v" if prediction == "v" else "eps")
        self.prediction = prediction
        self.sigma_data = 0.5 if prediction == "edm" else 1.0
        self.sigma_lo, self.sigma_hi = sigma_min, sigma_max
        sigmas = torch.linspace(math.log(sigma_min), math.log(sigma_max), self.num_timesteps).exp()
        self.sigmas = sigmas
        self.log_sigmas = sigmas.log()

    def __repr__(self) -> str:
        return (f"ContinuousEDMSampling(prediction={self.prediction!r}, sigma_min={self.sigma_lo}, "
                f"sigma_max={self.sigma_hi})")

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return 0.25 * torch.as_tensor(sigma).log()

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return (torch.as_tensor(timestep) / 0.25).exp()

    def percent_to_sigma(self, percent: float) -> float:
        percent = check_float("percent", percent)
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        lo = math.log(float(self.sigma_min))
        return math.exp((math.log(float(self.sigma_max)) - lo) * (1.0 - percent) + lo)

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, model_input: torch.Tensor):
        if self.prediction != "edm":
            return super().calculate_denoised(sigma, model_output, model_input)
        sigma = torch.as_tensor(sigma)
        sigma = sigma.reshape(sigma.reshape(-1).shape[:1] + (1,) * (model_output.ndim - 1)).to(model_output.device)
        sd = self.sigma_data
        return (model_input * sd**2 / (sigma**2 + sd**2)
                + model_output * sigma * sd / (sigma**2 + sd**2) ** 0.5)


# ------------------------------------------------------------------------------------------- the wrapper
def network_model(model):
    """The NetworkModel inside a chain of wrappers (MODEL handles, LoRA stacks, sampling patches), or None."""
    from .base import NetworkModel

    seen = set()
    while model is not None and id(model) not in seen:
        if isinstance(model, NetworkModel):
            return model
        seen.add(id(model))
        inner = model.__dict__.get("base", None) if hasattr(model, "__dict__") else None
        if inner is None:
            inner = model.__dict__.get("model", None) if hasattr(model, "__dict__") else None
        model = inner
    return None


def hoist(model, make: Callable[[object], object]):
    """`make(model)` with any LoRA-style weight stack kept outermost: make(LoraModel(b, L)) is built as
    LoraModel(make(b), L), so that chained weight patches (LoRAs, merges) always form one stack on one
    network instead of nesting two stacks (which `models.lora.patched` refuses)."""
    from .lora import LoraModel

    if isinstance(model, LoraModel):
        return LoraModel(make(model.base), model.loras)
    return make(model)


class ModelWrapper:
    """A twosamplers model that is `base` except for what a subclass overrides; sessions nest into base's."""

    def __init__(self, base) -> None:
        self.base = base

    def __getattr__(self, name):
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    @contextmanager
    def sampling_session(self):
        session = getattr(self.base, "sampling_session", None)
        with session() if session is not None else nullcontext():
            yield

    def apply_model(self, x, sigma, context, **extras):
        return self.base.apply_model(x, sigma, context, **extras)


class HookedModel(ModelWrapper):
    """`base` whose shared network gets hooks (`installed()`, a context manager of the subclass) only while this
    model samples or is called: a whole sampling session installs them once, nested calls reuse them."""

    def __init__(self, base) -> None:
        super().__init__(base)
        self._depth = threading.local()

    def installed(self):
        raise NotImplementedError

    @contextmanager
    def _patch(self):
        depth = getattr(self._depth, "n", 0)
        if depth:
            self._depth.n = depth + 1
            try:
                yield
            finally:
                self._depth.n = depth
            return
        with self.installed():
            self._depth.n = 1
            try:
                yield
            finally:
                self._depth.n = 0

    @contextmanager
    def sampling_session(self):
        with super().sampling_session(), self._patch():
            yield

    def apply_model(self, x, sigma, context, **extras):
        with self._patch():
            return self.base.apply_model(x, sigma, context, **extras)


class SamplingModel(ModelWrapper):
    """`base` sampled with another `model_sampling` (see the module docstring)."""

    def __init__(self, base, model_sampling: ModelSamplingDiscrete) -> None:
        if network_model(base) is None:
            raise TypeError(f"a sampling patch needs a network model (a Stable Diffusion checkpoint); got "
                            f"{type(base).__name__}")
        super().__init__(base)
        self._sampling = model_sampling

    def __repr__(self) -> str:
        return f"SamplingModel({self.base!r}, {self._sampling!r})"

    @property
    def model_sampling(self):
        return self._sampling

    def apply_model(self, x, sigma, context, **extras):
        extras["model_sampling"] = self._sampling
        return self.base.apply_model(x, sigma, context, **extras)


class OptionsModel(ModelWrapper):
    """`base` with sampling options attached to the MODEL, as ComfyUI's model patcher carries them:
    `sampler_cfg_function` (RescaleCFG) and `denoise_mask_function` (Differential Diffusion). Options set
    further down the chain stay unless this one replaces them."""

    def __init__(self, base, **options) -> None:
        super().__init__(base)
        self._options = {**(getattr(base, "model_options", None) or {}), **options}

    def __repr__(self) -> str:
        return f"OptionsModel({self.base!r}, {sorted(self._options)})"

    @property
    def model_options(self) -> dict:
        return dict(self._options)


def base_schedule(model) -> tuple[float, float, int]:
    """(linear_start, linear_end, timesteps) of a model's own discrete schedule."""
    ms = model.model_sampling
    return (float(getattr(ms, "linear_start", 0.00085)), float(getattr(ms, "linear_end", 0.012)),
            int(getattr(ms, "num_timesteps", 1000)))


def with_discrete_sampling(model, sampling: str, zsnr: bool = False):
    """ComfyUI's ModelSamplingDiscrete node on a twosamplers model."""
    sampling = check_choice("sampling", sampling, DISCRETE_SAMPLING)
    start, end, steps = base_schedule(network_model(model) or model)
    ms = PatchedDiscreteSampling("v" if sampling == "v_prediction" else sampling, start, end, steps, zsnr=zsnr)
    return hoist(model, lambda m: SamplingModel(m, ms))


def with_edm_sampling(model, sampling: str, sigma_max: float, sigma_min: float):
    """ComfyUI's ModelSamplingContinuousEDM node on a twosamplers model."""
    sampling = check_choice("sampling", sampling, EDM_SAMPLING)
    ms = ContinuousEDMSampling("v" if sampling == "v_prediction" else sampling, sigma_min, sigma_max)
    return hoist(model, lambda m: SamplingModel(m, ms))


def rescale_cfg_function(multiplier: float) -> Callable[[dict], torch.Tensor]:
    """RescaleCFG (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", s.3.4) as a
    `sampler_cfg_function` (ComfyUI's calling convention: args "cond"/"uncond" are x - denoised, the result is
    x - the guided denoised value). Guidance is done on v-predictions: each denoised value d becomes
    v = (x / (sigma^2 + 1) - d) * sqrt(sigma^2 + 1) / sigma; plain cfg on them is rescaled to the conditional v's
    standard deviation per image, mixed with the plain result by `multiplier`, and turned back into x - d."""
    multiplier = check_float("multiplier", multiplier, 0.0, 1.0)

    def rescale(args: dict) -> torch.Tensor:
        x_in = args["input"]
        sigma = args["sigma"]
        sigma = sigma.reshape(sigma.shape[:1] + (1,) * (x_in.ndim - 1))
        snr1 = sigma * sigma + 1.0
        x_scaled = x_in / snr1

        def v_of(eps_like):
            return ((x_scaled - (x_in - eps_like)) * (sigma**2 + 1.0) ** 0.5) / sigma

        v_pos, v_neg = v_of(args["cond"]), v_of(args["uncond"])
        guided = v_neg + args["cond_scale"] * (v_pos - v_neg)
        ratio = torch.std(v_pos, dim=(1, 2, 3), keepdim=True) / torch.std(guided, dim=(1, 2, 3), keepdim=True)
        mixed = multiplier * (guided * ratio) + (1.0 - multiplier) * guided
        return x_in - (x_scaled - mixed * sigma / snr1**0.5)

    return rescale


__all__ = ["DISCRETE_SAMPLING", "EDM_SAMPLING", "ContinuousEDMSampling", "HookedModel", "ModelWrapper", "OptionsModel",
           "PatchedDiscreteSampling", "SamplingModel", "hoist", "network_model", "rescale_cfg_function",
           "with_discrete_sampling", "with_edm_sampling", "zero_terminal_snr"]
