"""The page's models folder (`--models DIR`, ComfyUI's layout): what its pickers list, by the workflow runner's own
listing rule (`models.listing`), and the subfolders a job's names are looked up in."""

from __future__ import annotations

import os
from pathlib import Path

from ..job.png import PAGE_SAME_MODEL as SAME_MODEL  # a region model dropdown's "same as base" (the model None)
from ..models.listing import model_files
from .values import UIError

MODEL_FOLDERS = ("checkpoints", "loras", "controlnet", "embeddings")


def scan_models(models_dir: str | os.PathLike | None) -> dict[str, list[str]]:
    """Files in a ComfyUI-style models folder: {"checkpoints": [...], "loras": [...], "controlnet": [...],
    "embeddings": [...]}, each a sorted list of names relative to its folder (`models.listing.model_files`:
    .safetensors, .sft, ..., and diffusers folders). A missing subfolder gives an empty list."""
    if not models_dir:
        return {k: [] for k in MODEL_FOLDERS}
    root = Path(models_dir).expanduser()
    if not root.is_dir():
        raise UIError(f"--models {models_dir}: not a folder")
    return {kind: model_files(root / kind) for kind in MODEL_FOLDERS}


def model_folders(models_dir: str | os.PathLike | None) -> dict[str, Path | None]:
    """The models folder's subfolders that exist, as absolute paths: {"checkpoints", "loras", "controlnet",
    "embeddings"} -> Path or None."""
    root = Path(models_dir).expanduser().resolve() if models_dir else None
    return {k: root / k if root is not None and (root / k).is_dir() else None for k in MODEL_FOLDERS}


def model_choices(models_dir, found: dict[str, list[str]], same_as_base: bool = False) -> list[tuple[str, str]]:
    """(label, value) pairs for a model dropdown: the built-in models, then the checkpoints found; the mask and
    region panels' dropdowns start with "same as base"."""
    choices = [(SAME_MODEL, SAME_MODEL)] if same_as_base else []
    choices += [("textures (built-in)", "textures"), ("ideal (built-in)", "ideal")]
    for rel in found.get("checkpoints", []):
        choices.append((rel, str(Path(models_dir).expanduser().resolve() / "checkpoints" / rel)))
    return choices


def own_model(name) -> str | None:
    """A mask/region model field's own model, or None for "same as base" (or empty)."""
    return None if name in (None, "", SAME_MODEL) else str(name)


def home_short(path: str | os.PathLike, home: str | os.PathLike | None = None) -> str:
    """A path as the page shows it: under the home folder as "~/..." (shorter, and no user name on screen)."""
    p, h = Path(path).expanduser(), Path(home if home is not None else Path.home())
    try:
        rel = p.relative_to(h)
    except ValueError:
        return str(path)
    return "~" if str(rel) == "." else f"~/{rel.as_posix()}"


__all__ = ["MODEL_FOLDERS", "SAME_MODEL", "home_short", "model_choices", "model_folders", "own_model",
           "scan_models"]
