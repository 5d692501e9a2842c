"""UniPC (Zhao et al. 2023, arXiv 2302.04867; MIT reference code): multistep predictor-corrector in data
prediction, variants bh1 (uni_pc) and bh2 (uni_pc_bh2). `sampler-formulas.md` s.5.3.

The solver works on the VP state z = x / sqrt(1 + sigma^2). When the schedule ends at 0 the last level is
taken as 0.001 (as upstream), but unlike upstream we never write that into the caller's sigma tensor.
"""

from __future__ import annotations

import torch
from tqdm.auto import trange


def _log_alpha(v):
    return 0.5 * torch.log(1 / ((v * v) + 1))


def _alpha(v):
    return torch.exp(_log_alpha(v))


def _std(v):
    return torch.sqrt(1.0 - torch.exp(2.0 * _log_alpha(v)))


def _lambda(v):
    log_mean = _log_alpha(v)
    return log_mean - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_mean))


class _UniPC:
    def __init__(self, model, extra_args, variant, batch):
        self.model, self.extra_args, self.variant = model, extra_args, variant
        self.s_in = torch.ones(batch)

    def data_prediction(self, z, v):
        s_in = self.s_in.to(z.device)
        xin = z * ((v**2 + 1.0) ** 0.5)
        eps = (xin - self.model(xin, v * s_in, **self.extra_args)) / v
        return (z - _std(v) * eps) / _alpha(v)

    def update(self, z, model_prev_list, t_prev_list, t, order, use_corrector=True):
        t_prev_0 = t_prev_list[-1]
        lambda_prev_0 = _lambda(t_prev_0)
        lambda_t = _lambda(t)
        model_prev_0 = model_prev_list[-1]
        sigma_prev_0, sigma_t = _std(t_prev_0), _std(t)
        alpha_t = torch.exp(_log_alpha(t))
        h = lambda_t - lambda_prev_0

        rks, d1s = [], []
        for i in range(1, order):
            rk = (_lambda(t_prev_list[-(i + 1)]) - lambda_prev_0) / h
            rks.append(rk)
            d1s.append((model_prev_list[-(i + 1)] - model_prev_0) / rk)
        rks.append(torch.ones((), device=z.device, dtype=h.dtype))
        rks = torch.stack(rks)

        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial_i = 1
        b_h = hh if self.variant == "bh1" else torch.expm1(hh)
        rows, b = [], []
        for i in range(1, order + 1):
            rows.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial_i / b_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        R = torch.stack(rows)
        b = torch.stack(b).to(z.device)

        if d1s:
            d1s = torch.stack(d1s, dim=1)
            if order == 2:
                rhos_p = torch.tensor([0.5], device=z.device, dtype=h.dtype)
            else:
                rhos_p = torch.linalg.solve(R[:-1, :-1], b[:-1])
        else:
            d1s = None
        if use_corrector:
            if order == 1:
                rhos_c = torch.tensor([0.5], device=z.device, dtype=h.dtype)
            else:
                rhos_c = torch.linalg.solve(R, b)

        z_base = sigma_t / sigma_prev_0 * z - alpha_t * h_phi_1 * model_prev_0
        pred_res = torch.tensordot(d1s, rhos_p, dims=([1], [0])) if d1s is not None else 0
        z_t = z_base - alpha_t * b_h * pred_res
        model_t = None
        if use_corrector:
            model_t = self.data_prediction(z_t, t)
            corr_res = torch.tensordot(d1s, rhos_c[:-1], dims=([1], [0])) if d1s is not None else 0
            z_t = z_base - alpha_t * b_h * (corr_res + rhos_c[-1] * (model_t - model_prev_0))
        return z_t, model_t


def _sample_unipc(model, x, sigmas, extra_args, callback, disable, variant):
    extra_args = {} if extra_args is None else extra_args
    timesteps = sigmas.clone()
    if sigmas[-1] == 0:
        timesteps[-1] = 0.001
    n = len(timesteps) - 1
    order = min(3, len(timesteps) - 2)
    solver = _UniPC(model, extra_args, variant, x.shape[0])
    z = x / torch.sqrt(1.0 + timesteps[0] ** 2.0)
    model_prev_list: list[torch.Tensor] = []
    t_prev_list: list[torch.Tensor] = []
    for step_index in trange(n, disable=disable, leave=False):
        if step_index == 0:
            model_prev_list = [solver.data_prediction(z, timesteps[0])]
            t_prev_list = [timesteps[0]]
        elif step_index < order:
            t = timesteps[step_index]
            z, model_x = solver.update(z, model_prev_list, t_prev_list, t, step_index, use_corrector=True)
            if model_x is None:
                model_x = solver.data_prediction(z, t)
            model_prev_list.append(model_x)
            t_prev_list.append(t)
        else:
            extra_final_step = 1 if step_index == n - 1 else 0
            for step in range(step_index, step_index + 1 + extra_final_step):
                t = timesteps[step]
                step_order = min(order, n + 1 - step)
                z, model_x = solver.update(z, model_prev_list, t_prev_list, t, step_order, use_corrector=step != n)
                for i in range(order - 1):
                    t_prev_list[i] = t_prev_list[i + 1]
                    model_prev_list[i] = model_prev_list[i + 1]
                t_prev_list[-1] = t
                if step < n:
                    if model_x is None:
                        model_x = solver.data_prediction(z, t)
                    model_prev_list[-1] = model_x
        if callback is not None:
            s = sigmas[step_index]
            callback({"x": z, "i": step_index, "sigma": s, "sigma_hat": s, "denoised": model_prev_list[-1]})
    return z / _alpha(timesteps[-1])


@torch.no_grad()
def sample_uni_pc(model, x, sigmas, extra_args=None, callback=None, disable=None):
    return _sample_unipc(model, x, sigmas, extra_args, callback, disable, "bh1")


@torch.no_grad()
def sample_uni_pc_bh2(model, x, sigmas, extra_args=None, callback=None, disable=None):
    return _sample_unipc(model, x, sigmas, extra_args, callback, disable, "bh2")
