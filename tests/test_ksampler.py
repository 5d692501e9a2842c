"""common_ksampler: ComfyUI parity with the toy network, KSamplerAdvanced slicing, CFG, validation, no mutation."""

import copy

import pytest
import torch
from conftest import ToyNet, assert_close, parity_keys

from twosamplers.engine.ksampler import common_ksampler, compute_sigmas
from twosamplers.engine.schedules import ModelSamplingDiscrete
from twosamplers.models import NetworkModel

PIPE = [k for k in parity_keys("pipe/") if "/karras/" in k]


@pytest.mark.parametrize("key", parity_keys("ksigmas/"))
def test_ksampler_sigmas_match_comfyui(parity, key):
    T, M = parity
    p = M[key]
    out = compute_sigmas(ModelSamplingDiscrete(), p["sampler"], p["scheduler"], p["steps"], denoise=p["denoise"])
    assert_close(out, T[key])


def _pipe_inputs(T, p):
    latent = {"samples": T[p.get("latent", "pipe/latent_in")].clone()}
    if p.get("mask") is not None:
        m = T[f"pipe/mask_{p['mask']}"]
        latent["noise_mask"] = m.reshape((-1, 1, m.shape[-2], m.shape[-1])).clone()
    pos = [[T["pipe/positive_cross_attn"], {}]]
    neg = [[T["pipe/negative_cross_attn"], {}]]
    return latent, pos, neg


@pytest.mark.parametrize("key", PIPE)
def test_common_ksampler_matches_comfyui(parity, key):
    T, M = parity
    p = M[key]
    latent, pos, neg = _pipe_inputs(T, p)
    model = NetworkModel(ToyNet())
    out = common_ksampler(model, p["seed"], p["steps"], p["cfg"], p["sampler"], p["scheduler"], pos, neg, latent,
                          denoise=p["denoise"], disable_pbar=True)
    assert_close(out["samples"], T[key])
    # the same seed gives bit-identical output
    out2 = common_ksampler(model, p["seed"], p["steps"], p["cfg"], p["sampler"], p["scheduler"], pos, neg, latent,
                           denoise=p["denoise"], disable_pbar=True)
    assert torch.equal(out["samples"], out2["samples"])


def _latent(batch=1, mask=False):
    g = torch.Generator().manual_seed(1)
    lat = {"samples": torch.randn(batch, 4, 8, 8, generator=g)}
    if mask:
        m = torch.zeros(1, 1, 64, 64)
        m[..., 16:48, 16:48] = 1.0
        lat["noise_mask"] = m
    return lat


def test_inputs_are_never_mutated(toy_model, conds):
    pos, neg = conds
    lat = _latent(batch=2, mask=True)
    lat["batch_index"] = [0, 1]
    snapshot = copy.deepcopy(lat)
    pos_before, neg_before = copy.deepcopy(pos), copy.deepcopy(neg)
    out = common_ksampler(toy_model, 3, 4, 7.0, "uni_pc", "karras", pos, neg, lat, denoise=0.8, disable_pbar=True)
    assert set(lat) == set(snapshot)
    for k in snapshot:
        v = snapshot[k]
        assert torch.equal(lat[k], v) if torch.is_tensor(v) else lat[k] == v
    assert torch.equal(pos[0][0], pos_before[0][0]) and pos[0][1] == pos_before[0][1]
    assert torch.equal(neg[0][0], neg_before[0][0])
    assert out is not lat and out["samples"] is not lat["samples"]
    assert set(out) == {"samples", "noise_mask", "batch_index"}


def test_outside_mask_keeps_input_for_denoised_last_step(toy_model, conds):
    pos, neg = conds
    lat = _latent(mask=True)
    out = common_ksampler(toy_model, 3, 6, 7.0, "dpmpp_2m", "karras", pos, neg, lat, disable_pbar=True)
    # the box 16:48 of 64 px resized bilinearly to 8 latent px is exactly 0 at latent rows/cols 0, 1, 6, 7
    sl = [0, 1, 6, 7]
    assert torch.allclose(out["samples"][:, :, sl][:, :, :, sl], lat["samples"][:, :, sl][:, :, :, sl], atol=1e-6)
    inside = out["samples"][:, :, 3:5, 3:5] - lat["samples"][:, :, 3:5, 3:5]
    assert inside.abs().max() > 0.1


def test_cfg_batches_cond_and_uncond_in_one_call_and_cfg1_skips_uncond(conds):
    pos, neg = conds
    net = ToyNet()
    model = NetworkModel(net)
    common_ksampler(model, 1, 3, 7.0, "euler", "normal", pos, neg, _latent(batch=2), disable_pbar=True)
    assert net.calls == [(4, 4, 8, 8)] * 3
    net.calls.clear()
    common_ksampler(model, 1, 3, 1.0, "euler", "normal", pos, neg, _latent(batch=2), disable_pbar=True)
    assert net.calls == [(2, 4, 8, 8)] * 3


def test_cfg_result_does_not_depend_on_batching(conds):
    """A conditioning given twice (two entries, batched as 4 rows) averages to the same prediction."""
    pos, neg = conds
    model = NetworkModel(ToyNet())
    a = common_ksampler(model, 1, 3, 5.0, "euler", "normal", pos, neg, _latent(), disable_pbar=True)["samples"]
    doubled = [pos[0], [pos[0][0].clone(), {"strength": 1.0}]]
    b = common_ksampler(model, 1, 3, 5.0, "euler", "normal", doubled, neg, _latent(), disable_pbar=True)["samples"]
    assert torch.allclose(a, b, atol=1e-5)


