import pytest
import torch
from conftest import assert_close, parity_keys

from twosamplers.engine.schedules import SCHEDULER_NAMES, ModelSamplingDiscrete, calculate_sigmas


def test_scheduler_names_in_comfyui_order():
    assert SCHEDULER_NAMES == (
        "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic",
        "kl_optimal",
    )


def test_model_sampling_tables(parity):
    T, _ = parity
    ms = ModelSamplingDiscrete()
    assert_close(ms.sigmas, T["ms/sigmas"], atol=0, rtol=0)
    assert_close(ms.log_sigmas, T["ms/log_sigmas"], atol=0, rtol=0)
    assert float(ms.sigma_min) == pytest.approx(0.0291675, abs=1e-6)
    assert float(ms.sigma_max) == pytest.approx(14.614642, abs=1e-5)
    assert_close(ms.timestep(T["ms/in/sigma_probe"].clone()), T["ms/timestep"], atol=0, rtol=0)
    assert_close(ms.sigma(T["ms/in/t_probe"].clone()), T["ms/sigma"])


@pytest.mark.parametrize("key", parity_keys("sigmas/"))
def test_scheduler_matches_comfyui(parity, key):
    T, M = parity
    p = M[key]
    assert_close(calculate_sigmas(ModelSamplingDiscrete(), p["scheduler"], p["steps"]), T[key])


def test_timestep_is_quantized_and_sigma_interpolates():
    ms = ModelSamplingDiscrete()
    s = ms.sigmas[500] * 1.001
    assert float(ms.timestep(s)) == 500.0
    mid = ms.sigma(torch.tensor(500.5))
    assert float(ms.sigmas[500]) < float(mid) < float(ms.sigmas[501])
    # clamped to [0, 999]; exp(log(sigma)) round-trips within an ulp
    assert float(ms.sigma(torch.tensor(-5.0))) == pytest.approx(float(ms.sigmas[0]), rel=1e-6)
    assert float(ms.sigma(torch.tensor(5000.0))) == pytest.approx(float(ms.sigmas[-1]), rel=1e-6)


def test_percent_to_sigma():
    ms = ModelSamplingDiscrete()
    assert ms.percent_to_sigma(1.0) == 0.0
    assert ms.percent_to_sigma(0.0) > float(ms.sigma_max)
    assert ms.percent_to_sigma(0.2) == pytest.approx(5.0924, abs=1e-3)
    assert ms.percent_to_sigma(0.8) == pytest.approx(0.5712, abs=1e-3)


def test_v_prediction_denoised():
    ms = ModelSamplingDiscrete(prediction="v")
    x, v, s = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2), torch.tensor([2.0])
    expected = x / 5.0 - v * 2.0 / 5.0**0.5
    assert torch.allclose(ms.calculate_denoised(s, v, x), expected, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scheduler_name": "nope", "steps": 5}, "simple, sgm_uniform, karras"),
        ({"scheduler_name": "karras", "steps": 0}, "steps=0"),
        ({"scheduler_name": "karras", "steps": 2.5}, "steps must be an int"),
    ],
)
def test_bad_scheduler_input(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        calculate_sigmas(ModelSamplingDiscrete(), **kwargs)


def test_bad_model_sampling_input():
    with pytest.raises(ValueError, match="prediction"):
        ModelSamplingDiscrete(prediction="x0")
    with pytest.raises(ValueError, match="linear_start"):
        ModelSamplingDiscrete(linear_start=0.02, linear_end=0.01)
