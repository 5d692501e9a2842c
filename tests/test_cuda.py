"""CUDA paths (device placement, fp16 networks). Skipped where no GPU is present (CI has none)."""

import pytest
import torch
from conftest import ToyNet

from twosamplers.engine.ksampler import common_ksampler
from twosamplers.models import NetworkModel
from twosamplers.samplers import SAMPLER_NAMES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DETERMINISTIC_ON_BOTH = ["euler", "heun", "dpm_2", "lms", "dpmpp_2m", "uni_pc", "ddim", "dpmpp_2m_sde", "dpmpp_sde"]


def _inputs(masked):
    g = torch.Generator().manual_seed(0)
    lat = {"samples": torch.randn(2, 4, 16, 16, generator=g)}
    if masked:
        m = torch.zeros(1, 128, 128)
        m[:, 32:96, 40:100] = 1.0
        lat["noise_mask"] = m
    pos = [[torch.randn(1, 5, 8, generator=g), {}]]
    neg = [[torch.randn(1, 5, 8, generator=g), {}]]
    return lat, pos, neg


@pytest.mark.parametrize("name", SAMPLER_NAMES)
@pytest.mark.parametrize("masked", [False, True])
def test_every_sampler_runs_on_cuda(name, masked):
    lat, pos, neg = _inputs(masked)
    model = NetworkModel(ToyNet().cuda())
    out = common_ksampler(model, 5, 6, 6.0, name, "karras", pos, neg, lat, denoise=0.8, disable_pbar=True)
    # sampled on the GPU, handed back on the latent's device (the CPU), as ComfyUI does
    assert out["samples"].device.type == "cpu" and torch.isfinite(out["samples"]).all()
    again = common_ksampler(model, 5, 6, 6.0, name, "karras", pos, neg, lat, denoise=0.8, disable_pbar=True)
    assert torch.equal(out["samples"], again["samples"])


@pytest.mark.parametrize("name", DETERMINISTIC_ON_BOTH)
def test_cuda_matches_cpu_where_noise_streams_agree(name):
    """The initial noise is drawn on the CPU (as ComfyUI), and the plain SDE samplers keep their Brownian tree on
    the CPU, so CPU and CUDA runs agree up to float differences."""
    lat, pos, neg = _inputs(True)
    cpu = common_ksampler(NetworkModel(ToyNet()), 5, 6, 6.0, name, "karras", pos, neg, lat, disable_pbar=True)
    gpu = common_ksampler(NetworkModel(ToyNet().cuda()), 5, 6, 6.0, name, "karras", pos, neg, lat, disable_pbar=True)
    assert torch.allclose(cpu["samples"], gpu["samples"], atol=1e-3, rtol=1e-3)


def test_fp16_network():
    lat, pos, neg = _inputs(True)
    ref = common_ksampler(NetworkModel(ToyNet().cuda()), 5, 8, 6.0, "dpmpp_2m", "karras", pos, neg, lat,
                          disable_pbar=True)["samples"]
    half = common_ksampler(NetworkModel(ToyNet().cuda().half()), 5, 8, 6.0, "dpmpp_2m", "karras", pos, neg, lat,
                           disable_pbar=True)["samples"]
    assert half.dtype == torch.float32
    rel = float((half - ref).abs().max() / ref.abs().max())
    assert rel < 2e-2, f"fp16 result differs from fp32 by {rel:.2e} of its range"
