"""The same batch on a Ray cluster: one actor per GPU (else per CPU slot), each holding a loaded model.

The driver keeps `depth` jobs in flight per actor (one rendering, one queued, so an actor never waits for the
driver) and hands a new one to whichever actor finishes: fast workers take more. What crosses the wire is the
job's settings and its input files' bytes going out, and the output PNG's bytes coming back; models load on
the workers from their own paths (built-in models need nothing). The driver writes every output, so no shared
filesystem is needed. Needs the `cluster` extra (`pip install twosamplers[cluster]`).
"""

from __future__ import annotations

import os
import socket

from .scheduler import Outcome, Scheduler


def actor_device() -> str | None:
    """The device an actor renders on: "cuda" when its process sees a GPU, else None (the CPU). An actor created
    with num_gpus=1 sees exactly its own GPU (Ray sets CUDA_VISIBLE_DEVICES to it), so "cuda" is that GPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else None


def actor_options(resources: dict) -> dict:
    """Ray options of one actor: one GPU each on a cluster with GPUs, else one CPU slot each."""
    return {"num_gpus": 1, "num_cpus": 1} if int(resources.get("GPU", 0)) else {"num_cpus": 1}


def actor_count(resources: dict, requested: int | None, jobs: int) -> int:
    """One actor per GPU (each also takes a CPU), else per CPU; `requested` (--workers) lowers that, never
    raises it: an actor the cluster has no room for would wait forever with the jobs handed to it."""
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    slots = min(gpus, cpus) if gpus else cpus
    return max(1, min(requested or slots, slots, jobs))


class RenderActor:
    """Lives in a Ray worker process: renders jobs with a model cache that outlives them."""

    def __init__(self, threads: int):
        import torch

        from .pool import WorkerState

        torch.set_num_threads(threads)
        self.state = WorkerState(actor_device())

    def render(self, job, inputs) -> Outcome:
        from .pool import render_one

        return render_one(job, inputs, self.state)

    def name(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"


def _init(address: str | None):
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local one; True when we started Ray here."""
    try:
        import ray
    except ImportError as e:
        raise ValueError("--ray needs the ray package: pip install 'twosamplers[cluster]'") from e
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError) as e:
        where = address or os.environ.get("RAY_ADDRESS") or "a new local cluster"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot start or join Ray ({where}): {first}") from e
    return ray, True


def run_ray(scheduler: Scheduler, address: str | None = None, actors: int | None = None, threads: int | None = None,
            depth: int = 2) -> None:
    """Run the scheduler's tasks on Ray actors (see the module doc)."""
    ray, started = _init(address)
    try:
        resources = ray.cluster_resources()
        n = actor_count(resources, actors, scheduler.remaining())
        remote_cls = ray.remote(RenderActor).options(**actor_options(resources))
        handles = [remote_cls.remote(threads or 1) for _ in range(n)]
        _drive(ray, scheduler, handles, remote_cls, threads or 1, depth)
        for h in handles:
            ray.kill(h)
    finally:
        if started:
            ray.shutdown()


def _drive(ray, scheduler: Scheduler, handles: list, remote_cls, threads: int, depth: int) -> None:
    inflight: dict = {}  # ObjectRef -> (actor index, task, actor handle)
    models: list[str | None] = [None] * len(handles)
    load = [0] * len(handles)
    while True:
        for i, h in enumerate(handles):
            while load[i] < depth:
                task = scheduler.next_task(models[i])
                if task is None:
                    break
                try:
                    ref = h.render.remote(task.job, scheduler.inputs(task))
                except (ValueError, OSError) as e:
                    scheduler.finish(task, Outcome(False, None, str(e), "driver", 0.0))
                    continue
                inflight[ref] = (i, task, h)
                models[i], load[i] = task.job.model_key, load[i] + 1
        if not inflight:
            return
        ready, _ = ray.wait(list(inflight), num_returns=1)
        for ref in ready:
            i, task, handle = inflight.pop(ref)
            load[i] -= 1
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayActorError as e:  # the actor (or its node) died: replace it
                outcome = Outcome(False, None, f"Ray actor died: {' '.join(str(e).split())[:300]}", "ray", 0.0)
                if handles[i] is handle:
                    handles[i] = remote_cls.remote(threads)
                    models[i] = None
            except ray.exceptions.RayError as e:
                outcome = Outcome(False, None, f"{type(e).__name__}: {' '.join(str(e).split())[:300]}", "ray", 0.0)
            scheduler.finish(task, outcome)
