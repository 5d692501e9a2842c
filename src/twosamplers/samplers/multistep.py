"""Multistep ODE samplers: ipndm, ipndm_v, deis, the res_multistep family and gradient_estimation.

- ipndm / ipndm_v: improved PNDM (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential
  Integrator", arXiv 2204.13902, s.4; as in zju-pi/diff-sampler, Apache-2.0): Adams-Bashforth in sigma up
  to order 4 with fixed (ipndm) or variable-step (ipndm_v) coefficients. `sampler-formulas.md` s.5.4-5.5.
- deis: tAB-DEIS (Zhang & Chen 2022, arXiv 2204.13902) as in diff-sampler: Adams-Bashforth whose
  coefficients integrate Lagrange polynomials in the VP time of the EDM constants. s.5.6.
- res_multistep(_cfg_pp, _ancestral, _ancestral_cfg_pp): the second-order multistep exponential integrator
  of "Refined Exponential Solver" (Zhang et al. 2023, arXiv 2308.02157) in data prediction. s.5.7.
- gradient_estimation(_cfg_pp): Euler with the gradient-estimation correction of Permenter & Yuan 2024
  ("Interpreting and Improving Diffusion Models from an Optimization Perspective", arXiv 2306.04848). s.4.14.

All run in the dtype of x and sigmas (float32 for ComfyUI parity; float64 works for accuracy studies).
"""

from __future__ import annotations

import math
import struct

import torch

from .._checks import check_choice, check_float, check_int
from ._common import UncondCapture, ancestral_step, make_default_noise, model_sampling_of, noise_scale_of, progress

# ------------------------------------------------------------------------------------------------ ipndm


def _check_order(name: str, value, hi: int) -> int:
    return check_int(name, value, 1, hi)


@torch.no_grad()
def sample_ipndm(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4):
    """iPNDM (Zhang & Chen 2023; diff-sampler): fixed-coefficient Adams-Bashforth in sigma, orders 1, 2, 3, 4.

    The step to sigma = 0 returns the denoised prediction.
    """
    max_order = _check_order("max_order", max_order, 4)
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    history: list[torch.Tensor] = []  # previous derivatives, newest last
    for i in progress(len(sigmas) - 1, disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s, "sigma_hat": s, "denoised": denoised})
        d = (x - denoised) / s
        order = min(max_order, i + 1)
        if s_next == 0:
            x = denoised
        elif order == 1:
            x = x + (s_next - s) * d
        elif order == 2:
            x = x + (s_next - s) * (3 * d - history[-1]) / 2
        elif order == 3:
            x = x + (s_next - s) * (23 * d - 16 * history[-1] + 5 * history[-2]) / 12
        else:
            x = x + (s_next - s) * (55 * d - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
        history.append(d)
        if len(history) > max_order - 1:
            history.pop(0)
    return x


def _ipndm_v_coeffs(order: int, sigmas: torch.Tensor, i: int) -> list[torch.Tensor]:
    """Variable-step Adams-Bashforth weights (c1 for the newest derivative first), s.5.5."""
    hn = sigmas[i + 1] - sigmas[i]
    h1 = sigmas[i] - sigmas[i - 1]
    c1 = (2 + hn / h1) / 2
    c2 = -(hn / h1) / 2
    if order == 2:
        return [c1, c2]
    h2 = sigmas[i - 1] - sigmas[i - 2]
    t1 = (1 - hn / (3 * (hn + h1)) * (hn * (hn + h1)) / (h1 * (h1 + h2))) / 2
    if order == 3:
        return [c1 + t1, c2 - (1 + h1 / h2) * t1, t1 * h1 / h2]
    h3 = sigmas[i - 2] - sigmas[i - 3]
    a = (1 - hn / (3 * (hn + h1))) / 2
    bq = (1 - hn / (2 * (hn + h1))) * hn / (6 * (hn + h1 + h2))
    p = hn * (hn + h1) * (hn + h1 + h2)
    q = h1 * (h1 + h2) * (h1 + h2 + h3)
    t2 = (a + bq) * p / q
    rho = h1 * (h1 + h2) / (h2 * (h2 + h3))
    return [
        c1 + t1 + t2,
        c2 - (1 + h1 / h2) * t1 - (1 + h1 / h2 + rho) * t2,
        t1 * h1 / h2 + (h1 / h2 + rho * (1 + h2 / h3)) * t2,
        -t2 * rho * h1 / h2,
    ]


@torch.no_grad()
def sample_ipndm_v(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4):
    """iPNDM-v (diff-sampler): variable-step Adams-Bashforth in sigma, orders 1, 2, 3, 4."""
    max_order = _check_order("max_order", max_order, 4)
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    history: list[torch.Tensor] = []
    for i in progress(len(sigmas) - 1, disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s, "sigma_hat": s, "denoised": denoised})
        d = (x - denoised) / s
        order = min(max_order, i + 1)
        if s_next == 0:
            x = denoised
        elif order == 1:
            x = x + (s_next - s) * d
        else:
            coeffs = _ipndm_v_coeffs(order, sigmas, i)
            terms = [d] + history[::-1]
            acc = coeffs[0] * terms[0]
            for c, term in zip(coeffs[1:], terms[1:order], strict=True):
                acc = acc + c * term
            x = x + (s_next - s) * acc
        history.append(d)
        if len(history) > max_order - 1:
            history.pop(0)
    return x


