"""Regional conditioning (masks, areas, strengths, timestep ranges): ComfyUI's numbers from shared/parity/cond,
and closed-form checks of each option on a pointwise network (whose prediction does not depend on the crop)."""

from __future__ import annotations

import functools
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import PARITY_DIR, ToyNet, assert_close

from twosamplers.engine import ksampler
from twosamplers.engine.conditioning import normalize_conditioning
from twosamplers.engine.ksampler import common_ksampler
from twosamplers.engine.regional_cond import RegionalConditioning, mask_bounds
from twosamplers.models import NetworkModel

COND_DIR = PARITY_DIR / "cond"


def _cond_cases() -> list[str]:
    path = COND_DIR / "manifest.json"
    if not path.is_file():
        return []
    m = json.loads(path.read_text())
    return sorted(k for k, v in m.items() if isinstance(v, dict) and v.get("kind") == "case")


@pytest.fixture(scope="module")
def cond_ref():
    if not (COND_DIR / "reference.safetensors").is_file():
        pytest.skip(f"regional-conditioning reference not found at {COND_DIR}")
    from safetensors.torch import load_file

    return load_file(str(COND_DIR / "reference.safetensors")), json.loads((COND_DIR / "manifest.json").read_text())


def _decode(v, T):
    if isinstance(v, dict) and set(v) == {"tensor"}:
        return T[v["tensor"]].clone()
    if isinstance(v, list):
        return tuple(_decode(x, T) for x in v)
    return v


@pytest.mark.parametrize("key", _cond_cases() or ["(no reference)"])
def test_matches_comfyui_regional_conditioning(cond_ref, key):
    T, M = cond_ref
    c = M[key]
    side = {s: [[T[tk].clone(), {k: _decode(v, T) for k, v in o.items()}] for tk, o in c[s]]
            for s in ("positive", "negative")}
    latent = {"samples": T[c["latent"]].clone()}
    if c.get("noise_mask"):
        latent["noise_mask"] = T[c["noise_mask"]].clone()
    out = common_ksampler(NetworkModel(ToyNet()), c["seed"], c["steps"], c["cfg"], c["sampler_name"],
                          c["scheduler"], side["positive"], side["negative"], latent, denoise=c["denoise"],
                          disable_pbar=True)
    assert_close(out["samples"], T[c["out"]])


# ------------------------------------------------------------------------------------------------
# closed forms on a pointwise network: eps = 0.5 * x + mean(context), recorded per call
# ------------------------------------------------------------------------------------------------
class PointNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5), requires_grad=False)
        self.calls: list[tuple[tuple[int, ...], list[float]]] = []

    def forward(self, x, timesteps, context, **kwargs):
        c = context.float().mean(dim=(1, 2))
        self.calls.append((tuple(x.shape), [round(float(v), 4) for v in c]))
        return x * self.scale + c.view(-1, 1, 1, 1)


def _prompt(v: float) -> torch.Tensor:
    return torch.full((1, 3, 8), float(v))


def _regional(pos, neg, shape=(1, 4, 16, 16), net=None, **kw):
    model = NetworkModel(net or PointNet())
    rc = RegionalConditioning(normalize_conditioning(pos, "positive"), normalize_conditioning(neg, "negative"),
                              model, shape, **kw)
    return rc, model


def _plain(model, x, sigma, v):
    return model.apply_model(x, sigma, _prompt(v))


X = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
SIGMA = torch.tensor([2.5])


def test_two_full_masks_give_the_strength_weighted_mean():
    a, b = 0.6, 1.7
    ones = torch.ones(1, 16, 16)
    pos = [[_prompt(1), {"mask": ones, "mask_strength": a}], [_prompt(3), {"mask": ones, "mask_strength": b}]]
    rc, model = _regional(pos, [[_prompt(0), {}]])
    cond, uncond = rc.predict(X, SIGMA, True)
    expected = (_plain(model, X, SIGMA, 1) * a + _plain(model, X, SIGMA, 3) * b) / (a + b)
    assert torch.allclose(cond, expected, atol=1e-6)
    assert torch.equal(uncond, _plain(model, X, SIGMA, 0))
    # "strength" multiplies in the same way
    pos = [[_prompt(1), {"strength": a, "mask": ones}], [_prompt(3), {"strength": b, "mask": ones}]]
    rc, model = _regional(pos, [[_prompt(0), {}]])
    assert torch.allclose(rc.predict(X, SIGMA, False)[0], expected, atol=1e-6)


