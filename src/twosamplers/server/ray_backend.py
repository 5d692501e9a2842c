"""`twosamplers serve --ray ADDRESS`: queued prompts run on Ray actors (the batch machinery's placement: one
actor per GPU, else per CPU slot), results back through the same history and websocket.

Each actor keeps its models loaded and its node cache between prompts (a `LocalRunner` in the actor's process,
reading models from the same `--models` / `--comfyui` paths on its node). The server keeps one worker thread per
actor, so up to one prompt per actor runs at a time. What crosses the wire: the prompt and the bytes of the
input-folder files it reads going out; the websocket events (node started, sampler steps, previews) polled
every POLL_S while it runs; the output files' bytes coming back, which the server writes into its own output
folder (atomically, numbered after the highest existing file, prompt embedded: the same bytes as a local run).
`POST /interrupt` reaches the actor through a second, concurrent method call.
"""

from __future__ import annotations

import re
import tempfile
import threading
from pathlib import Path

from .._files import atomic_write
from ..nodes.folders import Folders, PendingWrite
from ..nodes.registry import NODES
from .state import QueueItem
from .worker import Interrupted, LocalRunner, Session, ui_of_files

POLL_S = 0.05
COUNTER = re.compile(r"^(.*)_(\d{5,})_(\.[^.]+)$")


