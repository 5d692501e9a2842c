"""Pass / run_pass: the one place a sampling pass is set up; common_ksampler, the wrappers and the front door
all go through it."""

import pytest
import torch
from conftest import ToyNet

import twosamplers as ts
from twosamplers.engine.ksampler import GuidedDenoiser, compute_sigmas
from twosamplers.engine.passes import Pass, common_ksampler, run_pass
from twosamplers.models import NetworkModel


@pytest.fixture
def model():
    return NetworkModel(ToyNet())


@pytest.fixture
def cond():
    g = torch.Generator().manual_seed(3)
    return [[torch.randn(1, 3, 8, generator=g), {}]], [[torch.randn(1, 3, 8, generator=g), {}]]


def samples():
    return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("kw", [
    {},
    {"denoise": 0.6, "sampler_name": "dpmpp_2m", "scheduler": "karras"},
    {"start_step": 2, "last_step": 5, "force_full_denoise": True, "disable_noise": True},
    {"sampler_name": "uni_pc", "steps": 6},
])
def test_run_pass_equals_common_ksampler(model, cond, kw):
    pos, neg = cond
    x = samples()
    keep = x.clone()
    p = Pass(model, pos, neg, seed=7, steps=kw.pop("steps", 5), cfg=4.0, **kw)
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1.0
    got = run_pass(p, x, noise_mask=mask, disable_pbar=True)
    want = common_ksampler(model, 7, p.steps, 4.0, p.sampler_name, p.scheduler, pos, neg,
                           {"samples": x, "noise_mask": mask}, denoise=p.denoise, disable_noise=p.disable_noise,
                           start_step=p.start_step, last_step=p.last_step, force_full_denoise=p.force_full_denoise,
                           disable_pbar=True)["samples"]
    assert torch.equal(got, want)
    assert torch.equal(x, keep)


def test_run_pass_is_deterministic_and_honours_the_noise_mask(model, cond):
    p = Pass(model, *cond, seed=1, steps=4)
    mask = torch.zeros(8, 8)
    mask[:, :4] = 1.0
    a = run_pass(p, samples(), noise_mask=mask, disable_pbar=True)
    b = run_pass(p, samples(), noise_mask=mask, disable_pbar=True)
    assert torch.equal(a, b)
    torch.testing.assert_close(a[..., 4:], samples()[..., 4:], rtol=0, atol=1e-6)  # outside: the input latent
    assert not torch.equal(a[..., :4], samples()[..., :4])


def test_sigma_slicing_and_factor(model, cond):
    full = compute_sigmas(model.model_sampling, "euler", "normal", 8)
    p = Pass(model, *cond, steps=8, start_step=2, last_step=5, force_full_denoise=True, sigma_factor=0.5)
    sig = p.run_sigmas()
    assert torch.equal(sig[:-1], full[2:5] * 0.5) and float(sig[-1]) == 0.0
    assert p.n_steps() == 3
    # a start past the end, denoise 0 and sigma_factor 0 leave the latent as it is (a copy)
    for kw in ({"start_step": 8}, {"denoise": 0.0}, {"sigma_factor": 0.0}):
        q = Pass(model, *cond, steps=8, **kw)
        assert q.run_sigmas() is None and q.n_steps() == 0
        x = samples()
        out = run_pass(q, x)
        assert torch.equal(out, x) and out is not x


def test_explicit_sigmas_and_callback(model, cond):
    sig = torch.tensor([5.0, 2.0, 0.5, 0.0])
    seen = []
    p = Pass(model, *cond, sigmas=sig)
    run_pass(p, samples(), callback=lambda i, x0, x, n: seen.append((i, n)), disable_pbar=True)
    assert seen == [(0, 3), (1, 3), (2, 3)]
    assert torch.equal(p.full_sigmas(), sig) and p.full_sigmas() is not sig  # the caller's tensor is not kept


def test_explicit_noise_is_used(model, cond):
    p = Pass(model, *cond, seed=1, steps=3)
    x = samples()
    n = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    assert not torch.equal(run_pass(p, x, noise=n, disable_pbar=True), run_pass(p, x, disable_pbar=True))


@pytest.mark.parametrize("kw, match", [
    ({"steps": 0}, "steps=0 is out of range"),
    ({"cfg": 101.0}, "cfg=101.0 is out of range"),
    ({"sampler_name": "nope"}, "sampler_name='nope' is not known"),
    ({"scheduler": "nope"}, "scheduler='nope' is not known"),
    ({"denoise": 1.5}, "denoise=1.5 is out of range"),
    ({"seed": -1}, "seed=-1 is out of range"),
    ({"start_step": -1}, "start_step=-1 is out of range"),
    ({"sigma_factor": 11.0}, "sigma_factor=11.0 is out of range"),
])
def test_pass_validates_once_naming_the_field(model, cond, kw, match):
    with pytest.raises(ValueError, match=match):
        Pass(model, *cond, **kw)
    with pytest.raises(ValueError, match="base." + match):
        Pass(model, *cond, name="base", **kw)


def test_pass_rejects_a_non_model_and_bad_conditioning(model, cond):
    with pytest.raises(TypeError, match="model must implement the twosamplers model protocol"):
        Pass(object(), *cond)
    with pytest.raises(TypeError, match="positive must be a CONDITIONING"):
        Pass(model, "grass", cond[1])


def test_sampler_settings_is_a_pass(model, cond):
    s = ts.SamplerSettings(model, *cond, seed=3, steps=4)
    assert isinstance(s, Pass)
    assert torch.equal(run_pass(s, samples(), disable_pbar=True),
                       run_pass(Pass(model, *cond, seed=3, steps=4), samples(), disable_pbar=True))


def test_guided_denoiser_exposes_model_sampling(model, cond):
    """sa_solver reads the schedule from the denoiser's public attribute, not from its internals."""
    d = GuidedDenoiser(model, [], [], 1.0, samples(), samples(), torch.tensor([1.0, 0.0]))
    assert d.model_sampling is model.model_sampling


def test_regional_modes_refuse_pass_fields_they_would_ignore(model, cond):
    base = ts.SamplerSettings(model, *cond, steps=2)
    latent = {"samples": samples()}
    mask = torch.ones(8, 8)
    with pytest.raises(ValueError, match="regions\\[0\\] settings.start_step"):
        ts.regional_sample(latent, base, [(mask, ts.SamplerSettings(model, *cond, steps=2, start_step=1))])
    with pytest.raises(ValueError, match="base.sigma_factor"):
        ts.regional_sample(latent, ts.SamplerSettings(model, *cond, sigma_factor=0.5), [(mask, base)])
