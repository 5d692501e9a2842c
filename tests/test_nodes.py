"""Providers and TwoSamplersForMask: upstream semantics, the binary-mask guarantees, no mutation, clear errors."""

import pytest
import torch
from conftest import ToyNet, assert_close

import twosamplers as ts
from twosamplers.ksampler import common_ksampler, compute_sigmas
from twosamplers.models import NetworkModel

H = W = 12


@pytest.fixture(scope="module")
def model():
    return NetworkModel(ToyNet())


@pytest.fixture(scope="module")
def cond():
    g = torch.Generator().manual_seed(11)
    return {k: [[torch.randn(1, 3, 8, generator=g), {}]] for k in ("pos_a", "neg_a", "pos_b", "neg_b")}


@pytest.fixture
def latent():
    g = torch.Generator().manual_seed(5)
    return {"samples": torch.randn(1, 4, H, W, generator=g)}


@pytest.fixture
def mask():
    m = torch.zeros(H, W)
    m[3:8, 2:9] = 1.0
    return m


def ks(model, cond, seed=1, sampler="euler", scheduler="normal", steps=4, cfg=5.0, which="a", denoise=1.0):
    return ts.KSamplerWrapper(model, seed, steps, cfg, sampler, scheduler, cond[f"pos_{which}"], cond[f"neg_{which}"],
                              denoise=denoise)


def two(latent, base, msk, mask, **kw):
    return ts.TwoSamplersForMask().doit(latent, base, msk, mask, disable_pbar=True, **kw)[0]


def inside(mask, like):
    return (mask > 0).expand_as(like)


# ------------------------------------------------------------------------------------------------ providers
def test_ksampler_wrapper_is_common_ksampler(model, cond, latent):
    w = ks(model, cond, seed=9, sampler="dpmpp_2m", scheduler="karras", denoise=0.7)
    ref = common_ksampler(model, 9, 4, 5.0, "dpmpp_2m", "karras", cond["pos_a"], cond["neg_a"], latent, denoise=0.7,
                          disable_pbar=True)
    assert torch.equal(w.sample(latent, disable_pbar=True)["samples"], ref["samples"])


@pytest.mark.parametrize("key", ["pipe/euler/karras/d1.0/mask_box/cfg7.5",
                                 "pipe/dpmpp_2m/karras/d0.6/mask_box/cfg7.5"])
def test_ksampler_wrapper_matches_comfyui(parity, key):
    T, M = parity
    p = M[key]
    latent = {"samples": T["pipe/latent_in"].clone()}
    if p["mask"]:
        latent["noise_mask"] = T[f"pipe/mask_{p['mask']}"].reshape(-1, 1, 64, 64).clone()
    w = ts.KSamplerWrapper(NetworkModel(ToyNet()), p["seed"], p["steps"], p["cfg"], p["sampler"], p["scheduler"],
                           [[T["pipe/positive_cross_attn"], {}]], [[T["pipe/negative_cross_attn"], {}]],
                           denoise=p["denoise"])
    assert_close(w.sample(latent, disable_pbar=True)["samples"], T[key])


def test_provider_node_interfaces():
    it = ts.KSamplerProvider.INPUT_TYPES()["required"]
    assert it["seed"][1] == {"default": 0, "min": 0, "max": 2**64 - 1}
    assert it["steps"][1] == {"default": 20, "min": 1, "max": 10000}
    assert it["cfg"][1]["default"] == 8.0 and it["cfg"][1]["max"] == 100.0
    assert it["denoise"][1]["default"] == 1.0 and it["denoise"][1]["max"] == 1.0
    assert "euler" in it["sampler_name"][0] and "normal" in it["scheduler"][0]
    assert it["basic_pipe"] == ("BASIC_PIPE",)
    assert ts.KSamplerProvider.RETURN_TYPES == ("KSAMPLER",) and ts.KSamplerProvider.FUNCTION == "doit"
    adv = ts.KSamplerAdvancedProvider.INPUT_TYPES()
    assert adv["required"]["sigma_factor"][1]["default"] == 1.0 and adv["required"]["sigma_factor"][1]["max"] == 10.0
    assert "sampler_opt" in adv["optional"]
    assert ts.KSamplerAdvancedProvider.RETURN_TYPES == ("KSAMPLER_ADVANCED",)
    for name, cls in ts.NODE_CLASS_MAPPINGS.items():
        assert name in ts.NODE_DISPLAY_NAME_MAPPINGS
        assert callable(getattr(cls(), cls.FUNCTION)) and isinstance(cls.RETURN_TYPES, tuple) and cls.CATEGORY
    for name in ("KSamplerProvider", "KSamplerAdvancedProvider", "TwoSamplersForMask", "TwoAdvancedSamplersForMask",
                 "RegionalPrompt", "RegionalSampler"):
        assert name in ts.NODE_CLASS_MAPPINGS


