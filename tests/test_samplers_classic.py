"""The classic samplers (issue 2) on a closed-form denoiser: ComfyUI parity and basic properties."""

import pytest
import torch
from conftest import closed_form_denoiser, parity_keys, run_kd_case

from twosamplers.engine.schedules import ModelSamplingDiscrete, calculate_sigmas
from twosamplers.samplers import COMFYUI_SAMPLER_NAMES, SAMPLER_NAMES, get_sampler

CLASSIC = [
    "euler", "euler_ancestral", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive",
    "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ddim", "uni_pc", "uni_pc_bh2",
]  # fmt: skip
STOCHASTIC = {"euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_sde_gpu",
              "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm"}
KD_CLASSIC = [k for k in parity_keys("kd/") if k.split("/")[1] in CLASSIC]


def test_names_follow_comfyui_order():
    assert all(n in SAMPLER_NAMES for n in CLASSIC)
    order = [COMFYUI_SAMPLER_NAMES.index(n) for n in SAMPLER_NAMES]
    assert order == sorted(order)


def test_unknown_sampler_lists_valid_names():
    with pytest.raises(ValueError, match="sampler_name='eulerr' is not known; valid names: euler,"):
        get_sampler("eulerr")


@pytest.mark.parametrize("key", KD_CLASSIC)
def test_sampler_matches_comfyui_on_closed_form_denoiser(parity, key):
    run_kd_case(parity, key)


def _run(name, seed=1, steps=20, batch=2):
    sig = calculate_sigmas(ModelSamplingDiscrete(), "karras", steps)
    x = torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * sig[0]
    x_before = x.clone()
    sig_before = sig.clone()
    calls = []

    def cb(info):
        calls.append(info["i"])

    out = get_sampler(name)(closed_form_denoiser(), x, sig, extra_args={"seed": seed}, callback=cb, disable=True)
    assert torch.equal(x, x_before) and torch.equal(sig, sig_before), "sampler mutated its inputs"
    return out, calls


@pytest.mark.parametrize("name", CLASSIC)
def test_sampler_runs_deterministically_and_denoises(name):
    out, calls = _run(name)
    out2, _ = _run(name)
    assert torch.equal(out, out2)
    assert torch.isfinite(out).all()
    assert calls and calls[0] == 0
    if name not in ("dpm_fast", "dpm_adaptive"):  # these stop at sigma_min with noise left
        # data is N(0.3, 0.25): the result must look like it
        assert abs(float(out.mean()) - 0.3) < 0.15
        assert 0.3 < float(out.std()) < 0.7
    if name in STOCHASTIC:
        other, _ = _run(name, seed=2)
        assert not torch.equal(out, other)


def test_unipc_leaves_callers_sigmas_alone():
    sig = calculate_sigmas(ModelSamplingDiscrete(), "karras", 6)
    before = sig.clone()
    get_sampler("uni_pc")(closed_form_denoiser(), torch.randn(1, 4, 4, 4) * sig[0], sig, disable=True)
    assert torch.equal(sig, before)


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m", "uni_pc", "dpm_fast", "dpmpp_sde", "lms"])
def test_single_and_empty_schedules(name):
    fn = get_sampler(name)
    x = torch.randn(1, 4, 4, 4)
    sig = torch.tensor([14.6, 0.0])
    assert torch.isfinite(fn(closed_form_denoiser(), x * 14.6, sig, disable=True)).all()
    assert torch.allclose(fn(closed_form_denoiser(), x, torch.tensor([1.0]), disable=True), x, atol=1e-6)