# ------------------------------------------------------------------------------------------------ deis

# log(float32(0.002)**2 + 1) as NumPy's float32 log returns it (1 ulp below torch.log), s.5.6.
_DEIS_LOG_SMIN = struct.unpack("<f", struct.pack("<I", 0x3687FFED))[0]


def _deis_vp_constants() -> tuple[float, float]:
    """(beta_d, beta_min) of the VP SDE matching EDM's sigma range (eps_s 1e-3, sigma_min 0.002, sigma_max 80).

    log(sigma_min^2 + 1)/eps_s is a float32 quotient (as diff-sampler's NumPy code computes it), the rest double.
    """
    eps_s = 1e-3
    a_over_eps = (torch.tensor(_DEIS_LOG_SMIN, dtype=torch.float32) / eps_s).item()
    c_max = math.log(80.0**2 + 1)
    beta_d = 2 * (a_over_eps - c_max) / (eps_s - 1)
    beta_min = c_max - 0.5 * beta_d
    return beta_d, beta_min


_DEIS_BETA_D, _DEIS_BETA_MIN = _deis_vp_constants()
DEIS_BETA_0 = _DEIS_BETA_MIN  # -0.004715818328307364
DEIS_BETA_1 = _DEIS_BETA_D + _DEIS_BETA_MIN  # 17.533134832612316


def deis_time(sigmas: torch.Tensor) -> torch.Tensor:
    """sigma -> VP time tau in [~5.4e-4, 1] (the float64 constants meet the sigma tensor's dtype)."""
    bd, bmin = _DEIS_BETA_D, _DEIS_BETA_MIN
    return ((bmin**2 + (2 * bd) * (sigmas**2 + 1).log()).sqrt() - bmin) / bd


def deis_coefficients(sigmas: torch.Tensor, max_order: int = 3, n_points: int = 10000) -> list[list[torch.Tensor]]:
    """tAB-DEIS weights per step: C[i][j] = integral over [tau_i, tau_{i+1}] of the j-th Lagrange basis
    polynomial through tau_i, tau_{i-1}, ... against d sigma(tau), by a Riemann sum on `n_points` points.

    Steps of order 1 (the first, and any step to sigma = 0) get []. Computed on the CPU.
    """
    taus = deis_time(sigmas.detach().cpu())
    beta0, beta1 = DEIS_BETA_0, DEIS_BETA_1
    coeffs: list[list[torch.Tensor]] = []
    for i in range(len(taus) - 1):
        order = min(i + 1, max_order)
        if order == 1 or sigmas[i + 1] <= 0:
            coeffs.append([])
            continue
        t_cur, t_next = taus[i], taus[i + 1]
        u = torch.linspace(float(t_cur), float(t_next), n_points, dtype=taus.dtype)
        du = (t_next - t_cur) / n_points
        # alpha(u) = exp(-u^2 (beta1 - beta0)/2 - u beta0) and d log(alpha)/du as autograd computes it
        alpha = (-0.5 * u**2 * (beta1 - beta0) - u * beta0).exp()
        q = (1 / alpha) * alpha
        g = q * (beta1 - beta0) * -0.5 * (2 * u) + (-q) * beta0
        integrand = -0.5 * g / (alpha * (1 - alpha)).sqrt()
        prev = [taus[i - k] for k in range(order)]
        row = []
        for j in range(order):
            poly = 1
            for k in range(order):
                if k != j:
                    poly = poly * ((u - prev[k]) / (prev[j] - prev[k]))
            row.append((integrand * poly).sum() * du)
        coeffs.append(row)
    return coeffs


@torch.no_grad()
def sample_deis(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=3, deis_mode="tab"):
    """DEIS (Zhang & Chen 2022, arXiv 2204.13902), time-Adams-Bashforth variant ("tab") of diff-sampler,
    orders 1, 2, 3. The step to sigma = 0 is an Euler step."""
    max_order = _check_order("max_order", max_order, 4)
    check_choice("deis_mode", deis_mode, ("tab",))
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    coeffs = deis_coefficients(sigmas, max_order)
    history: list[torch.Tensor] = []
    for i in progress(len(sigmas) - 1, disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s, "sigma_hat": s, "denoised": denoised})
        d = (x - denoised) / s
        row = coeffs[i]
        if not row:
            x = x + (s_next - s) * d
        else:
            row = [c.to(x.device) for c in row]
            x = x + row[0] * d
            for c, older in zip(row[1:], reversed(history), strict=False):
                x = x + c * older
        history.append(d)
        if len(history) > max_order - 1:
            history.pop(0)
    return x


