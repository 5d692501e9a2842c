"""ComfyUI's MODEL, CLIP and VAE types as small handles over one twosamplers model object.

ComfyUI loads a checkpoint into three separate objects; our backends keep the network, the text encoders and
the VAE in one model object (`models/base.py`). The handles give the node classes ComfyUI's three types
without copying anything:

- `ModelHandle` (MODEL): the sampling model, usable wherever the engine takes a model (it forwards the
  protocol: apply_model, model_sampling, latent_format, device, dtype), plus the weight patches (LoRA) that
  later nodes add. Patching returns a new handle; the loaded model is shared, never modified.
- `ClipHandle` (CLIP): prompt encoding with an optional clip skip (CLIPSetLastLayer's value).
- `VaeHandle` (VAE): pixels <-> latents.
"""

from __future__ import annotations

import torch


class ModelHandle:
    """MODEL: a twosamplers model plus the weight patches to apply to it (none until LoRA nodes add some)."""

    def __init__(self, model, patches: tuple = ()) -> None:
        if isinstance(model, ModelHandle):
            patches = model.patches + tuple(patches)
            model = model.model
        for attr in ("apply_model", "model_sampling", "latent_format"):
            if not hasattr(model, attr):
                raise TypeError(f"MODEL must wrap a twosamplers model (missing {attr!r}), got {type(model).__name__}")
        self.model = model
        self.patches = tuple(patches)

    def __repr__(self) -> str:
        return f"ModelHandle({self.model!r}, patches={len(self.patches)})"

    @property
    def model_sampling(self):
        return self.model.model_sampling

    @property
    def latent_format(self):
        return self.model.latent_format

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def apply_model(self, x, sigma, context, **extras):
        if self.patches:
            raise NotImplementedError("this MODEL carries weight patches, which this model backend cannot apply")
        return self.model.apply_model(x, sigma, context, **extras)

    def with_patches(self, *patches) -> ModelHandle:
        return ModelHandle(self.model, self.patches + patches)


class ClipHandle:
    """CLIP: encodes prompts with the model's text encoder; `clip_skip` is CLIPSetLastLayer's value (None:
    the model's default layer)."""

    def __init__(self, model, clip_skip: int | None = None) -> None:
        if isinstance(model, ClipHandle):
            model = model.model
        self.model = model
        self.clip_skip = clip_skip

    def __repr__(self) -> str:
        return f"ClipHandle({self.model!r}, clip_skip={self.clip_skip})"

    def with_clip_skip(self, clip_skip: int) -> ClipHandle:
        return ClipHandle(self.model, clip_skip)

    def encode(self, text: str) -> list:
        """Text -> CONDITIONING (ComfyUI's CLIPTextEncode)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        if self.clip_skip is None:
            return self.model.encode_prompt(text)
        return self.model.encode_prompt(text, clip_skip=self.clip_skip)


class VaeHandle:
    """VAE: the model's image encoder and decoder."""

    def __init__(self, model) -> None:
        if isinstance(model, VaeHandle):
            model = model.model
        self.model = model

    def __repr__(self) -> str:
        return f"VaeHandle({self.model!r})"

    @property
    def latent_format(self):
        return self.model.latent_format

    @property
    def downscale_ratio(self) -> int:
        return int(self.model.latent_format.downscale)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        return self.model.decode_latent(samples)


def model_of(value):
    """The MODEL inside a value that carries one (MODEL, KSAMPLER, KSAMPLER_ADVANCED, BASIC_PIPE), or None."""
    if isinstance(value, ModelHandle):
        return value
    if isinstance(value, tuple) and len(value) == 5 and isinstance(value[0], ModelHandle):
        return value[0]
    inner = getattr(value, "model", None)
    sampler = callable(getattr(value, "sample", None)) or callable(getattr(value, "sample_advanced", None))
    if sampler and hasattr(inner, "latent_format"):
        return inner
    return None


__all__ = ["ClipHandle", "ModelHandle", "VaeHandle", "model_of"]
