"""Atomic file output: write to a temporary file beside the target, then rename it over the target, so an
interrupted run (error, Ctrl-C) never leaves a half-written file and an existing output survives; `copy_new`
copies into a folder never over a file already there (the web page's --outputs)."""

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


def copy_new(src: Path, folder: Path) -> Path:
    """`src` copied into `folder` under its name (or name-2, -3, ...): written to a temporary file, then linked
    to a name no file has (never replacing one, never through a symbolic link)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    for i in range(1, 10_000):
        target = folder / (src.name if i == 1 else f"{src.stem}-{i}{src.suffix}")
        if os.path.lexists(target):
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.link(tmp, target)  # fails when the name was taken meanwhile: try the next one
            return target
        except FileExistsError:
            continue
        finally:
            Path(tmp).unlink(missing_ok=True)
    raise FileExistsError(f"no free name for {src.name} in {folder}")
