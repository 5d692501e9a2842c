"""Exponential-integrator SDE samplers in half-log-SNR time: er_sde, seeds_2, seeds_3, exp_heun_2_x0(_sde).

- er_sde: ER-SDE-Solver-3 (Cui et al. 2023, "Elucidating the solution space of extended reverse-time SDEs
  for diffusion models", arXiv 2309.06169; MIT reference code), VP form, `sampler-formulas.md` s.6.4.
- seeds_2 / seeds_3: SEEDS-2 / SEEDS-3 (Gonzalez et al. 2023, "SEEDS: Exponential SDE Solvers for Fast
  High-Quality Sampling from Diffusion Models", arXiv 2305.14267), data prediction, s.6.5-6.6.
- exp_heun_2_x0: the exponential Heun (2-stage, phi_2) method on x0 = seeds_2 with r = 1, no noise;
  exp_heun_2_x0_sde its stochastic twin (eta 1), s.6.5.

Discrete EPS/V model samplings: lambda(sigma) = -log(sigma), sigma(lambda) = exp(-lambda),
alpha(sigma) = sigma*exp(lambda(sigma)) computed exactly so; flow models use -logit / sigmoid and move a first
sigma of 1 off the boundary (s.2.1). Noise comes from the sampler's seeded generator.
"""

from __future__ import annotations

import torch

from .._checks import check_choice, check_float, check_int
from ._common import (
    half_log_snr,
    make_default_noise,
    model_sampling_of,
    noise_scale_of,
    offset_first_sigma,
    progress,
    sigma_from_half_log_snr,
)


def _er_sde_noise_scaler(v: torch.Tensor) -> torch.Tensor:
    """The default ER-SDE noise scale function S(v) = v*(exp(v^0.3) + 10)."""
    return v * ((v**0.3).exp() + 10.0)


@torch.no_grad()
def sample_er_sde(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    s_noise=1.0,
    noise_sampler=None,
    noise_scaler=None,
    max_stage=3,
):
    """ER-SDE-Solver-3 (Cui et al. 2023, arXiv 2309.06169): stages 1, 2, 3 with the integrals of the noise
    scale function by a 200-point Riemann sum. The step to sigma = 0 returns the denoised prediction."""
    s_noise = check_float("s_noise", s_noise, 0.0)
    max_stage = check_int("max_stage", max_stage, 1, 3)
    if noise_scaler is not None and not callable(noise_scaler):
        raise TypeError(f"noise_scaler must be callable, got {type(noise_scaler).__name__}")
    scaler = _er_sde_noise_scaler if noise_scaler is None else noise_scaler
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = make_default_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    ms = model_sampling_of(model)
    s_noise = s_noise * noise_scale_of(ms)
    sigmas = offset_first_sigma(sigmas, ms)
    q = half_log_snr(sigmas, ms).neg().exp()  # exp(-lambda) = sigma / alpha: 0 at sigma = 0
    n_points = 200
    point_index = torch.arange(0, n_points, dtype=sigmas.dtype, device=sigmas.device)
    old_denoised, old_d1 = None, None
    for i in progress(len(sigmas) - 1, disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s, "sigma_hat": s, "denoised": denoised})
        stage = min(max_stage, i + 1)
        if s_next == 0:
            x = denoised
        else:
            q_s, q_t = q[i], q[i + 1]
            alpha_s = s / q_s
            alpha_t = s_next / q_t
            r_alpha = alpha_t / alpha_s
            r = scaler(q_t) / scaler(q_s)
            x = r_alpha * r * x + alpha_t * (1 - r) * denoised
            if stage >= 2:
                dt = q_t - q_s
                step = -dt / float(n_points)
                points = q_t + point_index * step
                scaled = scaler(points)
                s_int_1 = torch.sum(1 / scaled) * step
                d1 = (denoised - old_denoised) / (q_s - q[i - 1])
                x = x + alpha_t * (dt + s_int_1 * scaler(q_t)) * d1
                if stage >= 3:
                    s_int_2 = torch.sum((points - q_s) / scaled) * step
                    d2 = (d1 - old_d1) / ((q_s - q[i - 2]) / 2)
                    x = x + alpha_t * (dt**2 / 2 + s_int_2 * scaler(q_t)) * d2
                old_d1 = d1
            if s_noise > 0:
                std = torch.nan_to_num((q_t**2 - q_s**2 * r**2).sqrt(), nan=0.0)
                x = x + alpha_t * noise_sampler(s, s_next) * s_noise * std
        old_denoised = denoised
    return x


