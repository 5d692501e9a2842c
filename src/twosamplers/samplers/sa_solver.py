"""SA-Solver (Xue et al. 2023, "SA-Solver: Stochastic Adams Solver for Fast Sampling of Diffusion Models",
arXiv 2309.05019): stochastic Adams predictor-corrector in data prediction. `sampler-formulas.md` s.6.7.

sa_solver: predictor order 3, corrector order 4 (PEC); sa_solver_pece re-evaluates the model after each
corrector step (PECE). Noise (tau = eta) is injected only while sigma lies in the interval that starts at
20 % and ends at 80 % of the model's sampling schedule (5.0924 .. 0.5712 for SD1.5).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .._checks import check_float, check_int
from ..engine.schedules import ModelSamplingDiscrete
from ._common import half_log_snr, make_default_noise, noise_scale_of, offset_first_sigma, progress

_DEFAULT_MODEL_SAMPLING: ModelSamplingDiscrete | None = None


def _model_sampling_of(model) -> ModelSamplingDiscrete:
    """The denoiser's public `model_sampling` (the KSampler's GuidedDenoiser has one); anything else gets SD1.5's."""
    global _DEFAULT_MODEL_SAMPLING
    ms = getattr(model, "model_sampling", None)
    if ms is not None and hasattr(ms, "percent_to_sigma"):
        return ms
    if _DEFAULT_MODEL_SAMPLING is None:
        _DEFAULT_MODEL_SAMPLING = ModelSamplingDiscrete()
    return _DEFAULT_MODEL_SAMPLING


def tau_interval(start_sigma: float, end_sigma: float, eta: float = 1.0) -> Callable[[torch.Tensor], float]:
    """tau(sigma) = eta inside [end_sigma, start_sigma], else 0 (SA-Solver's default noise schedule)."""

    def tau(sigma) -> float:
        return eta if start_sigma >= float(sigma) >= end_sigma else 0.0

    return tau


def stochastic_adams_coefficients(
    sigma_next: torch.Tensor, lambdas: torch.Tensor, lambda_s: torch.Tensor, lambda_t: torch.Tensor, tau: float
) -> torch.Tensor:
    """Weights b_k (oldest first) of the data predictions at `lambdas` for one SA-Solver step lambda_s -> lambda_t.

    With m = 1 + tau^2, b_k = alpha_t * integral over [lambda_s, lambda_t] of m*exp(-m*(lambda_t - l))*L_k(l) dl,
    L_k the Lagrange basis through `lambdas`. The integrals of l^p against the exponential come from repeated
    integration by parts (a lower-triangular matrix of signed i!/j!/m^(i-j) applied to
    G_p = lambda_t^p - lambda_s^p exp(-m*h)); a Vandermonde solve turns monomials into Lagrange weights.
    """
    k = lambdas.shape[0]
    m = 1 + tau**2
    h = lambda_t - lambda_s
    powers = torch.arange(k, dtype=lambdas.dtype, device=lambdas.device)
    g = lambda_t**powers - lambda_s**powers * ((-m) * h).exp()
    depth = powers[:, None] - powers[None, :]
    log_fact = (powers + 1).lgamma()
    log_ratio = log_fact[:, None] - log_fact[None, :]
    if tau > 0:
        log_ratio = log_ratio - depth * math.log(m)
    sign = torch.where(depth % 2 == 0, 1.0, -1.0).to(lambdas.dtype)
    integrals = (log_ratio.exp() * sign).tril() @ g
    vander_t = torch.vander(lambdas, k, increasing=True).T
    lagrange = torch.linalg.solve(vander_t, integrals)
    return sigma_next * lambda_t.exp() * lagrange


