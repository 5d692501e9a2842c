"""Model loading by name: a small registry of loaders (each with its model's defaults) and a per-process cache.

`load(name)` takes a registered name ("textures", the default, and "ideal") or a checkpoint path. Each loader
carries the defaults front ends use for its models (`defaults_for(name)`: guidance scale, image side), so no
front end hard-codes model names. `ModelCache` loads each (name, device, dtype, options) once per process
and is what jobs, batch workers and a UI share. A new backend registers one `Loader`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

DEFAULT_MODEL = "textures"


@dataclass(frozen=True)
class ModelDefaults:
    """What a front end uses when the user does not say: ComfyUI's KSampler default cfg is 8."""

    cfg: float = 8.0
    size: int = 256


@dataclass(frozen=True)
class Loader:
    """name -> model. `load(device=..., dtype=..., **options)`; `defaults` belong to the models it loads."""

    name: str
    load: Callable[..., object]
    defaults: ModelDefaults = ModelDefaults()
    description: str = ""


def _analytic(name: str, cls_name: str) -> Callable[..., object]:
    def load(*, device=None, dtype=None, **options):
        if dtype not in (None, torch.float32, "fp32", "float32"):
            raise ValueError(f"the {name!r} model computes in float32; dtype={dtype} is not supported")
        options.pop("fp32_text_enc", None)  # no text encoder: float32 already
        if options:
            raise ValueError(f"{', '.join(sorted(options))} only apply to SD checkpoints, not the {name!r} model")
        from . import analytic
        return getattr(analytic, cls_name)(device=device)
    return load


# The analytic models' conditional prediction is exact, so they default to cfg 1: at cfg 3 the guidance term
# 2 * (cond - uncond) overshoots at a class boundary, where the unconditional posterior follows the neighbouring
# class, into a 1-2 px rim of saturated red/magenta around the demo's disc (docs/default-model.md, issue 10).
_ANALYTIC_DEFAULTS = ModelDefaults(cfg=1.0, size=256)
REGISTRY: dict[str, Loader] = {}


def register(loader: Loader) -> Loader:
    """Add (or replace) a named loader."""
    REGISTRY[loader.name] = loader
    return loader


register(Loader("textures", _analytic("textures", "TextureModel"), _ANALYTIC_DEFAULTS,
                "patch-based analytic denoiser over five CC0 textures (the default)"))
register(Loader("ideal", _analytic("ideal", "IdealModel"), _ANALYTIC_DEFAULTS,
                "exact posterior mean of the texture images"))


def _load_checkpoint(path, *, device=None, dtype=None, **options):
    from .flow_loading import is_flow_path, load_flow
    if is_flow_path(path):  # Flux.1 / SD3.5: told from the file's keys (its header), as ComfyUI does
        # a permission, not a choice: flow files are safetensors only, so `run --allow-pickle` changes nothing
        options.pop("allow_pickle", None)
        return load_flow(path, device=device, dtype=dtype, **options)
    from .sd import load_sd
    return load_sd(path, device=device, dtype=dtype, **options)


CHECKPOINT = Loader("checkpoint", _load_checkpoint, ModelDefaults(cfg=8.0, size=256),
                    "an SD 1.x/2.x/SDXL or Flux.1 / SD3.5 .safetensors checkpoint, or a model folder (a path)")
BUILTIN_MODELS = tuple(REGISTRY)


def _registered_name(name) -> str | None:
    # exactly as typed: ' TEXTURES ' is not the textures model (it is a path that does not exist)
    if isinstance(name, str) and name in REGISTRY:
        return name
    return None


def loader_for(name: str | os.PathLike) -> Loader:
    """The loader a name or path resolves to (a registered name, else the checkpoint loader)."""
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"model name must be a str or a path, got {type(name).__name__}")
    key = _registered_name(name)
    return REGISTRY[key] if key else CHECKPOINT


def defaults_for(name: str | os.PathLike) -> ModelDefaults:
    """The defaults of the model `name` would load (no loading; a Flux / SD3 file's header is read)."""
    loader = loader_for(name)
    if loader is CHECKPOINT:
        from .flow_loading import flow_defaults

        flow = flow_defaults(name)
        if flow is not None:
            return ModelDefaults(*flow)
    return loader.defaults


def load(name: str | os.PathLike = DEFAULT_MODEL, *, device: str | torch.device | None = None,
         dtype: torch.dtype | None = None, **options):
    """A model for the engine: "textures" (patch-based analytic model, the default), "ideal" (exact
    posterior mean of a finite image set), or a path to an SD checkpoint (.safetensors / diffusers folder)."""
    loader = loader_for(name)
    if loader is not CHECKPOINT:
        return loader.load(device=device, dtype=dtype, **options)
    known = f"known: {', '.join(REGISTRY)}, or a path to a .safetensors checkpoint / diffusers folder"
    try:
        return loader.load(name, device=device, dtype=dtype, **options)
    except FileNotFoundError as e:
        if os.path.exists(os.path.expanduser(os.fspath(name))):
            raise
        raise ValueError(f"unknown model {os.fspath(name)!r}; {known} ({e})") from None


class ModelCache:
    """Loads each (name, device, dtype, options) once per process and hands the same model back.

    Share one cache between jobs (a batch worker, a UI server) so a model is not loaded twice. `loader` is the
    load function (default: this module's `load`, looked up at each load, so that a test or plugin may replace
    `twosamplers.models.registry.load`). Thread-safe: concurrent `get`s of one key load once.
    """

    def __init__(self, loader: Callable[..., object] | None = None) -> None:
        self._load = loader
        self._models: dict[tuple, object] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(name, device=None, dtype=None, **options) -> tuple:
        n = _registered_name(name) or os.fspath(name)
        return (n, None if device is None else str(device), None if dtype is None else str(dtype),
                tuple(sorted((k, repr(v)) for k, v in options.items())))

    def get(self, name, *, device=None, dtype=None, **options):
        k = self.key(name, device, dtype, **options)
        with self._lock:
            if k not in self._models:
                load_fn = self._load or load  # looked up now: replacing `registry.load` (tests, plugins) works
                self._models[k] = load_fn(name, device=device, dtype=dtype, **options)
            return self._models[k]

    def get_loaded(self, key: tuple, load: Callable[[], object]):
        """The object `load()` makes, made once per `key` (a tuple naming what it is and how it was loaded): for
        what is not a whole model, e.g. a text encoder pair or a transformer file alone."""
        k = ("custom",) + tuple(key)
        with self._lock:
            if k not in self._models:
                self._models[k] = load()
            return self._models[k]

    def __len__(self) -> int:
        return len(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


__all__ = ["BUILTIN_MODELS", "DEFAULT_MODEL", "Loader", "ModelCache", "ModelDefaults", "REGISTRY", "defaults_for",
           "load", "loader_for", "register"]
