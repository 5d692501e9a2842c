import pytest
import torch
from conftest import assert_close, parity_keys

from twosamplers.engine.noise_mask import prepare_mask


@pytest.mark.parametrize("key", parity_keys("mask/"))
def test_prepare_mask_matches_comfyui(parity, key):
    T, M = parity
    m = T[key + "/in"].clone()
    before = m.clone()
    assert_close(prepare_mask(m, tuple(M[key]["out_shape"])), T[key], atol=0, rtol=0)
    assert torch.equal(m, before)


def test_prepare_mask_no_rounding():
    m = torch.zeros(16, 16)
    m[:, 8:] = 1.0
    out = prepare_mask(m, (1, 4, 5, 5))
    assert out.shape == (1, 4, 5, 5)
    assert ((out > 0) & (out < 1)).any()


@pytest.mark.parametrize(
    "mask, match",
    [
        (torch.zeros(8), "mask must be 2-D or 3-D or 4-D"),
        (torch.zeros(1, 2, 8, 8), r"\[B, 1, H, W\]"),
        (torch.full((8, 8), float("nan")), "NaN"),
        (torch.full((8, 8), 1.5), r"\[0, 1\]"),
        (torch.full((8, 8), -0.1), r"\[0, 1\]"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_bad_masks(mask, match):
    with pytest.raises((ValueError, TypeError), match=match):
        prepare_mask(mask, (1, 4, 8, 8))


def test_bad_shape():
    with pytest.raises(ValueError, match="shape"):
        prepare_mask(torch.zeros(8, 8), (4, 8, 8))
