"""A jobs line's paths: made absolute against the jobs file's folder and, for a line (someone else's document,
docs/security.md), kept inside the folders it may name files in: the jobs file's folder and the folders the user
gave on the command line (`--models`, `--comfyui`, `--input-dir`). Shared by generate-style lines (`adapter`)
and workflow lines (`workflow_line`)."""

from __future__ import annotations

import os
from pathlib import Path

from .._paths import inside
from ..job import JobError


def resolve(value, key: str, base: Path, roots=None) -> str:
    """A line's path made absolute against the jobs file's folder `base`; with `roots`, it must lie inside one
    of them (JobError naming `key` otherwise)."""
    if not isinstance(value, str) or not value:
        raise JobError(key, f"must be a file path, got {value!r}")
    if "\0" in value:
        raise JobError(key, "a path cannot hold a NUL character")
    p = Path(os.path.expanduser(value))
    path = str(p if p.is_absolute() else (base / p).resolve())
    if roots is not None:
        try:
            inside(path, roots, key)
        except ValueError as e:
            raise JobError(key, f"{value} is outside the folders a jobs line may name files in ("
                           f"{', '.join(str(r) for r in roots)}: the jobs file's folder and the folders given on the "
                           "command line)") from e
    return path


__all__ = ["resolve"]
