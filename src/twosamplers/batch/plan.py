"""From a jobs file to the list of renders still to do: validate every job, name outputs by hash, skip done ones.

A job's output is `DIR/<first 20 hex digits of its hash>.png` (a workflow line's: `<hash20>-<node>-<k>.<ext>`,
one per file it writes); the hash covers the normalised settings and the input files' contents, so the same job
always maps to the same files and a changed mask maps to new ones. A job is done when its files are complete
and carry the job's hash (`done_outputs`): that check, not the manifest, decides what is skipped, so a batch
killed between writing an output and recording it loses nothing.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from . import adapter
from .jobs_file import parse_lines

HASH_CHARS = adapter.HASH_CHARS
LOCK_NAME = ".batch.lock"


@dataclass
class Task:
    line: int  # the jobs file line it came from (the first one, when lines repeat a job)
    job: adapter.BatchJob
    output: str  # file name inside the batch folder (a workflow line's: a pattern, `<hash20>-*`)
    attempts: int = 0
    outputs: list[str] | None = None  # the files found when the job was already done

    @property
    def digest(self) -> str:
        return self.job.digest


def output_name(job) -> str:
    return job.output


def plan(text: str, base_dir: str | os.PathLike, workflow_defaults: dict | None = None, allow_pickle: bool = False
         ) -> tuple[list[Task], list[str], int]:
    """(tasks in file order without duplicates, errors as "line N: reason", number of duplicate jobs).
    `workflow_defaults`: fields a workflow line takes when it does not give them (batch's --models, ...). A line
    is someone else's document: the files and folders it names (in every region too) must lie inside `base_dir`
    (the jobs file's folder) or one of the `workflow_defaults` folders the user gave on the command line.
    `allow_pickle`: the batch's --allow-pickle (lines may then load pickle files)."""
    roots = (Path(base_dir).resolve(), *(Path(v) for v in (workflow_defaults or {}).values() if v))
    lines, errors = parse_lines(text, adapter.list_fields(), adapter.nested_fields(), adapter.nested_list_fields())
    tasks: dict[str, Task] = {}
    seen_errors: set[tuple[int, str]] = set()
    duplicates = 0
    for line in lines:
        try:
            fields = line.fields
            if workflow_defaults and isinstance(fields, dict) and "workflow" in fields:
                fields = {**workflow_defaults, **fields}
            job = adapter.parse(fields, base_dir, roots, allow_pickle)
        except (ValueError, TypeError, FileNotFoundError, OSError, RecursionError, MemoryError) as e:
            msg = " ".join(str(e).split()) or type(e).__name__
            if (line.number, msg) not in seen_errors:  # a grid repeats its line's error once per job
                seen_errors.add((line.number, msg))
                errors.append(f"line {line.number}: {msg}")
            continue
        if job.digest in tasks:
            duplicates += 1
            continue
        tasks[job.digest] = Task(line.number, job, output_name(job))
    errors.sort(key=lambda e: int(e.split(":", 1)[0].split()[1]))
    return list(tasks.values()), errors, duplicates


def split_done(tasks: list[Task], folder: Path) -> tuple[list[Task], list[Task]]:
    """(to do, already done) by looking at the outputs themselves."""
    todo, done = [], []
    names = {p.name for p in folder.iterdir() if p.is_file()}
    for t in tasks:
        t.outputs = t.job.done_outputs(folder, names)
        (todo if t.outputs is None else done).append(t)
    return todo, done


class FolderLock:
    """One batch per output folder at a time (an advisory lock the OS drops when the process dies)."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK_NAME
        self._fd = None

    def __enter__(self):
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:  # never through a symbolic link (a planted one would make us create a file at its target)
            self._fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ValueError(f"the batch lock {self.path} is a symbolic link; remove it (a batch never follows "
                                 "one there)") from None
            raise
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            os.close(self._fd)
            raise ValueError(f"the batch lock {self.path} is not an ordinary file; remove it")
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise ValueError(f"another batch is writing to {self.path.parent} (lock {self.path})") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


# the temporary files `_files.atomic_write_all` makes for a batch's own outputs: "." + an output name (20 hex
# digits, then ".png" or a workflow line's "-<node>-<k>.<ext>") + "." + mkstemp's 8 random characters + ".tmp"
OWN_TEMPORARY = re.compile(r"\.[0-9a-f]{" + str(adapter.HASH_CHARS)
                           + r"}(\.png|-[A-Za-z0-9_]+-\d+\.[A-Za-z0-9]+)\.[a-z0-9_]{8}\.tmp")


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files a killed batch left (only under the lock): only its own, recognised by their
    names (and only ordinary files); any other file in the folder, whatever its name, is the user's."""
    n = 0
    for p in folder.iterdir():
        if OWN_TEMPORARY.fullmatch(p.name) and stat.S_ISREG(os.lstat(p).st_mode):
            p.unlink(missing_ok=True)
            n += 1
    return n
