"""Convolution weights kept in oneDNN's blocked layout, instead of reordered into it on every call.

On a CPU torch runs float32 convolutions through oneDNN, which computes with each weight in a blocked layout of its
own; an ordinary `Conv2d` call reorders the whole weight into that layout every time (a read and a write of the
weight), and at the small latents of a CPU run that costs more than the convolution itself (a 1280-channel 3x3
convolution on a 2 x 2 latent: ~8x, `python benchmarks/packed_conv.py`). A sampling pass calls the UNet with the
same weights tens of times, and a loaded model serves pass after pass, so the first pass packs each convolution's
weight (the same numbers, permuted; only the widest convolutions, see MIN_IN_CHANNELS) and the network stays packed
until something needs the ordinary weights. The results are the convolution's within float summation order (~1e-6
relative per layer; the end-to-end parity set stays as close to ComfyUI as without packing).

Memory does not grow: while packed, a convolution's ordinary weight tensor is replaced by a NaN view of the same
shape that holds no memory. Whatever reads or changes weights gets them back first, exactly (`unpack`): LoRA and
merge patching (`lora.patched`, `merge.effective_weight`), diff ControlNets, checkpoint export, `state_dict()` of
the network or of a convolution, and reading a packed convolution's `.weight`. A reader that reaches
`named_parameters()` of a packed network without `unpack` sees NaN, never stale numbers.

`TWOSAMPLERS_PACKED_CONV=0` turns it off (every call then takes torch's ordinary path).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .network_lock import network_lock

ENV = "TWOSAMPLERS_PACKED_CONV"
_NOMINAL_SPATIAL = 8  # oneDNN picks the blocked layout per input shape; the one for 8 x 8 serves every size
# Only the widest convolutions are packed: the deepest levels of SD1.x / SD2 / SDXL UNets (1280 channels and their
# skip concatenations), whose big weights meet the smallest latents, so the per-call reorder dominates there. The
# narrower ones (320 / 640 channels on larger latents) gain little, and oneDNN's packed kernel sums them in another
# order: packing those too moved the end-to-end parity set's SD1.5 latents from 6e-4 to 1.9e-3 of ComfyUI's (two
# SDXL cases past the 2e-3 tolerance), packing only these leaves them at 5e-4 to 8.6e-4, and is faster (a full-size
# SD1.5 UNet call on an 8 x 8 latent: 0.81 s ordinary, 0.38 s all packed, 0.26 s these packed).
MIN_IN_CHANNELS = 1280
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # root module -> [packed convolutions]
_HOOKED: weakref.WeakSet = weakref.WeakSet()  # convolutions whose state_dict() pre-hook is registered
_LOCK = threading.RLock()


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
            and (m.bias is None or m.bias.dtype == torch.float32)
            and m.in_channels >= MIN_IN_CHANNELS)


class PackedConv2d(torch.nn.Conv2d):
    """A Conv2d whose weight is held packed (the class a packed convolution has; `unpack` turns it back)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 4:
            raise RuntimeError(f"a packed convolution got a {x.dtype} {x.device.type} input of {x.dim()} dims")
        y = torch.ops.mkldnn._convolution_pointwise(x, self._packed_weight, self.bias, list(self.padding),
                                                    list(self.stride), list(self.dilation), self.groups,
                                                    "none", [], "")
        # aten's convolution answers in the input's memory format; so does this one
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return y.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def __getattr__(self, name: str):
        if name == "weight":  # someone reads the weight itself: give the real one back
            _unpack_network_of(self)
        return torch.nn.Module.__getattr__(self, name)  # (the class may have just turned back to Conv2d)


def _unpack_network_of(conv: torch.nn.Module) -> None:
    """Unpack the network a packed convolution belongs to (nothing for one that is not packed)."""
    root = conv.__dict__.get("_packed_root")
    module = root() if root is not None else None
    if module is not None:
        unpack(module)


def _state_dict_pre_hook(conv, prefix, keep_vars) -> None:
    # torch calls every submodule's pre-hooks as state_dict() reaches it, before its tensors are read: hooked on
    # each convolution, the network's state_dict() (and any part's) unpacks before the first packed weight
    _unpack_network_of(conv)


def is_packed(module: torch.nn.Module) -> bool:
    return module in _PACKED


def pack(module: torch.nn.Module) -> None:
    """Pack `module`'s float32 CPU `Conv2d` weights (nothing when already packed or not available)."""
    if not available() or module in _PACKED:
        return
    # normal tensors even when asked inside inference mode: the weights outlive it (LoRA patches them in place)
    with network_lock(module), _LOCK, torch.inference_mode(False), torch.no_grad():  # LoRA patching takes the lock too
        if module in _PACKED:
            return
        packed: list[tuple[torch.nn.Module, torch.Tensor]] = []
        by_param: dict[int, torch.Tensor] = {}  # a weight shared by two convolutions is packed once
        try:
            for m in module.modules():
                if not _packable(m):
                    continue
                param = m._parameters["weight"]
                p = by_param.get(id(param))
                if p is None:
                    w = param.detach().contiguous()
                    shape = [1, w.shape[1] * m.groups, _NOMINAL_SPATIAL, _NOMINAL_SPATIAL]
                    p = torch.ops.mkldnn._reorder_convolution_weight(w, list(m.padding), list(m.stride),
                                                                     list(m.dilation), m.groups, shape)
                    by_param[id(param)] = p
                    param.data = torch.full((), float("nan"), dtype=w.dtype).expand(w.shape)
                    del w
                m.__dict__["_packed_weight"] = p
                m.__dict__["_packed_root"] = weakref.ref(module)
                m.__class__ = PackedConv2d
                packed.append((m, p))
                if m not in _HOOKED:  # state_dict() unpacks first
                    m.register_state_dict_pre_hook(_state_dict_pre_hook)
                    _HOOKED.add(m)
        except BaseException:
            _restore(packed)
            raise
        _PACKED[module] = packed


def _restore(packed: list[tuple[torch.nn.Module, torch.Tensor]]) -> None:
    """Turn the convolutions of `packed` back, emptying the list as it goes: each packed weight is let go as soon
    as its ordinary tensor exists, so unpacking peaks one weight above the network, not two networks."""
    restored: set[int] = set()
    while packed:
        m, p = packed.pop()
        param = m._parameters["weight"]
        m.__class__ = torch.nn.Conv2d
        m.__dict__.pop("_packed_weight", None)
        m.__dict__.pop("_packed_root", None)
        if id(param) not in restored:
            param.data = p.to_dense()
            restored.add(id(param))
        del p


def unpack(module: torch.nn.Module) -> None:
    """Give `module`'s convolutions their ordinary weights back, bit for bit (nothing when not packed)."""
    if module not in _PACKED:
        return
    with _LOCK, torch.inference_mode(False), torch.no_grad():  # ordinary weights, even inside inference mode
        packed = _PACKED.pop(module, None)
        if packed:
            _restore(packed)


@contextmanager
def packed_convolutions(module: torch.nn.Module) -> Iterator[None]:
    """`module` packed for the block and unpacked after it (when it was not packed before)."""
    was = is_packed(module)
    pack(module)
    try:
        yield
    finally:
        if not was:
            unpack(module)


__all__ = ["ENV", "PackedConv2d", "available", "is_packed", "pack", "packed_convolutions", "unpack"]
