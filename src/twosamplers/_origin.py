"""Which PNGs this user wrote: an HMAC over a PNG's settings, with a key only this user can read.

A PNG's settings name files (the start image, region masks, LoRAs, ControlNet hints, folders). A PNG made by
someone else is untrusted input and must not choose the files that are read; a PNG this user rendered on this
machine must still re-render with `--from` exactly as before. Every PNG twosamplers writes with settings carries
`twosamplers-origin`: HMAC-SHA256 of its settings text and of every other text chunk (each region's embedded
mask, ...; `imageio.png_is_ours`) under a random per-user key, kept at
`$TWOSAMPLERS_KEY_FILE`, else `$XDG_CONFIG_HOME/twosamplers/png-origin.key` (default `~/.config/...`), created
0600 on first use and only used when it is an ordinary file of this user that nobody else can write. Another
machine or user cannot produce the tag, so their PNGs count as someone else's. Without a usable key (a
read-only home) nothing is tagged and every PNG counts as someone else's: the safe side.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import threading
from pathlib import Path

ORIGIN_KEY = "twosamplers-origin"  # the PNG text chunk holding the tag
_LOCK = threading.Lock()
_CACHE: dict[str, bytes | None] = {}


def key_path() -> Path:
    env = os.environ.get("TWOSAMPLERS_KEY_FILE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "twosamplers" / "png-origin.key"


def _read_key(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077
                or st.st_size != 32):
            return None
        return os.read(fd, 32)
    finally:
        os.close(fd)


def _make_key(path: Path) -> bytes | None:
    """Make the key file, publishing it only once complete: worker processes that start together (a batch's
    first run) must never read a half-written key, or one of them would tag nothing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError:
        return None
    try:
        try:
            os.write(fd, secrets.token_bytes(32))
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails, leaving the winner's key in place, when another process was first
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: rename, unless a key appeared meanwhile
            if not os.path.lexists(path):
                os.rename(tmp, path)
    except OSError:
        return None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return _read_key(path)


def key(create: bool = True) -> bytes | None:
    """This user's key (made on first use when `create`), or None when there is no usable one."""
    path = key_path()
    with _LOCK:
        k = _CACHE.get(str(path))
        if k is None:
            k = _read_key(path) or (_make_key(path) if create else None)
            if k is not None:
                _CACHE[str(path)] = k
        return k


def tag(*parts: str) -> str | None:
    """The origin tag of a PNG's settings texts, or None without a usable key."""
    k = key()
    if k is None:
        return None
    msg = b"twosamplers-png-origin-v1" + b"".join(b"\0" + p.encode("utf-8") for p in parts)
    return hmac.new(k, msg, hashlib.sha256).hexdigest()


def is_ours(stored_tag: str | None, *parts: str) -> bool:
    """Whether `stored_tag` is this user's tag of `parts` (constant-time comparison)."""
    if not isinstance(stored_tag, str):
        return False
    k = key(create=False)
    if k is None:
        return False
    msg = b"twosamplers-png-origin-v1" + b"".join(b"\0" + p.encode("utf-8") for p in parts)
    return hmac.compare_digest(stored_tag, hmac.new(k, msg, hashlib.sha256).hexdigest())


__all__ = ["ORIGIN_KEY", "is_ours", "key", "key_path", "tag"]