# ------------------------------------------------------------------------------------------------ res_multistep


def _res_multistep(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, cfg_pp):
    eta = check_float("eta", eta, 0.0)
    s_noise = check_float("s_noise", s_noise, 0.0) * noise_scale_of(model_sampling_of(model))
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = make_default_noise(x, extra_args, noise_sampler)
    cap = UncondCapture(extra_args) if cfg_pp else None
    s_in = x.new_ones([x.shape[0]])
    old_pred, old_sigma_down = None, None
    for i in progress(len(sigmas) - 1, disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        if cap is not None:
            denoised, uncond = cap.call(model, x, s * s_in)
        else:
            denoised = model(x, s * s_in, **extra_args)
            uncond = None
        sigma_down, sigma_up = ancestral_step(s, s_next, eta)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s, "sigma_hat": s, "denoised": denoised})
        if old_pred is None or sigma_down == 0:
            if cap is not None:
                x = denoised + ((x - uncond) / s) * sigma_down
            else:
                x = x + ((x - denoised) / s) * (sigma_down - s)
        else:
            t, t_old = s.log().neg(), old_sigma_down.log().neg()
            t_next, t_prev = sigma_down.log().neg(), sigmas[i - 1].log().neg()
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1 = (-h).expm1() / (-h)
            phi2 = (phi1 - 1) / (-h)
            b1 = torch.nan_to_num(phi1 - phi2 / c2)
            b2 = torch.nan_to_num(phi2 / c2)
            if cap is not None:
                x = x + (denoised - uncond)
                x = (-h).exp() * x + h * (b1 * uncond + b2 * old_pred)
            else:
                x = (-h).exp() * x + h * (b1 * denoised + b2 * old_pred)
        if s_next > 0:
            x = x + noise_sampler(s, s_next) * s_noise * sigma_up
        old_pred = uncond if cap is not None else denoised
        old_sigma_down = sigma_down
    return x


@torch.no_grad()
def sample_res_multistep(
    model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0, noise_sampler=None, eta=0.0
):
    """RES second-order multistep (Zhang et al. 2023, arXiv 2308.02157), data prediction, eta 0.

    Like ComfyUI it draws one zero-weight noise tensor per step from its private generator.
    """
    return _res_multistep(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, False)


@torch.no_grad()
def sample_res_multistep_cfg_pp(
    model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0, noise_sampler=None, eta=0.0
):
    """res_multistep with CFG++ (arXiv 2406.08070): the history and renoising use the uncond prediction."""
    return _res_multistep(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, True)


@torch.no_grad()
def sample_res_multistep_ancestral(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    """res_multistep stepping to sigma_down with ancestral noise of level sigma_up (eta 1)."""
    return _res_multistep(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, False)


@torch.no_grad()
def sample_res_multistep_ancestral_cfg_pp(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    """res_multistep_ancestral with CFG++."""
    return _res_multistep(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, True)


# ------------------------------------------------------------------------------------------------ gradient estimation


@torch.no_grad()
def sample_gradient_estimation(
    model, x, sigmas, extra_args=None, callback=None, disable=None, ge_gamma=2.0, cfg_pp=False
):
    """Euler with gradient estimation (Permenter & Yuan, arXiv 2306.04848): from the second step on, the
    update adds (ge_gamma - 1)*(d - d_prev)*dt. The step to sigma = 0 returns the denoised prediction."""
    ge_gamma = check_float("ge_gamma", ge_gamma)
    extra_args = {} if extra_args is None else extra_args
    cap = UncondCapture(extra_args) if cfg_pp else None
    s_in = x.new_ones([x.shape[0]])
    old_d = None
    for i in progress(len(sigmas) - 1, disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        if cap is not None:
            denoised, uncond = cap.call(model, x, s * s_in)
            d = (x - uncond) / s
        else:
            denoised = model(x, s * s_in, **extra_args)
            d = (x - denoised) / s
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s, "sigma_hat": s, "denoised": denoised})
        dt = s_next - s
        if s_next == 0:
            x = denoised
        else:
            if cap is not None:
                x = denoised + d * s_next
            else:
                x = x + d * dt
            if i >= 1:
                x = x + ((ge_gamma - 1) * (d - old_d)) * dt
        old_d = d
    return x


@torch.no_grad()
def sample_gradient_estimation_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, ge_gamma=2.0):
    """gradient_estimation with CFG++ (arXiv 2406.08070): derivative from the uncond prediction."""
    return sample_gradient_estimation(
        model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, ge_gamma=ge_gamma, cfg_pp=True
    )
