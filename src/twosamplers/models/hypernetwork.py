"""Hypernetworks (A1111's format) applied to a Stable Diffusion UNet's attention as ComfyUI's HypernetworkLoader
applies them.

The file: a dict whose integer keys are feature widths (320, 640, 1280, 768, ...), each holding two small MLPs'
state dicts (one for attention keys, one for values), plus options: activation_func ("linear", "relu",
"leakyrelu", "elu", "swish" = hard-swish, "tanh", "sigmoid", "softsign", "mish"), is_layer_norm, use_dropout,
activate_output, last_layer_dropout. Each MLP is rebuilt in file order: a Linear per `.weight`/`.bias` pair,
followed by the activation (except after the last Linear unless activate_output), by a LayerNorm (the next pair)
when is_layer_norm, and by dropout where the options ask for it (dropout is an identity here: inference).

The patch: in every UNet transformer block, the inputs of an attention's key and value projections, x, become
x + mlp_k(x) * strength and x + mlp_v(x) * strength when the hypernetwork has an MLP pair for x's width (the
self-attention sees the block's width, the cross-attention the prompt's). Queries are unchanged; ControlNets are
not patched. The model's network is shared: the patch is installed (forward pre-hooks on the projections) only
while the hypernetwork model samples.

Files: `.pt` pickles (as published) need allow_pickle and are read with torch.load(weights_only=True); a
safetensors file (whatever its suffix) is read as such, with keys "<width>.<0|1>.<layer>.<weight|bias>" and the
options in its metadata.
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import torch

from .model_sampling import HookedModel, hoist, network_model
from .sd_loading import CheckpointError

ACTIVATIONS = {
    "linear": torch.nn.Identity, "relu": torch.nn.ReLU, "leakyrelu": torch.nn.LeakyReLU, "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "softsign": torch.nn.Softsign,
    "mish": torch.nn.Mish,
}
OPTIONS = ("activation_func", "is_layer_norm", "use_dropout", "activate_output", "last_layer_dropout")
MAX_STRENGTH = 10.0


class HypernetworkError(CheckpointError):
    """A hypernetwork file that cannot be used (unreadable, unknown layout or activation)."""


def _read(path: Path, allow_pickle: bool) -> dict:
    if not path.is_file():
        raise HypernetworkError(f"hypernetwork file not found: {path}")
    if not _is_pickle(path):  # safetensors content, whatever the suffix
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            flat = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise HypernetworkError(f"{path}: neither a pickle nor a safetensors hypernetwork ({e})") from None
        return _from_flat(path, flat)
    if not allow_pickle:
        raise HypernetworkError(f"{path} is a pickle hypernetwork (.pt), which can run code when loaded; refused. "
                                "Pass --allow-pickle (allow_pickle=True) if you trust the file (it is then loaded "
                                "with torch.load(weights_only=True)).")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for bad pickles
        raise HypernetworkError(f"{path}: cannot be read as a weights-only torch file ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''})") from None


def _is_pickle(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(4)
    return head[:2] == b"PK" or head[:1] == b"\x80"


def _from_flat(path: Path, sd: dict[str, torch.Tensor]) -> dict:
    """A safetensors hypernetwork ("320.0.linear.0.weight", ...) -> the pickle's nested layout."""
    out: dict = {}
    for k, v in sd.items():
        parts = k.split(".", 2)
        if len(parts) != 3 or not parts[0].isdigit() or parts[1] not in ("0", "1"):
            raise HypernetworkError(f"{path}: key {k!r} is not '<width>.<0|1>.<layer>.<weight|bias>'")
        out.setdefault(int(parts[0]), [{}, {}])[int(parts[1])][parts[2]] = v
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    for k in OPTIONS:
        if k in meta:
            out[k] = json.loads(meta[k]) if meta[k] in ("true", "false") else meta[k]
    return out


def _mlp(path: Path, width: int, state: dict, opts: dict) -> torch.nn.Sequential:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HypernetworkError(f"{path}: width {width} does not hold two state dicts of tensors")
    names = [k[: -len(".weight")] for k in state if k.endswith(".weight")]
    act = ACTIVATIONS[opts["activation_func"]]
    layers: list[torch.nn.Module] = []
    i = 0
    while i < len(names):
        last, penultimate = i == len(names) - 1, i == len(names) - 2
        w, b = state[names[i] + ".weight"], state.get(names[i] + ".bias")
        if w.ndim != 2 or b is None:
            raise HypernetworkError(f"{path}: {names[i]!r} is not a linear layer with a bias")
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        lin.load_state_dict({"weight": w.float(), "bias": b.float()})
        layers.append(lin)
        if opts["activation_func"] != "linear" and (not last or opts["activate_output"]):
            layers.append(act())
        if opts["is_layer_norm"]:
            i += 1
            if i >= len(names):
                raise HypernetworkError(f"{path}: layer norm missing after {names[i - 1]!r}")
            lw, lb = state[names[i] + ".weight"], state[names[i] + ".bias"]
            ln = torch.nn.LayerNorm(lw.shape[0])
            ln.load_state_dict({"weight": lw.float(), "bias": lb.float()})
            layers.append(ln)
        if opts["use_dropout"] and not last and (not penultimate or opts["last_layer_dropout"]):
            layers.append(torch.nn.Dropout(p=0.3))
        i += 1
    mlp = torch.nn.Sequential(*layers).eval().requires_grad_(False)
    first = next((m for m in mlp if isinstance(m, torch.nn.Linear)), None)
    if first is None or first.in_features != width:
        raise HypernetworkError(f"{path}: the MLP for width {width} takes {getattr(first, 'in_features', 0)} inputs")
    return mlp