def _seeds_2(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, r, solver_type):
    """SEEDS-2 / exponential Heun in data prediction (s.6.5); see the public wrappers."""
    eta = check_float("eta", eta, 0.0)
    s_noise = check_float("s_noise", s_noise, 0.0)
    r = check_float("r", r, 0.0, 1.0)
    if r == 0.0:
        raise ValueError("r=0.0 is out of range; accepted: 0 < r <= 1")
    check_choice("solver_type", solver_type, ("phi_1", "phi_2"))
    extra_args = {} if extra_args is None else extra_args
    ms = model_sampling_of(model)
    s_noise = s_noise * noise_scale_of(ms)
    sigmas = offset_first_sigma(sigmas, ms)
    inject = eta > 0 and s_noise > 0
    if inject:
        noise_sampler = make_default_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in progress(len(sigmas) - 1, disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s, "sigma_hat": s, "denoised": denoised})
        if s_next == 0:
            x = denoised
            continue
        lambda_s, lambda_t = half_log_snr(s, ms), half_log_snr(s_next, ms)
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_mid = torch.lerp(lambda_s, lambda_t, r)
        sigma_mid = sigma_from_half_log_snr(lambda_mid, ms)
        alpha_mid = sigma_mid * lambda_mid.exp()
        alpha_t = s_next * lambda_t.exp()
        # stage 1: exponential Euler to the intermediate level
        x_2 = sigma_mid / s * (-r * h * eta).exp() * x - alpha_mid * (-r * h_eta).expm1() * denoised
        if inject:
            z = (-2 * r * h * eta).expm1().neg().sqrt() * noise_sampler(s, sigma_mid)
            x_2 = x_2 + z * sigma_mid * s_noise
        denoised_2 = model(x_2, sigma_mid * s_in, **extra_args)
        # stage 2
        if solver_type == "phi_1":
            denoised_d = torch.lerp(denoised, denoised_2, 1 / (2 * r))
            x = s_next / s * (-h * eta).exp() * x - alpha_t * (-h_eta).expm1() * denoised_d
        else:
            b2 = ((-h_eta).expm1() - (-h_eta)) / (-h_eta) / r
            b1 = (-h_eta).expm1() - b2
            x = s_next / s * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b2 * denoised_2)
        if inject:
            f = (r - 1) * h * eta
            z = z * f.exp()
            z = z + (f * 2).expm1().neg().sqrt() * noise_sampler(sigma_mid, s_next)
            x = x + z * s_next * s_noise
    return x


@torch.no_grad()
def sample_seeds_2(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    r=0.5,
    solver_type="phi_1",
):
    """SEEDS-2 (Gonzalez et al. 2023, arXiv 2305.14267): two-stage exponential SDE solver, stage at
    lambda_s + r*h; `solver_type` "phi_1" (default) or "phi_2" for the final combination."""
    return _seeds_2(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, r, solver_type)


@torch.no_grad()
def sample_exp_heun_2_x0(model, x, sigmas, extra_args=None, callback=None, disable=None, solver_type="phi_2"):
    """Exponential Heun on the data prediction (2 stages, phi_2 weights): seeds_2 with r = 1, eta = 0."""
    return _seeds_2(model, x, sigmas, extra_args, callback, disable, 0.0, 0.0, None, 1.0, solver_type)


