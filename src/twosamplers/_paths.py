"""Paths checked before any work.

Outputs: every target can be written, is an ordinary file (or does not exist yet), and no two outputs, and no
output and input, are the same file. Inputs: a file is read only when it is an ordinary file (`regular_file`,
`open_regular`: a FIFO, a device such as /dev/zero or a folder would hang or never end), and a name that an
untrusted input gives (a workflow's lora_name, a prompt's <lora:NAME>, a batch line's file) stays inside the
folder it is looked up in (`name_in_folder`, `inside`).

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


def _kind(mode: int) -> str:
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")


def regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """`path` when it is an ordinary file (symbolic links followed); FileNotFoundError when it does not exist,
    ValueError when it is a folder, FIFO, device or socket (reading those hangs or never ends)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise ValueError(f"{what} {path}: cannot be inspected ({getattr(e, 'strerror', None) or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} {path} is {_kind(st.st_mode)}, not an ordinary file")
    return Path(path)


def open_regular(path: str | os.PathLike, what: str = "file"):
    """Open an ordinary file for reading (binary). The file type is checked on the opened descriptor, and the
    open itself cannot block on a FIFO, so a file swapped after a check is refused too."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{what} {path}: cannot be opened ({getattr(e, 'strerror', None) or e})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ValueError(f"{what} {path} is {_kind(st.st_mode)}, not an ordinary file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular(path: str | os.PathLike, what: str = "file", limit: int | None = None) -> bytes:
    """The bytes of an ordinary file (`open_regular`); ValueError when it is larger than `limit`."""
    with open_regular(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        if limit is not None and size > limit:
            raise ValueError(f"{what} {path} is {size} bytes; at most {limit} are read")
        return f.read() if limit is None else f.read(limit + 1)


def name_in_folder(name: str, folder: str | os.PathLike, what: str = "file") -> Path:
    """`folder / name` for a name an untrusted input gives: a relative path without '..', '~', a drive or a NUL
    (backslashes count as separators). A symbolic link the user put inside the folder is the user's choice and
    is followed."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} must be a non-empty name, got {name!r}")
    unix = name.replace("\\", "/")
    parts = unix.split("/")
    if ("\0" in name or unix.startswith(("/", "~")) or ".." in parts
            or (len(name) > 1 and name[1] == ":" and name[0].isalpha())):
        raise ValueError(f"{what} {name!r} must be a name inside {folder} (no absolute path, no '..', no '~')")
    return Path(folder) / Path(*[p for p in parts if p not in ("", ".")] or ["."])


def inside(path: str | os.PathLike, roots, what: str = "file") -> Path:
    """`path` (absolute, or relative to the first root) when it lies inside one of `roots`: by its name, once '.'
    and '..' are resolved (a symbolic link the user put inside a root is the user's choice and is followed), or
    by its real location. ValueError naming the roots otherwise."""
    roots = [Path(r) for r in roots if r is not None]
    p = Path(path)
    if "\0" in str(p):
        raise ValueError(f"{what} {path!r}: a path cannot hold a NUL character")
    if not p.is_absolute():
        if not roots:
            raise ValueError(f"{what} {path}: a relative path needs a folder to be relative to")
        p = roots[0] / p
    named = os.path.normpath(os.path.abspath(p))
    real = os.path.realpath(p)
    for r in roots:
        for base, candidate in ((os.path.normpath(os.path.abspath(r)), named), (os.path.realpath(r), named),
                                (os.path.realpath(r), real)):
            if candidate == base or candidate.startswith(base.rstrip(os.sep) + os.sep):
                return Path(named)
    shown = ", ".join(str(r) for r in roots) or "no folder"
    raise ValueError(f"{what} {path} is outside the folders it may name files in ({shown})")


__all__ = ["PathError", "check_output", "check_outputs", "inside", "name_in_folder", "open_regular", "read_regular",
           "regular_file", "resolve_output"]