def test_providers_doit(model, cond, latent):
    pipe = (model, None, None, cond["pos_a"], cond["neg_a"])
    w = ts.KSamplerProvider().doit(3, 4, 5.0, "euler", "normal", 1.0, pipe)[0]
    assert isinstance(w, ts.KSamplerWrapper) and w.seed == 3
    a = ts.KSamplerAdvancedProvider().doit(5.0, "euler", "normal", pipe, sigma_factor=0.9)[0]
    assert isinstance(a, ts.KSamplerAdvancedWrapper) and a.sigma_factor == 0.9
    with pytest.raises(TypeError, match="basic_pipe"):
        ts.KSamplerProvider().doit(3, 4, 5.0, "euler", "normal", 1.0, (model, cond["pos_a"]))
    with pytest.raises(ValueError, match="sampler_name"):
        ts.KSamplerProvider().doit(3, 4, 5.0, "nope", "normal", 1.0, pipe)
    with pytest.raises(ValueError, match="steps"):
        ts.KSamplerWrapper(model, 0, 0, 5.0, "euler", "normal", cond["pos_a"], cond["neg_a"])
    with pytest.raises(ValueError, match="sigma_factor"):
        ts.KSamplerAdvancedWrapper(model, 5.0, "euler", "normal", cond["pos_a"], cond["neg_a"], sigma_factor=11)


def test_advanced_wrapper_is_ksampler_advanced_with_scaled_sigmas(model, cond, latent):
    adv = ts.KSamplerAdvancedWrapper(model, 5.0, "euler", "karras", cond["pos_a"], cond["neg_a"])
    out = adv.sample_advanced(True, 7, 6, latent, 1, 4, True, disable_pbar=True)
    ref = common_ksampler(model, 7, 6, 5.0, "euler", "karras", cond["pos_a"], cond["neg_a"], latent, start_step=1,
                          last_step=4, force_full_denoise=False, disable_pbar=True)
    assert torch.equal(out["samples"], ref["samples"])
    adv2 = ts.KSamplerAdvancedWrapper(model, 5.0, "euler", "karras", cond["pos_a"], cond["neg_a"], sigma_factor=1.3)
    out = adv2.sample_advanced(False, 7, 6, latent, 2, 10000, True, disable_pbar=True)
    sig = compute_sigmas(model.model_sampling, "euler", "karras", 6) * 1.3
    ref = common_ksampler(model, 7, 6, 5.0, "euler", "karras", cond["pos_a"], cond["neg_a"], latent,
                          disable_noise=True, start_step=2, sigmas=sig, disable_pbar=True)
    assert torch.equal(out["samples"], ref["samples"])
    # return_with_leftover_noise False -> the final x0 (equal to euler's output up to rounding)
    out = adv.sample_advanced(True, 7, 6, latent, 0, 3, False, disable_pbar=True)
    ref = common_ksampler(model, 7, 6, 5.0, "euler", "karras", cond["pos_a"], cond["neg_a"], latent, start_step=0,
                          last_step=3, force_full_denoise=True, disable_pbar=True)
    assert torch.allclose(out["samples"], ref["samples"], rtol=1e-5, atol=1e-4)
    # start past the end: the latent comes back untouched (a copy)
    out = adv.sample_advanced(True, 7, 6, latent, 6, 7, True)
    assert torch.equal(out["samples"], latent["samples"]) and out["samples"] is not latent["samples"]


