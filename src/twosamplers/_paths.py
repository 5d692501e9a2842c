"""Output paths checked before any work: every target can be written, is an ordinary file (or does not exist yet),
and no two outputs, and no output and input, are the same file.

Errors carry the user's own name for the path (`PathError.field`, e.g. "output") and the path as typed, never
a resolved or temporary path. A symbolic link as an output means the file it points to: `resolve_output` gives
the path that is written (the link stays and shows the new content).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


class PathError(ValueError):
    """A bad output path; `field` names the input the user gave it through."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def resolve_output(path: str | os.PathLike) -> Path:
    """The file an output path writes: a symbolic link is followed to its target (which may not exist yet)."""
    p = Path(path)
    return Path(os.path.realpath(p)) if p.is_symlink() else p


def _identity(path: str | os.PathLike) -> tuple:
    """Two paths with one identity are one file: (device, inode) when it exists, else the resolved path."""
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))


def check_output(field: str, path: str | os.PathLike) -> None:
    """One output path: not empty, not a folder, not a device/FIFO/socket, its folder exists and takes a new file."""
    typed = str(path)
    if not typed:
        raise PathError(field, "the path is empty")
    target = resolve_output(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise PathError(field, f"{typed}: cannot be inspected ({e.strerror})") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise PathError(field, f"{typed} is a folder; give a file name")
        if not stat.S_ISREG(st.st_mode):
            kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                    or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a file")
            raise PathError(field, f"{typed} is {kind}, not an ordinary file; outputs are replaced whole, "
                            "so give a file name")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise PathError(field, f"the folder of {typed} does not exist")
    try:  # the real test (permissions, read-only file systems, quotas): make and remove a file there
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PathError(field, f"cannot write in the folder of {typed} ({e.strerror})") from None


def check_outputs(outputs: dict[str, str | os.PathLike | None],
                  inputs: dict[str, str | os.PathLike | None] | None = None) -> None:
    """Every output (field -> path; None = not asked for) passes `check_output`, and no two of them and no output
    and input (field -> path) are the same file (hard links and symbolic links included)."""
    seen: dict[tuple, tuple[str, str]] = {}
    for field, path in (inputs or {}).items():
        if path is not None and os.path.exists(path):
            seen.setdefault(_identity(path), (field, str(path)))
    inputs_seen = dict(seen)
    for field, path in outputs.items():
        if path is None:
            continue
        check_output(field, path)
        key = _identity(resolve_output(path))
        if key in seen:
            other, other_path = seen[key]
            what = "an input" if key in inputs_seen else "another output"
            raise PathError(field, f"{path} is the same file as {other} {other_path} ({what}); give another name")
        seen[key] = (field, str(path))


__all__ = ["PathError", "check_output", "check_outputs", "resolve_output"]