class Hypernetwork:
    """A hypernetwork file's MLP pairs by width (see the module docstring)."""

    def __init__(self, path: Path, mlps: dict[int, tuple[torch.nn.Module, torch.nn.Module]]) -> None:
        self.path = path
        self.mlps = mlps

    def __repr__(self) -> str:
        return f"Hypernetwork({self.path.name}, widths={sorted(self.mlps)})"


_FILES: dict[tuple, Hypernetwork] = {}
_FILES_LOCK = threading.Lock()


def load_hypernetwork(path: str | os.PathLike, *, allow_pickle: bool = False) -> Hypernetwork:
    p = Path(path).expanduser()
    try:
        st = p.resolve().stat()
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size, bool(allow_pickle))
    except OSError:
        key = None
    if key is not None:
        with _FILES_LOCK:
            if key in _FILES:
                return _FILES[key]
    raw = _read(p, allow_pickle)
    if not isinstance(raw, dict):
        raise HypernetworkError(f"{p}: not a hypernetwork (no dict inside)")
    opts = {"activation_func": raw.get("activation_func", "linear"), "is_layer_norm": bool(raw.get("is_layer_norm")),
            "use_dropout": bool(raw.get("use_dropout")), "activate_output": bool(raw.get("activate_output")),
            "last_layer_dropout": bool(raw.get("last_layer_dropout"))}
    if opts["activation_func"] not in ACTIVATIONS:
        raise HypernetworkError(f"{p}: activation {opts['activation_func']!r} is not one of {', '.join(ACTIVATIONS)}")
    mlps = {}
    for k, v in raw.items():
        width = k if isinstance(k, int) else int(k) if isinstance(k, str) and k.isdigit() else None
        if width is None:
            continue
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise HypernetworkError(f"{p}: width {width} does not hold a (key, value) pair of MLPs")
        mlps[width] = (_mlp(p, width, v[0], opts), _mlp(p, width, v[1], opts))
    if not mlps:
        raise HypernetworkError(f"{p}: no MLPs (integer width keys) in this file; is it a hypernetwork?")
    net = Hypernetwork(p, mlps)
    if key is not None:
        with _FILES_LOCK:
            _FILES[key] = net
    return net


# ------------------------------------------------------------------------------------------- the patch
def _attention_projections(unet) -> list[tuple[torch.nn.Module, int]]:
    """(key or value projection, 0 for keys / 1 for values) of every attention in the UNet's transformers."""
    out = []
    for name, mod in unet.named_modules():
        if name.endswith((".attn1", ".attn2")) and hasattr(mod, "to_k") and hasattr(mod, "to_v"):
            out += [(mod.to_k, 0), (mod.to_v, 1)]
    return out


_PATCH_LOCKS: dict[int, threading.RLock] = {}


@contextmanager
def installed(unet, hypernet: Hypernetwork, strength: float):
    """The hypernetwork's pre-hooks on `unet`'s key/value projections for the duration of the block."""
    lock = _PATCH_LOCKS.setdefault(id(unet), threading.RLock())
    with lock:
        hooks = []
        try:
            first = next(unet.parameters())
            for proj, index in _attention_projections(unet):
                pair = hypernet.mlps.get(int(proj.in_features))
                if pair is None:
                    continue
                mlp = pair[index].to(device=first.device, dtype=torch.float32)

                def hook(_module, args, mlp=mlp):
                    x = args[0]
                    return (x + (mlp(x.float()) * strength).to(x.dtype), *args[1:])

                hooks.append(proj.register_forward_pre_hook(hook))
            yield
        finally:
            for h in hooks:
                h.remove()


class HypernetworkModel(HookedModel):
    """`base` whose UNet attention is patched by a hypernetwork at `strength` while it samples."""

    def __init__(self, base, hypernet: Hypernetwork, strength: float) -> None:
        net = network_model(base)
        if net is None or not hasattr(net, "unet"):
            raise TypeError(f"a hypernetwork needs a Stable Diffusion model; got {type(base).__name__}")
        super().__init__(base)
        self.hypernet = hypernet
        self.strength = float(strength)
        self._unet = net.unet

    def __repr__(self) -> str:
        return f"HypernetworkModel({self.base!r}, {self.hypernet!r}, strength={self.strength:g})"

    def installed(self):
        return installed(self._unet, self.hypernet, self.strength)


def with_hypernetwork(model, path: str | os.PathLike, strength: float, *, allow_pickle: bool = False):
    """ComfyUI's HypernetworkLoader: `model` with the hypernetwork file at `strength` (-10 .. 10)."""
    import math

    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength) \
            or abs(strength) > MAX_STRENGTH:
        raise ValueError(f"strength must be a finite number in [-{MAX_STRENGTH:g}, {MAX_STRENGTH:g}], got {strength!r}")
    hn = load_hypernetwork(path, allow_pickle=allow_pickle)
    return hoist(model, lambda m: HypernetworkModel(m, hn, strength))


__all__ = ["Hypernetwork", "HypernetworkError", "HypernetworkModel", "installed", "load_hypernetwork",
           "with_hypernetwork"]