def test_advanced_wrapper_errors(model, cond, latent):
    adv = ts.KSamplerAdvancedWrapper(model, 5.0, "euler", "karras", cond["pos_a"], cond["neg_a"])
    with pytest.raises(ValueError, match="recovery_mode"):
        adv.sample_advanced(True, 7, 6, latent, 0, 6, True, recovery_mode="sometimes")
    with pytest.raises(ValueError, match="noise"):
        adv.sample_advanced(True, 7, 6, latent, 0, 6, True, noise=torch.zeros(1, 4, 3, 3))
    with pytest.raises(ValueError, match="start_at_step"):
        adv.sample_advanced(True, 7, 6, latent, -1, 6, True)


# ------------------------------------------------------------------------------------------------ TwoSamplersForMask
def test_base_pass_keeps_masked_area_at_the_input(model, cond, latent, mask):
    base = ks(model, cond)
    stage1 = base.sample({**latent, "noise_mask": torch.where(mask != 1.0, 1.0, 0.0)}, disable_pbar=True)["samples"]
    m = inside(mask, stage1)
    scale = float(latent["samples"].abs().max())
    assert float((stage1 - latent["samples"])[m].abs().max()) <= 1e-6 * scale
    assert float((stage1 - latent["samples"])[~m].abs().max()) > 1e-2


EXACT = ["euler", "heun", "dpmpp_2m", "lms", "ddim", "euler_ancestral", "dpmpp_sde", "lcm"]


@pytest.mark.parametrize("sampler", EXACT + ["ddpm"])
def test_outside_the_mask_equals_the_base_pass(model, cond, latent, mask, sampler):
    base = ks(model, cond)
    stage1 = base.sample({**latent, "noise_mask": torch.where(mask != 1.0, 1.0, 0.0)}, disable_pbar=True)["samples"]
    out = two(latent, base, ks(model, cond, seed=2, sampler=sampler, scheduler="karras", which="b"), mask)["samples"]
    m = inside(mask, out)
    if sampler in EXACT:
        assert torch.equal(out[~m], stage1[~m])
    else:
        assert float((out - stage1)[~m].abs().max()) <= 1e-6 * float(stage1.abs().max())
    assert float((out - stage1)[m].abs().max()) > 1e-2


def test_mask_sampler_seed_and_prompts_change_only_the_mask(model, cond, latent, mask):
    base = ks(model, cond)
    outs = [two(latent, base, ks(model, cond, seed=s, which=w), mask)["samples"]
            for s, w in ((2, "b"), (3, "b"), (2, "a"))]
    m = inside(mask, outs[0])
    for o in outs[1:]:
        assert torch.equal(o[~m], outs[0][~m])
        assert float((o - outs[0])[m].abs().max()) > 1e-3


def test_same_seeds_bit_identical(model, cond, latent, mask):
    a = two(latent, ks(model, cond), ks(model, cond, seed=2, sampler="euler_ancestral", which="b"), mask)
    b = two(latent, ks(model, cond), ks(model, cond, seed=2, sampler="euler_ancestral", which="b"), mask)
    assert torch.equal(a["samples"], b["samples"])


def test_soft_mask_blends(model, cond, latent, mask):
    base, msk = ks(model, cond), ks(model, cond, seed=2, which="b")
    soft = mask * 0.5
    out = {v: two(latent, base, msk, mask * v)["samples"] for v in (0.0, 0.5, 1.0)}
    m = inside(mask, out[1.0])
    # grey pixels: resampled by the base pass (mask != 1), then half-resampled by the mask pass
    assert not torch.allclose(out[0.5][m], out[0.0][m]) and not torch.allclose(out[0.5][m], out[1.0][m])
    assert torch.equal(out[0.5][~m], two(latent, base, msk, soft)["samples"][~m])
    d_half = (out[0.5] - out[0.0])[m].abs().mean()
    d_full = (out[1.0] - out[0.0])[m].abs().mean()
    assert 0 < d_half < d_full


def test_all_zero_and_all_one_masks(model, cond, latent):
    base, msk = ks(model, cond), ks(model, cond, seed=2, which="b")
    zero = two(latent, base, msk, torch.zeros(H, W))["samples"]
    full_base = base.sample(latent, disable_pbar=True)["samples"]  # noise mask of ones == no noise mask
    assert torch.equal(zero, full_base)
    one = two(latent, base, msk, torch.ones(H, W))["samples"]
    full_mask = msk.sample(latent, disable_pbar=True)["samples"]  # the base pass left the latent as it was
    assert torch.allclose(one, full_mask, rtol=1e-5, atol=1e-5 * float(full_mask.abs().max()))


