"""The batch driver: plan, hand jobs to workers (local processes or Ray actors), write what comes back.

Only the driver writes into the batch folder: workers return output bytes, the driver writes each output
atomically, then appends its manifest record. Workers pull: whenever one is free it gets the next job, the
ones for the model it already holds first, so fast workers take more and models are loaded as few times as
possible. A failed job is retried (`retries` times) and then recorded in failures.jsonl; the others go on.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .manifest import FAILURES, MANIFEST, Journal, now, read_records
from .plan import FolderLock, Task, plan, remove_stale_temporaries, split_done
from .scheduler import Scheduler


class BatchInputError(ValueError):
    """The jobs file has bad lines; nothing was run. `errors` lists them as "line N: reason"."""

    def __init__(self, errors: list[str]):
        super().__init__(f"{len(errors)} bad job line(s)")
        self.errors = errors


@dataclass
class BatchResult:
    total: int  # distinct jobs in the file
    skipped: int  # already done before this run
    rendered: int  # done by this run
    failed: list[dict] = field(default_factory=list)  # failure records (after retries)
    seconds: float = 0.0
    duplicates: int = 0


def _record_found(done: list[Task], folder: Path) -> None:
    """Outputs that exist but have no manifest record (killed between the write and the record) get one."""
    recorded = {r.get("job") for r in read_records(folder / MANIFEST)}
    journal = Journal(folder / MANIFEST)
    try:
        for t in done:
            if t.digest not in recorded:
                names = t.outputs or [t.output]
                journal.append({"job": t.digest, "line": t.line, "output": names[0], "outputs": names, "time": now(),
                                "worker": None, "status": "found", "settings": t.job.to_dict()})
    finally:
        journal.close()


def _check_journals(folder: Path) -> None:
    """Before any work: the journals are ordinary files (or not there yet), never a link a batch would follow."""
    for name in (MANIFEST, FAILURES):
        p = folder / name
        if p.is_symlink() or (p.exists() and not p.is_file()):
            raise ValueError(f"{p} is {'a symbolic link' if p.is_symlink() else 'not an ordinary file'}; "
                             "remove it (a batch appends only to its own ordinary files)")


def run_batch(source: str, out_dir: str | os.PathLike, *, workers: int | None = None, ray: str | bool | None = None,
              retries: int = 0, quiet: bool = False, threads: int | None = None, text: str | None = None,
              base_dir: str | os.PathLike | None = None, workflow_defaults: dict | None = None,
              allow_pickle: bool = False) -> BatchResult:
    """Run a jobs file (`-` for stdin, or `text` + `base_dir`) into `out_dir`.

    `workers`: local worker processes (default: one per CPU core, at most the number of jobs), or with `ray` the
    number of actors (default: one per GPU of the cluster, else one per CPU). `ray`: False/None for local
    processes, True to start or join a cluster (`RAY_ADDRESS` is honoured), or a cluster address.
    `workflow_defaults`: `models` / `comfyui` / `input_dir` (absolute paths) for workflow lines without them;
    lines name files only inside the jobs file's folder and these. `allow_pickle`: lines may load pickle files
    (weights only). Raises BatchInputError (nothing run) when any line is bad.
    """
    from .jobs_file import read_jobs_text

    if retries < 0:
        raise ValueError(f"retries={retries} is out of range (>= 0)")
    if workers is not None and workers < 1:
        raise ValueError(f"workers={workers} is out of range (>= 1)")
    if text is None:
        text, folder_of_jobs = read_jobs_text(source)
    else:
        folder_of_jobs = Path(base_dir or ".")
    t0 = time.perf_counter()
    tasks, errors, duplicates = plan(text, folder_of_jobs, workflow_defaults, allow_pickle)
    if errors:
        raise BatchInputError(errors)
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"the batch output folder {folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    with FolderLock(folder):
        _check_journals(folder)
        remove_stale_temporaries(folder)
        todo, done = split_done(tasks, folder)
        _record_found(done, folder)
        result = BatchResult(total=len(tasks), skipped=len(done), rendered=0, duplicates=duplicates)
        if todo:
            progress = None
            if not quiet and sys.stderr.isatty():
                from tqdm import tqdm

                progress = tqdm(total=len(todo), unit="job", desc="batch", dynamic_ncols=True)
            scheduler = Scheduler(todo, folder, retries, progress)
            try:
                if ray:
                    from .ray_runner import run_ray

                    run_ray(scheduler, None if ray is True else str(ray), actors=workers, threads=threads)
                else:
                    from .pool import run_local

                    run_local(scheduler, workers=workers, threads=threads)
            finally:
                scheduler.close()
                if progress is not None:
                    progress.close()
            result.rendered, result.failed = scheduler.rendered, scheduler.failed
    result.seconds = time.perf_counter() - t0
    return result
