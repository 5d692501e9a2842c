"""DPM-Solver++ family (Lu et al. 2022b, arXiv 2211.01095; k-diffusion): dpmpp_2m and the SDE variants.

Update rules: `sampler-formulas.md` s.5.1 (2M) and s.6.1-6.3 (SDE, 2M SDE midpoint/heun, 3M SDE), written in
half-log-SNR lambda = -log(sigma) for the discrete EPS/V models and -logit(sigma) for flow models, whose first
sigma is moved off 1 first (s.2.1). SDE noise comes from a Brownian tree (`make_brownian_noise`, built on the
sigmas before that move): on the CPU for the plain names, on x's device for the `_gpu` names.
"""

from __future__ import annotations

import torch

from ._common import (
    ancestral_step,
    half_log_snr,
    make_brownian_noise,
    model_sampling_of,
    noise_scale_of,
    offset_first_sigma,
    progress,
    scalars,
    sigma_from_half_log_snr,
    sigma_rows,
)


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M): second-order multistep, first-order first step.

    The step coefficients are computed once per run, elementwise over the whole schedule with the spec's float32
    ops in the spec's order (each element gets the bits the per-step 0-dim maths gives it), and used as 0-dim
    tensors (views of the tables): the same bits as the per-step version, with about 25 ops fewer a step."""
    extra_args = {} if extra_args is None else extra_args
    rows, sig = sigma_rows(sigmas, x), sigmas.tolist()
    lam = sigmas.log().neg()  # t = -log(sigma)
    h = lam[1:] - lam[:-1]  # t_next - t; also h_last of the following step
    ratio = scalars(lam[1:].neg().exp() / lam[:-1].neg().exp())
    expm1 = scalars((-h).expm1())
    r = h[:-1] / h[1:]  # h_last / h of steps 1..n-1
    old_w, new_w = scalars(1 / (2 * r)), scalars(1 + 1 / (2 * r))
    old_denoised = None
    for i in progress(len(sigmas) - 1, disable):
        denoised = model(x, rows[i], **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if old_denoised is None or sig[i + 1] == 0:
            x = x * ratio[i]
            x.sub_(denoised * expm1[i])
        else:
            denoised_d = denoised * new_w[i - 1]
            denoised_d.sub_(old_denoised * old_w[i - 1]).mul_(expm1[i])
            x = x * ratio[i]
            x.sub_(denoised_d)
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, disable=None,
                     eta=1.0, s_noise=1.0, noise_sampler=None, r=1 / 2, cpu_noise=True):
    """DPM-Solver++ (stochastic, two model calls per step)."""
    if len(sigmas) <= 1:
        return x
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = make_brownian_noise(x, sigmas, extra_args, noise_sampler, cpu=cpu_noise)
    s_in = x.new_ones([x.shape[0]])
    ms = model_sampling_of(model)
    sigmas = offset_first_sigma(sigmas, ms)
    s_noise = s_noise * noise_scale_of(ms)
    fac = 1 / (2 * r)
    for i in progress(len(sigmas) - 1, disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = half_log_snr(sigmas[i], ms), half_log_snr(sigmas[i + 1], ms)
        h = lambda_t - lambda_s
        lambda_s_1 = lambda_s + r * h
        sigma_s_1 = sigma_from_half_log_snr(lambda_s_1, ms)
        alpha_s = sigmas[i] * lambda_s.exp()
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        # step 1
        sd, su = ancestral_step(lambda_s.neg().exp(), lambda_s_1.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        x_2 = (alpha_s_1 / alpha_s) * (-h_).exp() * x - alpha_s_1 * (-h_).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + alpha_s_1 * noise_sampler(sigmas[i], sigma_s_1) * s_noise * su
        denoised_2 = model(x_2, sigma_s_1 * s_in, **extra_args)
        # step 2
        sd, su = ancestral_step(lambda_s.neg().exp(), lambda_t.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (alpha_t / alpha_s) * (-h_).exp() * x - alpha_t * (-h_).expm1() * denoised_d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None,
                        eta=1.0, s_noise=1.0, noise_sampler=None, solver_type="midpoint", cpu_noise=True):
    """DPM-Solver++(2M) SDE; `solver_type` "midpoint" (dpmpp_2m_sde) or "heun" (dpmpp_2m_sde_heun)."""
    if len(sigmas) <= 1:
        return x
    if solver_type not in ("heun", "midpoint"):
        raise ValueError(f"solver_type={solver_type!r} is not known; valid: heun, midpoint")
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = make_brownian_noise(x, sigmas, extra_args, noise_sampler, cpu=cpu_noise)
    s_in = x.new_ones([x.shape[0]])
    ms = model_sampling_of(model)
    sigmas = offset_first_sigma(sigmas, ms)
    s_noise = s_noise * noise_scale_of(ms)
    old_denoised = None
    h, h_last = None, None
    for i in progress(len(sigmas) - 1, disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = half_log_snr(sigmas[i], ms), half_log_snr(sigmas[i + 1], ms)
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + alpha_t * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta > 0 and s_noise > 0:
                noise = noise_sampler(sigmas[i], sigmas[i + 1])
                x = x + noise * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        old_denoised = denoised
        h_last = h
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None,
                        eta=1.0, s_noise=1.0, noise_sampler=None, cpu_noise=True):
    """DPM-Solver++(3M) SDE: orders 1, 2, 3 over the first steps."""
    if len(sigmas) <= 1:
        return x
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = make_brownian_noise(x, sigmas, extra_args, noise_sampler, cpu=cpu_noise)
    s_in = x.new_ones([x.shape[0]])
    ms = model_sampling_of(model)
    sigmas = offset_first_sigma(sigmas, ms)
    s_noise = s_noise * noise_scale_of(ms)
    denoised_1, denoised_2 = None, None
    h, h_1, h_2 = None, None, None
    for i in progress(len(sigmas) - 1, disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = half_log_snr(sigmas[i], ms), half_log_snr(sigmas[i + 1], ms)
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                r0 = h_1 / h
                r1 = h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif h_1 is not None:
                r = h_1 / h
                d = (denoised - denoised_1) / r
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + (alpha_t * phi_2) * d
            if eta > 0 and s_noise > 0:
                noise = noise_sampler(sigmas[i], sigmas[i + 1])
                x = x + noise * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x