def test_lone_soft_mask_acts_as_binary_and_uncovered_pixels_get_zero():
    soft = torch.zeros(1, 16, 16)
    soft[:, :, :8] = 0.3
    rc, model = _regional([[_prompt(2), {"mask": soft}]], [[_prompt(0), {}]])
    cond, uncond = rc.predict(X, SIGMA, True)
    p = _plain(model, X, SIGMA, 2)
    assert torch.allclose(cond[..., :8], p[..., :8], atol=1e-6)
    assert torch.equal(cond[..., 8:], torch.zeros_like(cond[..., 8:]))
    # guidance there is uncond * (1 - cfg)
    lat = {"samples": torch.zeros(1, 4, 16, 16)}
    g = ksampler.GuidedDenoiser(model, normalize_conditioning([[_prompt(2), {"mask": soft}]], "p"),
                                normalize_conditioning([[_prompt(0), {}]], "n"), 4.0, lat["samples"],
                                torch.zeros(1, 4, 16, 16), torch.tensor([SIGMA.item(), 0.0]))
    out = g(X, SIGMA)
    assert torch.allclose(out[..., 8:], uncond[..., 8:] * (1 - 4.0), atol=1e-6)


def test_area_entries_act_only_on_their_area_with_feathered_inner_edges():
    # area (h, w, y, x) = (8, 8, 4, 0): touches the left border only
    pos = [[_prompt(1), {}], [_prompt(5), {"area": (8, 8, 4, 0), "strength": 1.0}]]
    net = PointNet()
    rc, model = _regional(pos, [[_prompt(0), {}]], net=net)
    cond, uncond = rc.predict(X, SIGMA, True)
    g, a = _plain(model, X, SIGMA, 1), _plain(model, X, SIGMA, 5)
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[4:12, 0:8] = True
    assert torch.equal(cond[..., ~inside], g[..., ~inside])
    ramp = 2  # min(8, 8 // 4)
    w = torch.ones(8, 8)
    for t in range(ramp):
        w[t, :] *= (t + 1) / ramp  # top edge (y > 0)
        w[8 - 1 - t, :] *= (t + 1) / ramp  # bottom edge (inside the latent)
        w[:, 8 - 1 - t] *= (t + 1) / ramp  # right edge; the left edge is on the border: no fade
    expected = (g[..., 4:12, 0:8] + a[..., 4:12, 0:8] * w) / (1 + w)
    assert torch.allclose(cond[..., 4:12, 0:8], expected, atol=1e-6)
    # the uncond got a twin of the area (negative prompt), so it is the negative prediction everywhere
    assert torch.allclose(uncond, _plain(model, X, SIGMA, 0), atol=1e-6)
    # the area entries ran on the 8x8 crop, cond and uncond twins batched in one call
    assert ((2, 4, 8, 8), [0.0, 5.0]) in net.calls


