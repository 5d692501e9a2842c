"""Running queued prompts: one worker thread per device, ComfyUI's websocket messages on the way.

`Session` routes one prompt's messages as ComfyUI's executor does: `execution_start`, `execution_cached`,
`execution_success` and `execution_error` go to the prompt's client only (nowhere without a client id),
`execution_interrupted` to its client or else everyone, `executing` / `executed` only to its client, `progress`
and live previews to its client or else everyone; the lifecycle messages are also recorded in the history's
`status.messages`. `LocalRunner` runs a prompt in this process through the workflow runner (`execute`), with the
models kept loaded in one `ModelCache` and unchanged nodes reused (`NodeCache`); the Ray runner
(`ray_backend.py`) has the same `run(item, session)`. `worker_loop` takes the queue's items one at a time, runs
them, records the history and then sends `executing` with node None, as ComfyUI does when a prompt is done.
"""

from __future__ import annotations

import logging
import secrets
import string
import tempfile
import threading
import time
from pathlib import Path

from ..engine.ksampler import STEP_HOOK
from ..nodes.folders import Folders
from ..nodes.registry import NODES
from ..workflow.execute import execute
from ..workflow.formats import Workflow
from ..workflow.graph import dependency_order
from .cache import NodeCache
from .hub import PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA, Hub
from .preview import encode_preview, preview_image
from .state import PromptQueue, QueueItem

log = logging.getLogger("twosamplers.serve")
PREVIEW_METHODS = ("none", "auto", "latent2rgb")
PREVIEW_EVERY_S = 0.25
IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg", ".gif")


class Interrupted(Exception):
    """POST /interrupt (or shutdown) stopped the prompt between two steps or two nodes."""


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def now_ms() -> int:
    return int(time.time() * 1000)


class Session:
    """One running prompt: where its messages go, what it has executed, the lifecycle messages for history."""

    def __init__(self, hub: Hub, item: QueueItem) -> None:
        self.hub, self.item = hub, item
        self.sid = item.client_id
        self.messages: list[list] = []
        self.node: str | None = None
        self.executed: list[str] = []
        self.cached: list[str] = []
        self.first_progress: float | None = None
        self.states: dict[str, dict] = {}

    @property
    def prompt_id(self) -> str:
        return self.item.prompt_id

    def message(self, event: str, data: dict, broadcast: bool = False) -> None:
        data = {**data, "timestamp": now_ms()}
        self.messages.append([event, data])
        if self.sid is not None or broadcast:
            self.hub.send(event, data, self.sid)

    def executing(self, nid: str | None) -> None:
        if nid is not None:
            if self.node is not None and self.node not in self.executed:
                self.executed.append(self.node)
            self.node = nid
            self._state(nid, "running", 0, 1)
        self.item.node = nid
        if self.sid is not None:
            data = {"node": nid, "prompt_id": self.prompt_id}
            if nid is not None:
                data["display_node"] = nid
            self.hub.send("executing", data, self.sid)

    def executed_output(self, nid: str, ui: dict) -> None:
        if self.sid is not None:
            self.hub.send("executed", {"node": nid, "display_node": nid, "output": ui, "prompt_id": self.prompt_id},
                          self.sid)

    def progress(self, value: int, total: int, node: str | None = None) -> None:
        if self.first_progress is None:
            self.first_progress = time.perf_counter()
        nid = node or self.node
        if nid is not None:
            self._state(nid, "running", value, total)
        self.hub.send("progress", {"value": value, "max": total, "prompt_id": self.prompt_id, "node": nid},
                      self.sid)

    def _state(self, nid: str, state: str, value, maximum) -> None:
        """ComfyUI 0.30's `progress_state`: every node started so far, running or finished (its editor draws
        the per-node progress bars from it)."""
        self.states[nid] = {"value": value, "max": maximum, "state": state, "node_id": nid,
                            "prompt_id": self.prompt_id, "display_node_id": nid, "parent_node_id": None,
                            "real_node_id": nid}
        self.hub.send("progress_state", {"prompt_id": self.prompt_id, "nodes": dict(self.states)}, self.sid)

    def preview(self, jpeg: bytes) -> None:
        if self.hub.supports(self.sid, "supports_preview_metadata"):
            meta = {"node_id": self.node, "prompt_id": self.prompt_id, "display_node_id": self.node,
                    "parent_node_id": None, "real_node_id": self.node}
            self.hub.send_bytes(PREVIEW_IMAGE_WITH_METADATA, encode_preview(jpeg, meta), self.sid)
        else:
            self.hub.send_bytes(PREVIEW_IMAGE, encode_preview(jpeg), self.sid)

    def done_node(self) -> None:
        if self.node is not None and self.node not in self.executed:
            self.executed.append(self.node)
            done = self.states.get(self.node, {})
            self._state(self.node, "finished", done.get("max", 1), done.get("max", 1))


