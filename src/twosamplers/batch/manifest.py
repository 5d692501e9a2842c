"""The batch folder's records: `manifest.jsonl` (job -> output, time, worker) and `failures.jsonl`.

Both are append-only JSON Lines, one record per finished (or failed) job, flushed and fsynced before the next
job is handed out, so a batch killed at any moment loses at most the record being written. A torn last line is
skipped when reading and the next append starts on a fresh line.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from pathlib import Path

MANIFEST = "manifest.jsonl"
FAILURES = "failures.jsonl"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON Lines file; unreadable lines (a torn last write) are skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    if path.is_symlink():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _ends_torn(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


class Journal:
    """An append-only JSON Lines file that survives being killed mid-write."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file = None

    def append(self, record: dict) -> None:
        if self._file is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            try:  # never through a symbolic link planted in the batch folder
                fd = os.open(self.path, flags, 0o644)
            except OSError as e:
                raise OSError(e.errno, f"cannot open {self.path} for appending ({e.strerror}; a symbolic link there "
                              "is never followed)") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(errno.EINVAL, f"{self.path} is not an ordinary file")
            torn = _ends_torn(self.path)
            self._file = os.fdopen(fd, "a", encoding="utf-8")  # kept open for the batch
            if torn:
                self._file.write("\n")
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
