"""Ancestral samplers: noise is re-injected every step from the sampler's seeded generator.

euler_ancestral, dpm_2_ancestral, dpmpp_2s_ancestral (k-diffusion; DPM-Solver++(2S), Lu et al. 2022b),
ddpm (Ho et al. 2020, ancestral step in sigma form) and lcm (Luo et al. 2023).
Update rules: `sampler-formulas.md` s.4.4, 4.5, 4.8, 4.12, 4.13; flow (CONST) models take the rectified-flow
branches of s.8.1 for the first three (`_flow_step`), and lcm re-noises with the model's noise scaling.
"""

from __future__ import annotations

import torch

from ._common import (
    ancestral_step,
    ancestral_table,
    flow_sampling_of,
    make_default_noise,
    noise_scale_of,
    noise_scaling_eps,
    progress,
    scalars,
    sigma_rows,
    to_d,
)


def _flow_step(s: torch.Tensor, s_next: torch.Tensor, eta: float):
    """The rectified-flow ancestral step (s.8.1): (sigma_down, alpha_next / alpha_down, renoise coefficient),
    with alpha = 1 - sigma."""
    sigma_down = s_next * (1 + (s_next / s - 1) * eta)
    alpha_next = 1 - s_next
    alpha_down = 1 - sigma_down
    renoise = (s_next**2 - sigma_down**2 * alpha_next**2 / alpha_down**2) ** 0.5
    return sigma_down, alpha_next / alpha_down, renoise


