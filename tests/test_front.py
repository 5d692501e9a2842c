"""The front door: two_samplers_for_mask / regional_sample with the fixed defaults, crop-to-mask, differential
diffusion, mask units and resolutions, batches, no mutation, clear errors."""

import pytest
import torch
from conftest import ToyNet

import twosamplers as ts
from twosamplers.engine import mask_ops as mt
from twosamplers.engine.ksampler import common_ksampler
from twosamplers.models import NetworkModel

H, W = 12, 12


@pytest.fixture
def net():
    return ToyNet()


@pytest.fixture
def model(net):
    return NetworkModel(net)


@pytest.fixture(scope="module")
def cond():
    g = torch.Generator().manual_seed(31)
    return [[[torch.randn(1, 3, 8, generator=g), {}]] for _ in range(3)]


@pytest.fixture
def latent():
    return {"samples": torch.randn(1, 4, H, W, generator=torch.Generator().manual_seed(6))}


def box(top, left, bottom, right, h=H, w=W):
    m = torch.zeros(h, w)
    m[top:bottom, left:right] = 1.0
    return m


def settings(model, cond, seed=1, which=0, **kw):
    kw = {"steps": 4, "cfg": 5.0, **kw}
    return ts.SamplerSettings(model, cond[which], cond[2], seed=seed, **kw)


def run(latent, mask, base, inside, **kw):
    return ts.two_samplers_for_mask(latent, mask, base, inside, disable_pbar=True, **kw)


def base_alone(latent, s):
    return common_ksampler(s.model, s.seed, s.steps, s.cfg, s.sampler_name, s.scheduler, s.positive, s.negative,
                           latent, denoise=s.denoise, disable_pbar=True)["samples"]


def test_settings_defaults_and_validation(model, cond):
    s = ts.SamplerSettings(model, cond[0], cond[2])
    assert (s.seed, s.steps, s.cfg, s.sampler_name, s.scheduler, s.denoise) == (0, 20, 8.0, "euler", "normal", 1.0)
    with pytest.raises(ValueError, match="SamplerSettings.steps"):
        ts.SamplerSettings(model, cond[0], cond[2], steps=0)
    with pytest.raises(ValueError, match="SamplerSettings.sampler_name"):
        ts.SamplerSettings(model, cond[0], cond[2], sampler_name="fast")
    with pytest.raises(TypeError, match="SamplerSettings.model"):
        ts.SamplerSettings(object(), cond[0], cond[2])


# ------------------------------------------------------------------------------------------------ two-pass
@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "uni_pc", "dpm_fast", "euler_ancestral"])
def test_outside_the_mask_is_exactly_the_base_pass(model, cond, latent, sampler):
    base = settings(model, cond)
    inside = settings(model, cond, seed=2, which=1, sampler_name=sampler, scheduler="karras")
    m = box(3, 2, 8, 9)
    out = run(latent, m, base, inside)
    full = base_alone(latent, base)  # base_covers_mask: the base pass is a plain full pass
    inside_px = (m > 0).expand_as(full)
    assert torch.equal(out["samples"][~inside_px], full[~inside_px])
    assert float((out["samples"] - full)[inside_px].abs().min()) > 0


def test_inside_seed_and_prompts_change_only_the_mask(model, cond, latent):
    base, m = settings(model, cond), box(3, 2, 8, 9)
    variants = ((2, 1), (3, 1), (2, 0))
    outs = [run(latent, m, base, settings(model, cond, seed=s, which=w))["samples"] for s, w in variants]
    px = (m > 0).expand_as(outs[0])
    for o in outs[1:]:
        assert torch.equal(o[~px], outs[0][~px]) and float((o - outs[0])[px].abs().max()) > 1e-3
    assert torch.equal(run(latent, m, base, settings(model, cond, seed=2, which=1))["samples"], outs[0])


