"""The prompt queue, what is running and the history: shared by the HTTP handlers and the worker threads.

Items are ComfyUI's queue entries `[number, prompt_id, prompt, extra_data, outputs_to_execute]`: the lowest
number runs first (a prompt posted with `"front": true` gets a negative one), ties in the order posted. The
history keeps, per prompt id, `{"prompt": item, "outputs": {node: ui}, "status": {...}, "meta": {...}}` as
ComfyUI's `/history` shows it, the oldest dropped past MAX_HISTORY. Every change calls `on_change` (the server
broadcasts the `status` message). One lock guards everything; nothing here blocks on I/O.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

MAX_HISTORY = 10000


@dataclass
class QueueItem:
    number: float
    prompt_id: str
    prompt: dict
    extra_data: dict
    outputs: list[str]
    interrupt: threading.Event = field(default_factory=threading.Event, compare=False)
    node: str | None = field(default=None, compare=False)  # the node running now (a reconnecting client is told)

    def as_list(self) -> list:
        """The entry as ComfyUI lists it in /queue and /history."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]

    @property
    def client_id(self) -> str | None:
        cid = self.extra_data.get("client_id")
        return cid if isinstance(cid, str) and cid else None


class PromptQueue:
    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self.lock = threading.RLock()
        self.not_empty = threading.Condition(self.lock)
        self.pending: list[tuple[float, int, QueueItem]] = []
        self.running: dict[str, QueueItem] = {}
        self.history: dict[str, dict] = {}
        self.order = itertools.count()
        self.on_change = on_change or (lambda: None)
        self.closed = False

    # ------------------------------------------------------------------ queue
    def put(self, item: QueueItem) -> None:
        with self.lock:
            heapq.heappush(self.pending, (item.number, next(self.order), item))
            self.not_empty.notify()
        self.on_change()

    def get(self, timeout: float | None = None) -> QueueItem | None:
        """The next item (now running), or None after `timeout` seconds or once the queue is closed."""
        with self.not_empty:
            if not self.pending and not self.closed:
                self.not_empty.wait(timeout)
            if not self.pending or self.closed:
                return None
            item = heapq.heappop(self.pending)[2]
            self.running[item.prompt_id] = item
        self.on_change()
        return item

    def done(self, item: QueueItem, outputs: dict, status: dict, meta: dict) -> None:
        """Move a running item to the history (ComfyUI's task_done)."""
        with self.lock:
            self.running.pop(item.prompt_id, None)
            while len(self.history) >= MAX_HISTORY:
                self.history.pop(next(iter(self.history)))
            self.history[item.prompt_id] = {"prompt": item.as_list(), "outputs": outputs, "status": status,
                                            "meta": meta}
        self.on_change()

    def close(self) -> None:
        with self.not_empty:
            self.closed = True
            self.not_empty.notify_all()
        for item in self.running_items():
            item.interrupt.set()

    def remaining(self) -> int:
        with self.lock:
            return len(self.pending) + len(self.running)

    def running_items(self) -> list[QueueItem]:
        with self.lock:
            return list(self.running.values())

    def snapshot(self) -> tuple[list[list], list[list]]:
        """(running, pending) entries as /queue lists them, pending in run order."""
        with self.lock:
            running = [copy.deepcopy(i.as_list()) for i in self.running.values()]
            pending = [copy.deepcopy(e[2].as_list()) for e in sorted(self.pending)]
        return running, pending

    def wipe(self) -> None:
        with self.lock:
            self.pending = []
        self.on_change()

    def delete(self, prompt_ids: Iterable[str]) -> int:
        ids = {str(p) for p in prompt_ids}
        with self.lock:
            before = len(self.pending)
            self.pending = [e for e in self.pending if e[2].prompt_id not in ids]
            heapq.heapify(self.pending)
            removed = before - len(self.pending)
        if removed:
            self.on_change()
        return removed

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Stop the running prompt (only that one when `prompt_id` is given); True when one was signalled."""
        with self.lock:
            hit = [i for i in self.running.values() if prompt_id is None or i.prompt_id == prompt_id]
            for item in hit:
                item.interrupt.set()
        return bool(hit)

    # ------------------------------------------------------------------ history
    def get_history(self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1) -> dict:
        """ComfyUI's get_history: one prompt, or up to `max_items` from `offset` (default: the newest ones)."""
        with self.lock:
            if prompt_id is not None:
                entry = self.history.get(prompt_id)
                return {} if entry is None else {prompt_id: copy.deepcopy(entry)}
            if offset < 0 and max_items is not None:
                offset = len(self.history) - max_items
            out = {}
            for i, (k, v) in enumerate(self.history.items()):
                if i < offset:
                    continue
                out[k] = copy.deepcopy(v)
                if max_items is not None and len(out) >= max_items:
                    break
            return out

    def wipe_history(self) -> None:
        with self.lock:
            self.history = {}

    def delete_history(self, prompt_ids: Iterable[str]) -> None:
        with self.lock:
            for p in prompt_ids:
                self.history.pop(str(p), None)


__all__ = ["MAX_HISTORY", "PromptQueue", "QueueItem"]
