"""Atomic file output: write to a temporary file beside the target, then rename it over the target, so an
interrupted run (error, Ctrl-C) never leaves a half-written file and an existing output survives."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call write(tmp_path) on a temporary file next to `path`, then rename it over `path`."""
    return atomic_write_all([(path, write)])[0]


def atomic_write_all(items: list[tuple[str | os.PathLike, Callable[[str], None]]],
                     shown: list[str | os.PathLike] | None = None) -> list[Path]:
    """Write several outputs together: every write(tmp_path) first, then every rename. A failure while writing
    any of them (error, Ctrl-C) leaves all targets as they were and no temporary file behind. An OSError is
    re-raised naming the target as `shown` gives it (default: the target path), never the temporary file."""
    temps: list[tuple[str, Path]] = []
    names = [str(p) for p in (shown if shown is not None else [p for p, _ in items])]
    current = ""
    try:
        for (path, write), name in zip(items, names, strict=True):
            current = name
            path = Path(path)
            folder = path.parent if str(path.parent) else Path(".")
            if not folder.is_dir():
                raise FileNotFoundError(f"output folder does not exist: {folder}")
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
            os.close(fd)
            temps.append((tmp, path))
            write(tmp)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give outputs the usual permissions
        for (tmp, path), name in zip(temps, names, strict=False):
            current = name
            os.replace(tmp, path)
    except BaseException as e:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
            raise OSError(e.errno, f"cannot write {current}: {e.strerror or e}") from None
        raise
    return [path for _, path in temps]
