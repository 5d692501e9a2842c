"""Image upscale networks (ESRGAN, Real-ESRGAN, SwinIR, ... : ComfyUI's models/upscale_models/) through
spandrel, the library ComfyUI loads them with (`pip install 'twosamplers[upscale]'`).

The weights are read without unpickling: a safetensors file (whatever its suffix; many are saved as .pth)
is read as such, a real pickle (.pth / .pt) only with allow_pickle (then torch.load(weights_only=True)).
spandrel recognises the architecture from the keys; only single-image models are accepted, as in ComfyUI.
`upscale_image` runs the network over 512-pixel tiles overlapping by 32 (`tiling.tiled_scale`, halving the
tile on out-of-memory down to 128) and clamps to [0, 1], ComfyUI's ImageUpscaleWithModel numbers.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from ..engine.tiling import tiled_scale


class UpscaleModelError(ValueError):
    """A file that is not a single-image upscale network spandrel knows."""


def _import_spandrel():
    try:
        import spandrel
    except ModuleNotFoundError as e:
        if e.name == "torchvision":
            raise ImportError("spandrel (upscale models) imports torchvision, which is not installed: install the "
                              "torchvision that matches your torch") from None
        raise ImportError("upscale models need spandrel: pip install 'twosamplers[upscale]'") from None
    return spandrel


def read_weights(path: Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    from .sd_loading import _check_safetensors_header, read_state_dict

    try:
        _check_safetensors_header(path)
        is_safetensors = True
    except ValueError:
        is_safetensors = False
    if is_safetensors and path.suffix.lower() != ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return read_state_dict(path, allow_pickle=allow_pickle)


_CACHE: dict[tuple, object] = {}
_LOCK = threading.Lock()


def load_upscale_model(path: str | Path, *, device=None, allow_pickle: bool = False):
    """A spandrel ImageModelDescriptor (eval mode, on `device`; default the CPU). Cached per file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"upscale model not found: {path}")
    key = (str(path.resolve()), path.stat().st_mtime_ns, str(device))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    spandrel = _import_spandrel()
    sd = read_weights(path, allow_pickle)
    if "module.layers.0.residual_group.blocks.0.norm1.weight" in sd:  # SwinIR saved from DataParallel
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    try:
        desc = spandrel.ModelLoader().load_from_state_dict(sd).eval()
    except Exception as e:  # spandrel raises its own types for unknown layouts
        raise UpscaleModelError(f"{path.name}: not an upscale model spandrel recognises ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise UpscaleModelError(f"{path.name}: a {type(desc).__name__} (e.g. an inpainting model) is not a "
                                "single-image upscale model")
    if device is not None:
        desc = desc.to(torch.device(device))
    with _LOCK:
        return _CACHE.setdefault(key, desc)


def upscale_image(model, image: torch.Tensor, tile: int = 512, overlap: int = 32) -> torch.Tensor:
    """IMAGE (B, H, W, C) -> IMAGE scaled by the model's factor, in [0, 1] on the CPU."""
    device = next(model.model.parameters()).device
    x = image.movedim(-1, -3).to(device)
    while True:
        try:
            out = tiled_scale(x, lambda a: model(a.float()), tile, tile, overlap, model.scale)
            break
        except torch.OutOfMemoryError:
            tile //= 2
            if tile < 128:
                raise
    return torch.clamp(out.movedim(-3, -1), min=0, max=1.0)


__all__ = ["UpscaleModelError", "load_upscale_model", "read_weights", "upscale_image"]