def test_upstream_flow_matches_the_node(model, cond, latent):
    base, inside = settings(model, cond), settings(model, cond, seed=2, which=1, sampler_name="dpm_fast")
    m = box(3, 2, 8, 9) * 0.75 + box(4, 3, 6, 6) * 0.25
    ours = run(latent, m, base, inside, inversion="binary", base_covers_mask=False)["samples"]
    node = ts.TwoSamplersForMask().doit(
        latent, ts.KSamplerWrapper(base.model, 1, 4, 5.0, "euler", "normal", cond[0], cond[2]),
        ts.KSamplerWrapper(base.model, 2, 4, 5.0, "dpm_fast", "normal", cond[1], cond[2]), m, disable_pbar=True)[0]
    px = (m > 0).expand_as(ours)
    assert torch.equal(ours[px], node["samples"][px])  # identical inside; outside we paste the base pass exactly
    assert float((ours - node["samples"])[~px].abs().max()) < 1.0  # (dpm_fast leaves ~sigma_min noise there)


def test_soft_inversion_and_base_covers_mask_options(model, cond, latent):
    base, inside = settings(model, cond), settings(model, cond, seed=2, which=1)
    soft = box(3, 2, 8, 9) * 0.5
    a = run(latent, soft, base, inside, base_covers_mask=False, inversion="soft")["samples"]
    b = run(latent, soft, base, inside, base_covers_mask=False, inversion="binary")["samples"]
    c = run(latent, soft, base, inside)["samples"]
    assert not torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="inversion"):
        run(latent, soft, base, inside, inversion="hard")


def test_all_zero_mask_skips_the_mask_pass(model, net, cond, latent):
    base, inside = settings(model, cond), settings(model, cond, seed=2, which=1)
    net.calls.clear()
    out = run(latent, torch.zeros(H, W), base, inside)
    assert torch.equal(out["samples"], base_alone(latent, base))
    assert len(net.calls) == 8  # the base pass only: 4 steps x 2 (uncond, cond)


def test_all_one_mask_is_a_full_second_pass(model, cond, latent):
    base, inside = settings(model, cond), settings(model, cond, seed=2, which=1, denoise=0.6)
    out = run(latent, torch.ones(H, W), base, inside)["samples"]
    ref = base_alone({"samples": base_alone(latent, base)}, inside)
    assert torch.equal(out, ref)


# ------------------------------------------------------------------------------------------------ crop-to-mask
def test_crop_to_mask_is_exact_outside_the_box_and_samples_only_the_box(model, net, cond, latent):
    base, inside = settings(model, cond), settings(model, cond, seed=2, which=1)
    m = box(4, 5, 7, 8)
    full = run(latent, m, base, inside)["samples"]
    net.calls.clear()
    cropped = run(latent, m, base, inside, crop_to_mask=True, crop_context=1, crop_multiple=1)["samples"]
    assert (1, 4, 5, 5) in [(1, *c[1:]) for c in net.calls]  # the mask pass saw a 5x5 latent (3x3 + 1 each side)
    base_only = base_alone(latent, base)
    outside = torch.ones_like(full, dtype=torch.bool)
    outside[..., 3:8, 4:9] = False
    assert torch.equal(cropped[outside], base_only[outside])
    # the toy network looks one pixel around; with >= 1 px of context the crop changes nothing at all
    assert torch.equal(cropped, full)


def test_crop_box_uses_the_model_multiple(model, net, cond, latent):
    base, inside = settings(model, cond), settings(model, cond, seed=2, which=1)
    net.calls.clear()
    run(latent, box(5, 5, 6, 6), base, inside, crop_to_mask=True, crop_context=0)
    assert net.calls[-1][2:] == (8, 8)  # default multiple 8


def test_crop_callback_sees_full_size_tensors(model, cond, latent):
    seen = []
    run(latent, box(4, 5, 7, 8), settings(model, cond), settings(model, cond, seed=2, which=1, steps=3),
        crop_to_mask=True, crop_context=1, crop_multiple=1,
        callback=lambda step, x0, x, total: seen.append((step, tuple(x0.shape), tuple(x.shape), total)))
    assert [s[0] for s in seen] == list(range(7)) and all(s[3] == 7 for s in seen)
    assert all(s[1] == s[2] == (1, 4, H, W) for s in seen)


