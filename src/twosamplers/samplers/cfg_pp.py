"""CFG++ samplers (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance", arXiv 2406.08070).

The renoising half of each update uses the *unconditional* x0 prediction U instead of the guided one D, so
the sample stays near the data manifold at any guidance scale. U is captured from the same model call as D
(`UncondCapture`, `sampler-formulas.md` s.2.6); with a bare callable model U == D.

euler_cfg_pp, euler_ancestral_cfg_pp (s.4.10), dpmpp_2s_ancestral_cfg_pp (s.4.9, DPM-Solver++(2S) of
Lu et al. 2022b, arXiv 2211.01095, with ancestral noise) and dpmpp_2m_cfg_pp (s.5.2, DPM-Solver++(2M)).
Written for the discrete EPS/V model samplings: lambda(sigma) = -log(sigma), alpha(sigma) = sigma*exp(lambda).
"""

from __future__ import annotations

import torch

from .._checks import check_float
from ._common import (
    UncondCapture,
    ancestral_step,
    half_log_snr,
    make_default_noise,
    model_sampling_of,
    noise_scale_of,
    progress,
)


@torch.no_grad()
def sample_euler_ancestral_cfg_pp(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    """Euler ancestral with CFG++ (arXiv 2406.08070, alg. for DDIM/Euler): the x0 jump uses the guided D,
    the direction back to the noisy state the uncond U. `sampler-formulas.md` s.4.10."""
    eta = check_float("eta", eta, 0.0)
    s_noise = check_float("s_noise", s_noise, 0.0)
    extra_args = {} if extra_args is None else extra_args
    ms = model_sampling_of(model)
    s_noise = s_noise * noise_scale_of(ms)
    noisy = eta > 0 and s_noise > 0
    if noisy:
        noise_sampler = make_default_noise(x, extra_args, noise_sampler)
    cap = UncondCapture(extra_args)
    s_in = x.new_ones([x.shape[0]])
    for i in progress(len(sigmas) - 1, disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised, uncond = cap.call(model, x, s * s_in)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s, "sigma_hat": s, "denoised": denoised})
        if s_next == 0:
            x = denoised
            continue
        alpha_s = s * half_log_snr(s, ms).exp()
        alpha_t = s_next * half_log_snr(s_next, ms).exp()
        d = (x - alpha_s * uncond) / s
        sigma_down, sigma_up = ancestral_step(s / alpha_s, s_next / alpha_t, eta)
        sigma_down = alpha_t * sigma_down
        x = alpha_t * denoised + sigma_down * d
        if noisy:
            x = x + alpha_t * noise_sampler(s, s_next) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_euler_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Euler (DDIM) with CFG++ (arXiv 2406.08070): euler_ancestral_cfg_pp with eta = 0 and no noise."""
    return sample_euler_ancestral_cfg_pp(
        model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, eta=0.0, s_noise=0.0
    )


@torch.no_grad()
def sample_dpmpp_2s_ancestral_cfg_pp(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    """DPM-Solver++(2S) ancestral (Lu et al. 2022b) with CFG++: both stages renoise with the uncond.

    As in ComfyUI the final update pairs the first call's D with the second call's uncond (s.4.9).
    """
    eta = check_float("eta", eta, 0.0)
    s_noise = check_float("s_noise", s_noise, 0.0) * noise_scale_of(model_sampling_of(model))
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = make_default_noise(x, extra_args, noise_sampler)
    cap = UncondCapture(extra_args)
    s_in = x.new_ones([x.shape[0]])
    for i in progress(len(sigmas) - 1, disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised, uncond = cap.call(model, x, s * s_in)
        sigma_down, sigma_up = ancestral_step(s, s_next, eta)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s, "sigma_hat": s, "denoised": denoised})
        if sigma_down == 0:
            d = (x - uncond) / s
            x = denoised + d * sigma_down
        else:
            t, t_next = s.log().neg(), sigma_down.log().neg()
            r = 1 / 2
            h = t_next - t
            t_mid = t + r * h
            x_2 = (t_mid.neg().exp() / t.neg().exp()) * (x + (denoised - uncond)) - (-h * r).expm1() * denoised
            denoised_2, uncond_2 = cap.call(model, x_2, t_mid.neg().exp() * s_in)
            x = (t_next.neg().exp() / t.neg().exp()) * (x + (denoised - uncond_2)) - (-h).expm1() * denoised_2
        if s_next > 0:
            x = x + noise_sampler(s, s_next) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2m_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M) (Lu et al. 2022b) with CFG++: first-order first and last step (s.5.2)."""
    extra_args = {} if extra_args is None else extra_args
    cap = UncondCapture(extra_args)
    s_in = x.new_ones([x.shape[0]])
    old_uncond = None
    for i in progress(len(sigmas) - 1, disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised, uncond = cap.call(model, x, s * s_in)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s, "sigma_hat": s, "denoised": denoised})
        t, t_next = s.log().neg(), s_next.log().neg()
        h = t_next - t
        if old_uncond is None or s_next == 0:
            mix = -(-h).exp() * uncond
        else:
            h_last = t - sigmas[i - 1].log().neg()
            r = h_last / h
            mix = -(-h).exp() * uncond - (-h).expm1() * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + (-h).exp() * x
        old_uncond = uncond
    return x
