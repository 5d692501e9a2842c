"""The one protocol every model backend fills in, and `NetworkModel`, which wraps a plain eps/v network.

The engine talks to a model only through:
- `model_sampling` (a `ModelSamplingDiscrete`, or a flow `ModelSamplingFlow` / `ModelSamplingFlux`: sigmas, timestep(),
  calculate_input/denoised, noise_scaling),
- `latent_format` (scale factor, channels, pixels per latent pixel),
- `apply_model(x, sigma, context, **extras) -> denoised`: the x0 prediction for a batch at per-row sigmas,
- `encode_prompt`, `encode_image`, `decode_latent`: hooks that backends with text encoders/VAEs fill in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._checks import check_float, check_int
from ..engine.schedules import ModelSamplingDiscrete
from .control import active_controls


@dataclass(frozen=True)
class LatentFormat:
    """How a backend's latents relate to the numbers samplers see (ComfyUI's process_latent_in/out).

    `shift_factor` is the 16-channel formats' offset (SD3 0.0609, Flux 0.1159): in = (latent - shift) * scale,
    out = latent / scale + shift. With no shift the formulas are SD's exactly (latent * scale, latent / scale).
    """

    scale_factor: float = 0.18215
    channels: int = 4
    downscale: int = 8
    shift_factor: float = 0.0

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        if self.shift_factor:
            return (latent - self.shift_factor) * self.scale_factor
        return latent * self.scale_factor

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        if self.shift_factor:
            return (latent / self.scale_factor) + self.shift_factor
        return latent / self.scale_factor


class DiffusionModel:
    """Base class of model backends. Subclasses implement `apply_model` (or `apply_network`)."""

    model_sampling: ModelSamplingDiscrete
    latent_format: LatentFormat

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def apply_model(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor | None, **extras):
        """Denoised (x0) prediction of `x` at noise levels `sigma` (shape [B]) given `context` (B, L, D)."""
        raise NotImplementedError

    def extra_conds(self, extras: dict, *, latent_image: torch.Tensor, denoise_mask: torch.Tensor | None,
                    prompt_type: str = "", seed: int | None = None) -> dict:
        """An entry's network extras for one sampling run, given the run's model-space latent, prepared noise
        mask, whether the entry is "positive" or "negative" and the run's seed (inpainting models add their extra
        input channels here; the SDXL refiner its aesthetic score; unCLIP draws its noise augmentation from the
        seed). Every model takes all of these, so the sampler passes them alike. Default: unchanged."""
        return extras

    def encode_prompt(self, text: str, **options) -> list:
        """Text -> ComfyUI CONDITIONING ([[tensor(1, L, D), {...}]])."""
        raise NotImplementedError(f"{type(self).__name__} has no text encoder; pass CONDITIONING tensors instead")

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, H, W, 3) in [0, 1] -> latent samples (unscaled, as ComfyUI's VAEEncode returns)."""
        raise NotImplementedError(f"{type(self).__name__} has no image encoder")

    def decode_latent(self, samples: torch.Tensor) -> torch.Tensor:
        """Latent samples -> pixels (B, H, W, 3) in [0, 1]."""
        raise NotImplementedError(f"{type(self).__name__} has no image decoder")


class NetworkModel(DiffusionModel):
    """A plain eps (or v) network called as `network(x_in, timesteps, context, **extras)`, as ComfyUI calls
    its UNet: x_in = x / sqrt(sigma^2 + 1), timesteps = the quantized float timestep of sigma.

    `model_sampling` defaults to SD1.5's discrete EPS schedule.
    """

    def __init__(
        self,
        network: Callable[..., torch.Tensor],
        model_sampling: ModelSamplingDiscrete | None = None,
        latent_scale: float = 0.18215,
        latent_channels: int = 4,
        downscale: int = 8,
    ) -> None:
        if not callable(network):
            raise TypeError(f"network must be callable as network(x_in, timesteps, context), got {type(network)}")
        if model_sampling is not None and not isinstance(model_sampling, ModelSamplingDiscrete):
            raise TypeError(f"model_sampling must be a ModelSamplingDiscrete, got {type(model_sampling).__name__}")
        self.network = network
        self.model_sampling = model_sampling if model_sampling is not None else ModelSamplingDiscrete()
        self.latent_format = LatentFormat(
            scale_factor=check_float("latent_scale", latent_scale, 1e-8),
            channels=check_int("latent_channels", latent_channels, 1),
            downscale=check_int("downscale", downscale, 1),
        )
        params = getattr(network, "parameters", None)
        # The first parameter tells device and dtype; nn.Module.to() keeps the Parameter object, so keep it.
        self._param = next(iter(params()), None) if callable(params) else None

    def __repr__(self) -> str:
        return f"NetworkModel({type(self.network).__name__}, {self.model_sampling!r}, {self.latent_format})"

    @property
    def device(self) -> torch.device:
        p = self._param
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        p = self._param
        return p.dtype if p is not None and p.is_floating_point() else torch.float32

    def timesteps(self, sigma: torch.Tensor, model_sampling: ModelSamplingDiscrete | None = None) -> torch.Tensor:
        """model_sampling.timestep(sigma) as float; cached per sigma value (one sync instead of an argmin)."""
        ms = model_sampling if model_sampling is not None else self.model_sampling
        ts = [ms.timestep_of(v) for v in sigma.reshape(-1).tolist()]
        if all(t == ts[0] for t in ts):
            return torch.full(sigma.shape, ts[0], dtype=torch.float32, device=sigma.device)
        return torch.tensor(ts, dtype=torch.float32, device=sigma.device).reshape(sigma.shape)

    def apply_model(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor | None, **extras):
        # a wrapper that patches the sampling (ComfyUI's ModelSamplingDiscrete node, models/model_sampling.py)
        # passes its own schedule and prediction type down to the network call
        ms = extras.pop("model_sampling", None) or self.model_sampling
        values = (sigma if sigma.ndim == 1 else sigma.reshape(-1)).tolist()
        s0 = values[0]
        control = extras.pop("control", None)
        batched_number = extras.pop("batched_number", 1)
        if control is not None:
            # ControlNets whose step window holds this sigma (ComfyUI tests the batch's first sigma)
            active = active_controls(control, s0, ms)
            if active:
                if not getattr(self.network, "supports_control", False):
                    raise TypeError(f"{type(self.network).__name__} cannot take ControlNet residuals; ControlNets "
                                    "need a Stable Diffusion model (twosamplers.models.sd)")
                extras["control"] = (active, batched_number)
        # Fast path (every row at one sigma, EPS, float32): the per-row scalars become memoised 0-dim float32 CPU
        # tensors holding the same float32 values (operands as a Python float would be, without its float64 ->
        # float32 copy), so the result is bit-identical with three tensor ops fewer per call.
        fast = ms.prediction == "eps" and x.dtype == torch.float32 and all(v == s0 for v in values)
        if fast:
            scale, s0_t = ms.scalars_of(s0)
            xc = x / scale
            t = torch.full(sigma.shape, ms.timestep_of(s0), dtype=torch.float32, device=sigma.device)
        else:
            xc = ms.calculate_input(sigma, x)
            t = self.timesteps(sigma, ms)
        dtype = self.dtype
        if context is not None and context.dtype != dtype:
            context = context.to(dtype)
        if xc.dtype != dtype:
            xc = xc.to(dtype)
        out = self.network(xc, t, context, **extras)
        if out.dtype != torch.float32:
            out = out.float()
        if fast:
            scaled = out * s0_t
            return torch.sub(x, scaled, out=scaled)
        return ms.calculate_denoised(sigma, out, x)
