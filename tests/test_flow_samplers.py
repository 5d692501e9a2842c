"""Flow-matching (CONST) model samplings and every sampler and scheduler on them, against ComfyUI 0.30.0.

References: tests/data/flow_samplers.safetensors, made by tests/comfy_oracle/flow_samplers.py (ComfyUI's own
ModelSamplingDiscreteFlow / ModelSamplingFlux, calculate_sigmas and KSAMPLER.sample over a closed-form CFG
denoiser; see that script). The same denoiser runs here through the KSampler core (`sample_with_sigmas`), so the
noise scaling, the samplers' CONST branches, the flow inpainting blend and the inverse noise scaling are all
compared.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from twosamplers.engine.conditioning import normalize_conditioning
from twosamplers.engine.ksampler import compute_sigmas, sample_with_sigmas
from twosamplers.engine.schedules import (
    SCHEDULER_NAMES,
    ModelSamplingFlow,
    ModelSamplingFlux,
    calculate_sigmas,
    flux_shift,
)
from twosamplers.models.base import DiffusionModel, LatentFormat
from twosamplers.samplers import SAMPLER_NAMES

REF = load_file(str(Path(__file__).parent / "data" / "flow_samplers.safetensors"))
PERCENTS = (0.0, 1e-4, 0.2, 0.5, 0.8, 0.999, 1.0)
SAMPLINGS = {
    "sd3": lambda: ModelSamplingFlow(shift=3.0, multiplier=1000),
    "schnell": lambda: ModelSamplingFlow(shift=1.0, multiplier=1.0),
    "flux": lambda: ModelSamplingFlux(shift=1.15),
    "flux_res": lambda: ModelSamplingFlux(shift=flux_shift(768, 512)),
}
RUNS = sorted(k for k in REF if k.startswith("run/"))


@pytest.mark.parametrize("name", list(SAMPLINGS))
def test_sigma_tables_timesteps_and_percent_are_comfyuis_bits(name):
    ms = SAMPLINGS[name]()
    assert torch.equal(ms.sigmas, REF[f"ms/{name}/sigmas"])
    assert torch.equal(ms.timestep(REF["in/probe"]).float(), REF[f"ms/{name}/timestep"])
    got = torch.tensor([float(ms.percent_to_sigma(p)) for p in PERCENTS], dtype=torch.float64)
    assert torch.equal(got, REF[f"ms/{name}/percent"])


@pytest.mark.parametrize("name", list(SAMPLINGS))
@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_every_scheduler_on_flow_sigmas_is_comfyuis(name, scheduler):
    ms = SAMPLINGS[name]()
    for steps in (1, 4, 9):
        ref = REF[f"sigmas/{name}/{scheduler}/steps{steps}"]
        got = calculate_sigmas(ms, scheduler, steps)
        assert got.shape == ref.shape
        assert torch.equal(got.isnan(), ref.isnan())
        assert torch.equal(got.nan_to_num(), ref.nan_to_num()), f"steps {steps}: {got} vs {ref}"


def test_flux_shift_is_the_node_rule():
    assert flux_shift(1024, 1024) == pytest.approx(1.15)
    assert flux_shift(256, 256) == pytest.approx(0.5 + (1.15 - 0.5) / 3840 * 0)
    assert math.isclose(flux_shift(768, 512), 0.5 + (768 * 512 / 256 - 256) * 0.65 / 3840)


class ClosedFormFlow(DiffusionModel):
    """The oracle's closed-form model as a twosamplers backend: the conditioning tensor's value is the data mean
    (0.3 for the prompt, -0.2 for the negative), so CFG and its uncond hooks are exercised."""

    def __init__(self, ms) -> None:
        self.model_sampling = ms
        self.latent_format = LatentFormat(scale_factor=1.0, channels=16, downscale=8)

    def apply_model(self, x, sigma, context, **extras):
        v = 0.25
        s2 = sigma.reshape(-1, 1, 1, 1) ** 2
        m = context[:, :1, :1].reshape(-1, 1, 1, 1)
        return x * v / (v + s2) + m * s2 / (v + s2)


def _run(key: str) -> torch.Tensor:
    _, name, sampler, scheduler, *rest = key.split("/")
    model = ClosedFormFlow(SAMPLINGS[name]())
    masked = bool(rest)
    latent = REF["in/latent"] if masked else torch.zeros_like(REF["in/latent"])
    sigmas = compute_sigmas(model.model_sampling, sampler, scheduler, 5)
    pos = normalize_conditioning(torch.full((1, 1, 1), 0.3), "positive")
    neg = normalize_conditioning(torch.full((1, 1, 1), -0.2), "negative")
    return sample_with_sigmas(model, REF["in/noise"], sigmas, latent, pos, neg, 3.0, sampler, 7,
                              REF["in/mask"][:, 0] if masked else None, disable_pbar=True)


def test_the_reference_covers_every_sampler_on_both_flow_samplings():
    for name in ("sd3", "flux"):
        assert {k.split("/")[2] for k in RUNS if k.startswith(f"run/{name}/")} == set(SAMPLER_NAMES)


@pytest.mark.parametrize("key", RUNS)
def test_sampler_on_flow_model_matches_comfyui(key):
    out = _run(key)
    ref = REF[key]
    assert out.shape == ref.shape
    assert torch.isfinite(out).all()
    diff = float((out - ref).abs().max())
    # same formulas in the same float32 order: bit-equal or within a few ulps of |x| ~ 1
    assert diff <= 1e-5, f"max |diff| {diff:.3e}"
