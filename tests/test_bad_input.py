"""Bad input that used to get through (issue 10): NaN/inf latents, unimplemented CONDITIONING options, 16-bit
and oversized mask files, complex/meta tensors, stretched masks, malformed .latent files, numpy seeds."""

import numpy as np
import pytest
import torch
from conftest import ToyNet
from PIL import Image
from safetensors.torch import save_file

import twosamplers as ts
from twosamplers._checks import check_mask
from twosamplers.engine.conditioning import normalize_conditioning
from twosamplers.engine.latent import load_latent
from twosamplers.engine.passes import common_ksampler
from twosamplers.job.imageio import load_image, load_mask
from twosamplers.models import NetworkModel


@pytest.fixture(scope="module")
def model():
    return NetworkModel(ToyNet())


@pytest.fixture(scope="module")
def cond():
    g = torch.Generator().manual_seed(3)
    return [[torch.randn(1, 3, 8, generator=g), {}]], [[torch.randn(1, 3, 8, generator=g), {}]]


def ks(model, cond, latent, **kw):
    args = dict(seed=1, steps=2, cfg=3.0, sampler_name="euler", scheduler="normal", positive=cond[0],
                negative=cond[1], latent=latent, disable_pbar=True)
    args.update(kw)
    return common_ksampler(model, **args)


def settings(model, cond, **kw):
    return ts.SamplerSettings(model, cond[0], cond[1], steps=2, cfg=3.0, **kw)


# ------------------------------------------------------------------------------------------ latents
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_latent_is_rejected_by_engine_and_front_door(model, cond, bad):
    x = torch.zeros(1, 4, 8, 8)
    x[0, 1, 2, 3] = bad
    latent = {"samples": x}
    with pytest.raises(ValueError, match=r"latent\['samples'\] contains .*finite"):
        ks(model, cond, latent)
    with pytest.raises(ValueError, match=r"latent\['samples'\] contains"):
        ts.two_samplers_for_mask(latent, torch.ones(8, 8), settings(model, cond), settings(model, cond),
                                 disable_pbar=True)
    with pytest.raises(ValueError, match=r"samples\['samples'\] contains"):
        ts.RegionalSampler().doit(0, 0, "ignore", 2, 1, 1.0, latent, settings(model, cond).advanced(),
                                  [(torch.ones(8, 8), settings(model, cond).advanced())], 3, True,
                                  "ratio between", "AUTO", 0.3, disable_pbar=True)


def test_numpy_integer_seeds_are_ints(model, cond):
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    a = ks(model, cond, latent, seed=np.int64(7), sampler_name="euler_ancestral")
    b = ks(model, cond, latent, seed=7, sampler_name="euler_ancestral")
    assert torch.equal(a["samples"], b["samples"])
    settings(model, cond, seed=np.uint64(2**64 - 1))  # the whole seed range
    with pytest.raises(TypeError, match="seed must be an int"):
        ks(model, cond, latent, seed=np.float64(7.0))


def _write_latent(path, tensor, marker=True):
    tensors = {"latent_tensor": tensor}
    if marker:
        tensors["latent_format_version_0"] = torch.tensor([])
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("tensor,match", [
    (torch.zeros(4, 8, 8), "3-D|shape"),
    (torch.zeros(2, 1, 4, 8, 8, 1), "shape"),
    (torch.zeros(1, 4, 8, 8, dtype=torch.int32), "int32"),
    (torch.full((1, 4, 8, 8), float("nan")), "NaN"),
])
def test_load_latent_rejects_what_is_not_a_latent_naming_the_file(tmp_path, tensor, match):
    path = _write_latent(tmp_path / "bad.latent", tensor)
    with pytest.raises(ValueError, match=match) as e:
        load_latent(path)
    assert str(path) in str(e.value)


def test_load_latent_takes_4d_and_5d_floats(tmp_path):
    for shape in ((1, 4, 8, 8), (1, 16, 3, 8, 8)):
        t = torch.randn(shape, generator=torch.Generator().manual_seed(1)).half()
        out = load_latent(_write_latent(tmp_path / f"ok{len(shape)}.latent", t))
        assert out["samples"].dtype == torch.float32 and torch.equal(out["samples"], t.float())


# ------------------------------------------------------------------------------------------ conditioning
@pytest.mark.parametrize("key", ["start_percent", "end_percent"])
def test_timestep_range_options_are_honoured_not_dropped(model, cond, key):
    """ConditioningSetTimestepRange's keys take effect (regional_cond.py; tests/test_regional_cond.py checks
    the exact steps): the only positive entry is inactive for part of the schedule, which changes the result."""
    entry = [[cond[0][0][0], {key: 0.5}]]
    assert getattr(normalize_conditioning(entry, "positive")[0], key) == 0.5
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    plain = ks(model, cond, latent)["samples"]
    ranged = ks(model, cond, latent, positive=entry)["samples"]
    assert not torch.equal(plain, ranged)
    with pytest.raises(ValueError, match=key):
        normalize_conditioning([[cond[0][0][0], {key: 1.5}]], "positive")


