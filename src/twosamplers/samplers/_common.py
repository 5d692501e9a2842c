"""Pieces every sampler uses: the k-diffusion helpers, noise-source construction, and uncond capture.

A sampler is `fn(model, x, sigmas, extra_args=None, callback=None, disable=None, **options) -> x`, where
`model(x, sigma_batch, **extra_args)` returns the guided, mask-blended denoised (x0) prediction. The
KSampler passes extra_args {"seed", "denoise_mask", "model_options", "comfyui_version"}; a bare callable gets
what the caller gives (often {}). "comfyui_version" (e.g. "0.3.64") selects that ComfyUI's seeding of the
default noise sampler (below 0.30: `seed`, else `seed + 1` on the CPU).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import trange

from ..engine.noise import BrownianTreeNoiseSampler, NoiseSampler, default_noise_sampler
from ..engine.schedules import is_flow

Denoiser = Callable[..., torch.Tensor]  # model(x, sigma_batch, **extra_args) -> denoised


def progress(n: int, disable: bool | None):
    """The step loop with a tqdm bar: off when `disable` is true, shown only on a terminal when it is None."""
    return trange(n, disable=disable, leave=False, dynamic_ncols=True)


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """Karras ODE derivative dx/dsigma = (x - D) / sigma. A 0-dim sigma of x's dtype divides as it is: the
    same bits as the reshaped one, with two ops instead of seven."""
    if isinstance(sigma, torch.Tensor) and sigma.ndim == 0 and sigma.dtype == x.dtype == denoised.dtype:
        d = x - denoised
        return d.div_(sigma)
    return (x - denoised) / append_dims(sigma, x.ndim)


def scalars(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The elements of a per-run table as 0-dim tensors (views). Used as operands they give the bits the
    per-step 0-dim maths gives, and unlike Python floats they need no float64 -> float32 copy per op."""
    return t.unbind(0)


def sigma_rows(sigmas: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`sigmas[i] * x.new_ones([B])` for every i (the sigma batch a sampler passes the model), made with one
    multiply per run instead of two ops per step; same values (times 1 is exact), dtype and device."""
    s_in = x.new_ones([x.shape[0]])
    dtype = torch.result_type(sigmas[0], s_in)
    return (sigmas.to(device=x.device, dtype=dtype)[:, None] * s_in).unbind(0)


def ancestral_table(sigmas: torch.Tensor, eta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`ancestral_step(sigmas[i], sigmas[i + 1], eta)` for every step at once: (sigma_down, sigma_up) as
    tensors of len(sigmas) - 1 (sigma_up None when eta is 0, where the step gives 0.0). Elementwise float32 ops
    in the same order as the scalar version, so every element has the bits the per-step scalar has."""
    s_from, s_to = sigmas[:-1], sigmas[1:]
    if not eta:
        return s_to, None
    up = eta * (s_to**2 * (s_from**2 - s_to**2) / s_from**2) ** 0.5
    up = torch.where(up < s_to, up, s_to)  # Python's min(s_to, up): s_to unless up is smaller
    down = (s_to**2 - up**2) ** 0.5
    return down, up


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    v = torch.as_tensor(v)
    return v[(...,) + (None,) * (ndim - v.ndim)]


def ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float = 1.0):
    """(sigma_down, sigma_up) of an ancestral step; eta 0 gives (sigma_to, 0.0)."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def half_log_snr(sigma: torch.Tensor, model_sampling=None) -> torch.Tensor:
    """lambda(sigma) = log(alpha / sigma): -log(sigma) for the discrete EPS/V model samplings, -logit(sigma) for
    the flow (CONST) ones, where alpha = 1 - sigma (`sampler-formulas.md` s.2.1)."""
    if is_flow(model_sampling):
        return sigma.logit().neg()
    return sigma.log().neg()


def sigma_from_half_log_snr(lam: torch.Tensor, model_sampling=None) -> torch.Tensor:
    """The inverse of `half_log_snr`: exp(-lambda), or sigmoid(-lambda) for flow models."""
    if is_flow(model_sampling):
        return lam.neg().sigmoid()
    return lam.neg().exp()


def model_sampling_of(model):
    """The denoiser's model sampling (the KSampler's GuidedDenoiser exposes it), or None for a bare callable,
    which the samplers treat as a discrete EPS model."""
    return getattr(model, "model_sampling", None)


def flow_sampling_of(model):
    """The denoiser's model sampling when it is a flow (CONST) one, else None."""
    ms = model_sampling_of(model)
    return ms if is_flow(ms) else None