def test_percentage_area_resolves_like_the_integer_area():
    pos_pct = [[_prompt(1), {}], [_prompt(5), {"area": ("percentage", 0.5, 0.26, 0.25, 0.5)}]]
    pos_int = [[_prompt(1), {}], [_prompt(5), {"area": (8, 4, 4, 8)}]]  # round(.26*16)=4, round(.25*16)=4
    a = _regional(pos_pct, [[_prompt(0), {}]])[0].predict(X, SIGMA, True)
    b = _regional(pos_int, [[_prompt(0), {}]])[0].predict(X, SIGMA, True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_mask_bounds_crop_and_bounding_box():
    m = torch.zeros(1, 16, 16)
    m[0, 3:6, 5:14] = 1.0
    assert mask_bounds(m) == (8, 9, 3, 5)  # height raised to the 8 minimum
    assert mask_bounds(torch.zeros(1, 16, 16)) == (8, 8, 0, 0)
    net = PointNet()
    pos = [[_prompt(1), {}], [_prompt(5), {"mask": m, "set_area_to_bounds": True}]]
    rc, model = _regional(pos, [[_prompt(0), {}]], net=net)
    cond, _ = rc.predict(X, SIGMA, True)
    assert ((2, 4, 8, 9), [0.0, 5.0]) in net.calls
    g, a = _plain(model, X, SIGMA, 1), _plain(model, X, SIGMA, 5)
    expected = torch.where(m.bool().unsqueeze(1), (g + a) / 2, g)
    assert torch.allclose(cond, expected, atol=1e-6)


def test_masks_of_any_size_are_resized_bilinearly():
    big = torch.zeros(1, 128, 96)
    big[:, 20:90, 10:60] = 1.0
    small = F.interpolate(big.unsqueeze(1), size=(16, 16), mode="bilinear", align_corners=False).squeeze(1)
    neg = [[_prompt(0), {}]]
    a = _regional([[_prompt(1), {}], [_prompt(4), {"mask": big, "mask_strength": 0.7}]], neg)[0]
    b = _regional([[_prompt(1), {}], [_prompt(4), {"mask": small, "mask_strength": 0.7}]], neg)[0]
    assert torch.equal(a.predict(X, SIGMA, True)[0], b.predict(X, SIGMA, True)[0])
    # a 2-D mask is one mask for the whole batch
    c = _regional([[_prompt(1), {}], [_prompt(4), {"mask": small[0], "mask_strength": 0.7}]], neg)[0]
    assert torch.equal(c.predict(X, SIGMA, True)[0], b.predict(X, SIGMA, True)[0])


def test_one_mask_per_image_and_broadcast_mask():
    left, right = torch.zeros(16, 16), torch.zeros(16, 16)
    left[:, :8], right[:, 8:] = 1.0, 1.0
    x2 = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    s2 = SIGMA.repeat(2)
    neg = [[_prompt(0), {}]]
    per = _regional([[_prompt(1), {}], [_prompt(4), {"mask": torch.stack([left, right])}]], neg,
                    shape=(2, 4, 16, 16))[0].predict(x2, s2, False)[0]
    for i, m in enumerate((left, right)):
        one = _regional([[_prompt(1), {}], [_prompt(4), {"mask": m}]], neg)[0].predict(x2[i:i + 1], SIGMA, False)[0]
        assert torch.equal(per[i:i + 1], one)
    bc = _regional([[_prompt(1), {}], [_prompt(4), {"mask": left}]], neg, shape=(2, 4, 16, 16))[0]
    out = bc.predict(x2, s2, False)[0]
    assert torch.equal(out[1:], _regional([[_prompt(1), {}], [_prompt(4), {"mask": left}]], neg)[0]
                       .predict(x2[1:], SIGMA, False)[0])
    with pytest.raises(ValueError, match="mask"):
        common_ksampler(NetworkModel(PointNet()), 1, 2, 5.0, "euler", "normal",
                        [[_prompt(1), {"mask": torch.ones(3, 16, 16)}]], neg,
                        {"samples": torch.zeros(2, 4, 2, 2)}, disable_pbar=True)


def test_timestep_range_is_active_on_the_right_steps_only():
    """Count which prompts each network call sees; percents map to sigmas of the full schedule (denoise does
    not rescale them) and both ends are inclusive."""
    net = PointNet()
    model = NetworkModel(net)
    ms = model.model_sampling
    pos = [[_prompt(1), {"start_percent": 0.0, "end_percent": 0.4}],
           [_prompt(2), {"start_percent": 0.4, "end_percent": 1.0}]]
    neg = [[_prompt(0), {}]]
    cut = ms.percent_to_sigma(0.4)
    for denoise in (1.0, 0.6):
        net.calls.clear()
        sig = ksampler.compute_sigmas(ms, "euler", "normal", 10, denoise)
        common_ksampler(model, 3, 10, 5.0, "euler", "normal", pos, neg, {"samples": torch.zeros(1, 4, 8, 8)},
                        denoise=denoise, disable_pbar=True)
        assert len(net.calls) == 10
        for s, (_, ctx) in zip(sig[:-1].tolist(), net.calls, strict=True):
            expected = sorted([0.0] + ([1.0] if s >= cut else []) + ([2.0] if s <= cut else []))
            assert sorted(ctx) == expected, (s, ctx)
    # nothing active on the positive side: cond prediction is 0
    rc, _ = _regional([[_prompt(1), {"start_percent": 0.9, "end_percent": 1.0}]], neg)
    cond, _ = rc.predict(X, torch.tensor([10.0]), True)
    assert torch.equal(cond, torch.zeros_like(cond))


def test_cfg1_never_evaluates_the_negative():
    net = PointNet()
    m = torch.zeros(1, 8, 8)
    m[:, :4] = 1
    common_ksampler(NetworkModel(net), 1, 3, 1.0, "euler", "normal", [[_prompt(1), {}], [_prompt(2), {"mask": m}]],
                    [[_prompt(7), {"mask": m}]], {"samples": torch.zeros(1, 4, 1, 1)}, disable_pbar=True)
    assert all(7.0 not in ctx for _, ctx in net.calls) and len(net.calls) == 3


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "euler_ancestral"])
def test_batching_never_changes_a_bit(monkeypatch, sampler):
    """The same run with every entry in its own network call gives the same bits (ToyNet: a conv network)."""
    m1 = torch.zeros(1, 64, 64)
    m1[:, 8:40, 4:30] = 1.0
    m2 = torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    p = [torch.randn(1, 3, 8, generator=g) for _ in range(4)]
    pos = [[p[0], {}], [p[1], {"mask": m1, "mask_strength": 0.8}], [p[2], {"mask": m2, "strength": 1.3}],
           [p[3], {"area": (4, 4, 2, 3), "start_percent": 0.2, "end_percent": 0.9}],
           [p[1], {"mask": m1, "set_area_to_bounds": True}]]
    neg = [[p[3], {}], [p[2], {"mask": m2}]]
    lat = {"samples": torch.randn(2, 4, 8, 8, generator=g), "noise_mask": torch.ones(1, 1, 8, 8)}
    lat["noise_mask"][..., :2] = 0

    def run(max_batch):
        net = ToyNet()
        monkeypatch.setattr(ksampler, "RegionalConditioning",
                            functools.partial(RegionalConditioning, max_batch=max_batch))
        out = common_ksampler(NetworkModel(net), 5, 6, 6.0, sampler, "karras", pos, neg, lat, denoise=0.9,
                              disable_pbar=True)["samples"]
        return out, len(net.calls)

    (a, calls_batched), (b, calls_single), (c, _) = run(None), run(1), run(2)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert calls_batched < calls_single


