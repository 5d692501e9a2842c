"""Weights stored in one dtype, computed in another: ComfyUI's "manual cast" as a property of a module.

ComfyUI keeps a text encoder's weights in float16 on every device (unless `--fp32-text-enc`) and computes in
float32, casting each weight up as it is used; on a CPU it does the same for nothing else (its UNet and VAE are
float32 there). `store_as(module, storage, compute)` gives a torch module the same behaviour: its parameters
are converted to `storage` once, and each Linear, Conv, norm and Embedding layer casts its weight and bias to
`compute` when it runs. The parameter names stay what they were, so LoRA patching (`models/lora.py`) writes
its float32 sums into the float16 storage, rounded once, as ComfyUI's patched weights are.

The cast is exact when `storage` is narrower than `compute` (float16 -> float32 loses nothing), so a module
whose weights were float16 in the file gives the same bits stored either way; it holds half the memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["compute_dtype_of", "store_as", "storage_dtype_of"]


def _w(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


class _CastLinear(torch.nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = self._compute_dtype
        return F.linear(x.to(dt), _w(self.weight, dt), _w(self.bias, dt))


class _CastConv2d(torch.nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = self._compute_dtype
        return self._conv_forward(x.to(dt), _w(self.weight, dt), _w(self.bias, dt))


class _CastLayerNorm(torch.nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = self._compute_dtype
        return F.layer_norm(x.to(dt), self.normalized_shape, _w(self.weight, dt), _w(self.bias, dt), self.eps)


class _CastGroupNorm(torch.nn.GroupNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = self._compute_dtype
        return F.group_norm(x.to(dt), self.num_groups, _w(self.weight, dt), _w(self.bias, dt), self.eps)


class _CastEmbedding(torch.nn.Embedding):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # the rows are looked up in the storage dtype and cast up (ComfyUI's out_dtype): the same values
        return F.embedding(ids, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse).to(self._compute_dtype)


_CASTS = {torch.nn.Linear: _CastLinear, torch.nn.Conv2d: _CastConv2d, torch.nn.LayerNorm: _CastLayerNorm,
          torch.nn.GroupNorm: _CastGroupNorm, torch.nn.Embedding: _CastEmbedding}
_PLAIN = {v: k for k, v in _CASTS.items()}


@torch.no_grad()
def store_as(module: torch.nn.Module, storage: torch.dtype, compute: torch.dtype) -> torch.nn.Module:
    """`module` (in place, returned) with its floating-point parameters and buffers in `storage` and its
    layers computing in `compute`. storage == compute undoes the casting layers (plain modules again).

    Only the exact torch classes listed in `_CASTS` are swapped (subclasses with their own forward are left
    alone, and keep computing in whatever dtype their inputs have)."""
    for m in module.modules():
        cls = type(m)
        plain = _PLAIN.get(cls, cls)
        if plain not in _CASTS:
            continue
        if storage == compute:
            m.__class__ = plain
            m.__dict__.pop("_compute_dtype", None)
        else:
            m.__class__ = _CASTS[plain]
            m._compute_dtype = compute
    for p in module.parameters():
        if p.is_floating_point() and p.dtype != storage:
            p.data = p.data.to(storage)
    for m in module.modules():
        for name, b in list(m.named_buffers(recurse=False)):
            if b is not None and b.is_floating_point() and b.dtype != storage:
                setattr(m, name, b.to(storage))
    module._twosamplers_compute_dtype = compute
    return module


def storage_dtype_of(module: torch.nn.Module) -> torch.dtype:
    """The dtype the module's weights are held in (its first floating-point parameter's)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def compute_dtype_of(module: torch.nn.Module) -> torch.dtype:
    """The dtype the module computes in: the one `store_as` set, else its storage dtype."""
    return getattr(module, "_twosamplers_compute_dtype", None) or storage_dtype_of(module)
