"""Which model files a ComfyUI-style models folder holds: one listing rule for every front end that offers them
(the workflow runner's `nodes/folders.py`, the web page's pickers), so a file one of them loads the other lists.

A model is a file with one of `MODEL_EXTENSIONS` (`.sft` is ComfyUI's short name for safetensors, as Flux's
release files use) or a diffusers-style folder (one holding `model_index.json`), anywhere below the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")
MODEL_FOLDER_MARKER = "model_index.json"  # a diffusers pipeline folder


def model_files(folder: str | os.PathLike, extensions: tuple[str, ...] = MODEL_EXTENSIONS,
                marker: str = MODEL_FOLDER_MARKER) -> list[str]:
    """The models below `folder` as sorted POSIX paths relative to it: files whose suffix is one of `extensions`
    (any case) and folders holding `marker`. A missing folder has none."""
    root = Path(folder)
    if not root.is_dir():
        return []
    names = {p.relative_to(root).as_posix() for p in root.rglob("*")
             if p.is_file() and p.suffix.lower() in extensions or p.is_dir() and (p / marker).is_file()}
    return sorted(names)


__all__ = ["MODEL_EXTENSIONS", "MODEL_FOLDER_MARKER", "model_files"]