def test_noise_mask_with_masked_conditioning_keeps_the_input_outside():
    g = torch.Generator().manual_seed(4)
    lat = {"samples": torch.randn(1, 4, 8, 8, generator=g), "noise_mask": torch.zeros(1, 1, 8, 8)}
    lat["noise_mask"][..., 2:6, 2:6] = 1.0
    m = torch.zeros(1, 8, 8)
    m[:, :, :4] = 1.0
    out = common_ksampler(NetworkModel(ToyNet()), 1, 4, 6.0, "euler", "normal",
                          [[_prompt(0.1), {}], [_prompt(0.5), {"mask": m}]], [[_prompt(0), {}]], lat,
                          disable_pbar=True)["samples"]
    outside = lat["noise_mask"][0, 0] == 0
    assert torch.allclose(out[..., outside], lat["samples"][..., outside], atol=1e-5)
    assert (out[..., ~outside] - lat["samples"][..., ~outside]).abs().max() > 0.05


def test_plain_conditioning_keeps_the_fast_path():
    lat = torch.zeros(1, 4, 8, 8)
    pos = normalize_conditioning([[_prompt(1), {"strength": 0.5}]], "p")
    neg = normalize_conditioning([[_prompt(0), {}]], "n")
    g = ksampler.GuidedDenoiser(NetworkModel(PointNet()), pos, neg, 5.0, lat, lat, torch.tensor([1.0, 0.0]))
    assert g._regional is None


@pytest.mark.parametrize("key", ["reference_latents", "hooks", "default", "noise_augmentation",
                                 "control_apply_to_uncond"])
def test_unsupported_options_raise(key):
    with pytest.raises(NotImplementedError, match=key):
        common_ksampler(NetworkModel(PointNet()), 1, 2, 5.0, "euler", "normal", [[_prompt(1), {key: object()}]],
                        [[_prompt(0), {}]], {"samples": torch.zeros(1, 4, 1, 1)}, disable_pbar=True)


@pytest.mark.parametrize("opts, match", [
    ({"mask": torch.full((8, 8), 2.0)}, "values"),
    ({"mask": torch.ones(2, 3, 8, 8)}, "mask"),
    ({"area": (8, 8, 0)}, "area"),
    ({"area": (8.5, 8, 0, 0)}, "int"),
    ({"area": (0, 8, 0, 0)}, "range"),
    ({"area": ("percentage", 1.5, 1, 0, 0)}, "range"),
    ({"start_percent": 1.2}, "start_percent"),
    ({"strength": -1}, "strength"),
    ({"set_area_to_bounds": 1}, "bool"),
])
def test_bad_options_name_the_option(opts, match):
    with pytest.raises((ValueError, TypeError), match=match):
        normalize_conditioning([[_prompt(1), opts]], "positive")