def _euler_ancestral_flow(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, ms):
    noise_sampler = make_default_noise(x, extra_args, noise_sampler)
    s_noise = s_noise * noise_scale_of(ms)
    s_in = x.new_ones([x.shape[0]])
    for i in progress(len(sigmas) - 1, disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        sigma_down, alpha_ratio, renoise = _flow_step(sigmas[i], sigmas[i + 1], eta)
        ratio = sigma_down / sigmas[i]
        x = ratio * x + (1 - ratio) * denoised
        if eta > 0:
            x = alpha_ratio * x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


def _dpm_2_ancestral_flow(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, ms):
    noise_sampler = make_default_noise(x, extra_args, noise_sampler)
    s_noise = s_noise * noise_scale_of(ms)
    s_in = x.new_ones([x.shape[0]])
    for i in progress(len(sigmas) - 1, disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, alpha_ratio, renoise = _flow_step(sigmas[i], sigmas[i + 1], eta)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            denoised_2 = model(x_2, sigma_mid * s_in, **extra_args)
            d_2 = to_d(x_2, sigma_mid, denoised_2)
            x = x + d_2 * (sigma_down - sigmas[i])
            x = alpha_ratio * x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


def _dpmpp_2s_ancestral_flow(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, ms):
    noise_sampler = make_default_noise(x, extra_args, noise_sampler)
    s_noise = s_noise * noise_scale_of(ms)
    s_in = x.new_ones([x.shape[0]])
    for i in progress(len(sigmas) - 1, disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, alpha_ratio, renoise = _flow_step(sigmas[i], sigmas[i + 1], eta)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            if sigmas[i] == 1.0:
                sigma_mid = 0.9999
            else:
                t_i, t_down = ((1 - sigmas[i]) / sigmas[i]).log(), ((1 - sigma_down) / sigma_down).log()
                sigma_mid = ((t_i + 0.5 * (t_down - t_i)).exp() + 1) ** -1
            ratio = sigma_mid / sigmas[i]
            u = ratio * x + (1 - ratio) * denoised
            denoised_2 = model(u, sigma_mid * s_in, **extra_args)
            ratio = sigma_down / sigmas[i]
            x = ratio * x + (1 - ratio) * denoised_2
        if sigmas[i + 1] > 0 and eta > 0:
            x = alpha_ratio * x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None,
                           eta=1.0, s_noise=1.0, noise_sampler=None):
    """Euler ancestral. The step's sigmas come from per-run float32 tables (`ancestral_table`): same bits as
    the per-step scalar maths, about 25 ops fewer a step. Flow models: the rectified-flow branch (s.8.1)."""
    extra_args = {} if extra_args is None else extra_args
    ms = flow_sampling_of(model)
    if ms is not None:
        return _euler_ancestral_flow(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, ms)
    noise_sampler = make_default_noise(x, extra_args, noise_sampler)
    rows, sv = sigma_rows(sigmas, x), scalars(sigmas)
    down, up = ancestral_table(sigmas, eta=eta)
    down_f, dt = down.tolist(), scalars(down - sigmas[:-1])
    up_t = scalars(up) if up is not None else [0.0] * len(dt)
    for i in progress(len(sigmas) - 1, disable):
        denoised = model(x, rows[i], **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sv[i], "sigma_hat": sv[i], "denoised": denoised})
        if down_f[i] == 0:
            x = denoised
        else:
            d = to_d(x, sv[i], denoised)
            x = x + d.mul_(dt[i])
            noise = noise_sampler(sv[i], sv[i + 1])
            if s_noise != 1.0:  # times 1.0 is exact: skip it
                noise = noise * s_noise
            x.add_(noise * up_t[i])
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None,
                           eta=1.0, s_noise=1.0, noise_sampler=None):
    extra_args = {} if extra_args is None else extra_args
    ms = flow_sampling_of(model)
    if ms is not None:
        return _dpm_2_ancestral_flow(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, ms)
    noise_sampler = make_default_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in progress(len(sigmas) - 1, disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            denoised_2 = model(x_2, sigma_mid * s_in, **extra_args)
            d_2 = to_d(x_2, sigma_mid, denoised_2)
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None,
                              eta=1.0, s_noise=1.0, noise_sampler=None):
    extra_args = {} if extra_args is None else extra_args
    ms = flow_sampling_of(model)
    if ms is not None:
        return _dpmpp_2s_ancestral_flow(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler,
                                        ms)
    noise_sampler = make_default_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in progress(len(sigmas) - 1, disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigma_down == 0:
            d = to_d(x, sigmas[i], denoised)
            x = x + d * (sigma_down - sigmas[i])
        else:
            t, t_next = sigmas[i].log().neg(), sigma_down.log().neg()
            r = 1 / 2
            h = t_next - t
            s = t + r * h
            x_2 = (s.neg().exp() / t.neg().exp()) * x - (-h * r).expm1() * denoised
            denoised_2 = model(x_2, s.neg().exp() * s_in, **extra_args)
            x = (t_next.neg().exp() / t.neg().exp()) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_ddpm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """DDPM ancestral sampling written in the VP state x / sqrt(1 + sigma^2)."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = make_default_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in progress(len(sigmas) - 1, disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s, "sigma_hat": s, "denoised": denoised})
        eps = (x - denoised) / s
        xv = x / torch.sqrt(1.0 + s**2.0)
        alpha_cumprod = 1 / ((s * s) + 1)
        alpha_cumprod_prev = 1 / ((s_next * s_next) + 1)
        alpha = alpha_cumprod / alpha_cumprod_prev
        mu = (1.0 / alpha).sqrt() * (xv - (1 - alpha) * eps / (1 - alpha_cumprod).sqrt())
        if s_next > 0:
            mu = mu + ((1 - alpha) * (1.0 - alpha_cumprod_prev) / (1.0 - alpha_cumprod)).sqrt() * noise_sampler(
                s, s_next
            )
        x = mu
        if s_next != 0:
            x = x * torch.sqrt(1.0 + s_next**2.0)
    return x


@torch.no_grad()
def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
               s_noise=1.0, s_noise_end=None, noise_clip_std=0.0):
    """Latent Consistency Model sampling: jump to the denoised value, re-noise to the next level."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = make_default_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    s_noise_end = s_noise if s_noise_end is None else s_noise_end
    ms = flow_sampling_of(model)
    n = max(1, len(sigmas) - 1)
    for i in progress(len(sigmas) - 1, disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = denoised
        if sigmas[i + 1] > 0:
            e = noise_sampler(sigmas[i], sigmas[i + 1])
            if noise_clip_std > 0:
                c = noise_clip_std * e.std()
                e = e.clamp(-c, c)
            f = s_noise if n == 1 else s_noise + (s_noise_end - s_noise) * (i / (n - 1))
            if f != 1:
                e = e * f
            x = ms.noise_scaling(sigmas[i + 1], e, x) if ms is not None else noise_scaling_eps(sigmas[i + 1], e, x)
    return x
