"""The driver's side of the pull protocol: `Scheduler` hands out tasks (the ones for the model a worker holds
first), receives each `Outcome` (what a worker sends back), writes the job's files into the batch folder and
records them in the manifest, or retries / records the failure. Workers (`pool`, `ray_runner`) see only this.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

from .._files import atomic_write_all
from . import adapter
from .manifest import FAILURES, MANIFEST, Journal, now
from .plan import Task


@dataclass
class Outcome:
    """What a worker sends back for one job."""

    ok: bool
    outputs: dict[str, bytes] | None
    error: str | None
    worker: str
    seconds: float
    cpu_seconds: float = 0.0  # the worker process's CPU time for the job (all its threads)
    device: str | None = None  # where it rendered: "cpu", or "cuda (CUDA_VISIBLE_DEVICES=1)" on a Ray GPU actor


class Scheduler:
    """The driver's side of the pull protocol: hands out tasks, receives outcomes, writes and records them."""

    def __init__(self, tasks: list[Task], folder: Path, retries: int, progress=None):
        self.queues: OrderedDict[str, deque[Task]] = OrderedDict()
        for t in tasks:
            self.queues.setdefault(t.job.model_key, deque()).append(t)
        self.folder, self.retries, self.progress = folder, retries, progress
        self.manifest, self.failures = Journal(folder / MANIFEST), Journal(folder / FAILURES)
        self.rendered, self.failed = 0, []

    def remaining(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def next_task(self, model_key: str | None = None) -> Task | None:
        """The next job, one for `model_key` (the model the asking worker holds) if any is left."""
        if model_key in self.queues and self.queues[model_key]:
            q = self.queues[model_key]
        else:
            q = max(self.queues.values(), key=len, default=None)  # the biggest group: fewest model switches
            if not q:
                return None
        task = q.popleft()
        task.attempts += 1
        return task

    def give_back(self, task: Task) -> None:
        """A task that never reached a worker: first in line again, the attempt not counted."""
        task.attempts -= 1
        self.queues.setdefault(task.job.model_key, deque()).appendleft(task)

    def inputs(self, task: Task) -> dict[str, bytes]:
        """The task's input files as bytes, checked against the hashes taken when the batch was validated."""
        return task.job.read_inputs()

    def finish(self, task: Task, outcome: Outcome) -> None:
        names = list(outcome.outputs or ()) if outcome.ok else []
        if outcome.ok:
            try:
                write_outputs(self.folder, task, outcome.outputs)
            except (OSError, ValueError) as e:
                outcome = Outcome(False, None, f"writing {task.output}: {e}", outcome.worker, outcome.seconds)
        if outcome.ok:
            self.manifest.append({"job": task.digest, "line": task.line, "output": names[0], "outputs": names,
                                  "time": now(),
                                  "seconds": round(outcome.seconds, 3),
                                  "cpu_seconds": round(outcome.cpu_seconds, 3), "worker": outcome.worker,
                                  "device": outcome.device,
                                  "attempts": task.attempts, "status": "done", "settings": task.job.to_dict()})
            self.rendered += 1
            self._tick()
            return
        if task.attempts <= self.retries:
            self.queues.setdefault(task.job.model_key, deque()).append(task)
            return
        rec = {"job": task.digest, "line": task.line, "output": task.output, "time": now(), "error": outcome.error,
               "worker": outcome.worker, "attempts": task.attempts, "settings": task.job.to_dict()}
        self.failures.append(rec)
        self.failed.append(rec)
        self._tick()

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress.update(1)
            if self.failed:
                self.progress.set_postfix(failed=len(self.failed))

    def close(self) -> None:
        self.manifest.close()
        self.failures.close()


def write_outputs(folder: Path, task: Task, outputs: dict[str, bytes]) -> None:
    """A job's files, all written before any is renamed into place (`atomic_write_all`). A worker only names
    files of its own job: the job's output name, or `<hash20>-...` for a workflow line."""
    prefix = task.digest[:adapter.HASH_CHARS] + "-"
    if not outputs:
        raise ValueError("the job returned no file")
    for name in outputs:
        if not (name == task.output or name.startswith(prefix)) or "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"a worker returned the file name {name!r}, which is not one of job {task.digest[:20]}'s")
    atomic_write_all([(folder / name, lambda tmp, data=data: Path(tmp).write_bytes(data))
                      for name, data in outputs.items()])


__all__ = ["Outcome", "Scheduler", "write_outputs"]
