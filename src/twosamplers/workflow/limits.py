"""A workflow's memory, estimated while planning (before any node runs), as `twosamplers generate` does for a job.

A workflow is someone else's file: `EmptyLatentImage` at 16384 x 16384 with a batch of 4096, or a 40000-pixel
`LoadImage`, would otherwise allocate until the machine swaps or the process is killed. The estimate uses the
job layer's formula (`job.memory.estimate_plain`) without loading anything: each checkpoint the workflow loads
counts with its file size as its weights (the embedded models with their own figures), and the largest image a
needed node makes or reads (a constant width x height x batch_size of a node that gives a LATENT or IMAGE, an
input image's header size times its frames) sets the working memory. `--ignore-memory-limit` (check=False)
skips the check.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..job import memory
from ..job.memory import GB, estimate_plain
from ..nodes.folders import embedded_name
from ..nodes.registry import NODES
from .errors import WorkflowError
from .graph import is_link

IMAGE_TYPES = ("LATENT", "IMAGE")


def _const_int(inputs: dict, name: str) -> int | None:
    v = inputs.get(name)
    if isinstance(v, bool) or is_link(v) or not isinstance(v, (int, float)):
        return None
    return int(v) if v == v and abs(v) < 2**62 else None


SCALE_INPUTS = ("upscale_factor", "scale_factor", "scale_by")  # IterativeLatentUpscale, LatentPixelScale, ...By


def image_sizes(prompt: dict, order: list[str], folders) -> list[tuple[int, int, int, str]]:
    """(width, height, batch, node id) of every image the needed nodes make or read, as far as constants say. A node
    with a constant scale factor (upscale_factor, scale_factor, scale_by) scales the largest known image linked into
    it; other nodes pass that size on, so an upscale chain is counted at its end."""
    out, known = [], {}
    for nid in order:
        node = prompt[nid]
        cls = NODES.get(node["class_type"])
        inputs = node["inputs"]
        makes_image = cls is not None and any(t in IMAGE_TYPES for t in getattr(cls, "RETURN_TYPES", ()))
        if makes_image:
            w, h = _const_int(inputs, "width"), _const_int(inputs, "height")
            if w and h and w > 0 and h > 0:
                known[nid] = (w, h, max(1, _const_int(inputs, "batch_size") or 1))
                out.append((*known[nid], nid))
            else:
                linked = [known[str(v[0])] for v in inputs.values() if is_link(v) and str(v[0]) in known]
                if linked:
                    w, h, b = max(linked, key=lambda s: s[0] * s[1] * s[2])
                    f = next((_const_float(inputs, n) for n in SCALE_INPUTS if _const_float(inputs, n)), 1.0)
                    known[nid] = (max(1, int(w * f)), max(1, int(h * f)), b)
                    if f != 1.0:
                        out.append((*known[nid], nid))
        for name in getattr(cls, "INPUT_FILES", ()):
            size = _header_size(folders, inputs.get(name))
            if size is not None:
                out.append((*size, nid))
                known.setdefault(nid, size)
    return out


def _const_float(inputs: dict, name: str) -> float | None:
    v = inputs.get(name)
    if isinstance(v, bool) or is_link(v) or not isinstance(v, (int, float)) or not 0 < v < 2**20:
        return None
    return float(v)


def _header_size(folders, name) -> tuple[int, int, int] | None:
    """(width, height, frames) from an input image's header (nothing decoded); None when unknown."""
    if folders is None or not isinstance(name, str):
        return None
    try:
        path = folders.input_path(name)
        if path.suffix.lower() == ".latent":
            return None
        from PIL import Image

        with Image.open(path) as im:
            return im.size[0], im.size[1], int(getattr(im, "n_frames", 1) or 1)
    except Exception:  # an unreadable file is reported by its node's own check
        return None


def _weights(folders, name) -> tuple[bool, int]:
    """(is an embedded analytic model, weight bytes) of a ckpt_name."""
    if not isinstance(name, str) or embedded_name(name) or folders is None or name in folders.preloaded:
        return True, 0
    try:
        path = folders.find_model("checkpoints", name)
    except ValueError:
        return True, 0
    if path is None:
        return True, 0
    if Path(path).is_file():
        return False, Path(path).stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if f.endswith((".safetensors", ".bin")))
    return False, total


def estimate(prompt: dict, order: list[str], folders, itemsize: int = 4) -> tuple[int, tuple | None]:
    """(bytes, the largest image (w, h, batch, node id) or None) of running the needed nodes."""
    models = {}
    for nid in order:
        node = prompt[nid]
        for name in getattr(NODES.get(node["class_type"]), "FILE_INPUTS", ()):
            if name == "ckpt_name" and not is_link(node["inputs"].get(name)):
                models[str(node["inputs"].get(name))] = _weights(folders, node["inputs"].get(name))
    sizes = image_sizes(prompt, order, folders)
    if not sizes:
        return sum(w for _, w in models.values()), None
    big = max(sizes, key=lambda s: s[0] * s[1] * s[2])
    w, h, b, _ = big
    weights = sum(wb for _, wb in models.values())
    sd = any(not analytic for analytic, _ in models.values())
    if sd:
        work = estimate_plain(w, h, b, itemsize=itemsize)
    else:
        work = estimate_plain(w, h, b, analytic=True)
    return weights + work, big


def check_memory(prompt: dict, order: list[str], folders, device=None, dtype=None) -> None:
    """WorkflowError with the estimate when it exceeds the memory available on `device`."""
    itemsize = 2 if str(dtype) in ("fp16", "bf16", "torch.float16", "torch.bfloat16") else 4
    need, big = estimate(prompt, order, folders, itemsize)
    have = memory.available_bytes(device)
    if big is None or have is None or need <= have:
        return
    w, h, b, nid = big
    raise WorkflowError(f"memory: node {nid} ({prompt[nid]['class_type']}) makes {b} image(s) of {w}x{h}; the "
                        f"workflow needs about {need / GB:.1f} GB of memory (estimate) but this machine has "
                        f"{have / GB:.1f} GB available; use smaller sizes, or override the check "
                        "(--ignore-memory-limit)")


__all__ = ["check_memory", "estimate", "image_sizes"]
