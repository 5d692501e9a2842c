"""`load(name)`: the models by name ("textures", the default, and "ideal") or a checkpoint path."""

from __future__ import annotations

import os

import torch

from .analytic import IdealModel, TextureModel

DEFAULT_MODEL = "textures"
BUILTIN_MODELS = ("textures", "ideal")


def load(name: str | os.PathLike = DEFAULT_MODEL, *, device: str | torch.device | None = None,
         dtype: torch.dtype | None = None, **options):
    """A model for the engine: "textures" (patch-based analytic model, the default), "ideal" (exact
    posterior mean of a finite image set), or a path to an SD checkpoint (.safetensors / diffusers folder)."""
    if isinstance(name, str) and name.strip().lower() in BUILTIN_MODELS:
        if dtype not in (None, torch.float32, "fp32", "float32"):
            raise ValueError(f"the {name!r} model computes in float32; dtype={dtype} is not supported")
        if options:
            raise ValueError(f"{', '.join(sorted(options))} only apply to SD checkpoints, not the {name!r} model")
        cls = TextureModel if name.strip().lower() == "textures" else IdealModel
        return cls(device=device)
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"model name must be a str or a path, got {type(name).__name__}")
    try:
        from .sd import load_sd
    except ImportError:
        load_sd = None
    known = "known: textures, ideal, or a path to a .safetensors checkpoint / diffusers folder"
    if load_sd is None:
        raise ValueError(f"unknown model {os.fspath(name)!r}; {known}")
    try:
        return load_sd(name, device=device, dtype=dtype, **options)
    except FileNotFoundError as e:
        if os.path.exists(os.path.expanduser(os.fspath(name))):
            raise
        raise ValueError(f"unknown model {os.fspath(name)!r}; {known} ({e})") from None
