"""regional_sample(mode="joint"): regions as masked conditioning of one sampler; fallback to interleaving."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import ToyNet
from test_regional_cond import PointNet

import twosamplers as ts
from twosamplers.engine import joint
from twosamplers.engine.conditioning import normalize_conditioning
from twosamplers.engine.ksampler import common_ksampler
from twosamplers.models import NetworkModel


def _p(v: float) -> torch.Tensor:
    return torch.full((1, 3, 8), float(v))


def _square(top: int, left: int, side: int, size: int = 128) -> torch.Tensor:
    m = torch.zeros(size, size)
    m[top:top + side, left:left + side] = 1.0
    return m


LAT = {"samples": torch.zeros(1, 4, 16, 16)}


def _settings(model, pos, neg, **kw):
    return ts.SamplerSettings(model, pos, neg, **{"seed": 3, "steps": 4, "cfg": 5.0, **kw})


def test_one_evaluation_per_step_whatever_the_number_of_regions():
    net = PointNet()
    model = NetworkModel(net)
    base = _settings(model, _p(1), _p(0))
    # latent-size masks: 2 x 2 squares + the feather ramp (3 px each side) = 8 x 8 boxes
    masks = [_square(3, 3, 2, 16), _square(3, 11, 2, 16), _square(11, 3, 2, 16), _square(11, 11, 2, 16)]
    for n in (1, 2, 4):
        net.calls.clear()
        regions = [(m, _settings(model, _p(2 + j), _p(0))) for j, m in enumerate(masks[:n])]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no notice: same model, same cfg/sampler/scheduler
            ts.regional_sample(LAT, base, regions, mode="joint", disable_pbar=True)
        # per step: the base on the whole image (cond + uncond) and every region's box in one call
        assert [shape for shape, _ in net.calls] == [(2, 4, 16, 16), (2 * n, 4, 8, 8)] * 4


def test_pixels_away_from_regions_follow_the_base_and_region_interiors_follow_the_region():
    """With a pointwise network a pixel only sees its own conditioning weights: where no region reaches,
    joint sampling equals plain sampling with the base prompts; where the region weight is 1 (and the base's
    0) it equals plain sampling with the region's prompts, bit for bit."""
    model = NetworkModel(PointNet())
    base = _settings(model, _p(1), _p(0))
    region = _settings(model, _p(3), _p(-1))
    m = _square(48, 48, 32)  # latent rows/cols 6..9; the feather ramp reaches 3..12
    out = ts.regional_sample(LAT, base, [(m, region)], mode="joint", disable_pbar=True)["samples"]
    plain_base = common_ksampler(model, 3, 4, 5.0, "euler", "normal", _p(1), _p(0), LAT, disable_pbar=True)
    plain_region = common_ksampler(model, 3, 4, 5.0, "euler", "normal", _p(3), _p(-1), LAT, disable_pbar=True)
    assert torch.equal(out[..., :2, :], plain_base["samples"][..., :2, :])
    assert torch.equal(out[..., 14:, :], plain_base["samples"][..., 14:, :])
    assert torch.equal(out[..., 6:10, 6:10], plain_region["samples"][..., 6:10, 6:10])
    assert not torch.equal(out[..., 4, 4:12], plain_base["samples"][..., 4, 4:12])  # the ramp blends


def _e(cond):
    return normalize_conditioning(cond, "c")


def test_joint_conditioning_weights_and_boxes():
    w = torch.zeros(1, 1, 32, 32)
    w[..., 4:10, 20:23] = 1.0
    w[..., 3, 20:23] = 0.5
    pos, neg = joint.joint_conditioning(_e(_p(1)), _e(_p(0)), [(w, _e(_p(2)), _e([[_p(-1), {"strength": 0.5}]]))])
    assert len(pos) == 2 and len(neg) == 2
    assert torch.equal(pos[0].mask, 1.0 - w.reshape(1, 32, 32))  # base on the rest, whole image
    assert pos[0].area is None
    assert pos[1].area == (8, 8, 3, 18)  # rows 3..9, cols 20..22 widened to 8 x 8 (centred)
    assert neg[1].strength == 0.5 and neg[1].area == (8, 8, 3, 18) and torch.equal(neg[1].mask, w[:, 0])
    # an empty region adds nothing; regions covering everything drop the base entries
    pos, _ = joint.joint_conditioning(_e(_p(1)), _e(_p(0)), [(torch.zeros(1, 1, 8, 8), _e(_p(2)), _e(_p(0)))])
    assert len(pos) == 1 and pos[0].mask is None
    pos, _ = joint.joint_conditioning(_e(_p(1)), _e(_p(0)), [(torch.ones(1, 1, 8, 8), _e(_p(2)), _e(_p(0)))])
    assert len(pos) == 1 and torch.equal(pos[0].cross_attn, _p(2))
    with pytest.raises(ValueError, match="already has a mask"):
        joint.joint_conditioning(_e(_p(1)), _e(_p(0)), [(w, _e([[_p(2), {"mask": torch.ones(4, 4)}]]), _e(_p(0)))])


def test_other_models_fall_back_to_interleaved_with_a_notice():
    model, other = NetworkModel(ToyNet()), NetworkModel(ToyNet())
    base = _settings(model, _p(0.1), _p(0))
    regions = [(_square(32, 32, 64), _settings(other, _p(0.3), _p(0)))]
    with pytest.warns(UserWarning, match="fell back to the interleaved mode.*another model"):
        a = ts.regional_sample(LAT, base, regions, mode="joint", disable_pbar=True)["samples"]
    b = ts.regional_sample(LAT, base, regions, mode="interleaved", disable_pbar=True)["samples"]
    assert torch.equal(a, b)


