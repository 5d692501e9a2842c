"""Diff ControlNets: ControlNet files that store their weights as differences from the UNet they were trained on
(ComfyUI's DiffControlNetLoader; e.g. diff_control_sd15_depth_fp16.safetensors).

What ComfyUI does, and so what this module does: a file in the `control_model.*` layout with a `difference` key
gets, for every weight whose name the MODEL's UNet also has (`control_model.X` and the UNet's `X`: input blocks,
middle block, time embedding), the UNet's weight added, cast to the file's dtype first and summed in it. The UNet's
weight is the MODEL's as it samples (merges and LoRAs applied). The result is then an ordinary ControlNet. A file
without the marker loads as an ordinary ControlNet.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from .controlnet import LDM_PREFIX, ControlNetModelHandle, controlnet_from_state
from .merge import effective_weight, target_of, unet_ldm_names, weight_stack
from .packed_conv import unpack as unpack_convolutions
from .sd_loading import read_state_dict

DIFF_MARKER = "difference"
_CACHE: dict[tuple, ControlNetModelHandle] = {}
_LOCK = threading.Lock()


def _stack_key(stack: tuple) -> tuple:
    return tuple((id(f), sm, sc) for f, sm, sc in stack)


def load_diff_controlnet(path: str | os.PathLike, model, *, dtype: torch.dtype | None = None,
                         allow_pickle: bool = False) -> ControlNetModelHandle:
    """A (diff) ControlNet file loaded for MODEL `model` (see the module docstring)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"ControlNet not found: {os.fspath(path)}")
    p = p.resolve()
    net, stack = weight_stack(model)
    unet = net.unet
    first = next(unet.parameters())
    dtype = dtype or first.dtype
    key = (str(p), p.stat().st_mtime_ns, id(unet), _stack_key(stack), str(first.device), str(dtype), allow_pickle)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    sd = read_state_dict(p, allow_pickle=allow_pickle)
    if DIFF_MARKER in sd and any(k.startswith(LDM_PREFIX) for k in sd):
        sd = add_unet_weights(sd, model)
    handle = ControlNetModelHandle(controlnet_from_state(sd, p, unet, dtype).to(first.device), str(p))
    handle.check_fits(unet)
    with _LOCK:
        return _CACHE.setdefault(key, handle)


@torch.no_grad()
def add_unet_weights(sd: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """The diff file's tensors with the MODEL's UNet weights added where the names match (a new dict; the input
    is not changed)."""
    net, stack = weight_stack(model)
    by_ldm = {v: k for k, v in unet_ldm_names(net).items()}
    unpack_convolutions(net.unet)
    params = dict(net.unet.named_parameters())
    out = dict(sd)
    for k, v in sd.items():
        if not k.startswith(LDM_PREFIX):
            continue
        name = by_ldm.get(k[len(LDM_PREFIX):])
        if name is None or name not in params or params[name].shape != v.shape:
            continue
        w = effective_weight(net, stack, target_of("unet", name), params)
        out[k] = v + w.to(device=v.device, dtype=v.dtype)
    return out


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


__all__ = ["DIFF_MARKER", "add_unet_weights", "clear_cache", "load_diff_controlnet"]
