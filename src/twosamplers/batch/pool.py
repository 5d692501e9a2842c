"""Local worker processes: each loads a model once and renders job after job with it.

One pipe per worker, one job in flight per worker: the driver always knows which job a worker holds, so a
worker that dies (killed, out of memory) costs exactly that job, which is retried or recorded as failed, and a
fresh worker takes its place. Workers are started with "spawn" (no forked torch state) and ignore Ctrl-C: the
driver stops them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import wait

from .plan import Task
from .scheduler import Outcome, Scheduler


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def default_threads(workers: int) -> int:
    """Torch threads per worker: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // workers)


class WorkerState:
    """A worker's model cache, holding the model of the jobs it is doing (jobs arrive grouped by model)."""

    def __init__(self, device: str | None = None):
        from ..job import ModelCache

        self.cache, self.device, self.model_key = ModelCache(), device, None
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.label = "cpu" if device is None else f"{device} (CUDA_VISIBLE_DEVICES={visible})" if visible else device

    def cache_for(self, job):
        if job.model_key != self.model_key:  # another model: free the last one first (GPU memory)
            self.cache.clear()
            self.model_key = job.model_key
        return self.cache


def render_one(job, inputs, state: WorkerState) -> Outcome:
    """Render one job in a worker; any error becomes a failed Outcome (the worker goes on)."""
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        outputs = job.render(inputs, state.cache_for(job), device=state.device)
        return Outcome(True, outputs, None, worker_name(), time.perf_counter() - t0, time.process_time() - c0,
                       state.label)
    except Exception as e:  # a job's failure is recorded, never fatal to the batch
        msg = " ".join(str(e).split()) or type(e).__name__
        return Outcome(False, None, f"{type(e).__name__}: {msg}", worker_name(), time.perf_counter() - t0)


def _worker_main(conn, threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)
    state = WorkerState()
    try:
        while (msg := conn.recv()) is not None:
            conn.send(render_one(*msg, state))
    except (EOFError, BrokenPipeError):  # the driver is gone: nobody wants the result
        return


@dataclass
class _Slot:
    proc: mp.Process
    conn: object
    task: Task | None = None
    model: str | None = None


def run_local(scheduler: Scheduler, workers: int | None = None, threads: int | None = None) -> None:
    """Run the scheduler's tasks on `workers` local processes (default: one per core, at most one per job)."""
    n = min(workers or os.cpu_count() or 1, scheduler.remaining())
    threads = threads or default_threads(n)
    ctx = mp.get_context("spawn")

    def start() -> _Slot:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child, threads), daemon=True, name="twosamplers-batch")
        proc.start()
        child.close()
        return _Slot(proc, parent)

    slots = [start() for _ in range(n)]
    try:
        while True:
            _hand_out(slots, scheduler, start)
            busy = [s for s in slots if s.task is not None]
            if not busy:
                if scheduler.remaining() and not slots:  # every worker died: start one for what is left
                    slots.append(start())
                    continue
                break
            ready = set(wait([s.conn for s in busy] + [s.proc.sentinel for s in busy]))
            for slot in list(slots):
                if slot.task is None or (slot.conn not in ready and slot.proc.sentinel not in ready):
                    continue
                outcome = None
                try:
                    if slot.conn.poll():
                        outcome = slot.conn.recv()
                except (EOFError, OSError):
                    outcome = None
                if outcome is None and slot.proc.is_alive():
                    continue
                task, slot.task = slot.task, None
                if outcome is None:  # the worker died with the job: record it, replace the worker
                    slot.proc.join(5)
                    outcome = Outcome(False, None, f"worker process died (exit code {slot.proc.exitcode})",
                                      f"{socket.gethostname()}:{slot.proc.pid}", 0.0)
                    slot.conn.close()
                    slots.remove(slot)
                scheduler.finish(task, outcome)
                if len(slots) < n and scheduler.remaining() > sum(s.task is None for s in slots):
                    slots.append(start())
    finally:
        _stop(slots)


def _hand_out(slots: list[_Slot], scheduler: Scheduler, start) -> None:
    """Give every idle worker a job (one for the model it holds first)."""
    for i, slot in enumerate(slots):
        while slot.task is None:
            task = scheduler.next_task(slot.model)
            if task is None:
                return
            try:
                inputs = scheduler.inputs(task)
            except (ValueError, OSError) as e:
                scheduler.finish(task, Outcome(False, None, str(e), "driver", 0.0))
                continue
            try:
                slot.conn.send((task.job, inputs))
            except OSError:  # the worker died while idle: the job goes back, a new worker takes the slot
                scheduler.give_back(task)
                slot.conn.close()
                slot.proc.join(1)
                slot = slots[i] = start()
                continue
            slot.task, slot.model = task, task.job.model_key


def _stop(slots: list[_Slot]) -> None:
    for slot in slots:
        if slot.proc.is_alive() and slot.task is None:
            try:
                slot.conn.send(None)
            except OSError:
                pass
    for slot in slots:
        slot.proc.join(2 if slot.task is None else 0)
        if slot.proc.is_alive():
            slot.proc.terminate()
            slot.proc.join(2)
        if slot.proc.is_alive():
            slot.proc.kill()
            slot.proc.join()