def prune(prompt: dict, outputs: list[str]) -> dict:
    """The nodes `outputs` need (the whole prompt when every output node runs, as `twosamplers run` embeds it)."""
    all_outputs = {nid for nid, n in prompt.items() if getattr(NODES.get(n["class_type"]), "OUTPUT_NODE", False)}
    if not outputs or set(outputs) == all_outputs:
        return prompt
    keep = set(dependency_order(prompt, list(outputs)))
    return {nid: n for nid, n in prompt.items() if nid in keep}


def extra_pnginfo_workflow(extra_data: dict) -> dict | None:
    info = extra_data.get("extra_pnginfo") if isinstance(extra_data, dict) else None
    wf = info.get("workflow") if isinstance(info, dict) else None
    return wf if isinstance(wf, dict) else None


def ui_of_files(files: list[str], root: Path, kind: str) -> dict:
    """ComfyUI's `ui` of an output node from the files it wrote: {"images": [{filename, subfolder, type}]} (or
    "latents" for .latent files)."""
    ui: dict[str, list] = {}
    for f in files:
        p = Path(f)
        try:
            sub = p.parent.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
        key = "images" if p.suffix.lower() in IMAGE_SUFFIXES else "latents" if p.suffix == ".latent" else "files"
        ui.setdefault(key, []).append({"filename": p.name, "subfolder": "" if sub == "." else sub, "type": kind})
    return ui


