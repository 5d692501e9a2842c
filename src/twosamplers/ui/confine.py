"""What a page request may name (docs/security.md, `twosamplers ui`): only the page's own files.

Whoever sends the fields (the page, a PNG loaded into it, any HTTP client) is not the local user, so every file a
job names must be the page's: models, ControlNets and embeddings under the models folder (`--models`), start
images and hints among the images the page was given (`save_input`: `inputs/<content hash>.png` in the page's
private folder). `confine_settings` applies that to every file a job dict names (`job.forms.map_files`: the base
pass and every region). LoRAs follow
the job layer's rule for jobs the user did not write (`Job.trusted`): names inside the job's `lora_dir`, which
is the models folder's loras/, never paths.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..job.fields import REGIONS
from ..job.forms import map_files, regions_form
from .models import model_folders, own_model
from .values import UIError, label


def page_inputs(page_dir: str | os.PathLike) -> Path:
    """The folder of the images the page was given (uploads saved by `save_input`): start images, hints."""
    return Path(page_dir) / "inputs"


def save_input(image: np.ndarray, folder: str | os.PathLike) -> str:
    """An image the page uploaded (the img2img start, a ControlNet hint) saved as `folder`/inputs/<content
    hash>.png, so that the job (and the PNG metadata) can name it by path; the same pixels give the same path."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    arr = np.ascontiguousarray(arr[..., :3].astype(np.uint8))
    digest = hashlib.sha256(arr.tobytes() + str(arr.shape).encode()).hexdigest()[:16]
    path = page_inputs(folder) / f"{digest}.png"
    if not path.exists():
        from ..job.imageio import save_png
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(path, arr)
    return str(path.resolve())


WHAT = {"model": "model", "image": "start image", "controlnet": "ControlNets file", "hint": "ControlNets hint image"}


def confine_settings(settings: dict, models_dir: str | os.PathLike | None, page_dir: str | os.PathLike) -> dict:
    """The page's job dict as the server may run it (its regions as a `regions` list): models, ControlNets and
    embeddings of the models folder, start images and hints among the page's inputs, in every pass
    (`job.forms.map_files`); the LoRA and embeddings folders are the models folder's. Raises UIError naming the
    field."""
    folders = model_folders(models_dir)
    s = regions_form(settings)
    s["lora_dir"] = str(folders["loras"]) if folders["loras"] is not None else None
    if s.get("embeddings") is not None:
        s["embeddings"] = str(folders["embeddings"]) if folders["embeddings"] is not None else None
    n = len(s[REGIONS])
    for key, entries in [("base_loras", s.get("base_loras")), *((f"{REGIONS}[{i}]", r.get("loras"))
                                                         for i, r in enumerate(s[REGIONS]))]:
        _page_loras(entries, folders, f"{_owner(key, n)} LoRAs")

    def confine(kind: str, key: str, value):
        what = f"{_owner(key, n)} {WHAT.get(kind, kind)}".strip()
        if kind == "model" and own_model(value) is not None:
            return _page_model(value, folders, what)
        if kind == "controlnet":
            return page_file(value, [folders["controlnet"]], what,
                             "the ControlNets of the page's models folder (--models DIR)")
        if kind in ("image", "hint"):
            return page_file(value, [page_inputs(page_dir)], what, "the page's own uploads")
        return value  # the masks are the page's tensors (their `mask` a label); the folders are set above

    return map_files(s, confine)


def _owner(key: str, n: int) -> str:
    """The pass a confined field belongs to as the page names it: "" (the job's), "base", "mask" (the one region)
    or "region 2"."""
    head = key.split(".")[0] if key.startswith(REGIONS) else key.split("_")[0] if "_" in key else ""
    return "mask" if n == 1 and head.startswith(REGIONS) else label(head)


def page_file(path, roots: list, what: str, where: str) -> str:
    """`path` when it lies inside one of `roots` (by name and by its real location), else UIError."""
    from .._paths import inside

    if not isinstance(path, str) or not path:
        raise UIError(f"{what} must be a file name, got {path!r}")
    try:
        return str(inside(path, [r for r in roots if r is not None], what))
    except ValueError:
        raise UIError(f"{what} {path!r} is not one of {where}; the page only opens files it was given") from None


def _page_model(name, folders: dict, what: str) -> str:
    from ..models.registry import REGISTRY

    if isinstance(name, str) and name in REGISTRY:
        return name
    where = "the checkpoints of the page's models folder (--models DIR)"
    path = page_file(name, [folders["checkpoints"]], what, where)
    if not Path(path).exists():
        raise UIError(f"{what} {name!r} is not a file of {where}")
    return path


def _page_loras(entries, folders: dict, what: str) -> None:
    """LoRA entries need the models folder's loras/: the job (not trusted: `Job.trusted`, job/trust.py) looks
    every entry up by name inside it, never as a path, in every pass."""
    if any(isinstance(e, dict) and e.get("source", "flag") != "tag" for e in entries or []) \
            and folders["loras"] is None:
        raise UIError(f"{what}: LoRAs need a models folder with loras/ (start the page with --models DIR)")


__all__ = ["confine_settings", "page_file", "page_inputs", "save_input"]