# ------------------------------------------------------------------------------------------------ differential, units
def test_differential_with_a_binary_mask_changes_nothing(model, cond, latent):
    base, inside = settings(model, cond), settings(model, cond, seed=2, which=1)
    m = box(3, 2, 8, 9)
    a, b = run(latent, m, base, inside, differential=True)["samples"], run(latent, m, base, inside)["samples"]
    # 1 >= threshold always; 0 >= threshold only at the last call when it is at sigma_min (threshold 0), where the
    # 0-pixels' input changes by rounding only
    assert float((a - b).abs().max()) <= 1e-6 * float(b.abs().max())


def test_differential_grey_is_denoise_strength(model, cond, latent):
    base, inside = settings(model, cond, steps=6), settings(model, cond, seed=2, which=1, steps=6)
    m = box(2, 1, 10, 5) * 0.3 + box(2, 7, 10, 11) * 0.9
    out = run(latent, m, base, inside, differential=True)["samples"]
    plain = run(latent, m, base, inside)["samples"]
    ref = base_alone(latent, base)
    d = (out - ref).abs()
    assert float(d[..., 2:10, 7:11].mean()) > 2 * float(d[..., 2:10, 1:5].mean()) > 0
    assert not torch.equal(out, plain)


def test_grow_is_in_image_pixels_at_any_mask_resolution(model, cond, latent):
    base, inside = settings(model, cond), settings(model, cond, seed=2, which=1)
    m_lat = box(4, 4, 7, 8)
    m_img = box(32, 32, 56, 64, 96, 96)  # the same box at image resolution (8 px per latent px)
    ref = base_alone(latent, base)
    grown = mt.grow(m_lat, 1) > 0
    for m in (m_lat, m_img):
        assert torch.equal(run(latent, m, base, inside)["samples"], run(latent, m_lat, base, inside)["samples"])
        out = run(latent, m, base, inside, grow=8)["samples"]
        changed = (out != ref).any(dim=1)[0]
        assert torch.equal(changed, grown)


def test_feather_softens_the_edge(model, cond, latent):
    base, inside = settings(model, cond), settings(model, cond, seed=2, which=1)
    m = box(4, 4, 8, 8)
    sharp = run(latent, m, base, inside)["samples"]
    soft = run(latent, m, base, inside, feather=8.0)["samples"]
    ref = base_alone(latent, base)
    assert bool(((soft != ref).any(dim=1)[0] & ~(m > 0)).any())  # the ramp reaches outside the mask
    assert not torch.equal(sharp, soft)
    with pytest.raises(ValueError, match="feather"):
        run(latent, m, base, inside, feather=-1.0)
    with pytest.raises(TypeError, match="grow"):
        run(latent, m, base, inside, grow=1.5)


def test_non_square_latent_and_image_mask(model, cond):
    latent = {"samples": torch.randn(1, 4, 8, 12, generator=torch.Generator().manual_seed(2))}
    m = torch.zeros(64, 96)
    m[:, 48:] = 1.0  # the right half
    base, inside = settings(model, cond), settings(model, cond, seed=2, which=1)
    out = run(latent, m, base, inside)["samples"]
    ref = base_alone(latent, base)
    changed = (out != ref).any(dim=1)[0]
    assert bool(changed[:, 6:].all()) and not bool(changed[:, :6].any())


def test_batch_one_mask_per_image(model, cond):
    latent = {"samples": torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(9))}
    masks = torch.stack([box(0, 0, 4, 8, 8, 8), box(0, 4, 8, 8, 8, 8)])
    base, inside = settings(model, cond), settings(model, cond, seed=2, which=1)
    out = run(latent, masks, base, inside)["samples"]
    for i in range(2):
        one = run({"samples": latent["samples"][i:i + 1], "batch_index": [i]}, masks[i], base, inside)["samples"]
        assert torch.allclose(out[i:i + 1], one, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="mask has batch 3"):
        run(latent, torch.zeros(3, 8, 8), base, inside)


def test_no_mutation_and_output_keys(model, cond, latent):
    latent = {**latent, "noise_mask": torch.zeros(1, 1, H, W), "batch_index": [3]}
    keep = {k: (v.clone() if torch.is_tensor(v) else list(v)) for k, v in latent.items()}
    m = box(3, 2, 8, 9) * 0.5
    m_keep = m.clone()
    for mode in ("two-pass", "interleaved"):
        out = run(latent, m, settings(model, cond), settings(model, cond, seed=2, which=1), mode=mode, grow=8,
                  feather=4.0)
        assert set(out) == {"samples", "batch_index"} and out["batch_index"] == [3]
    assert set(latent) == set(keep) and torch.equal(m, m_keep)
    for k, v in keep.items():
        assert torch.equal(latent[k], v) if torch.is_tensor(v) else latent[k] == v


