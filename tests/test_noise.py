import pytest
import torch
from conftest import assert_close, parity_keys

from twosamplers.engine.noise import BrownianTreeNoiseSampler, default_noise_sampler, prepare_noise, sampler_seed


@pytest.mark.parametrize("key", parity_keys("noise/"))
def test_prepare_noise_matches_comfyui(parity, key):
    T, M = parity
    p = M[key]
    out = prepare_noise(torch.zeros(p["shape"]), p["seed"], p.get("batch_index"))
    assert_close(out, T[key], atol=0, rtol=0)


def test_prepare_noise_leaves_global_rng_alone():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    prepare_noise(torch.zeros(1, 4, 8, 8), 123)
    assert torch.equal(before, torch.get_rng_state())


def test_batch_index_row_equals_draw_number():
    full = prepare_noise(torch.zeros(4, 4, 8, 8), 42)
    picked = prepare_noise(torch.zeros(2, 4, 8, 8), 42, batch_index=[3, 1])
    assert torch.equal(picked[0], full[3]) and torch.equal(picked[1], full[1])


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "3"])
def test_bad_seed(seed):
    with pytest.raises((ValueError, TypeError), match="seed"):
        prepare_noise(torch.zeros(1, 4, 8, 8), seed)


def test_bad_batch_index():
    with pytest.raises(ValueError, match="batch_index"):
        prepare_noise(torch.zeros(2, 4, 8, 8), 1, batch_index=[0])


def test_default_noise_sampler_seed_plus_one_and_wrap():
    x = torch.zeros(1, 4, 8, 8)
    n = default_noise_sampler(x, seed=10)(None, None)
    expected = torch.randn(x.shape, generator=torch.Generator().manual_seed(11))
    assert torch.equal(n, expected)
    assert sampler_seed(2**64 - 1, torch.device("cpu")) == 0
    default_noise_sampler(x, seed=2**64 - 1)(None, None)  # upstream crashes here; we wrap


def test_brownian_tree_noise_is_unit_gaussian_and_seeded():
    x = torch.zeros(1, 4, 64, 64)
    ns = BrownianTreeNoiseSampler(x, torch.tensor(0.03), torch.tensor(14.6), seed=5)
    n1 = ns(torch.tensor(10.0), torch.tensor(5.0))
    assert abs(float(n1.mean())) < 0.05 and abs(float(n1.std()) - 1) < 0.05
    ns2 = BrownianTreeNoiseSampler(x, torch.tensor(0.03), torch.tensor(14.6), seed=5)
    assert torch.equal(n1, ns2(torch.tensor(10.0), torch.tensor(5.0)))
    # increments over disjoint intervals are independent
    n2 = ns(torch.tensor(5.0), torch.tensor(1.0))
    assert abs(float((n1 * n2).mean())) < 0.05
