"""Convolution weights put in oneDNN's layout once per sampling pass, instead of once per call.

On a CPU torch runs float32 convolutions through oneDNN, which computes with each weight in a blocked layout of its
own; an ordinary `Conv2d` call reorders the whole weight into that layout every time (a read and a write of the
weight), and at the small latents of a CPU run that costs more than the convolution itself (a 1280-channel 3x3
convolution on an 8 x 8 latent: ~10x). A sampling pass calls the UNet with the same weights tens of times, so for
the pass each convolution's weight is held in the blocked layout (the same numbers, permuted; restored exactly
afterwards) and oneDNN is called with it. The results are the convolution's within float summation order (~1e-6
relative per layer; the end-to-end parity set stays within its tolerance).

Memory does not grow: while packed, the ordinary weight tensor is replaced by a NaN view of the same shape that
holds no memory, so a reader that should not be reading during the pass gets NaN, never stale numbers. Weight
patches (LoRAs, merges) are applied before the pass packs and restored after it unpacks (`LoraModel`'s session
holds the network's lock around both).

`TWOSAMPLERS_PACKED_CONV=0` turns it off (every call then takes torch's ordinary path).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch

ENV = "TWOSAMPLERS_PACKED_CONV"
_NOMINAL_SPATIAL = 8  # oneDNN picks the blocked layout per input shape; the one for 8 x 8 serves every size
_DEPTH: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def available() -> bool:
    """Whether this torch has oneDNN's packed-weight convolution (and it is not switched off)."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    ops = getattr(torch.ops, "mkldnn", None)
    return (torch.backends.mkldnn.is_available() and ops is not None
            and hasattr(ops, "_reorder_convolution_weight") and hasattr(ops, "_convolution_pointwise"))


def _packable(m: torch.nn.Module) -> bool:
    if type(m) is not torch.nn.Conv2d:  # a subclass may compute differently
        return False
    w = m.weight
    return (m.padding_mode == "zeros" and not isinstance(m.padding, str)
            and w.device.type == "cpu" and w.dtype == torch.float32 and w.dim() == 4
            and (m.bias is None or m.bias.dtype == torch.float32))


def _packed_forward(m: torch.nn.Module, packed: torch.Tensor):
    padding, stride, dilation, groups = list(m.padding), list(m.stride), list(m.dilation), m.groups
    bias = m.bias

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 4:
            raise RuntimeError(f"a packed convolution got a {x.dtype} {x.device.type} input of {x.dim()} dims")
        y = torch.ops.mkldnn._convolution_pointwise(x, packed, bias, padding, stride, dilation, groups,
                                                    "none", [], "")
        # aten's convolution answers in the input's memory format; so does this one
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
            else torch.contiguous_format
        return y.contiguous(memory_format=fmt)

    return forward


@contextmanager
def packed_convolutions(module: torch.nn.Module) -> Iterator[None]:
    """Hold `module`'s float32 CPU `Conv2d` weights in oneDNN's layout for the block (see the module docstring).
    Re-entering on the same module (a nested pass) reuses the outer block's packing."""
    if not available():
        yield
        return
    with _LOCK:
        depth = _DEPTH.get(module, 0)
        _DEPTH[module] = depth + 1
    if depth:
        try:
            yield
        finally:
            with _LOCK:
                _DEPTH[module] -= 1
        return
    from .lora import _network_lock  # the lock LoRA patching takes: nobody patches a network while it is packed

    packed: list[tuple[torch.nn.Module, torch.Tensor]] = []
    by_param: dict[int, torch.Tensor] = {}  # a weight shared by two convolutions is packed once
    lock = _network_lock(module)
    lock.acquire()
    try:
        with torch.no_grad():
            for m in module.modules():
                if not _packable(m):
                    continue
                p = by_param.get(id(m.weight))
                if p is None:
                    w = m.weight.detach().contiguous()
                    shape = [1, w.shape[1] * m.groups, _NOMINAL_SPATIAL, _NOMINAL_SPATIAL]
                    p = torch.ops.mkldnn._reorder_convolution_weight(w, list(m.padding), list(m.stride),
                                                                     list(m.dilation), m.groups, shape)
                    by_param[id(m.weight)] = p
                    m.weight.data = torch.full((), float("nan"), dtype=w.dtype).expand(w.shape)
                    del w
                packed.append((m, p))
                m.forward = _packed_forward(m, p)
        yield
    finally:
        try:
            with torch.no_grad():
                restored: set[int] = set()
                for m, p in packed:
                    if id(m.weight) not in restored:
                        m.weight.data = p.to_dense()
                        restored.add(id(m.weight))
                    del m.forward
        finally:
            lock.release()
        with _LOCK:
            _DEPTH[module] -= 1
            if not _DEPTH[module]:
                del _DEPTH[module]


__all__ = ["ENV", "available", "packed_convolutions"]