@torch.no_grad()
def sample_exp_heun_2_x0_sde(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    solver_type="phi_2",
):
    """Stochastic exponential Heun on x0: seeds_2 with r = 1 and phi_2 (two draws per step, the second
    with weight 0, kept so the stream lines up with ComfyUI)."""
    return _seeds_2(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, 1.0, solver_type)


@torch.no_grad()
def sample_seeds_3(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    r_1=1.0 / 3,
    r_2=2.0 / 3,
):
    """SEEDS-3 (Gonzalez et al. 2023, arXiv 2305.14267): three-stage exponential SDE solver with stages at
    lambda_s + r_1*h and lambda_s + r_2*h."""
    eta = check_float("eta", eta, 0.0)
    s_noise = check_float("s_noise", s_noise, 0.0)
    r_1 = check_float("r_1", r_1, 0.0, 1.0)
    r_2 = check_float("r_2", r_2, 0.0, 1.0)
    if not 0.0 < r_1 < r_2:
        raise ValueError(f"r_1={r_1} and r_2={r_2} must satisfy 0 < r_1 < r_2 <= 1")
    extra_args = {} if extra_args is None else extra_args
    ms = model_sampling_of(model)
    s_noise = s_noise * noise_scale_of(ms)
    sigmas = offset_first_sigma(sigmas, ms)
    inject = eta > 0 and s_noise > 0
    if inject:
        noise_sampler = make_default_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in progress(len(sigmas) - 1, disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s, "sigma_hat": s, "denoised": denoised})
        if s_next == 0:
            x = denoised
            continue
        lambda_s, lambda_t = half_log_snr(s, ms), half_log_snr(s_next, ms)
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_1 = torch.lerp(lambda_s, lambda_t, r_1)
        lambda_2 = torch.lerp(lambda_s, lambda_t, r_2)
        sigma_1, sigma_2 = sigma_from_half_log_snr(lambda_1, ms), sigma_from_half_log_snr(lambda_2, ms)
        alpha_1 = sigma_1 * lambda_1.exp()
        alpha_2 = sigma_2 * lambda_2.exp()
        alpha_t = s_next * lambda_t.exp()
        # stage 1
        x_2 = sigma_1 / s * (-r_1 * h * eta).exp() * x - alpha_1 * (-r_1 * h_eta).expm1() * denoised
        if inject:
            z = (-2 * r_1 * h * eta).expm1().neg().sqrt() * noise_sampler(s, sigma_1)
            x_2 = x_2 + z * sigma_1 * s_noise
        denoised_2 = model(x_2, sigma_1 * s_in, **extra_args)
        # stage 2
        e1_2 = (-r_2 * h_eta).expm1()
        a3_2 = r_2 / r_1 * ((e1_2 - (-r_2 * h_eta)) / (-r_2 * h_eta))
        a3_1 = e1_2 - a3_2
        x_3 = sigma_2 / s * (-r_2 * h * eta).exp() * x - alpha_2 * (a3_1 * denoised + a3_2 * denoised_2)
        if inject:
            f = (r_1 - r_2) * h * eta
            z = z * f.exp()
            z = z + (f * 2).expm1().neg().sqrt() * noise_sampler(sigma_1, sigma_2)
            x_3 = x_3 + z * sigma_2 * s_noise
        denoised_3 = model(x_3, sigma_2 * s_in, **extra_args)
        # stage 3
        e1 = (-h_eta).expm1()
        b3 = ((e1 - (-h_eta)) / (-h_eta)) / r_2
        b1 = e1 - b3
        x = s_next / s * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b3 * denoised_3)
        if inject:
            f = (r_2 - 1) * h * eta
            z = z * f.exp()
            z = z + (f * 2).expm1().neg().sqrt() * noise_sampler(sigma_2, s_next)
            x = x + z * s_next * s_noise
    return x