# ------------------------------------------------------------------------------------------ masks
def test_16bit_png_mask_is_read_at_full_precision(tmp_path):
    values = np.array([[0, 1, 32768, 65535], [257, 1000, 40000, 65534]], dtype=np.uint16)
    path = tmp_path / "m16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit PNG
    want = torch.from_numpy(values.astype(np.float32) / np.float32(65535.0))
    for channel in ("gray", "red", "green", "blue"):
        m = load_mask(path, channel)
        assert torch.equal(m, want), channel
    assert abs(float(load_mask(path)[0, 2]) - 0.5) < 1e-4  # 50% grey stays 0.5 (it was 1.0)
    assert torch.equal(load_mask(path, invert=True), 1.0 - want)


@pytest.mark.parametrize("limit", [1000, 3000])  # over 2x the limit Pillow raises, between 1x and 2x it warns
def test_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch, limit):
    path = tmp_path / "big.png"
    Image.new("L", (64, 64), 255).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    for fn in (load_mask, load_image):
        with pytest.raises(ValueError, match="decompression bomb") as e:
            fn(path)
        assert str(path) in str(e.value)


@pytest.mark.parametrize("make", [
    lambda: torch.zeros(8, 8, dtype=torch.complex64),
    lambda: torch.zeros(8, 8, device="meta"),
])
def test_complex_and_meta_tensors_are_type_errors(model, cond, make):
    with pytest.raises(TypeError, match="mask"):
        check_mask(make(), "mask")
    with pytest.raises(TypeError, match="mask"):
        ts.two_samplers_for_mask({"samples": torch.zeros(1, 4, 8, 8)}, make(), settings(model, cond),
                                 settings(model, cond), disable_pbar=True)
    bad_latent = {"samples": make().reshape(1, 1, 8, 8).expand(1, 4, 8, 8)}
    with pytest.raises(TypeError, match="latent"):
        ks(model, cond, bad_latent)


def test_mask_of_another_aspect_ratio_is_an_error_unless_stretched(model, cond):
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    wide = torch.zeros(8, 16)
    wide[:, 4:12] = 1.0
    s = settings(model, cond)
    for mode in ("two-pass", "regional"):
        with pytest.raises(ValueError, match="stretch_mask=True"):
            ts.two_samplers_for_mask(latent, wide, s, s, mode=mode, disable_pbar=True)
        out = ts.two_samplers_for_mask(latent, wide, s, s, mode=mode, stretch_mask=True, disable_pbar=True)
        assert out["samples"].shape == (1, 4, 8, 8)
    with pytest.raises(ValueError, match=r"regions\[0\] mask .*stretch_mask"):
        ts.regional_sample(latent, s, [(wide, s)], disable_pbar=True)
    # the same shape at image resolution (x8) and at latent resolution are both fine
    ts.two_samplers_for_mask(latent, torch.ones(64, 64), s, s, disable_pbar=True)


# ------------------------------------------------------------------------------------------ older ComfyUI
DEFAULT_NOISE_SAMPLERS = ["euler_ancestral", "euler_ancestral_cfg_pp", "dpm_2_ancestral", "dpmpp_2s_ancestral",
                          "dpmpp_2s_ancestral_cfg_pp", "lcm", "ddpm", "res_multistep_ancestral",
                          "res_multistep_ancestral_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver",
                          "sa_solver_pece"]


@pytest.mark.parametrize("name", DEFAULT_NOISE_SAMPLERS)
def test_comfyui_version_below_030_seeds_the_sampler_generator_with_seed(model, cond, name):
    from twosamplers.engine.noise import default_noise_sampler

    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    seed = 11
    old = ks(model, cond, latent, seed=seed, sampler_name=name, steps=3, comfyui_version="0.3.64")
    new = ks(model, cond, latent, seed=seed, sampler_name=name, steps=3)
    assert torch.equal(new["samples"], ks(model, cond, latent, seed=seed, sampler_name=name, steps=3,
                                          comfyui_version="0.30")["samples"])
    # the old seeding is exactly a generator seeded with `seed`; 0.30's is one seeded with seed + 1
    like = torch.zeros(1, 4, 8, 8)
    ref_old = ks(model, cond, latent, seed=seed, sampler_name=name, steps=3,
                 sampler_options={"noise_sampler": default_noise_sampler(like, seed - 1)})
    assert torch.equal(old["samples"], ref_old["samples"])
    assert not torch.equal(old["samples"], new["samples"])


def test_comfyui_version_is_validated_and_leaves_deterministic_samplers_alone(model, cond):
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    for bad in ("latest", "", "0.3.x", 0.3):
        with pytest.raises(ValueError, match="comfyui_version"):
            ks(model, cond, latent, comfyui_version=bad)
    for name in ("euler", "dpmpp_2m", "dpmpp_2m_sde", "ddim"):
        a = ks(model, cond, latent, sampler_name=name, comfyui_version="0.3.64")
        b = ks(model, cond, latent, sampler_name=name)
        assert torch.equal(a["samples"], b["samples"]), name