def _weighted_history(history: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """sum_k w_k * history_k as a tensordot over the history stacked on dim 1 (oldest first)."""
    stacked = torch.stack(history, dim=1)
    return torch.tensordot(stacked, weights.to(stacked), dims=([1], [0]))


def _sa_solver(
    model,
    x,
    sigmas,
    extra_args,
    callback,
    disable,
    tau_func,
    eta,
    start_percent,
    end_percent,
    s_noise,
    noise_sampler,
    predictor_order,
    corrector_order,
    use_pece,
):
    eta = check_float("eta", eta, 0.0)
    s_noise = check_float("s_noise", s_noise, 0.0)
    predictor_order = check_int("predictor_order", predictor_order, 1, 6)
    corrector_order = check_int("corrector_order", corrector_order, 0, 6)
    if len(sigmas) <= 1:
        return x
    extra_args = {} if extra_args is None else extra_args
    if tau_func is None:
        start_percent = check_float("start_percent", start_percent, 0.0, 1.0)
        end_percent = check_float("end_percent", end_percent, 0.0, 1.0)
        ms = _model_sampling_of(model)
        tau_func = tau_interval(ms.percent_to_sigma(start_percent), ms.percent_to_sigma(end_percent), eta)
    elif not callable(tau_func):
        raise TypeError(f"tau_func must be callable as tau_func(sigma) -> float, got {type(tau_func).__name__}")
    noise_sampler = make_default_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    ms = _model_sampling_of(model)
    s_noise = s_noise * noise_scale_of(ms)
    sigmas = offset_first_sigma(sigmas, ms)
    n = len(sigmas) - 1
    lambdas = half_log_snr(sigmas, ms)
    to_zero = bool(sigmas[-1] == 0)
    keep = max(predictor_order, corrector_order, 1)

    x_pred = x
    history: list[torch.Tensor] = []
    h = None
    tau_prev = 0.0
    noise = None
    for i in progress(n, disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x_pred, s * s_in, **extra_args)
        history.append(denoised)
        if len(history) > keep:
            history.pop(0)
        k_pred = min(predictor_order, len(history))
        if i == 0 or (s_next == 0 and not use_pece):
            k_corr = 0
        else:
            k_corr = min(corrector_order, len(history))
        if to_zero:
            k_pred = min(k_pred, n - 1 - i)
            k_corr = min(k_corr, n - i)

        # corrector
        if k_corr == 0:
            x = x_pred
        else:
            b = stochastic_adams_coefficients(s, lambdas[i - k_corr + 1 : i + 1], lambdas[i - 1], lambdas[i], tau_prev)
            x = s / sigmas[i - 1] * (-(tau_prev**2) * h).exp() * x + _weighted_history(history[-k_corr:], b)
            if tau_prev > 0 and s_noise > 0:
                x = x + noise
            if use_pece:
                denoised = model(x, s * s_in, **extra_args)
                history[-1] = denoised
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s, "sigma_hat": s, "denoised": denoised})

        # predictor
        if s_next == 0:
            x_pred = denoised
        else:
            tau_prev = float(tau_func(s_next))
            b = stochastic_adams_coefficients(
                s_next, lambdas[i - k_pred + 1 : i + 1], lambdas[i], lambdas[i + 1], tau_prev
            )
            h = lambdas[i + 1] - lambdas[i]
            x_pred = s_next / s * (-(tau_prev**2) * h).exp() * x + _weighted_history(history[-k_pred:], b)
            if tau_prev > 0 and s_noise > 0:
                noise = noise_sampler(s, s_next) * s_next * (-2 * tau_prev**2 * h).expm1().neg().sqrt() * s_noise
                x_pred = x_pred + noise
    return x_pred


@torch.no_grad()
def sample_sa_solver(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    tau_func=None,
    eta=1.0,
    start_percent=0.2,
    end_percent=0.8,
    s_noise=1.0,
    noise_sampler=None,
    predictor_order=3,
    corrector_order=4,
    use_pece=False,
):
    """SA-Solver (arXiv 2309.05019), PEC mode: stochastic Adams predictor (order <= 3) and corrector (<= 4).

    `tau_func(sigma) -> float` overrides the noise schedule; by default tau = eta while
    percent_to_sigma(start_percent) >= sigma >= percent_to_sigma(end_percent) of the model sampling
    (the KSampler's model, else SD1.5's), 0 elsewhere.
    """
    return _sa_solver(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        tau_func,
        eta,
        start_percent,
        end_percent,
        s_noise,
        noise_sampler,
        predictor_order,
        corrector_order,
        use_pece,
    )


@torch.no_grad()
def sample_sa_solver_pece(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    tau_func=None,
    eta=1.0,
    start_percent=0.2,
    end_percent=0.8,
    s_noise=1.0,
    noise_sampler=None,
    predictor_order=3,
    corrector_order=4,
):
    """SA-Solver in PECE mode: the model is evaluated again on each corrected state (2 calls per step)."""
    return _sa_solver(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        tau_func,
        eta,
        start_percent,
        end_percent,
        s_noise,
        noise_sampler,
        predictor_order,
        corrector_order,
        True,
    )
