"""LoRA-family weight patches with ComfyUI's numbers, applied to one shared copy of the network.

What ComfyUI does (LoraLoader / LoraLoaderModelOnly), and so what this module does:
- A LoRA file is a set of per-weight patches. Each weight W is patched as W' = cast(W32 + patch_1 + patch_2 ...)
  where W32 is W in float32, the patches of a LoRA stack are added in the order the LoRAs were applied, each
  computed in float32, and the sum is cast back to W's dtype once.
- Plain LoRA / LoCon: patch = (strength * alpha / rank) * (up @ down) reshaped to W's shape (alpha absent: the
  factor is strength alone; rank = down's first dimension); a LoCon `mid` (Tucker core) first folds into down.
- LoHa: patch = (strength * alpha / rank) * ((w1a @ w1b) * (w2a @ w2b)) (CP cores t1/t2 via einsum).
- LoKr: patch = (strength * alpha / dim) * kron(w1, w2) with each factor either whole or a product of two,
  `dim` the rank of the factored one (no factor factored: alpha is ignored, the factor is 1).
- `.diff` / `.diff_b`: patch = strength * diff (full weight / bias differences).
- `dora_scale` (DoRA): W + scale * diff is renormalized column- or row-wise to dora_scale's magnitude, then mixed
  with W by strength.
The text encoders take `strength_clip`, the UNet `strength_model`.

Per pass, one network: `patched(model, loras)` patches in place and keeps the originals of only the patched
tensors (on the CPU when the model is on a GPU), and puts them back bit for bit on exit. A patch with strength 0
is skipped outright (ComfyUI adds 0 * delta, which equals W except that -0.0 becomes +0.0).

Files are read with safetensors; pickle files (.pt/.ckpt/...) only with allow_pickle, then with
torch.load(weights_only=True).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .lora_keys import UNET_PART, Target, build_key_map, normalize_prefix
from .network_lock import network_lock
from .packed_conv import unpack as unpack_convolutions
from .sd_loading import CheckpointError, PickleNotAllowedError, read_state_dict

__all__ = [
    "can_patch",
    "Lora",
    "LoraError",
    "LoraFile",
    "LoraModel",
    "load_lora",
    "patched",
]

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".pth", ".bin")
MAX_STRENGTH = 100.0
# adapter tensor suffix -> slot name; the longest matching suffix wins
_SUFFIXES = {
    ".lora_up.weight": "up", ".lora_down.weight": "down",
    ".lora_B.weight": "up", ".lora_A.weight": "down",
    ".lora.up.weight": "up", ".lora.down.weight": "down",
    "_lora.up.weight": "up", "_lora.down.weight": "down",
    ".lora_linear_layer.up.weight": "up", ".lora_linear_layer.down.weight": "down",
    ".lora_mid.weight": "mid", ".alpha": "alpha", ".dora_scale": "dora_scale",
    ".hada_w1_a": "hada_w1_a", ".hada_w1_b": "hada_w1_b", ".hada_w2_a": "hada_w2_a", ".hada_w2_b": "hada_w2_b",
    ".hada_t1": "hada_t1", ".hada_t2": "hada_t2",
    ".lokr_w1": "lokr_w1", ".lokr_w2": "lokr_w2", ".lokr_w1_a": "lokr_w1_a", ".lokr_w1_b": "lokr_w1_b",
    ".lokr_w2_a": "lokr_w2_a", ".lokr_w2_b": "lokr_w2_b", ".lokr_t2": "lokr_t2",
    ".diff": "diff", ".diff_b": "diff_b",
}
_BY_LENGTH = sorted(_SUFFIXES, key=len, reverse=True)


class LoraError(CheckpointError):
    """A LoRA file that cannot be used with this model (missing, unreadable, wrong shapes, not finite)."""


class LoraPickleNotAllowedError(LoraError, PickleNotAllowedError):
    """A pickle LoRA file (.pt/.ckpt/...) without allow_pickle=True / --allow-pickle."""


# ------------------------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class Lora:
    """One LoRA of a pass: the file and ComfyUI's LoraLoader strengths (model = UNet, clip = text encoders)."""

    path: str | os.PathLike
    strength_model: float = 1.0
    strength_clip: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, os.PathLike)) or not os.fspath(self.path):
            raise TypeError(f"Lora.path must be a file path, got {self.path!r}")
        for name in ("strength_model", "strength_clip"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or abs(v) > MAX_STRENGTH:
                raise ValueError(f"Lora.{name} for {os.fspath(self.path)!r} must be a finite number in "
                                 f"[-{MAX_STRENGTH:g}, {MAX_STRENGTH:g}], got {v!r}")
            object.__setattr__(self, name, float(v))

    @property
    def name(self) -> str:
        return Path(self.path).name


def can_patch(model) -> bool:
    """Whether LoRAs can patch `model`: an SD checkpoint (UNet + text encoders) or a model that names its own
    parts (Flux / SD3, `lora_modules`); a LoraModel's base counts."""
    base = model.base if isinstance(model, LoraModel) else model
    return callable(getattr(base, "lora_modules", None)) or (hasattr(base, "unet") and hasattr(base, "text_encoders"))


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- adapters
@dataclass
class Adapter:
    """One weight's patch from one file: kind "lora" | "loha" | "lokr" | "diff", its tensors (on CPU, file
    dtype) and alpha (a Python float, or None)."""

    kind: str
    tensors: dict[str, torch.Tensor]
    alpha: float | None = None

    def _t(self, name: str, device) -> torch.Tensor | None:
        t = self.tensors.get(name)
        return None if t is None else t.to(device=device, dtype=torch.float32)

    def delta(self, shape: torch.Size, device) -> tuple[torch.Tensor, float]:
        """(the unscaled difference reshaped to `shape` in float32, the alpha factor), as ComfyUI forms them."""
        t = self._t
        if self.kind == "lora":
            up, down, mid = t("up", device), t("down", device), t("mid", device)
            alpha = self.alpha / down.shape[0] if self.alpha is not None else 1.0
            if mid is not None:  # LoCon's Tucker core folds into down first
                final = [down.shape[1], down.shape[0], mid.shape[2], mid.shape[3]]
                down = torch.mm(down.transpose(0, 1).flatten(start_dim=1),
                                mid.transpose(0, 1).flatten(start_dim=1)).reshape(final).transpose(0, 1)
            return torch.mm(up.flatten(start_dim=1), down.flatten(start_dim=1)).reshape(shape), alpha
        if self.kind == "loha":
            w1a, w1b, w2a, w2b = (t(k, device) for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"))
            alpha = self.alpha / w1b.shape[0] if self.alpha is not None else 1.0
            t1, t2 = t("hada_t1", device), t("hada_t2", device)
            if t1 is not None and t2 is not None:
                m1 = torch.einsum("i j k l, j r, i p -> p r k l", t1, w1b, w1a)
                m2 = torch.einsum("i j k l, j r, i p -> p r k l", t2, w2b, w2a)
            else:
                m1, m2 = torch.mm(w1a, w1b), torch.mm(w2a, w2b)
            return (m1 * m2).reshape(shape), alpha
        if self.kind == "lokr":
            w1, w2 = t("lokr_w1", device), t("lokr_w2", device)
            dim = None
            if w1 is None:
                b = t("lokr_w1_b", device)
                dim = b.shape[0]
                w1 = torch.mm(t("lokr_w1_a", device), b)
            if w2 is None:
                a, b, t2 = t("lokr_w2_a", device), t("lokr_w2_b", device), t("lokr_t2", device)
                dim = b.shape[0]
                w2 = torch.mm(a, b) if t2 is None else torch.einsum("i j k l, j r, i p -> p r k l", t2, b, a)
            if w2.ndim == 4:
                w1 = w1.unsqueeze(2).unsqueeze(2)
            alpha = self.alpha / dim if self.alpha is not None and dim is not None else 1.0
            return torch.kron(w1, w2).reshape(shape), alpha
        if self.kind == "diff":
            return t("diff", device).reshape(shape), 1.0
        raise AssertionError(self.kind)

    def add_to(self, w: torch.Tensor, strength: float, target: Target | None = None) -> torch.Tensor:
        """Add this patch at `strength` to the float32 weight `w` (in place where ComfyUI is in place). For a
        piece target the patch is formed at the fused source shape and its piece taken (`Target.take`)."""
        if target is not None and target.is_piece:
            if self.kind == "diff":
                w += strength * target.take(self.tensors["diff"].to(device=w.device, dtype=torch.float32))
                return w
            diff, alpha = self.delta(torch.Size(target.source_shape), w.device)
            w += (strength * alpha) * target.take(diff)
            return w
        if self.kind == "diff":
            diff = self.tensors["diff"].to(device=w.device, dtype=torch.float32)
            w += strength * diff
            return w
        diff, alpha = self.delta(w.shape, w.device)
        dora = self._t("dora_scale", w.device)
        if dora is None:
            w += (strength * alpha) * diff
            return w
        return _dora(dora, w, diff, alpha, strength)


def _dora(dora_scale: torch.Tensor, w: torch.Tensor, diff: torch.Tensor, alpha: float, strength: float):
    """DoRA's magnitude renormalisation, the way ComfyUI applies it (in float32)."""
    diff *= alpha
    calc = w + diff
    if dora_scale.shape[0] == calc.shape[0]:  # magnitude per output row, taken from the unpatched weight
        norm = w.reshape(w.shape[0], -1).norm(dim=1, keepdim=True).reshape(w.shape[0], *[1] * (w.dim() - 1))
    else:  # per input column of the patched weight
        norm = (calc.transpose(0, 1).reshape(calc.shape[1], -1).norm(dim=1, keepdim=True)
                .reshape(calc.shape[1], *[1] * (calc.dim() - 1)).transpose(0, 1))
    norm = norm + torch.finfo(w.dtype).eps
    calc *= dora_scale / norm
    if strength != 1.0:
        calc -= w
        w += strength * calc
    else:
        w[:] = calc
    return w


def _kind(slots: dict) -> str | None:
    if "up" in slots or "down" in slots:
        return "lora"
    if any(k.startswith("hada_") for k in slots):
        return "loha"
    if any(k.startswith("lokr_") for k in slots):
        return "lokr"
    if "diff" in slots:
        return "diff"
    return None


_REQUIRED = {"lora": ("up", "down"), "loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
             "diff": ("diff",)}


def _complete(kind: str, slots: dict) -> bool:
    """All the tensors the kind's formula needs (LoKr: each factor whole or as its two halves)."""
    if kind == "lokr":
        return all(f"lokr_w{i}" in slots or (f"lokr_w{i}_a" in slots and f"lokr_w{i}_b" in slots) for i in (1, 2))
    return all(k in slots for k in _REQUIRED[kind])


# ------------------------------------------------------------------------------------------- a file
@dataclass
class LoraFile:
    """A LoRA file mapped onto one model: per target weight, the adapter(s) it contributes."""

    path: Path
    patches: dict[Target, Adapter]
    unmatched: list[str] = field(default_factory=list)
    _sha256: str | None = None

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        return self._sha256

    @property
    def touches_unet(self) -> bool:
        return any(not t.is_clip for t in self.patches)

    @property
    def touches_clip(self) -> bool:
        return any(t.is_clip for t in self.patches)


def _split(key: str) -> tuple[str, str] | None:
    for suf in _BY_LENGTH:
        if key.endswith(suf):
            return key[: -len(suf)], _SUFFIXES[suf]
    return None


def _modules(model) -> dict[str, torch.nn.Module]:
    own = getattr(model, "lora_modules", None)  # models of other layouts (Flux, SD3) name their own parts
    if callable(own):
        return own()
    parts = {UNET_PART: model.unet}
    for i, enc in enumerate(getattr(model, "text_encoders", [])):
        parts[f"clip{i}"] = enc.model
    return parts


def _check_finite(path: Path, sd: dict[str, torch.Tensor]) -> None:
    for k, v in sd.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise LoraError(f"{path}: tensor {k!r} holds NaN or infinite values; the LoRA file is damaged")


def load_lora(model, path: str | os.PathLike, *, allow_pickle: bool = False) -> LoraFile:
    """Read a LoRA file and map it onto `model` (an SDModel, or anything with `.unet` and `.text_encoders`).

    Errors (LoraError, naming the file): missing file, unreadable or pickle without allow_pickle, NaN/inf
    values, a patch whose shape does not fit its weight (a LoRA for another model family), no key matching
    the model at all. Keys that match nothing are reported once, as a warning with their count and a few names.
    """
    path = Path(path).expanduser()
    sd = _read(path, allow_pickle)
    convert = getattr(model, "convert_lora_keys", None)  # key formats another layout names differently (XLabs)
    if callable(convert):
        sd = convert(sd)
    groups, unmatched = _group(sd)
    params = {part: dict(m.named_parameters()) for part, m in _modules(model).items()}
    patches = _patches(path, groups, build_key_map(model), params, unmatched)
    _check_shapes(path, patches, params)
    if not patches and "img_in.lora_A.weight" in sd:  # BFL's format, which only its control LoRAs use
        raise LoraError(f"{path}: a Flux control LoRA (BFL's FLUX.1 Canny / Depth dev LoRA, which widens the "
                        "model's input layer): out of scope: control LoRAs are not run; use the FLUX.1 Canny / "
                        "Depth dev model instead")
    if not patches:
        few = ", ".join(repr(k) for k in list(sd)[:3])
        raise LoraError(f"{path}: no key of this LoRA matches the {getattr(model, 'family', 'loaded')} model "
                        f"({len(sd)} tensors, e.g. {few}); is it a LoRA for another model family, or not a LoRA?")
    if unmatched:
        warnings.warn(f"{path.name}: {len(unmatched)} LoRA keys match nothing in this model and are ignored "
                      f"(e.g. {', '.join(unmatched[:4])})", stacklevel=2)
    return LoraFile(path, patches, unmatched)


def _read(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise LoraError(f"LoRA file not found: {path}")
    try:
        sd = read_state_dict(path, allow_pickle=allow_pickle)
    except PickleNotAllowedError as e:
        raise LoraPickleNotAllowedError(f"LoRA {e}") from None
    except CheckpointError as e:
        raise LoraError(f"LoRA {e}") from None
    _check_finite(path, sd)
    return sd


def _group(sd: dict[str, torch.Tensor]) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """{module prefix: {slot: tensor}} by adapter suffix, and the keys with no known suffix."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    unmatched: list[str] = []
    for k, v in sd.items():
        split = _split(k)
        if split is None:
            unmatched.append(k)
            continue
        prefix, slot = split
        groups.setdefault(normalize_prefix(prefix), {})[slot] = v
    return groups, unmatched


def _patches(path: Path, groups: dict, key_map: dict, params: dict, unmatched: list[str]) -> dict[Target, Adapter]:
    """One adapter per addressed weight (and bias, for `.diff_b`); what matches nothing goes to `unmatched`."""
    patches: dict[Target, Adapter] = {}
    for prefix, slots in groups.items():
        target = key_map.get(prefix)
        if target is None:
            unmatched.extend(prefix + "." + s for s in slots)
            continue
        if isinstance(target, tuple):  # a fused weight of another layout: one adapter, several parameters
            _piece_patches(path, prefix, slots, target, key_map.get(prefix + "#bias", ()), patches, unmatched)
            continue
        if "diff_b" in slots:
            bias = Target(target.part, target.param + "#bias")
            if _param_of(bias) in params[target.part]:
                patches[bias] = Adapter("diff", {"diff": slots["diff_b"]})
            else:
                unmatched.append(prefix + ".diff_b")
        kind = _kind(slots)
        if kind is None:
            if "diff_b" not in slots:
                unmatched.extend(prefix + "." + s for s in slots)
            continue
        if not _complete(kind, slots):
            raise LoraError(f"{path}: {prefix!r} has an incomplete {kind} patch (tensors: {sorted(slots)})")
        alpha = slots.get("alpha")
        patches[target] = Adapter(kind, {s: t for s, t in slots.items() if s not in ("alpha", "diff_b")},
                                  None if alpha is None else float(alpha.float().reshape(-1)[0].item()))
    return patches


def _piece_patches(path: Path, prefix: str, slots: dict, targets: tuple, bias_targets: tuple,
                   patches: dict, unmatched: list[str]) -> None:
    """The adapter of a fused source weight, registered once per piece (and its `.diff_b` per bias piece)."""
    if "diff_b" in slots:
        if bias_targets:
            for t in bias_targets:
                patches[t] = Adapter("diff", {"diff": slots["diff_b"]})
        else:
            unmatched.append(prefix + ".diff_b")
    kind = _kind(slots)
    if kind is None:
        if "diff_b" not in slots:
            unmatched.extend(prefix + "." + s for s in slots)
        return
    if not _complete(kind, slots):
        raise LoraError(f"{path}: {prefix!r} has an incomplete {kind} patch (tensors: {sorted(slots)})")
    if "dora_scale" in slots:
        raise LoraError(f"{path}: {prefix!r} is a DoRA patch of a fused weight, which is not supported")
    alpha = slots.get("alpha")
    ad = Adapter(kind, {s: t for s, t in slots.items() if s not in ("alpha", "diff_b")},
                 None if alpha is None else float(alpha.float().reshape(-1)[0].item()))
    for t in targets:
        patches[t] = ad


def _param_of(target: Target) -> str:
    """The state-dict name a target patches: its module's weight, or its bias for `.diff_b` targets."""
    return target.param[: -len("#bias")] + ".bias" if target.param.endswith("#bias") else target.param + ".weight"


def _check_shapes(path: Path, patches: dict[Target, Adapter], params: dict) -> None:
    """Every patch computed on the meta device: a shape that does not fit its weight is an error now, before
    any sampling, rather than a crash (or ComfyUI's skipped patch) later."""
    for target, ad in patches.items():
        p = params[target.part].get(_param_of(target))
        if p is None:
            raise LoraError(f"{path}: {target.param!r} has no weight in the model")
        meta = Adapter(ad.kind, {k: v.to("meta") for k, v in ad.tensors.items()}, ad.alpha)
        try:
            if target.is_piece:
                src = ad.tensors["diff"] if ad.kind == "diff" else meta.delta(torch.Size(target.source_shape),
                                                                               "meta")[0]
                if tuple(src.shape) != tuple(target.source_shape) or \
                        tuple(target.take(src.to("meta")).shape) != tuple(p.shape):
                    raise RuntimeError(f"fused shape {tuple(src.shape)} vs {tuple(target.source_shape)}")
                continue
            if ad.kind == "diff":
                ok = tuple(ad.tensors["diff"].shape) == tuple(p.shape)
                if not ok:
                    raise RuntimeError(f"diff shape {tuple(ad.tensors['diff'].shape)}")
            else:
                meta.delta(p.shape, "meta")
                if "dora_scale" in ad.tensors:
                    ds = ad.tensors["dora_scale"]
                    if ds.numel() not in (p.shape[0], p.shape[1] if p.ndim > 1 else -1):
                        raise RuntimeError(f"dora_scale shape {tuple(ds.shape)}")
        except (RuntimeError, ValueError, IndexError) as e:
            shapes = {k: tuple(v.shape) for k, v in ad.tensors.items()}
            raise LoraError(f"{path}: the {ad.kind} patch for {target.param!r} ({shapes}) does not fit the model's "
                            f"weight {tuple(p.shape)} ({str(e).splitlines()[0]}); is this LoRA for another model "
                            "family (e.g. an SDXL LoRA on SD1.5)?") from None


# ------------------------------------------------------------------------------------------- patching
_LOCK = threading.Lock()
_ACTIVE: dict[int, tuple] = {}  # id(root module) -> (stack key, depth, saved originals)


def _stack_key(loras, part: str) -> tuple:
    i = 1 if part == UNET_PART else 2
    return (part, tuple((id(entry[0]), entry[i]) for entry in loras))


@contextmanager
def patched(model, loras: Sequence[tuple[LoraFile, float, float]], *, unet: bool = True,
            clip: bool = True) -> Iterator[None]:
    """Patch `model`'s weights with `loras` [(LoraFile, strength_model, strength_clip), ...] (applied in that
    order, ComfyUI's LoraLoader chain order) for the duration of the block; restore them bit-exactly after.

    Only the patched tensors' originals are held, on the CPU. Each network is held by one thread at a time for
    the block (another thread's pass waits). Re-entering with the same stack is a no-op; entering a different
    stack on the same weights inside the block is an error (a job's passes run one after another, never nested).
    """
    modules = _modules(model)
    parts = [p for p in modules if (p == UNET_PART and unet) or (p != UNET_PART and clip)]
    locks, entered = [], []
    try:
        for part in parts:
            root = modules[part]
            lock = network_lock(root)
            lock.acquire()
            locks.append(lock)
            key = (id(model), _stack_key(loras, part))
            active = _ACTIVE.get(id(root))
            if active is not None:
                if active[0] != key:
                    raise RuntimeError("another LoRA stack is already applied to this network; passes with "
                                       "different LoRAs must run one after another")
                _ACTIVE[id(root)] = (key, active[1] + 1, active[2])
                entered.append(root)
                continue
            plan = _plan(loras, part)
            if plan:
                unpack_convolutions(root)  # patches change the ordinary weights
                _ACTIVE[id(root)] = (key, 1, _apply(root, plan))
                entered.append(root)
        yield
    finally:
        try:
            for root in reversed(entered):
                key, depth, saved = _ACTIVE[id(root)]
                if depth > 1:
                    _ACTIVE[id(root)] = (key, depth - 1, saved)
                    continue
                unpack_convolutions(root)  # the pass may have packed the patched weights
                _restore(root, saved)
                del _ACTIVE[id(root)]
        finally:
            for lock in reversed(locks):
                lock.release()


def _plan(loras, part: str) -> dict[str, list[tuple[Adapter, float, Target]]]:
    """param name -> [(adapter, strength, target), ...] in stack order, for one module; strength-0 patches
    dropped."""
    plan: dict[str, list] = {}
    for f, s_model, s_clip in loras:
        s = s_model if part == UNET_PART else s_clip
        if s == 0.0:
            continue
        for target, ad in f.patches.items():
            if target.part == part:
                plan.setdefault(_param_of(target), []).append((ad, s, target))
    return plan


@torch.no_grad()
def _apply(root: torch.nn.Module, plan: dict) -> dict[str, torch.Tensor]:
    params = dict(root.named_parameters())
    saved: dict[str, torch.Tensor] = {}
    try:
        for name, adapters in plan.items():
            p = params[name]
            saved[name] = p.detach().to("cpu", copy=True)
            # float32 weights are patched in place (the same float32 sums, without a scratch copy), unless a patch
            # reads model weights itself (a merge: its other model may share this network)
            inplace = p.dtype == torch.float32 and not any(getattr(ad, "reads_weights", False)
                                                           for ad, _, _ in adapters)
            w = p.detach() if inplace else p.detach().to(torch.float32, copy=True)
            for ad, s, target in adapters:
                w = ad.add_to(w, s, target)
            if w.data_ptr() != p.data_ptr():
                p.copy_(w)
    except BaseException:
        _restore(root, saved)
        raise
    return saved


@torch.no_grad()
def _restore(root: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    params = dict(root.named_parameters())
    for name, orig in saved.items():
        params[name].copy_(orig)


def merged_weight(weight: torch.Tensor, patches: Sequence[tuple[Adapter, float]]) -> torch.Tensor:
    """W' for one weight (float32 sum of the patches, cast back once): what `patched` writes."""
    w = weight.detach().to(torch.float32, copy=True)
    for ad, s in patches:
        if s != 0.0:
            w = ad.add_to(w, s)
    return w.to(weight.dtype)


# ------------------------------------------------------------------------------------------- the model
class LoraModel:
    """`base` with a LoRA stack: the same network object, patched only while it is used.

    It is a twosamplers model (everything not defined here is `base`'s). `encode_prompt` runs with the text
    encoders patched at strength_clip; the engine opens `sampling_session()` around a whole pass so that the
    UNet is patched once per pass (an `apply_model` call outside a session patches around that call alone).
    """

    def __init__(self, base, loras: Sequence[tuple[LoraFile, float, float]]) -> None:
        if isinstance(base, LoraModel):
            loras = list(base.loras) + list(loras)
            base = base.base
        self.base = base
        self.loras = tuple(loras)

    def __getattr__(self, name):
        if name in ("base", "loras"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def __repr__(self) -> str:
        names = ", ".join(f"{f.path.name}:{sm:g}:{sc:g}" for f, sm, sc in self.loras)
        return f"LoraModel({self.base!r}, [{names}])"

    def with_loras(self, loras: Sequence[Lora], *, allow_pickle: bool = False) -> LoraModel:
        """This model with more LoRAs after its own (ComfyUI's chained LoraLoaders)."""
        return with_loras(self, loras, allow_pickle=allow_pickle)

    @contextmanager
    def sampling_session(self) -> Iterator[None]:
        base_session = getattr(self.base, "sampling_session", None)  # after patching: it may pack the weights
        with patched(self.base, self.loras, unet=True, clip=False), \
                (base_session() if base_session is not None else nullcontext()):
            yield

    def apply_model(self, x, sigma, context, **extras):
        with patched(self.base, self.loras, unet=True, clip=False):
            return self.base.apply_model(x, sigma, context, **extras)

    def encode_prompt(self, text: str, **options):
        with patched(self.base, self.loras, unet=False, clip=True):
            return self.base.encode_prompt(text, **options)


_FILES: OrderedDict = OrderedDict()  # (path, mtime, size, allow_pickle, id(model)) -> (weakref(model), LoraFile)
FILE_CACHE_SIZE = 8


def cached_lora(model, path: str | os.PathLike, *, allow_pickle: bool = False) -> LoraFile:
    """`load_lora`, remembered for the last few files per model (unchanged on disk), so that passes and jobs
    that reuse a LoRA read it once."""
    p = Path(path).expanduser()
    try:
        st = p.resolve().stat()
    except OSError:
        return load_lora(model, p, allow_pickle=allow_pickle)  # raises the clear error
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size, bool(allow_pickle), id(model))
    with _LOCK:
        hit = _FILES.get(key)
        if hit is not None and hit[0]() is model:
            _FILES.move_to_end(key)
            return hit[1]
    f = load_lora(model, p, allow_pickle=allow_pickle)
    with _LOCK:
        _FILES[key] = (weakref.ref(model), f)
        while len(_FILES) > FILE_CACHE_SIZE:
            _FILES.popitem(last=False)
    return f


def with_loras(model, loras: Sequence[Lora], *, allow_pickle: bool = False) -> object:
    """`model` with `loras` ([Lora, ...], applied in order); the model itself when the list is empty."""
    if not loras:
        return model
    if isinstance(loras, Lora):
        loras = [loras]
    base = model.base if isinstance(model, LoraModel) else model
    stack = []
    for spec in loras:
        if not isinstance(spec, Lora):
            raise TypeError(f"loras must hold twosamplers Lora objects, got {type(spec).__name__}")
        stack.append((cached_lora(base, spec.path, allow_pickle=allow_pickle), spec.strength_model,
                      spec.strength_clip))
    return LoraModel(model, stack)