def test_callback_and_progress(toy_model, conds, capsys):
    pos, neg = conds
    seen = []
    common_ksampler(toy_model, 1, 5, 7.0, "euler", "karras", pos, neg, _latent(),
                    callback=lambda i, x0, x, total: seen.append((i, total, tuple(x0.shape))), disable_pbar=False)
    assert seen == [(i, 5, (1, 4, 8, 8)) for i in range(5)]
    assert "0/5" in capsys.readouterr().err  # a tqdm bar was drawn
    common_ksampler(toy_model, 1, 5, 7.0, "euler", "karras", pos, neg, _latent(), disable_pbar=True)
    assert capsys.readouterr().err == ""


def test_advanced_slicing_and_untouched_returns(toy_model, conds):
    pos, neg = conds
    lat = _latent()
    # start past the end: the input comes back untouched
    out = common_ksampler(toy_model, 1, 5, 7.0, "euler", "karras", pos, neg, lat, start_step=5, disable_pbar=True)
    assert torch.equal(out["samples"], lat["samples"])
    # denoise 0: empty schedule, input back unchanged
    out = common_ksampler(toy_model, 1, 5, 7.0, "euler", "karras", pos, neg, lat, denoise=0.0, disable_pbar=True)
    assert torch.equal(out["samples"], lat["samples"])
    # two halves == one run for a one-step-memory sampler (euler): leftover noise then continue
    full = common_ksampler(toy_model, 9, 6, 7.0, "euler", "karras", pos, neg, lat, disable_pbar=True)["samples"]
    first = common_ksampler(toy_model, 9, 6, 7.0, "euler", "karras", pos, neg, lat, start_step=0, last_step=3,
                            force_full_denoise=False, disable_pbar=True)
    second = common_ksampler(toy_model, 9, 6, 7.0, "euler", "karras", pos, neg, first, disable_noise=True,
                             start_step=3, last_step=10000, force_full_denoise=True, disable_pbar=True)["samples"]
    assert torch.allclose(full, second, atol=1e-4)


def test_empty_latent_is_not_scaled_and_channels_fixed(toy_model, conds):
    pos, neg = conds
    lat = {"samples": torch.zeros(1, 1, 8, 8)}
    out = common_ksampler(toy_model, 1, 3, 7.0, "euler", "karras", pos, neg, lat, disable_pbar=True)
    assert out["samples"].shape == (1, 4, 8, 8)


def _bad_calls(toy_model, pos, neg):
    lat = _latent()
    ok = dict(model=toy_model, seed=1, steps=4, cfg=7.0, sampler_name="euler", scheduler="karras", positive=pos,
              negative=neg, latent=lat)
    nan_mask = {**lat, "noise_mask": torch.full((8, 8), float("nan"))}
    yield {**ok, "sampler_name": "Euler"}, "sampler_name='Euler' is not known; valid names: euler"
    yield {**ok, "scheduler": "karass"}, "scheduler='karass' is not known; valid names: simple"
    yield {**ok, "steps": 0}, "steps=0 is out of range"
    yield {**ok, "cfg": -1.0}, "cfg=-1.0 is out of range"
    yield {**ok, "cfg": 101.0}, "cfg=101.0 is out of range"
    yield {**ok, "denoise": 1.5}, "denoise=1.5 is out of range"
    yield {**ok, "seed": -1}, "seed=-1 is out of range"
    yield {**ok, "seed": 2**64}, "seed=18446744073709551616 is out of range"
    yield {**ok, "latent": {"samples": torch.zeros(4, 8, 8)}}, r"latent\['samples'\] must be 4-D"
    yield {**ok, "latent": torch.zeros(1, 4, 8, 8)}, "latent must be a LATENT dict"
    yield {**ok, "latent": nan_mask}, "noise_mask.*NaN"
    yield {**ok, "latent": {**lat, "noise_mask": torch.full((8, 8), 2.0)}}, r"noise_mask.*\[0, 1\]"
    yield {**ok, "latent": {**lat, "noise_mask": torch.zeros(8)}}, "noise_mask.* must be 2-D or 3-D or 4-D"
    yield {**ok, "latent": {"samples": torch.zeros(3, 4, 8, 8), "noise_mask": torch.zeros(2, 8, 8)}}, \
        "noise_mask.*batch 2, which cannot broadcast to the latent batch 3"
    yield {**ok, "positive": [[torch.zeros(2, 3, 8), {}]], "latent": {"samples": torch.zeros(3, 4, 8, 8)}}, \
        r"positive\[0\] has batch 2, which cannot broadcast"
    yield {**ok, "positive": "a cat"}, "positive must be a CONDITIONING"
    yield {**ok, "negative": [[torch.zeros(3, 8), {}]]}, r"negative\[0\]\[0\] must be a float tensor \(B, L, D\)"
    yield {**ok, "model": object()}, "model protocol"


def test_bad_input_gets_clear_errors(toy_model, conds):
    pos, neg = conds
    for kwargs, match in _bad_calls(toy_model, pos, neg):
        with pytest.raises((ValueError, TypeError), match=match):
            common_ksampler(**kwargs, disable_pbar=True)


def test_seed_extremes_run(toy_model, conds):
    pos, neg = conds
    for seed in (0, 2**64 - 1):
        out = common_ksampler(toy_model, seed, 3, 7.0, "euler_ancestral", "karras", pos, neg, _latent(),
                              disable_pbar=True)
        assert torch.isfinite(out["samples"]).all()
