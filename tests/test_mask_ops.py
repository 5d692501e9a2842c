"""mask_tools: inversion, grow/shrink, feather, Impact's region dilation, compositing, boxes, Differential Diffusion."""

import pytest
import torch

from twosamplers._checks import check_mask, check_mask_batch
from twosamplers.engine import mask_ops as mt
from twosamplers.engine.schedules import ModelSamplingDiscrete


def box_mask(h=8, w=8, top=2, left=1, bottom=6, right=4):
    m = torch.zeros(h, w)
    m[top:bottom, left:right] = 1.0
    return m


def rows_cols(m):
    nz = torch.nonzero(m.reshape(m.shape[-2:]) > 0)
    return (int(nz[:, 0].min()), int(nz[:, 0].max())), (int(nz[:, 1].min()), int(nz[:, 1].max()))


# ---- inversion
def test_binary_inverse_is_upstream_exact_compare():
    m = torch.tensor([[0.0, 0.25, 0.5], [0.999, 1.0, 1.0]])
    assert torch.equal(mt.binary_inverse(m), torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))


def test_soft_inverse_and_inverse():
    m = torch.tensor([[0.0, 0.25], [0.75, 1.0]])
    assert torch.equal(mt.soft_inverse(m), 1 - m)
    assert torch.equal(mt.inverse(m, "soft"), 1 - m)
    assert torch.equal(mt.inverse(m, "binary"), mt.binary_inverse(m))


# ---- grow / shrink
def test_grow_square_and_binary():
    m = box_mask()
    g = mt.grow(m, 1)
    assert g.shape == m.shape
    assert set(g.unique().tolist()) <= {0.0, 1.0}
    assert rows_cols(g) == ((1, 6), (0, 4))
    assert torch.equal(mt.grow(m, 0), m)


def test_shrink_and_grow_shrink_roundtrip():
    m = box_mask()
    s = mt.grow(m, -1)
    assert rows_cols(s) == ((3, 4), (2, 2))
    inner = box_mask(8, 8, 2, 2, 6, 5)
    assert torch.equal(mt.grow(mt.grow(inner, 1), -1), inner)


def test_shrink_keeps_border_contact():
    m = torch.zeros(6, 6)
    m[:, :3] = 1.0
    s = mt.grow(m, -1)
    assert bool((s[:, 0:2] == 1).all()) and bool((s[:, 2] == 0).all())


def test_grow_anisotropic_and_soft():
    m = torch.zeros(9, 9)
    m[4, 4] = 0.5
    g = mt.grow(m, (1, 2))
    assert rows_cols(g) == ((3, 5), (2, 6))
    assert float(g.max()) == 0.5
    with pytest.raises(ValueError, match="grow and shrink"):
        mt.grow(m, (1, -1))


# ---- feather
def test_feather_blurs_symmetrically_and_keeps_range():
    m = box_mask(16, 16, 6, 6, 10, 10)
    f = mt.feather(m, 1.5)
    assert f.shape == m.shape
    assert float(f.min()) >= 0 and float(f.max()) <= 1
    assert 0 < float(f[5, 8]) < 1 and 0 < float(f[8, 10]) < 1
    assert torch.allclose(f, f.flip(-1).flip(-2), atol=1e-6)  # the box is centred at 7.5
    assert abs(float(f.sum()) - float(m.sum())) < 1e-3  # mass kept away from the border
    assert torch.equal(mt.feather(m, 0.0), m)


def test_feather_outward_keeps_inside_full():
    m = box_mask(16, 16, 6, 6, 10, 10)
    f = mt.feather_outward(m, 2.0)
    assert bool((f[m > 0] == 1).all())
    assert float(f[5, 8]) > 0


def test_feather_replicates_border():
    m = torch.ones(8, 8)
    assert torch.allclose(mt.feather(m, 2.0), m)


