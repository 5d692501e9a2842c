"""A job's memory, estimated before any work, against what the machine has.

The estimate is deliberately coarse and on the high side: it exists to refuse renders that cannot fit (a
16384-pixel side, `demo --size 4096` on a small machine) with a number, instead of an allocation failure or
swapping minutes in. Front ends offer an override (the CLI's `--ignore-memory-limit`).

- The analytic models (textures, ideal): a fixed part (torch, the texture banks: ~0.31 GB measured) plus
  1.6 KB per output pixel (peak RSS of the 384 px demo, 20 steps: 420 MB at cfg 1, 494 MB at cfg 3, i.e.
  ~0.75 / ~1.25 KB per pixel, plus headroom).
- Other models (SD checkpoints): their weights, plus per latent pixel the UNet's activations for a cond +
  uncond batch (~40 feature maps of 320 channels), plus self-attention scores of the first level (8 heads,
  tokens^2, in the network's dtype), plus the VAE decoder's full-resolution feature maps (128 channels, ~4 of
  them, float32) unless the model decodes in tiles.
- A job whose passes have their own models (`estimate_many`): every distinct model's weights stay loaded, plus
  the largest one model's working memory (passes run one after another).
"""

from __future__ import annotations

import os

import torch

GB = 1024**3
ANALYTIC_FIXED = int(0.35 * GB)
ANALYTIC_PER_PIXEL = 1600


def estimate_bytes(model, width: int, height: int, batch: int = 1) -> int:
    """Peak memory of rendering `batch` images of width x height with `model` (both passes), in bytes."""
    own = getattr(model, "estimate_memory", None)
    if callable(own):
        return int(own(width, height, batch))
    if type(model).__module__.endswith("models.analytic"):
        return estimate_plain(width, height, batch, analytic=True)
    return estimate_plain(width, height, batch, weight_bytes=_weight_bytes(model),
                          itemsize=torch.finfo(getattr(model, "dtype", torch.float32)).bits // 8,
                          downscale=int(getattr(model.latent_format, "downscale", 8)),
                          tiled_decode=bool(getattr(model, "tiled_decode", False)))


def estimate_plain(width: int, height: int, batch: int = 1, *, analytic: bool = False, weight_bytes: int = 0,
                   itemsize: int = 4, downscale: int = 8, tiled_decode: bool = False) -> int:
    """The estimate of `estimate_bytes` from numbers alone (no model loaded): what a workflow's planning uses,
    with a checkpoint's file size as its weights."""
    pixels = width * height * batch
    if analytic:
        return ANALYTIC_FIXED + ANALYTIC_PER_PIXEL * pixels
    tokens = (width // downscale) * (height // downscale)
    unet = 2 * batch * tokens * 320 * 40 * itemsize
    attention = 2 * batch * 8 * tokens * tokens * itemsize
    vae = 0 if tiled_decode else pixels * 128 * 4 * 4
    return weight_bytes + unet + attention + vae


def _weight_bytes(model) -> int:
    total = 0
    seen = set()
    for name in ("unet", "vae", "network", "text_encoders"):
        parts = getattr(model, name, None)
        for part in parts if isinstance(parts, (list, tuple)) else [parts]:
            mod = getattr(part, "model", part)
            if isinstance(mod, torch.nn.Module) and id(mod) not in seen:
                seen.add(id(mod))
                total += sum(p.numel() * p.element_size() for p in mod.parameters())
    return total


def available_bytes(device: torch.device | str | None = None) -> int | None:
    """Memory this process can still get on `device` (None: unknown). CPU: MemAvailable of /proc/meminfo,
    else free physical pages; CUDA: free device memory."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(dev)
            return int(free)
        except (RuntimeError, AssertionError):
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def estimate_many(models, width: int, height: int, batch: int = 1) -> int:
    """Peak memory of a render whose passes use several models (each distinct one counted once): all their
    weights stay loaded, while one pass's activations are alive at a time."""
    distinct = list({id(m): m for m in (models if isinstance(models, (list, tuple)) else [models])}.values())
    peaks = [estimate_bytes(m, width, height, batch) for m in distinct]
    weights = [_weight_bytes(m) for m in distinct]
    top = max(range(len(distinct)), key=peaks.__getitem__)
    return peaks[top] + sum(w for i, w in enumerate(weights) if i != top)


def memory_problem(model, width: int, height: int, batch: int = 1) -> str | None:
    """A one-line explanation when the estimate exceeds the memory available, else None. `model`: a model or a
    list of them (the job's models: each distinct one is counted once)."""
    need = estimate_many(model, width, height, batch)
    first = model[0] if isinstance(model, (list, tuple)) else model
    have = available_bytes(getattr(first, "device", None))
    if have is None or need <= have:
        return None
    return (f"{width}x{height} needs about {need / GB:.1f} GB of memory (estimate) but this machine has "
            f"{have / GB:.1f} GB available")


__all__ = ["GB", "available_bytes", "estimate_bytes", "estimate_many", "estimate_plain", "memory_problem"]
