"""The custom-sampling family on the engine: SamplerCustom / SamplerCustomAdvanced with KSamplerSelect and
BasicScheduler give KSampler's numbers (ComfyUI builds KSampler from the same pieces), denoised_output is the last
step's x0, noise and guider variants behave as ComfyUI's, and bad inputs are named."""

from __future__ import annotations

import pytest
import torch

from twosamplers.nodes import custom_sampling as cs
from twosamplers.nodes.core import KSampler, KSamplerAdvanced


@pytest.fixture
def latent():
    g = torch.Generator().manual_seed(3)
    return {"samples": torch.randn(1, 4, 8, 8, generator=g) * 0.3}


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "euler_ancestral", "dpmpp_sde"])
@pytest.mark.parametrize("denoise", [1.0, 0.6])
def test_sampler_custom_is_ksampler(toy_model, conds, latent, sampler, denoise):
    pos, neg = conds
    sigmas = cs.BasicScheduler().get_sigmas(toy_model, "karras", 4, denoise)[0]
    out, den = cs.SamplerCustom().sample(toy_model, True, 7, 3.5, pos, neg, cs.KSamplerSelect().get_sampler(sampler)[0],
                                         sigmas, latent, disable_pbar=True)
    ref = KSampler().sample(toy_model, 7, 4, 3.5, sampler, "karras", pos, neg, latent, denoise, disable_pbar=True)[0]
    assert torch.equal(out["samples"], ref["samples"])
    assert den["samples"].shape == out["samples"].shape
    if sampler == "euler":  # its last step lands on x0 (the last sigma is 0)
        assert torch.allclose(den["samples"], out["samples"], atol=1e-6)


def test_sampler_custom_advanced_matches_sampler_custom(toy_model, conds, latent):
    pos, neg = conds
    sigmas = cs.KarrasScheduler().get_sigmas(5, 14.614642, 0.0291675, 7.0)[0]
    sel = cs.KSamplerSelect().get_sampler("euler_ancestral")[0]
    a = cs.SamplerCustom().sample(toy_model, True, 11, 2.0, pos, neg, sel, sigmas, latent, disable_pbar=True)
    guider = cs.CFGGuider().get_guider(toy_model, pos, neg, 2.0)[0]
    b = cs.SamplerCustomAdvanced().sample(cs.RandomNoise().get_noise(11)[0], guider, sel, sigmas, latent,
                                          disable_pbar=True)
    assert torch.equal(a[0]["samples"], b[0]["samples"]) and torch.equal(a[1]["samples"], b[1]["samples"])


def test_disable_noise_and_split_sigmas_continue_a_run(toy_model, conds, latent):
    """The classic two-stage custom workflow: high sigmas with noise, low sigmas without, equals one run
    (KSamplerAdvanced's split with leftover noise)."""
    pos, neg = conds
    sigmas = cs.BasicScheduler().get_sigmas(toy_model, "normal", 6, 1.0)[0]
    hi, lo = cs.SplitSigmas().get_sigmas(sigmas, 3)
    sel = cs.KSamplerSelect().get_sampler("euler")[0]
    first = cs.SamplerCustom().sample(toy_model, True, 5, 3.0, pos, neg, sel, hi, latent, disable_pbar=True)[0]
    second = cs.SamplerCustom().sample(toy_model, False, 5, 3.0, pos, neg, sel, lo, first, disable_pbar=True)[0]
    ka = KSamplerAdvanced()
    ref1 = ka.sample(toy_model, "enable", 5, 6, 3.0, "euler", "normal", pos, neg, latent, 0, 3, "enable",
                     disable_pbar=True)[0]
    ref2 = ka.sample(toy_model, "disable", 5, 6, 3.0, "euler", "normal", pos, neg, ref1, 3, 10000, "disable",
                     disable_pbar=True)[0]
    assert torch.equal(first["samples"], ref1["samples"])
    assert torch.allclose(second["samples"], ref2["samples"], atol=1e-6)


def test_basic_guider_is_cfg_one(toy_model, conds, latent):
    pos, neg = conds
    sigmas = cs.BasicScheduler().get_sigmas(toy_model, "simple", 3, 1.0)[0]
    sel = cs.KSamplerSelect().get_sampler("euler")[0]
    a = cs.SamplerCustomAdvanced().sample(cs.RandomNoise().get_noise(2)[0], cs.BasicGuider().get_guider(
        toy_model, pos)[0], sel, sigmas, latent, disable_pbar=True)[0]
    ref = KSampler().sample(toy_model, 2, 3, 1.0, "euler", "simple", pos, neg, latent, 1.0, disable_pbar=True)[0]
    assert torch.equal(a["samples"], ref["samples"])


def test_empty_sigmas_return_the_latent(toy_model, conds, latent):
    pos, neg = conds
    sigmas = cs.BasicScheduler().get_sigmas(toy_model, "normal", 5, 0.0)[0]
    assert sigmas.numel() == 0
    out, den = cs.SamplerCustom().sample(toy_model, True, 1, 2.0, pos, neg, cs.KSamplerSelect().get_sampler(
        "euler")[0], sigmas, latent)
    assert torch.equal(out["samples"], latent["samples"])
    assert torch.equal(den["samples"], latent["samples"])


def test_flip_sigmas_does_not_modify_its_input():
    s = torch.tensor([3.0, 1.0, 0.0])
    out = cs.FlipSigmas().get_sigmas(s)[0]
    assert out.tolist() == pytest.approx([0.0001, 1.0, 3.0]) and s.tolist() == [3.0, 1.0, 0.0]


def test_conditioning_zero_out(conds):
    pos, _ = conds
    pos = [[pos[0][0], {"pooled_output": torch.ones(1, 4), "strength": 0.5}]]
    out = cs.ConditioningZeroOut().zero_out(pos)[0]
    assert torch.count_nonzero(out[0][0]) == 0 and torch.count_nonzero(out[0][1]["pooled_output"]) == 0
    assert out[0][1]["strength"] == 0.5 and torch.count_nonzero(pos[0][1]["pooled_output"]) == 4


def test_bad_inputs_are_named(toy_model, conds, latent):
    pos, neg = conds
    with pytest.raises(TypeError, match="sampler must be a SAMPLER"):
        cs.SamplerCustom().sample(toy_model, True, 1, 2.0, pos, neg, "euler", torch.tensor([1.0, 0.0]), latent)
    with pytest.raises(ValueError, match="sigmas must be finite"):
        cs.SamplerCustom().sample(toy_model, True, 1, 2.0, pos, neg, cs.SamplerChoice("euler"),
                                  torch.tensor([float("nan"), 0.0]), latent)
    with pytest.raises(ValueError, match="sampler_name"):
        cs.KSamplerSelect().get_sampler("nope")
    with pytest.raises(ValueError, match="sigma_min and sigma_max must be > 0"):
        cs.ExponentialScheduler().get_sigmas(4, 10.0, 0.0)
