"""LATENT dicts and ComfyUI `.latent` files, and a cheap picture of a latent (`latent_preview`: live previews).

A LATENT is {"samples": Tensor[B, C, H, W], optional "noise_mask", optional "batch_index"}.
A `.latent` file is safetensors with the tensor under "latent_tensor" and an empty "latent_format_version_0"
marker; files without the marker are ComfyUI's old format, stored pre-scaled, and load multiplied by 1/0.18215.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._checks import check_finite, check_int, check_tensor
from .._files import atomic_write

FORMAT_MARKER = "latent_format_version_0"
TENSOR_KEY = "latent_tensor"
OLD_FORMAT_SCALE = 0.18215


def empty_latent(
    width: int = 512, height: int = 512, batch_size: int = 1, channels: int = 4, downscale: int = 8
) -> dict:
    """ComfyUI's EmptyLatentImage: zeros of (batch, channels, height/downscale, width/downscale)."""
    downscale = check_int("downscale", downscale, 1)
    width = check_int("width", width, downscale)
    height = check_int("height", height, downscale)
    batch_size = check_int("batch_size", batch_size, 1, 4096)
    channels = check_int("channels", channels, 1)
    for name, v in (("width", width), ("height", height)):
        if v % downscale:
            raise ValueError(f"{name}={v} must be a multiple of {downscale}")
    return {"samples": torch.zeros([batch_size, channels, height // downscale, width // downscale])}


def check_latent(latent: object, name: str = "latent") -> dict:
    """Validate a LATENT dict: 4-D float samples, optional noise_mask tensor, batch_index of the right length."""
    if not isinstance(latent, dict):
        raise TypeError(f"{name} must be a LATENT dict with a 'samples' tensor, got {type(latent).__name__}")
    if "samples" not in latent:
        raise ValueError(f"{name} has no 'samples' entry (keys: {sorted(latent)})")
    samples = check_tensor(f"{name}['samples']", latent["samples"], ndims=(4,))
    if not samples.is_floating_point():
        raise TypeError(f"{name}['samples'] must be a float tensor, got {samples.dtype}")
    if samples.shape[0] < 1 or samples.numel() == 0:
        raise ValueError(f"{name}['samples'] is empty (shape {tuple(samples.shape)})")
    check_finite(f"{name}['samples']", samples)
    bi = latent.get("batch_index")
    if bi is not None and len(bi) != samples.shape[0]:
        raise ValueError(f"{name}['batch_index'] has {len(bi)} entries for a batch of {samples.shape[0]}")
    return latent


def fit_latent_channels(samples: torch.Tensor, channels: int) -> torch.Tensor:
    """An all-zero (empty) latent with another channel count becomes zeros with `channels` channels, as
    ComfyUI's KSampler does; any other channel mismatch is an error."""
    if samples.shape[1] == channels:
        return samples
    if torch.count_nonzero(samples) == 0:
        return samples.new_zeros((samples.shape[0], channels, *samples.shape[2:]))
    raise ValueError(f"latent['samples'] has {samples.shape[1]} channels; the model expects {channels}")


def remake_empty_latent(latent: dict, latent_format) -> dict:
    """ComfyUI's empty latent (all zeros, 4 channels at 1/8 of the image size) re-made for a model with another
    latent format: zeros with the model's channels at the model's downscale, so the latent still stands for
    the same image size (the pixel-space embedded models: 3 channels at full size). Any other latent, or a
    model at 1/8 scale (only the channel count differs; the samplers' channel rule applies), comes back as is.
    """
    samples = latent["samples"]
    channels, downscale = int(latent_format.channels), int(latent_format.downscale)
    if samples.shape[1] != 4 or downscale == 8 or (channels == 4 and downscale == 8) \
            or torch.count_nonzero(samples) != 0:
        return latent
    b, _, h, w = samples.shape
    if (h * 8) % downscale or (w * 8) % downscale:
        raise ValueError(f"an empty latent of {w * 8}x{h * 8} pixels is not a multiple of the model's {downscale}")
    out = dict(latent)
    out["samples"] = samples.new_zeros((b, channels, h * 8 // downscale, w * 8 // downscale))
    return out


def save_latent(path: str | os.PathLike, latent: dict, metadata: dict[str, str] | None = None) -> Path:
    """Write a ComfyUI `.latent` file atomically (a temp file in the same folder, then rename)."""
    return atomic_write(path, latent_writer(latent, metadata))


def latent_writer(latent: dict, metadata: dict[str, str] | None = None):
    """`save_latent`'s encoding as a function of the file path (for writing several outputs together)."""
    check_latent(latent)
    tensors = {TENSOR_KEY: latent["samples"].detach().cpu().contiguous(), FORMAT_MARKER: torch.tensor([])}
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    return lambda tmp: save_file(tensors, tmp, metadata=meta)


def load_latent(path: str | os.PathLike) -> dict:
    """Read a ComfyUI `.latent` file into a LATENT dict (old-format files are rescaled by 1/0.18215).

    The tensor must be 4-D (B, C, H, W) or 5-D (B, C, T, H, W, video models), floating point and finite;
    every error names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"latent file not found: {path}")
    try:
        data = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors .latent file: {e}") from e
    if TENSOR_KEY not in data:
        raise ValueError(f"{path} has no '{TENSOR_KEY}' tensor (keys: {sorted(data)})")
    t = data[TENSOR_KEY]
    if t.ndim not in (4, 5):
        raise ValueError(f"{path}: '{TENSOR_KEY}' has shape {tuple(t.shape)}; a latent is 4-D (B, C, H, W) or "
                         "5-D (B, C, T, H, W)")
    if not t.is_floating_point():
        raise ValueError(f"{path}: '{TENSOR_KEY}' is {t.dtype}; a latent is a floating-point tensor")
    if t.numel() == 0:
        raise ValueError(f"{path}: '{TENSOR_KEY}' is empty (shape {tuple(t.shape)})")
    try:
        check_finite(f"'{TENSOR_KEY}'", t)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    multiplier = 1.0 if FORMAT_MARKER in data else 1.0 / OLD_FORMAT_SCALE
    return {"samples": t.float() * multiplier}


def latent_preview(x0: torch.Tensor, latent_format, decode=None) -> np.ndarray:
    """A sampler step's x0 as a uint8 picture (H, W, 3), cheaply (the web page's and the server's live preview):
    pixel-space models are decoded exactly (`decode`, a scale + shift); latent models show their first three
    latent channels, each stretched to 0..255 and upsampled by the model's downscale (a look at the layout, not
    the colours; no VAE call per step)."""
    x = x0[:1].detach().float().cpu()
    if int(latent_format.downscale) == 1 and decode is not None:
        img = decode(latent_format.process_out(x))[0]
        return np.clip(255.0 * img.numpy(), 0, 255).astype(np.uint8)
    c = x[0, :3]
    lo = c.amin(dim=(1, 2), keepdim=True)
    hi = c.amax(dim=(1, 2), keepdim=True)
    c = ((c - lo) / (hi - lo).clamp_min(1e-6)).permute(1, 2, 0)
    if c.shape[2] < 3:
        c = c[..., :1].expand(-1, -1, 3)
    k = int(latent_format.downscale)
    arr = np.clip(255.0 * c.numpy(), 0, 255).astype(np.uint8)
    return np.repeat(np.repeat(arr, k, axis=0), k, axis=1)