def test_no_input_is_mutated_and_noise_mask_dropped(model, cond, latent, mask):
    latent = {**latent, "noise_mask": torch.ones(1, 1, H, W), "batch_index": [0]}
    keep = {k: (v.clone() if torch.is_tensor(v) else list(v)) for k, v in latent.items()}
    samples_obj, mask_keep = latent["samples"], mask.clone()
    out = two(latent, ks(model, cond), ks(model, cond, seed=2, which="b"), mask)
    assert set(latent) == set(keep) and latent["samples"] is samples_obj
    for k, v in keep.items():
        assert torch.equal(latent[k], v) if torch.is_tensor(v) else latent[k] == v
    assert torch.equal(mask, mask_keep)
    assert set(out) == {"samples", "batch_index"} and out["batch_index"] == [0]


def test_fixes_are_opt_in_flags(model, cond, latent, mask):
    base, msk = ks(model, cond), ks(model, cond, seed=2, which="b")
    soft = mask * 0.6
    upstream = two(latent, base, msk, soft)["samples"]
    fixed = two(latent, base, msk, soft, inversion="soft")["samples"]
    assert not torch.equal(upstream, fixed)
    covers = two(latent, base, msk, mask, base_covers_mask=True)["samples"]
    full_base = base.sample(latent, disable_pbar=True)["samples"]
    m = inside(mask, covers)
    assert torch.equal(covers[~m], full_base[~m])
    opt = ts.TwoSamplersForMask.INPUT_TYPES()["optional"]
    assert opt["inversion"][1]["default"] == "binary" and opt["base_covers_mask"][1]["default"] is False


def test_batch_with_one_mask_per_image(model, cond):
    g = torch.Generator().manual_seed(8)
    latent = {"samples": torch.randn(2, 4, 8, 8, generator=g)}
    masks = torch.zeros(2, 8, 8)
    masks[0, :4] = 1
    masks[1, :, 4:] = 1
    out = two(latent, ks(model, cond), ks(model, cond, seed=2, which="b"), masks)["samples"]
    single = [two({"samples": latent["samples"][i:i + 1], "batch_index": [i]}, ks(model, cond),
                  ks(model, cond, seed=2, which="b"), masks[i])["samples"] for i in range(2)]
    assert torch.allclose(out, torch.cat(single), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bad, exc, match", [
    (torch.zeros(3, H, W), ValueError, "mask has batch 3"),
    (torch.zeros(H), ValueError, "mask must be"),
    (torch.full((H, W), float("nan")), ValueError, "mask contains NaN"),
    (torch.full((H, W), -0.1), ValueError, r"mask has values"),
    ("not a mask", TypeError, "mask must be a torch.Tensor"),
])
def test_bad_masks(model, cond, bad, exc, match):
    latent = {"samples": torch.zeros(2, 4, H, W)}
    with pytest.raises(exc, match=match):
        ts.TwoSamplersForMask().doit(latent, ks(model, cond), ks(model, cond), bad)


def test_wrong_kind_of_sampler_and_latent(model, cond, latent, mask):
    adv = ts.KSamplerAdvancedWrapper(model, 5.0, "euler", "normal", cond["pos_a"], cond["neg_a"])
    with pytest.raises(TypeError, match="base_sampler must be a KSAMPLER.*KSAMPLER_ADVANCED"):
        ts.TwoSamplersForMask().doit(latent, adv, ks(model, cond), mask)
    with pytest.raises(TypeError, match="mask_sampler must be a KSAMPLER"):
        ts.TwoSamplersForMask().doit(latent, ks(model, cond), "euler", mask)
    with pytest.raises(TypeError, match="latent_image"):
        ts.TwoSamplersForMask().doit(latent["samples"], ks(model, cond), ks(model, cond), mask)
    with pytest.raises(ValueError, match="inversion"):
        ts.TwoSamplersForMask().doit(latent, ks(model, cond), ks(model, cond), mask, inversion="hard")