class LocalRunner:
    """Runs prompts in this process: one Folders (models loaded once, kept), one NodeCache."""

    def __init__(self, folders: Folders, temp_dir: Path, preview_method: str = "none") -> None:
        self.folders, self.temp_dir, self.preview_method = folders, Path(temp_dir), preview_method
        self.nodes = NodeCache()
        self.lock = threading.Lock()
        self.device = "cpu"

    def free(self, unload_models: bool) -> None:
        with self.lock:
            self.nodes.clear()
            if unload_models and self.folders.cache is not None:
                self.folders.cache.clear()

    def run(self, item: QueueItem, session: Session) -> dict[str, dict]:
        """Run one prompt; returns {output node id: ui}. Raises Interrupted, or the node's error."""
        with self.lock:
            return self._run(item, session)

    def _run(self, item: QueueItem, session: Session) -> dict[str, dict]:
        wf = Workflow(prune(item.prompt, item.outputs), extra_pnginfo_workflow(item.extra_data),
                      f"prompt {item.prompt_id}")
        outputs = [n for n, v in wf.prompt.items() if getattr(NODES.get(v["class_type"]), "OUTPUT_NODE", False)]
        order = dependency_order(wf.prompt, outputs)  # execute() checks the prompt (graph.plan) itself
        sigs = self.nodes.signatures(wf.prompt, order, self.folders)
        known = self.nodes.lookup(wf.prompt, sigs)
        session.cached = list(known)
        session.message("execution_cached", {"nodes": list(known), "prompt_id": item.prompt_id})
        computed: dict[str, tuple] = {}
        last_preview = [0.0]

        def before_node(i, n, nid, class_type):
            if item.interrupt.is_set():
                raise Interrupted("interrupted")
            session.done_node()
            session.executing(nid)

        def on_step(step, total, x0, model):
            if item.interrupt.is_set():
                raise Interrupted("interrupted")
            session.progress(step + 1, total)
            now = time.perf_counter()
            if self.preview_method != "none" and (now - last_preview[0] >= PREVIEW_EVERY_S or step + 1 == total):
                last_preview[0] = now
                session.preview(preview_image(x0, model))

        token = STEP_HOOK.set(on_step)
        try:
            entries = execute(wf, self.folders, progress=before_node, known=known,
                              on_node=lambda nid, out, ui: computed.__setitem__(nid, (out, ui)))
        finally:
            STEP_HOOK.reset(token)
            self.nodes.keep(wf.prompt, sigs, computed)
        session.done_node()
        return {e["node"]: self._ui(e, wf) for e in entries}

    def _ui(self, entry: dict, wf: Workflow) -> dict:
        if entry["files"]:
            return ui_of_files(entry["files"], self.folders.output_dir, "output")
        if entry["class_type"] == "PreviewImage" and entry.get("images") is not None:
            return self._temp_preview(entry["images"], wf)
        return {}

    def _temp_preview(self, images, wf: Workflow) -> dict:
        """PreviewImage: ComfyUI writes it to its temp folder; so do we (SaveImage's writer, prompt embedded)."""
        temp = Folders(output_dir=self.temp_dir)
        suffix = "".join(secrets.choice(string.ascii_lowercase) for _ in range(5))
        extra = {"workflow": wf.ui} if wf.ui is not None else {}
        files = []
        for batch in images if isinstance(images, list) else [images]:  # a list of images of different sizes
            result = NODES["SaveImage"](temp).save_images(batch, f"ComfyUI_temp_{suffix}", prompt=wf.prompt,
                                                          extra_pnginfo=extra)
            files += [str(it.path) for it in result["ui"]["images"]]
        return ui_of_files(files, self.temp_dir, "temp")


def run_item(queue: PromptQueue, runner, hub: Hub, item: QueueItem) -> Session:
    """Run one taken item to the end: messages, history, the final `executing` None."""
    session = Session(hub, item)
    session.message("execution_start", {"prompt_id": item.prompt_id})
    outputs, ok = {}, False
    try:
        outputs = runner.run(item, session)
        for nid, ui in outputs.items():
            if ui:
                session.executed_output(nid, ui)
        session.message("execution_success", {"prompt_id": item.prompt_id})
        ok = True
    except Interrupted:
        session.message("execution_interrupted", _where(item, session), broadcast=True)
    except Exception as e:  # any failure of a prompt is reported to its client, never fatal to the server
        log.info("prompt %s failed: %s", item.prompt_id, one_line(e))
        session.message("execution_error", {**_where(item, session), "exception_message": one_line(e),
                                             "exception_type": getattr(e, "type_name", None)
                                             or f"{type(e).__module__}.{type(e).__qualname__}",
                                             "traceback": [], "current_inputs": {},
                                             "current_outputs": list(session.cached)})
    meta = {nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
            for nid in outputs}
    status = {"status_str": "success" if ok else "error", "completed": ok, "messages": session.messages}
    queue.done(item, {nid: ui for nid, ui in outputs.items() if ui}, status, meta)
    session.executing(None)
    return session


def _where(item: QueueItem, session: Session) -> dict:
    nid = session.node
    node_type = item.prompt.get(nid, {}).get("class_type") if nid is not None else None
    return {"prompt_id": item.prompt_id, "node_id": nid, "node_type": node_type,
            "executed": [n for n in session.executed if n != nid]}


def worker_loop(queue: PromptQueue, runner, hub: Hub, stop: threading.Event) -> None:
    while not stop.is_set():
        item = queue.get(timeout=0.5)
        if item is None:
            continue
        run_item(queue, runner, hub, item)


def make_temp_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="twosamplers-serve-temp-")


__all__ = ["Interrupted", "LocalRunner", "PREVIEW_METHODS", "Session", "make_temp_dir", "prune", "run_item",
           "ui_of_files", "worker_loop"]
