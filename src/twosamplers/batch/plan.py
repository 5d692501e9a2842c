"""From a jobs file to the list of renders still to do: validate every job, name outputs by hash, skip done ones.

A job's output is `DIR/<first 20 hex digits of its hash>.png` (a workflow line's: `<hash20>-<node>-<k>.<ext>`,
one per file it writes); the hash covers the normalised settings and the input files' contents, so the same job
always maps to the same files and a changed mask maps to new ones. A job is done when its files are complete
and carry the job's hash (`done_outputs`): that check, not the manifest, decides what is skipped, so a batch
killed between writing an output and recording it loses nothing.
"""

from __future__ import annotations

import fcntl
import os
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


def plan(text: str, base_dir: str | os.PathLike, workflow_defaults: dict | None = None
         ) -> tuple[list[Task], list[str], int]:
    """(tasks in file order without duplicates, errors as "line N: reason", number of duplicate jobs).
    `workflow_defaults`: fields a workflow line takes when it does not give them (batch's --models, ...)."""
    lines, errors = parse_lines(text, adapter.list_fields(), adapter.nested_fields(), adapter.nested_list_fields())
    tasks: dict[str, Task] = {}
    seen_errors: set[tuple[int, str]] = set()
    duplicates = 0
    for line in lines:
        try:
            fields = line.fields
            if workflow_defaults and isinstance(fields, dict) and "workflow" in fields:
                fields = {**workflow_defaults, **fields}
            job = adapter.parse(fields, base_dir)
        except (ValueError, TypeError, FileNotFoundError, OSError) as e:
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
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise ValueError(f"another batch is writing to {self.path.parent} (lock {self.path})") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files an atomic write leaves when its process is killed (only under the lock)."""
    n = 0
    for p in folder.glob(".*.*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n