def noise_scale_of(model_sampling) -> float:
    """The flow samplings' noise scale (1.0 for every other model and for SD3/Flux)."""
    return float(getattr(model_sampling, "noise_scale", 1.0)) if model_sampling is not None else 1.0


def offset_first_sigma(sigmas: torch.Tensor, model_sampling, percent: float = 1e-4) -> torch.Tensor:
    """Flow models: a copy of `sigmas` whose first value, when >= 1, becomes percent_to_sigma(1e-4), so that
    lambda(sigma_0) is finite. Anything else comes back as it is (s.2.1)."""
    if len(sigmas) <= 1 or not is_flow(model_sampling):
        return sigmas
    if sigmas[0] >= 1:
        sigmas = sigmas.clone()
        sigmas[0] = model_sampling.percent_to_sigma(percent)
    return sigmas


def seed_of(extra_args: dict) -> int | None:
    return extra_args.get("seed", None)


def make_default_noise(x: torch.Tensor, extra_args: dict, noise_sampler: NoiseSampler | None) -> NoiseSampler:
    if noise_sampler is not None:
        return noise_sampler
    return default_noise_sampler(x, seed=seed_of(extra_args), comfyui_version=extra_args.get("comfyui_version"))


def make_brownian_noise(
    x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict, noise_sampler: NoiseSampler | None, cpu: bool = True
) -> NoiseSampler:
    """Brownian-tree noise spanning min(sigmas > 0) .. max(sigmas), seeded with extra_args['seed']."""
    if noise_sampler is not None:
        return noise_sampler
    sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
    return BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=seed_of(extra_args), cpu=cpu)


def noise_scaling_eps(sigma: torch.Tensor, noise: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    return noise * sigma + latent


class UncondCapture:
    """Records the uncond prediction of every model call (for the CFG++ samplers).

    It registers itself as a post-CFG function in a copy of extra_args["model_options"] and switches off the
    cfg == 1 shortcut, as ComfyUI does. With a bare callable model (no model_options), `uncond` stays None
    and callers fall back to the denoised value.
    """

    def __init__(self, extra_args: dict) -> None:
        self.uncond: torch.Tensor | None = None
        options = dict(extra_args.get("model_options") or {})
        options["post_cfg_functions"] = list(options.get("post_cfg_functions", [])) + [self._record]
        options["disable_cfg1_optimization"] = True
        self.extra_args = {**extra_args, "model_options": options}
        self.plain_args = {k: v for k, v in extra_args.items() if k != "model_options"}

    def _record(self, args: dict) -> torch.Tensor:
        self.uncond = args["uncond_denoised"]
        return args["denoised"]

    def call(self, model: Denoiser, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (denoised, uncond) of one model call."""
        self.uncond = None
        if getattr(model, "accepts_model_options", False):
            denoised = model(x, sigma, **self.extra_args)
        else:  # a bare callable: no CFG inside it, so uncond == denoised
            denoised = model(x, sigma, **self.plain_args)
        return denoised, (self.uncond if self.uncond is not None else denoised)


def churn_gamma(s_churn: float, n: int, sigma: torch.Tensor, s_tmin: float, s_tmax: float) -> float:
    if s_churn > 0 and s_tmin <= sigma <= s_tmax:
        return min(s_churn / n, 2**0.5 - 1)
    return 0.0


__all__ = [
    "Denoiser",
    "UncondCapture",
    "ancestral_step",
    "ancestral_table",
    "append_dims",
    "churn_gamma",
    "flow_sampling_of",
    "half_log_snr",
    "make_brownian_noise",
    "make_default_noise",
    "model_sampling_of",
    "noise_scale_of",
    "noise_scaling_eps",
    "offset_first_sigma",
    "progress",
    "scalars",
    "seed_of",
    "sigma_from_half_log_snr",
    "sigma_rows",
    "to_d",
]
