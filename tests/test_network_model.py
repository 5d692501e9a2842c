"""NetworkModel: ComfyUI's eps/v -> denoised path, the fast path for one sigma per batch, dtype handling."""

import pytest
import torch
from conftest import ToyNet

from twosamplers.engine.schedules import ModelSamplingDiscrete
from twosamplers.models import NetworkModel


def _generic(model, x, sigma, context):
    ms = model.model_sampling
    xc = ms.calculate_input(sigma, x)
    t = ms.timestep(sigma).float()
    out = model.network(xc, t, context).float()
    return ms.calculate_denoised(sigma, out, x)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_fast_path_is_bit_identical_to_the_generic_formulas(prediction):
    model = NetworkModel(ToyNet(), model_sampling=ModelSamplingDiscrete(prediction=prediction))
    g = torch.Generator().manual_seed(3)
    for s in (14.6146, 3.7, 0.0292, 0.5):
        x = torch.randn(2, 4, 8, 8, generator=g) * s
        ctx = torch.randn(2, 3, 8, generator=g)
        sigma = torch.full((2,), s)
        assert torch.equal(model.apply_model(x, sigma, ctx), _generic(model, x, sigma, ctx))


def test_rows_at_different_sigmas():
    model = NetworkModel(ToyNet())
    x = torch.randn(2, 4, 8, 8)
    ctx = torch.randn(2, 3, 8)
    sigma = torch.tensor([5.0, 0.7])
    both = model.apply_model(x, sigma, ctx)
    for i in range(2):
        one = model.apply_model(x[i : i + 1], sigma[i : i + 1], ctx[i : i + 1])
        assert torch.allclose(both[i : i + 1], one, atol=1e-6)


def test_timesteps_are_quantized_and_passed_as_float():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x, t, context):
            seen.append(t.clone())
            return torch.zeros_like(x)

    model = NetworkModel(Probe())
    ms = model.model_sampling
    model.apply_model(torch.zeros(1, 4, 2, 2), ms.sigmas[321].reshape(1) * 1.0001, torch.zeros(1, 1, 1))
    assert seen[0].dtype == torch.float32 and float(seen[0]) == 321.0


def test_half_network_gets_half_inputs_and_returns_float():
    dtypes = []

    class HalfProbe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones((), dtype=torch.float16), requires_grad=False)

        def forward(self, x, t, context):
            dtypes.append((x.dtype, context.dtype))
            return x * self.w

    out = NetworkModel(HalfProbe()).apply_model(torch.randn(1, 4, 8, 8), torch.tensor([2.0]), torch.randn(1, 3, 8))
    assert dtypes == [(torch.float16, torch.float16)] and out.dtype == torch.float32


def test_bad_construction():
    with pytest.raises(TypeError, match="network must be callable"):
        NetworkModel(3)
    with pytest.raises(TypeError, match="model_sampling must be a ModelSamplingDiscrete"):
        NetworkModel(ToyNet(), model_sampling="eps")
    with pytest.raises(ValueError, match="latent_channels"):
        NetworkModel(ToyNet(), latent_channels=0)