# ---- Impact's region dilation
@pytest.mark.parametrize("k, up_left, down_right", [(0, 0, 0), (1, 0, 0), (2, 0, 1), (3, 1, 1), (10, 4, 5)])
def test_dilate_region_kernel_size_semantics(k, up_left, down_right):
    m = box_mask(32, 32, 10, 12, 20, 18)  # rows 10..19, cols 12..17
    d = mt.dilate_region(m, k)
    assert d.shape == (1, 1, 32, 32)
    assert rows_cols(d) == ((10 - up_left, 19 + down_right), (12 - up_left, 17 + down_right))


def test_dilate_region_rounding_half_to_even_and_nonzero_fix():
    m = torch.zeros(8, 8)
    m[2:5, 2:5] = 0.5
    m[3, 3] = 0.6
    assert rows_cols(mt.dilate_region(m, 0)) == ((3, 3), (3, 3))  # 0.5 -> 0, 0.6 -> 1
    assert rows_cols(mt.dilate_region(m, 0, "nonzero")) == ((2, 4), (2, 4))
    with pytest.raises(ValueError, match="threshold"):
        mt.dilate_region(m, 0, "floor")


def test_dilate_region_keeps_orientation_and_batches():
    m = torch.zeros(2, 12, 8)
    m[0, 1:3, 1:3] = 1
    m[1, 8:10, 5:7] = 1
    d = mt.dilate_region(m, 3)
    assert d.shape == (2, 1, 12, 8)
    assert rows_cols(d[0]) == ((0, 3), (0, 3))
    assert rows_cols(d[1]) == ((7, 10), (4, 7))


def test_region_union_inverse():
    a = box_mask(8, 8, 0, 0, 2, 2)
    b = torch.zeros(8, 8)
    b[5, 5] = 0.01
    inv = mt.region_union_inverse([a, b])
    assert inv.shape == (1, 1, 8, 8)
    assert float(inv.sum()) == 64 - 4 - 1
    big = torch.zeros(16, 16)
    big[0, 15] = 1
    inv2 = mt.region_union_inverse([a, big])
    assert inv2.shape == (1, 1, 16, 16) and float(inv2[0, 0, 0, 15]) == 0 and float(inv2[0, 0, 0, 0]) == 0
    with pytest.raises(ValueError, match="empty"):
        mt.region_union_inverse([])


# ---- compositing
def test_composite_is_latent_composite_masked():
    g = torch.Generator().manual_seed(3)
    dst, src = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    m = torch.rand(8, 8, generator=g)
    out = mt.composite(dst, src, m)
    assert torch.allclose(out, m * src + (1 - m) * dst, atol=1e-6)
    big = torch.zeros(64, 64)
    big[:32] = 1
    out = mt.composite(dst, src, big)
    assert torch.equal(out[..., :4, :], src[..., :4, :]) and torch.equal(out[..., 4:, :], dst[..., 4:, :])


# ---- boxes
def test_bbox_over_batch_and_empty():
    m = torch.zeros(2, 10, 10)
    m[0, 2, 3] = 0.1
    m[1, 6, 8] = 1
    assert mt.bbox(m) == (2, 3, 7, 9)
    assert mt.bbox(torch.zeros(4, 4)) is None


def test_crop_box_context_multiple_and_clipping():
    assert mt.crop_box((10, 10, 14, 14), 32, 32, context=2, multiple=1) == (8, 8, 16, 16)
    t, l, b, r = mt.crop_box((10, 10, 13, 13), 32, 32, context=2, multiple=8)
    assert (b - t, r - l) == (8, 8) and t <= 8 and b >= 15
    assert mt.crop_box((0, 0, 3, 3), 32, 32, context=4, multiple=8) == (0, 0, 8, 8)
    assert mt.crop_box((28, 28, 32, 32), 32, 32, context=4, multiple=16) == (16, 16, 32, 32)
    assert mt.crop_box((1, 1, 5, 5), 12, 12, context=0, multiple=16) == (0, 0, 12, 12)


def test_crop_paste_roundtrip():
    t = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    box = (1, 2, 4, 5)
    assert torch.equal(mt.paste(torch.zeros_like(t), mt.crop(t, box), box)[..., 1:4, 2:5], t[..., 1:4, 2:5])
    assert torch.equal(mt.paste(t, mt.crop(t, box), box), t)