def test_area_outside_the_latent_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        _regional([[_prompt(1), {"area": (4, 4, 20, 0)}]], [[_prompt(0), {}]])


def test_conditioning_is_not_mutated():
    m = torch.rand(1, 32, 32)
    pos = [[_prompt(1), {}], [_prompt(2), {"mask": m, "set_area_to_bounds": True, "mask_strength": 0.5}]]
    neg = [[_prompt(0), {}]]
    before = (m.clone(), [dict(o) for _, o in pos], len(neg))
    common_ksampler(NetworkModel(ToyNet()), 1, 2, 5.0, "euler", "normal", pos, neg,
                    {"samples": torch.zeros(1, 4, 8, 8)}, disable_pbar=True)
    assert torch.equal(m, before[0]) and [set(o) for _, o in pos] == [set(o) for o in before[1]]
    assert len(neg) == before[2] and len(pos) == 2


# ------------------------------------------------------------------------------------------------
# node classes
# ------------------------------------------------------------------------------------------------
def test_conditioning_nodes_are_registered_with_comfyui_inputs():
    from twosamplers import nodes

    for name in ("ConditioningSetMask", "ConditioningSetArea", "ConditioningSetAreaPercentage",
                 "ConditioningSetAreaStrength", "ConditioningSetTimestepRange", "ConditioningCombine",
                 "ConditioningConcat", "ConditioningAverage"):
        cls = nodes.NODE_CLASS_MAPPINGS[name]
        assert name in nodes.NODE_DISPLAY_NAME_MAPPINGS and cls.RETURN_TYPES == ("CONDITIONING",)
    req = nodes.ConditioningSetArea.INPUT_TYPES()["required"]
    assert req["width"][1] == {"default": 64, "min": 64, "max": 16384, "step": 8}
    assert req["strength"][1] == {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}
    assert nodes.ConditioningSetMask.INPUT_TYPES()["required"]["set_cond_area"] == (["default", "mask bounds"],)
    rng = nodes.ConditioningSetTimestepRange.INPUT_TYPES()["required"]
    assert rng["start"][1]["default"] == 0.0 and rng["end"][1]["default"] == 1.0 and rng["end"][1]["step"] == 0.001
    assert nodes.ConditioningAverage.FUNCTION == "addWeighted"


def test_set_nodes_store_comfyui_option_keys_and_leave_inputs_alone():
    from twosamplers import nodes

    base = [[_prompt(1), {"pooled_output": torch.zeros(1, 4)}]]
    (a,) = nodes.ConditioningSetArea().append(base, 256, 512, 64, 8, 0.5)
    assert a[0][1]["area"] == (64, 32, 1, 8) and a[0][1]["strength"] == 0.5 and a[0][1]["set_area_to_bounds"] is False
    (p,) = nodes.ConditioningSetAreaPercentage().append(base, 0.5, 0.25, 0.1, 0.2, 1.0)
    assert p[0][1]["area"] == ("percentage", 0.25, 0.5, 0.2, 0.1)
    (s,) = nodes.ConditioningSetAreaStrength().append(base, 2.0)
    assert s[0][1]["strength"] == 2.0
    m = torch.ones(8, 8)
    (k,) = nodes.ConditioningSetMask().append(base, m, 0.7, "mask bounds")
    assert k[0][1]["mask"].shape == (1, 8, 8) and k[0][1]["mask_strength"] == 0.7 and k[0][1]["set_area_to_bounds"]
    (t,) = nodes.ConditioningSetTimestepRange().set_range(base, 0.2, 0.6)
    assert (t[0][1]["start_percent"], t[0][1]["end_percent"]) == (0.2, 0.6)
    assert set(base[0][1]) == {"pooled_output"}  # input untouched
    (c,) = nodes.ConditioningCombine().combine(a, t)
    assert len(c) == 2 and c[0][1]["area"] == (64, 32, 1, 8) and c[1][1]["end_percent"] == 0.6
    with pytest.raises(ValueError, match="set_cond_area"):
        nodes.ConditioningSetMask().append(base, m, 1.0, "bounds")
    with pytest.raises(ValueError, match="end"):
        nodes.ConditioningSetTimestepRange().set_range(base, 0.0, 1.5)


