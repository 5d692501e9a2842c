"""DPM-Solver (Lu et al. 2022, arXiv 2206.00927) as in k-diffusion: dpm_fast and dpm_adaptive.

Both ignore the interior of the schedule: they run on their own grid in t = -log(sigma) from sigmas[0] to
the last nonzero sigma, and stop there (the output keeps noise of that level). `sampler-formulas.md` s.5.8-5.9.
The zero-weight noise draws upstream makes (eta = 0) are skipped: they touch only a private generator.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm


class _DPMSolver:
    def __init__(self, model, extra_args, on_eval):
        self.model, self.extra_args, self.on_eval = model, extra_args, on_eval

    @staticmethod
    def t(sigma):
        return sigma.log().neg()

    @staticmethod
    def sigma(t):
        return t.neg().exp()

    def eps(self, cache, key, x, t):
        if key in cache:
            return cache[key], cache
        sigma = self.sigma(t) * x.new_ones([x.shape[0]])
        eps = (x - self.model(x, sigma, **self.extra_args)) / self.sigma(t)
        self.on_eval()
        return eps, {key: eps, **cache}

    def step_1(self, x, t, t_next, cache):
        h = t_next - t
        eps, cache = self.eps(cache, "eps", x, t)
        return x - self.sigma(t_next) * h.expm1() * eps, cache

    def step_2(self, x, t, t_next, r1=1 / 2, cache=None):
        h = t_next - t
        eps, cache = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1, cache = self.eps(cache, "eps_r1", u1, s1)
        x_2 = x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)
        return x_2, cache

    def step_3(self, x, t, t_next, r1=1 / 3, r2=2 / 3, cache=None):
        h = t_next - t
        eps, cache = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        s2 = t + r2 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1, cache = self.eps(cache, "eps_r1", u1, s1)
        u2 = (
            x
            - self.sigma(s2) * (r2 * h).expm1() * eps
            - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        )
        eps_r2, cache = self.eps(cache, "eps_r2", u2, s2)
        x_3 = x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)
        return x_3, cache

    def fast(self, x, t_start, t_end, nfe, callback):
        m = math.floor(nfe / 3) + 1
        ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
        orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
        for i, order in enumerate(orders):
            t, t_next = ts[i], ts[i + 1]
            eps, cache = self.eps({}, "eps", x, t)
            if callback is not None:
                denoised = x - self.sigma(t) * eps
                callback({"x": x, "i": i, "sigma": self.sigma(t), "sigma_hat": self.sigma(t), "denoised": denoised})
            if order == 1:
                x, _ = self.step_1(x, t, t_next, cache)
            elif order == 2:
                x, _ = self.step_2(x, t, t_next, cache=cache)
            else:
                x, _ = self.step_3(x, t, t_next, cache=cache)
        return x

    def adaptive(self, x, t_start, t_end, callback, order=3, rtol=0.05, atol=0.0078, h_init=0.05,
                 pcoeff=0.0, icoeff=1.0, dcoeff=0.0, accept_safety=0.81):
        if order not in (2, 3):
            raise ValueError(f"order={order} is not supported; accepted: 2 or 3")
        forward = bool(t_end > t_start)
        h_init = abs(h_init) * (1 if forward else -1)
        atol, rtol = torch.tensor(atol), torch.tensor(rtol)
        s = t_start
        x_prev = x
        pid = _PIDStepSizeController(h_init, pcoeff, icoeff, dcoeff, order, accept_safety)
        step = 0
        while s < t_end - 1e-5 if forward else s > t_end + 1e-5:
            t = torch.minimum(t_end, s + pid.h) if forward else torch.maximum(t_end, s + pid.h)
            eps, cache = self.eps({}, "eps", x, s)
            if callback is not None:
                denoised = x - self.sigma(s) * eps
                callback({"x": x, "i": step, "sigma": self.sigma(s), "sigma_hat": self.sigma(s), "denoised": denoised})
            if order == 2:
                x_low, cache = self.step_1(x, s, t, cache)
                x_high, cache = self.step_2(x, s, t, cache=cache)
            else:
                x_low, cache = self.step_2(x, s, t, r1=1 / 3, cache=cache)
                x_high, cache = self.step_3(x, s, t, cache=cache)
            delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
            error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
            if pid.propose_step(error):
                x_prev = x_low
                x = x_high
                s = t
            step += 1
        return x


class _PIDStepSizeController:
    """The PID step-size controller of k-diffusion's DPM-Solver-23 (Söderlind 2003 style)."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order=1, accept_safety=0.8, eps=1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs: list[float] = []

    def propose_step(self, error) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


def _end_sigmas(sigmas):
    sigma_min = sigmas[-1]
    if sigma_min == 0:
        sigma_min = sigmas[-2]
    return sigma_min, sigmas[0]


@torch.no_grad()
def sample_dpm_fast(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver fast (orders 3, .., 3, 2, 1) with len(sigmas) - 1 model calls in total."""
    if len(sigmas) <= 1:
        return x
    extra_args = {} if extra_args is None else extra_args
    sigma_min, sigma_max = _end_sigmas(sigmas)
    n = len(sigmas) - 1
    with tqdm(total=n, disable=disable, leave=False) as pbar:
        solver = _DPMSolver(model, extra_args, pbar.update)
        return solver.fast(x, solver.t(sigma_max.clone()), solver.t(sigma_min.clone()), n, callback)


@torch.no_grad()
def sample_dpm_adaptive(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
    """DPM-Solver-23 with adaptive step size (rtol 0.05, atol 0.0078 by default)."""
    if len(sigmas) <= 1:
        return x
    extra_args = {} if extra_args is None else extra_args
    sigma_min, sigma_max = _end_sigmas(sigmas)
    with tqdm(disable=disable, leave=False) as pbar:
        solver = _DPMSolver(model, extra_args, pbar.update)
        return solver.adaptive(x, solver.t(sigma_max.clone()), solver.t(sigma_min.clone()), callback, **options)
