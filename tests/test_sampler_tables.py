"""The per-run coefficient tables (engine overhead work) must give exactly the bits of the per-step 0-dim maths.

The references below are the samplers' per-step scalar formulas (sampler-formulas.md), written the plain way;
the library's versions compute the same float32 values once per run. torch.equal, not allclose.
"""

from __future__ import annotations

import pytest
import torch

from twosamplers.engine.schedules import ModelSamplingDiscrete, calculate_sigmas
from twosamplers.samplers import get_sampler
from twosamplers.samplers._common import ancestral_step, ancestral_table


def ref_to_d(x, sigma, denoised):
    return (x - denoised) / sigma


def ref_dpmpp_2m(model, x, sigmas):
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        t, t_next = sigmas[i].log().neg(), sigmas[i + 1].log().neg()
        h = t_next - t
        ratio = t_next.neg().exp() / t.neg().exp()
        if old_denoised is None or sigmas[i + 1] == 0:
            x = ratio * x - (-h).expm1() * denoised
        else:
            h_last = t - sigmas[i - 1].log().neg()
            r = h_last / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = ratio * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


def ref_euler(model, x, sigmas):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        x = x + ref_to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


def ref_euler_ancestral(model, x, sigmas, eta, s_noise, noise_sampler):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if sigma_down == 0:
            x = denoised
        else:
            d = ref_to_d(x, sigmas[i], denoised)
            x = x + d * (sigma_down - sigmas[i]) + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def toy_model(x, sigma):
    """A nonlinear x0 prediction that uses the sigma batch as a tensor."""
    s = sigma[:, None, None, None]
    return torch.tanh(x * 0.7) / (1 + s * 0.3) + 0.05 * s.sqrt()


def schedules():
    ms = ModelSamplingDiscrete()
    karras = calculate_sigmas(ms, "karras", 12)
    return {
        "karras12": karras,
        "exponential7": calculate_sigmas(ms, "exponential", 7),
        "normal9": calculate_sigmas(ms, "normal", 9),
        "sliced_to_nonzero": karras[3:9].clone(),  # ends above 0: the last step is second order
        "one_step": karras[-2:].clone(),
    }


@pytest.mark.parametrize("name", list(schedules()))
def test_dpmpp_2m_and_euler_match_per_step_maths_bit_for_bit(name):
    sigmas = schedules()[name]
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3)) * sigmas[0]
    for fn, ref in ((get_sampler("dpmpp_2m"), ref_dpmpp_2m), (get_sampler("euler"), ref_euler)):
        got = fn(toy_model, x, sigmas, disable=True)
        assert torch.equal(got, ref(toy_model, x, sigmas)), (fn.__name__, name)


@pytest.mark.parametrize("eta, s_noise", [(1.0, 1.0), (0.6, 0.8), (0.0, 1.0)])
@pytest.mark.parametrize("name", ["karras12", "sliced_to_nonzero", "exponential7"])
def test_euler_ancestral_matches_per_step_maths_bit_for_bit(name, eta, s_noise):
    sigmas = schedules()[name]
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(4)) * sigmas[0]

    def noise_source():
        g = torch.Generator().manual_seed(11)
        return lambda s, s_next: torch.randn(x.shape, generator=g)

    got = get_sampler("euler_ancestral")(toy_model, x, sigmas, disable=True, eta=eta, s_noise=s_noise,
                                         noise_sampler=noise_source())
    want = ref_euler_ancestral(toy_model, x, sigmas, eta, s_noise, noise_source())
    assert torch.equal(got, want)


def test_ancestral_table_equals_the_scalar_step():
    sigmas = torch.cat([schedules()["karras12"], schedules()["sliced_to_nonzero"]])
    for eta in (1.0, 0.5, 0.0):
        down, up = ancestral_table(sigmas, eta)
        for i in range(len(sigmas) - 1):
            d, u = ancestral_step(sigmas[i], sigmas[i + 1], eta)
            assert torch.equal(down[i], d)
            assert (u == 0.0 and up is None) or torch.equal(up[i], u)


def test_memoise_gives_the_one_value_results():
    values = torch.cat([s for s in schedules().values()] + [torch.rand(300) * 14.6 + 0.03])
    batched, single = ModelSamplingDiscrete(), ModelSamplingDiscrete()
    batched.memoise(values)
    for v in values.tolist():
        assert batched._timestep_memo[v] == single.timestep_of(v)
        assert batched._input_scale_memo[v] == single.input_scale_of(v)
        scale_t, sigma_t = batched.scalars_of(v)
        assert (scale_t.dtype, scale_t.ndim, float(scale_t), float(sigma_t)) == (torch.float32, 0,
                                                                                 single.input_scale_of(v), v)


@pytest.mark.parametrize("cfg", [7.3, 1 / 3, 6.0])
def test_guidance_with_cfg_not_representable_in_float32_matches_the_python_float_formula(cfg):
    """The denoiser multiplies by cfg as a cached 0-dim float32 tensor; that must equal the Python float operand."""
    from twosamplers.engine.conditioning import normalize_conditioning
    from twosamplers.engine.ksampler import GuidedDenoiser
    from twosamplers.models import NetworkModel

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(0.3))

        def forward(self, x, t, c):
            return torch.tanh(x * self.w + c.mean(dim=(1, 2))[:, None, None, None])

    g = torch.Generator().manual_seed(5)
    lat = torch.randn(1, 4, 8, 8, generator=g)
    pos = normalize_conditioning([[torch.randn(1, 3, 4, generator=g), {}]], "positive")
    neg = normalize_conditioning([[torch.randn(1, 3, 4, generator=g), {}]], "negative")
    model = NetworkModel(Net())
    den = GuidedDenoiser(model, pos, neg, cfg, lat, lat, torch.tensor([2.0, 0.0]))
    sigma = torch.tensor([2.0])
    with torch.no_grad():
        got = den(lat, sigma)
        cond = model.apply_model(lat, sigma, pos[0].cross_attn)
        uncond = model.apply_model(lat, sigma, neg[0].cross_attn)
    assert torch.equal(got, uncond + (cond - uncond) * cfg)