def test_to_latent_batch_rules():
    """The batch rule is checked where a mask enters (check_mask_batch); to_latent trusts it."""
    m = torch.rand(3, 16, 16)
    with pytest.raises(ValueError, match="mask has batch 3"):
        check_mask_batch(m, 2, "mask")
    assert mt.to_latent(m[:1], (2, 4, 8, 8)).shape == (2, 1, 8, 8)
    assert mt.to_latent(m[:2], (2, 4, 8, 8)).shape == (2, 1, 8, 8)


# ---- Differential Diffusion
def test_differential_threshold_moves_from_one_to_zero():
    class M:
        model_sampling = ModelSamplingDiscrete()

    ms = M.model_sampling
    sigmas = torch.tensor([14.6146, 5.0, 1.0, 0.1, 0.0])
    grey = torch.tensor([0.0, 0.3, 0.7, 1.0]).view(1, 1, 1, 4)
    opts = {"model": M(), "sigmas": sigmas}
    first = mt.differential_denoise_mask(sigmas[:1], grey, opts)
    assert first.flatten().tolist() == [0.0, 0.0, 0.0, 1.0]
    late = mt.differential_denoise_mask(sigmas[3:4], grey, opts)
    assert late.flatten().tolist() == [0.0, 1.0, 1.0, 1.0]
    t_from, t_to = float(ms.timestep(sigmas[:1])), float(ms.timestep(ms.sigma_min.reshape(1)))
    mid = torch.tensor([2.0])
    thr = (float(ms.timestep(mid)) - t_to) / (t_from - t_to)
    out = mt.differential_denoise_mask(mid, grey, opts)
    assert out.flatten().tolist() == [float(v >= thr) for v in grey.flatten().tolist()]


# ---- validation and no mutation
@pytest.mark.parametrize("bad, match", [
    (torch.full((4, 4), float("nan")), "NaN"),
    (torch.full((4, 4), 1.5), r"\[0, 1\]"),
    (torch.zeros(4), "2-D"),
    (torch.zeros(1, 2, 4, 4), "shape"),
])
def test_bad_masks_are_named(bad, match):
    """Masks are validated once, where they enter (mask_ops trusts its callers): the check, ComfyUI's
    prepare_mask, the front door and the node classes all reject a bad mask naming it."""
    from twosamplers import RegionalPrompt, SamplerSettings, TwoSamplersForMask, two_samplers_for_mask
    from twosamplers.engine.noise_mask import prepare_mask
    from twosamplers.models import NetworkModel
    from twosamplers.nodes.providers import KSamplerAdvancedWrapper, KSamplerWrapper

    model = NetworkModel(lambda x, t, c: x * 0)
    cond = torch.zeros(1, 1, 4)
    settings = SamplerSettings(model, cond, cond, steps=1)
    ks = KSamplerWrapper(model, 0, 1, 1.0, "euler", "normal", cond, cond)
    adv = KSamplerAdvancedWrapper(model, 1.0, "euler", "normal", cond, cond)
    latent = {"samples": torch.zeros(1, 4, 4, 4)}
    for fn in (lambda m: check_mask(m, "mask"), lambda m: prepare_mask(m, (1, 4, 4, 4)),
               lambda m: two_samplers_for_mask(latent, m, settings, settings),
               lambda m: TwoSamplersForMask().doit(latent, ks, ks, m),
               lambda m: RegionalPrompt().doit(m, adv)):
        with pytest.raises(ValueError, match=match):
            fn(bad)


def test_tools_do_not_mutate():
    m = torch.rand(2, 8, 8)
    keep = m.clone()
    mt.grow(m, 2), mt.grow(m, -1), mt.feather(m, 1.0), mt.dilate_region(m, 10), mt.binary_inverse(m)
    mt.soft_inverse(m), mt.bbox(m), mt.region_union_inverse([m]), mt.to_latent(m, (2, 4, 4, 4))
    assert torch.equal(m, keep)