def test_region_settings_joint_cannot_use_are_named():
    model = NetworkModel(PointNet())
    base = _settings(model, _p(1), _p(0))
    regions = [(_square(32, 32, 64), _settings(model, _p(3), _p(0), cfg=9.0, sampler_name="dpmpp_2m"))]
    with pytest.warns(UserWarning, match=r"regions\[0\]\.cfg=9\.0, regions\[0\]\.sampler_name='dpmpp_2m'"):
        ts.regional_sample(LAT, base, regions, mode="joint", disable_pbar=True)


def test_joint_through_two_samplers_for_mask_is_deterministic():
    model = NetworkModel(ToyNet())
    base = _settings(model, _p(0.1), _p(0))
    inside = _settings(model, _p(0.4), _p(0))
    m = _square(40, 30, 50)
    a = ts.two_samplers_for_mask(LAT, m, base, inside, mode="joint", disable_pbar=True)
    b = ts.two_samplers_for_mask(LAT, m, base, inside, mode="joint", disable_pbar=True)
    assert torch.equal(a["samples"], b["samples"]) and "noise_mask" not in a
    with pytest.raises(ValueError, match="mode"):
        ts.regional_sample(LAT, base, [(m, inside)], mode="two-pass")


def test_cli_mode_joint(tmp_path, capsys):
    from test_cli import disc_png

    from twosamplers.cli import main
    from twosamplers.job.imageio import load_image

    out = tmp_path / "joint.png"
    code = main(["generate", "--base-prompt", "grass", "--mask-prompt", "brick", "--mask",
                 str(disc_png(tmp_path / "m.png")), "--width", "32", "--height", "32", "--steps", "3",
                 "--mode", "joint", "-o", str(out), "-q"])
    assert code == 0, capsys.readouterr()
    px = load_image(out)[0]
    # brick-red inside the disc, grass-green outside
    assert float(px[16, 16, 0]) > float(px[16, 16, 1]) and float(px[1, 1, 1]) > float(px[1, 1, 0])


def test_region_boxes_of_similar_size_share_one_call_and_very_different_ones_do_not():
    w1 = torch.zeros(1, 1, 32, 32)
    w1[..., 2:6, 2:6] = 1.0  # box 8 x 8
    w2 = torch.zeros(1, 1, 32, 32)
    w2[..., 20:30, 18:22] = 1.0  # box 16 x 8
    regions = [(w1, _e(_p(2)), _e(_p(0))), (w2, _e(_p(3)), _e(_p(0)))]
    pos, _ = joint.joint_conditioning(_e(_p(1)), _e(_p(0)), regions)
    assert pos[1].area == (16, 8, 0, 0) and pos[2].area == (16, 8, 16, 16)  # 2 x 128 <= 1.5 x (64 + 128)
    w3 = torch.zeros(1, 1, 32, 32)
    w3[..., 4:28, 4:28] = 1.0  # box 24 x 24: widening the 8 x 8 one to it would cost too much
    pos, _ = joint.joint_conditioning(_e(_p(1)), _e(_p(0)), [regions[0], (w3, _e(_p(3)), _e(_p(0)))])
    assert pos[1].area == (8, 8, 0, 0) and pos[2].area == (24, 24, 4, 4)


def test_shared_controlnets_see_each_region_s_box_of_the_hint():
    from twosamplers.models.control import ControlNet

    class Loaded:
        def residuals(self, *args):
            raise AssertionError("not called here")

    hint = torch.rand(1, 256, 256, 3)  # image px of a 32 x 32 latent
    cn = ControlNet(Loaded(), hint)
    w = torch.zeros(1, 1, 32, 32)
    w[..., 4:10, 20:23] = 1.0  # box rows 3..11, cols 18..26 (8 x 8)
    pos, neg = joint.joint_conditioning(_e(_p(1)), _e(_p(0)), [(w, _e(_p(2)), _e(_p(0)))], 8, (cn,), 8)
    assert torch.equal(pos[0].extras["control"].image, hint)  # the base: the whole hint
    region_hint = pos[1].extras["control"].image
    assert tuple(region_hint.shape) == (1, 64, 64, 3) and torch.equal(region_hint, hint[:, 24:88, 144:208])
    assert neg[1].extras["control"] is pos[1].extras["control"]  # cond and uncond of a region share it
    model = NetworkModel(PointNet())
    base = _settings(model, _p(1), _p(0))
    assert joint.joint_blockers(base, [_settings(model, _p(2), _p(0))]) == []
    # region ControlNets equal to the base's: same network, equal hint and window; anything else blocks
    assert joint._same_controlnets((cn,), (ControlNet(cn.source, hint.clone()),))
    assert not joint._same_controlnets((cn,), (ControlNet(cn.source, hint, strength=0.5),))
    assert not joint._same_controlnets((cn,), (ControlNet(Loaded(), hint),))
    assert not joint._same_controlnets((), (cn,))


def test_regions_with_other_loras_block_joint_mode():
    import copy

    from twosamplers.models.lora import Lora

    model = NetworkModel(PointNet())
    base = _settings(model, _p(1), _p(0))
    region = _settings(model, _p(2), _p(0))
    # a pass as one with a LoRA looks (loading a real LoRA needs an SD model; only the fields matter here)
    with_lora = copy.copy(region)
    object.__setattr__(with_lora, "loras", (Lora("x.safetensors"),))
    object.__setattr__(with_lora, "net", object())
    assert joint.joint_blockers(base, [with_lora]) == ["regions[0] has another loras"]
    assert joint.joint_blockers(base, [region]) == []