# -------------------------------------------------------------------------------------------- interleaved / regional
def test_interleaved_is_regional_with_one_region(model, cond, latent):
    base, inside = settings(model, cond), settings(model, cond, seed=2, which=1, sampler_name="dpmpp_2m")
    m = box(3, 2, 8, 9)
    a = run(latent, m, base, inside, mode="interleaved", overlap_factor=3)
    b = run(latent, m, base, inside, mode="regional", overlap_factor=3)
    c = ts.regional_sample(latent, base, [(m, inside)], overlap_factor=3, disable_pbar=True)
    assert torch.equal(a["samples"], b["samples"]) and torch.equal(a["samples"], c["samples"])
    assert torch.equal(a["samples"], run(latent, m, base, inside, mode="interleaved", overlap_factor=3)["samples"])


def test_regional_two_regions_and_region_seed(model, cond, latent):
    base = settings(model, cond)
    r1 = (box(0, 0, 6, 6), settings(model, cond, seed=5, which=1, sampler_name="euler_ancestral"))
    r2 = (box(6, 6, 12, 12) * 0.3, settings(model, cond, seed=6, which=0, sampler_name="uni_pc"))
    steps = []
    a = ts.regional_sample(latent, base, [r1, r2], overlap_factor=2, disable_pbar=True,
                           callback=lambda i, x0, x, n: steps.append((i, n)))
    assert steps == [(0, 3), (1, 3), (2, 3)]  # 4 steps, 1 base-only
    assert torch.isfinite(a["samples"]).all() and set(a) == {"samples"}
    r1b = (r1[0], settings(model, cond, seed=7, which=1, sampler_name="euler_ancestral"))
    b = ts.regional_sample(latent, base, [r1b, r2], overlap_factor=2, disable_pbar=True)
    d = (a["samples"] - b["samples"]).abs().amax(dim=(0, 1))
    assert float(d[:6, :6].max()) > 1e-3 and float(d[8:, :].max()) < float(d[:6, :6].max())


def test_regional_soft_region_pixels_are_denoised(model, cond, latent):
    base = settings(model, cond)
    soft = box(2, 2, 6, 6) * 0.4
    out = ts.regional_sample(latent, base, [(soft, settings(model, cond, seed=2, which=1))], overlap_factor=0,
                             disable_pbar=True)["samples"]
    first = settings(model, cond).advanced().sample_advanced(True, 1, 4, latent, 0, 1, True)["samples"]
    assert float((out - first)[..., 2:6, 2:6].abs().min()) > 1e-3


def test_front_door_errors(model, cond, latent):
    base, inside, m = settings(model, cond), settings(model, cond, seed=2, which=1), box(3, 2, 8, 9)
    with pytest.raises(TypeError, match="inside must be a twosamplers.SamplerSettings"):
        run(latent, m, base, ts.KSamplerWrapper(model, 0, 4, 5.0, "euler", "normal", cond[0], cond[2]))
    with pytest.raises(ValueError, match="mode"):
        run(latent, m, base, inside, mode="three-pass")
    with pytest.raises(ValueError, match="crop_to_mask is only available"):
        run(latent, m, base, inside, mode="regional", crop_to_mask=True)
    with pytest.raises(ValueError, match="regions is empty"):
        ts.regional_sample(latent, base, [])
    with pytest.raises(TypeError, match=r"regions\[0\] settings"):
        ts.regional_sample(latent, base, [(m, "euler")])
    with pytest.raises(ValueError, match=r"regions\[0\] mask contains NaN"):
        ts.regional_sample(latent, base, [(torch.full((H, W), float("nan")), inside)])
    with pytest.raises(ValueError, match="mask has values"):
        run(latent, m * 2, base, inside)
    with pytest.raises(ValueError, match="mask must be"):
        run(latent, torch.zeros(H), base, inside)
    with pytest.raises(TypeError, match="latent"):
        run(latent["samples"], m, base, inside)