def test_concat_and_average_nodes():
    from twosamplers import nodes

    to = [[torch.full((1, 4, 8), 1.0), {"pooled_output": torch.full((1, 2), 1.0), "strength": 0.5}]]
    frm = [[torch.full((1, 2, 8), 3.0), {"pooled_output": torch.full((1, 2), 3.0)}]]
    (cat,) = nodes.ConditioningConcat().concat(to, frm)
    assert cat[0][0].shape == (1, 6, 8) and torch.equal(cat[0][0][:, 4:], frm[0][0]) and cat[0][1]["strength"] == 0.5
    (avg,) = nodes.ConditioningAverage().addWeighted(to, frm, 0.25)
    # from is 2 tokens, padded with zeros to to's 4
    assert torch.allclose(avg[0][0][:, :2], torch.full((1, 2, 8), 0.25 + 3 * 0.75))
    assert torch.allclose(avg[0][0][:, 2:], torch.full((1, 2, 8), 0.25))
    assert torch.allclose(avg[0][1]["pooled_output"], torch.full((1, 2), 0.25 + 3 * 0.75))
    with pytest.warns(UserWarning, match="first entry"):
        nodes.ConditioningConcat().concat(to, frm + frm)


def test_nodes_chain_into_the_sampler_like_comfyui_cases():
    """ConditioningCombine(SetMask(a, left), SetMask(b, right)) gives left/right predictions side by side."""
    from twosamplers import nodes

    left = torch.zeros(1, 16, 16)
    left[..., :8] = 1.0
    (a,) = nodes.ConditioningSetMask().append([[_prompt(1), {}]], left, 1.0, "default")
    (b,) = nodes.ConditioningSetMask().append([[_prompt(3), {}]], 1.0 - left, 1.0, "default")
    (pos,) = nodes.ConditioningCombine().combine(a, b)
    rc, model = _regional(pos, [[_prompt(0), {}]])
    cond, _ = rc.predict(X, SIGMA, True)
    assert torch.allclose(cond[..., :8], _plain(model, X, SIGMA, 1)[..., :8], atol=1e-6)
    assert torch.allclose(cond[..., 8:], _plain(model, X, SIGMA, 3)[..., 8:], atol=1e-6)


class ExtrasNet(PointNet):
    """PointNet that also takes a latent-shaped extra input, recording its shape per call."""

    def __init__(self) -> None:
        super().__init__()
        self.extra_shapes: list[tuple[int, ...]] = []

    def forward(self, x, timesteps, context, c_concat=None, **kwargs):
        self.extra_shapes.append(tuple(c_concat.shape))
        assert c_concat.shape[-2:] == x.shape[-2:]
        return super().forward(x, timesteps, context) + 0.01 * c_concat[:, :1]


def test_latent_shaped_extras_are_cut_to_the_area():
    net = ExtrasNet()
    concat = torch.randn(1, 5, 16, 16, generator=torch.Generator().manual_seed(0))
    pos = [[_prompt(1), {"c_concat": concat}], [_prompt(5), {"c_concat": concat, "area": (8, 4, 2, 3)}]]
    rc, model = _regional(pos, [[_prompt(0), {"c_concat": concat}]], net=net)
    cond, _ = rc.predict(X, SIGMA, True)
    assert (2, 5, 8, 4) in net.extra_shapes and (2, 5, 16, 16) in net.extra_shapes
    crop = model.apply_model(X[..., 2:10, 3:7].contiguous(), SIGMA, _prompt(5), c_concat=concat[..., 2:10, 3:7])
    full = model.apply_model(X, SIGMA, _prompt(1), c_concat=concat)
    # an interior pixel of the area (no fade there): the mean of the full and the crop prediction
    assert torch.allclose(cond[..., 5, 5], (full[..., 5, 5] + crop[..., 3, 2]) / 2, atol=1e-6)


def test_attached_controlnets_keep_the_regional_options():
    from twosamplers.models.control import ControlNet, attach_controlnets

    class Loaded:
        def residuals(self, *args):  # a stand-in for a loaded ControlNet network
            raise AssertionError("not called here")

    entries = normalize_conditioning([[_prompt(1), {"mask": torch.ones(4, 4), "start_percent": 0.5,
                                                     "area": (2, 2, 0, 0)}]], "p")
    pos, _ = attach_controlnets(entries, [], (ControlNet(Loaded(), torch.rand(1, 32, 32, 3)),))
    assert pos[0].extras["control"] is not None and pos[0].mask is not None and pos[0].start_percent == 0.5
    assert pos[0].area == (2, 2, 0, 0)
