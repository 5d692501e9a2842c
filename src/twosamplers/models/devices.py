"""Device and dtype choices shared by the model loaders (checkpoints, VAE files, ControlNets)."""

from __future__ import annotations

import torch

_DTYPES = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}


def resolve_device_dtype(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """CUDA with float16 when available, otherwise CPU with float32; either can be overridden."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available")
    if dtype is None:
        dt = torch.float16 if dev.type == "cuda" else torch.float32
    elif isinstance(dtype, torch.dtype):
        dt = dtype
    elif isinstance(dtype, str) and dtype.lower() in _DTYPES:
        dt = _DTYPES[dtype.lower()]
    else:
        raise ValueError(f"dtype must be one of {sorted(set(_DTYPES))} or a torch.dtype, got {dtype!r}")
    if dt not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"unsupported dtype {dt}")
    return dev, dt


def _vae_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    # fp16 VAEs overflow (SDXL's notably): like ComfyUI, use bf16 where the GPU has it, else float32
    if dtype == torch.float32 or device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
