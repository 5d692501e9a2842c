"""ComfyUI's MODEL, CLIP and VAE types as small handles over one twosamplers model object.

ComfyUI loads a checkpoint into three separate objects; our backends keep the network, the text encoders and
the VAE in one model object (`models/base.py`). The handles give the node classes ComfyUI's three types
without copying anything:

- `ModelHandle` (MODEL): the sampling model, usable wherever the engine takes a model (it forwards the
  protocol: apply_model, model_sampling, latent_format, device, dtype).
- `ClipHandle` (CLIP): prompt encoding with an optional clip skip (CLIPSetLastLayer's value).
- `VaeHandle` (VAE): pixels <-> latents.
"""

from __future__ import annotations

import torch


class ModelHandle:
    """MODEL: the sampling model (the engine's protocol: apply_model, model_sampling, latent_format, device,
    dtype). Other attributes (a checkpoint's unet, text_encoders, ...) are read through from the model, so
    node classes written against plain twosamplers models (LoRA loaders) accept a MODEL too."""

    def __init__(self, model) -> None:
        if isinstance(model, ModelHandle):
            model = model.model
        for attr in ("apply_model", "model_sampling", "latent_format"):
            if not hasattr(model, attr):
                raise TypeError(f"MODEL must wrap a twosamplers model (missing {attr!r}), got {type(model).__name__}")
        self.model = model

    def __repr__(self) -> str:
        return f"ModelHandle({self.model!r})"

    def __getattr__(self, name: str):
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

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
        return self.model.apply_model(x, sigma, context, **extras)


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

    def __getattr__(self, name: str):
        if name in ("model", "clip_skip"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def with_clip_skip(self, clip_skip: int) -> ClipHandle:
        return ClipHandle(self.model, clip_skip)

    def encode(self, text: str, embeddings=None, **options) -> list:
        """Text -> CONDITIONING (ComfyUI's CLIPTextEncode); `embeddings` (an EmbeddingLibrary) resolves
        `embedding:NAME` words; `options` are the model's encode_prompt extras (SDXL sizes, ...)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        if embeddings is not None:
            options["embeddings"] = embeddings
        return self.encode_prompt(text, **options)

    def encode_prompt(self, text: str, **options) -> list:
        """The model's encode_prompt with this CLIP's clip skip (so a wrapper around the handle, e.g. a LoRA
        loader's, keeps it)."""
        if self.clip_skip is not None:
            options.setdefault("clip_skip", self.clip_skip)
        return self.model.encode_prompt(text, **options)


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


def is_model(value) -> bool:
    """Whether `value` implements the engine's model protocol (a MODEL handle or a plain model)."""
    return all(hasattr(value, a) for a in ("apply_model", "model_sampling", "latent_format"))


def model_of(value):
    """The model inside a value that carries one (MODEL, KSAMPLER, KSAMPLER_ADVANCED, BASIC_PIPE), or None."""
    if is_model(value):
        return value
    if isinstance(value, tuple) and len(value) == 5 and is_model(value[0]):
        return value[0]
    inner = getattr(value, "model", None)
    sampler = callable(getattr(value, "sample", None)) or callable(getattr(value, "sample_advanced", None))
    if sampler and hasattr(inner, "latent_format"):
        return inner
    return None


__all__ = ["ClipHandle", "ModelHandle", "VaeHandle", "is_model", "model_of"]