class _Recorder:
    """The actor's stand-in for the server's Session: it records the events for the server to replay."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.lock = threading.Lock()
        self.cached: list[str] = []
        self.node: str | None = None

    def _add(self, *event) -> None:
        with self.lock:
            self.events.append(event)

    def take(self) -> list[tuple]:
        with self.lock:
            out, self.events = self.events, []
        return out

    def message(self, event: str, data: dict, broadcast: bool = False) -> None:
        self._add("message", event, data, broadcast)

    def executing(self, nid) -> None:
        self.node = nid
        self._add("executing", nid)

    def progress(self, value: int, total: int, node=None) -> None:
        self._add("progress", value, total)

    def preview(self, jpeg: bytes) -> None:
        self._add("preview", jpeg)

    def done_node(self) -> None:
        self._add("done_node")


class ServeActor:
    """Lives in a Ray worker process (created with max_concurrency=2: `interrupt` and `events` answer while
    `run` works)."""

    def __init__(self, where: dict, preview_method: str, threads: int) -> None:
        import torch

        from ..batch.ray_runner import actor_device

        torch.set_num_threads(threads)
        self.root = Path(tempfile.mkdtemp(prefix="twosamplers-serve-actor-"))
        device = actor_device()
        opts = {k: v for k, v in (("device", device), ("dtype", where.get("dtype"))) if v is not None}
        folders = Folders.create(where.get("models"), comfyui=where.get("comfyui"), input_dir=self.root / "input",
                                 extra_model_paths=where.get("extra_model_paths"), load_options=opts)
        self.runner = LocalRunner(folders, self.root / "temp", preview_method)
        self.item: QueueItem | None = None
        self.recorder = _Recorder()

    def run(self, prompt_id: str, prompt: dict, extra_data: dict, inputs: dict[str, bytes]) -> dict:
        """Run one prompt -> {"outputs": {node: [(kind, subfolder, filename, bytes)]}} or {"error": ...}."""
        folders = self.runner.folders
        for name, data in inputs.items():
            p = folders.input_dir / name
            p.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(p, lambda tmp, data=data: Path(tmp).write_bytes(data))
        folders.output_dir = Path(tempfile.mkdtemp(prefix="out-", dir=self.root))
        self.item = QueueItem(0, prompt_id, prompt, extra_data, [])
        self.recorder = _Recorder()
        try:
            uis = self.runner.run(self.item, self.recorder)
        except Interrupted:
            return {"interrupted": True, "node": self.recorder.node}
        except Exception as e:  # the server reports it as execution_error
            return {"error": " ".join(str(e).split()) or type(e).__name__,
                    "type": f"{type(e).__module__}.{type(e).__qualname__}", "node": self.recorder.node}
        out = {}
        for nid, ui in uis.items():
            files = []
            for items in ui.values():
                for it in items:
                    base = folders.output_dir if it["type"] == "output" else self.runner.temp_dir
                    path = base / it["subfolder"] / it["filename"]
                    files.append((it["type"], it["subfolder"], it["filename"], path.read_bytes()))
            out[nid] = files
        return {"outputs": out}

    def events(self) -> list[tuple]:
        return self.recorder.take()

    def interrupt(self) -> None:
        if self.item is not None:
            self.item.interrupt.set()

    def free(self, unload_models: bool) -> None:
        self.runner.free(unload_models)


class RayRunner:
    """The server side of one actor: `run(item, session)` like LocalRunner.run."""

    def __init__(self, ray, handle, folders: Folders, temp_dir: Path) -> None:
        self.ray, self.handle, self.folders, self.temp_dir = ray, handle, folders, Path(temp_dir)

    def run(self, item: QueueItem, session: Session) -> dict[str, dict]:
        ref = self.handle.run.remote(item.prompt_id, item.prompt, item.extra_data, self._inputs(item.prompt))
        asked = False
        while True:
            ready, _ = self.ray.wait([ref], timeout=POLL_S)
            if item.interrupt.is_set() and not asked:
                self.handle.interrupt.remote()
                asked = True
            self._replay(self.ray.get(self.handle.events.remote()), session)
            if ready:
                break
        result = self.ray.get(ref)
        self._replay(self.ray.get(self.handle.events.remote()), session)
        if result.get("interrupted"):
            raise Interrupted("interrupted")
        if "error" in result:
            raise RemoteError(result["error"], result["type"])
        return {nid: self._store(files) for nid, files in result["outputs"].items()}

    def _inputs(self, prompt: dict) -> dict[str, bytes]:
        files = {}
        for node in prompt.values():
            for name in getattr(NODES.get(node["class_type"]), "INPUT_FILES", ()):
                value = node["inputs"].get(name)
                if isinstance(value, str):
                    path = self.folders.input_path(value)
                    files[path.relative_to(self.folders.input_dir).as_posix()] = path.read_bytes()
        return files

    @staticmethod
    def _replay(events: list[tuple], session: Session) -> None:
        for kind, *args in events:
            if kind == "message":
                event, data, broadcast = args
                data = {k: v for k, v in data.items() if k != "timestamp"}
                if event == "execution_cached":
                    session.cached = list(data.get("nodes", []))
                session.message(event, data, broadcast)
            elif kind == "executing":
                session.executing(*args)
            elif kind == "progress":
                session.progress(*args)
            elif kind == "preview":
                session.preview(*args)
            elif kind == "done_node":
                session.done_node()

    def _store(self, files: list[tuple]) -> dict:
        """Write an output node's files here: outputs numbered as the local runner numbers them, temp as is."""
        written: dict[str, list[str]] = {"output": [], "temp": []}
        pending = []
        for kind, sub, name, data in files:
            if kind == "temp":
                target = self.temp_dir / sub / name
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(target, lambda tmp, data=data: Path(tmp).write_bytes(data))
                written["temp"].append(str(target))
                continue
            m = COUNTER.match(name)
            stem, ext = (m.group(1), m.group(3)) if m else (Path(name).stem, Path(name).suffix)
            pending.append(PendingWrite(sub, stem, ext.lstrip("."), lambda tmp, data=data: Path(tmp).write_bytes(data)))
        if pending:
            self.folders.defer_writes, self.folders.pending = True, list(pending)
            try:
                written["output"] = [str(it.path) for it in self.folders.commit()]
            finally:
                self.folders.defer_writes, self.folders.pending = False, []
        ui: dict = {}
        for kind in ("output", "temp"):
            root = self.folders.output_dir if kind == "output" else self.temp_dir
            for key, items in ui_of_files(written[kind], root, kind).items():
                ui.setdefault(key, []).extend(items)
        return ui

    def free(self, unload_models: bool) -> None:
        self.ray.get(self.handle.free.remote(unload_models))

    def close(self) -> None:
        try:
            self.ray.kill(self.handle)
        except Exception:  # the cluster is already gone
            pass


class RemoteError(Exception):
    """A prompt that failed on a Ray actor (its one-line message and type name)."""

    def __init__(self, message: str, type_name: str) -> None:
        super().__init__(message)
        self.type_name = type_name


def ray_runners(config, folders: Folders, temp_dir: Path) -> list[RayRunner]:
    """Join (or start) Ray and make one actor per GPU, else per CPU slot (at most config.ray_actors)."""
    from ..batch.ray_runner import _init, actor_count, actor_options

    ray, _started = _init(None if config.ray is True else config.ray)
    resources = ray.cluster_resources()
    n = actor_count(resources, config.ray_actors, 1 << 30)
    where = {"models": _abs(config.models), "comfyui": _abs(config.comfyui),
             "extra_model_paths": _abs(config.extra_model_paths), "dtype": config.dtype}
    remote = ray.remote(ServeActor).options(**actor_options(resources), max_concurrency=2)
    handles = [remote.remote(where, config.preview_method, 1) for _ in range(n)]
    ray.get([h.events.remote() for h in handles])  # started (a model path missing on a node fails here)
    return [RayRunner(ray, h, folders, temp_dir) for h in handles]


def _abs(path) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


__all__ = ["RayRunner", "RemoteError", "ServeActor", "ray_runners"]
