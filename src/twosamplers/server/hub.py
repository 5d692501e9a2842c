"""The websocket side: connected clients by id, and messages to them from any thread, in order.

ComfyUI's protocol: JSON text frames `{"type": EVENT, "data": {...}}`, and binary frames that start with a
4-byte big-endian event number (1: a preview image, whose next 4 bytes say JPEG = 1 / PNG = 2; 4: a preview
with a JSON metadata block). A message for a client id goes to that client only (nowhere when it is not
connected); a message without one goes to every client. Worker threads call `send`; the messages are queued
on the event loop and written by one task, so each client sees them in the order they were sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import threading

log = logging.getLogger("twosamplers.serve")

SEND_TIMEOUT_S = 10.0
PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4


class Hub:
    def __init__(self) -> None:
        self.sockets: dict[str, object] = {}      # client id -> starlette WebSocket
        self.flags: dict[str, dict] = {}          # client id -> the feature flags it announced
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle (event loop)
    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue = asyncio.Queue()
        self.task = self.loop.create_task(self._publish())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.task = None
        for ws in list(self.sockets.values()):
            try:
                await ws.close()
            except Exception:  # already gone
                pass
        self.sockets.clear()

    def add(self, sid: str, ws) -> None:
        with self.lock:
            self.sockets[sid] = ws
            self.flags[sid] = {}

    def remove(self, sid: str, ws) -> None:
        with self.lock:
            if self.sockets.get(sid) is ws:
                del self.sockets[sid]
                self.flags.pop(sid, None)

    def supports(self, sid: str | None, flag: str) -> bool:
        with self.lock:
            return sid is not None and self.flags.get(sid, {}).get(flag) is True

    # ------------------------------------------------------------------ sending (any thread)
    def send(self, event: str, data: dict, sid: str | None = None) -> None:
        """A JSON message to client `sid` (None: everyone); safe from any thread."""
        self._enqueue(json.dumps({"type": event, "data": data}), sid)

    def send_bytes(self, event: int, payload: bytes, sid: str | None = None) -> None:
        self._enqueue(struct.pack(">I", event) + payload, sid)

    def _enqueue(self, message: str | bytes, sid: str | None) -> None:
        loop, queue = self.loop, self.queue
        if loop is None or queue is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (message, sid))
        except RuntimeError:  # the loop is shutting down
            pass

    async def send_now(self, ws, event: str, data: dict) -> None:
        """From the event loop, straight to one socket (the greeting of a new connection)."""
        await ws.send_text(json.dumps({"type": event, "data": data}))

    async def _publish(self) -> None:
        while True:
            message, sid = await self.queue.get()
            with self.lock:
                targets = list(self.sockets.values()) if sid is None else [self.sockets[sid]] \
                    if sid in self.sockets else []
            for ws in targets:
                try:
                    send = ws.send_bytes(message) if isinstance(message, bytes) else ws.send_text(message)
                    await asyncio.wait_for(send, SEND_TIMEOUT_S)
                except TimeoutError:  # a client that does not read stalls nobody else: it is dropped
                    log.info("dropping a websocket client that does not read its messages")
                    await _close(ws)
                except Exception as e:  # a client that went away: it is removed when its handler ends
                    log.debug("websocket send failed: %s", e)


async def _close(ws) -> None:
    try:
        await asyncio.wait_for(ws.close(code=1008), 1.0)
    except Exception:  # it is gone either way
        pass


__all__ = ["Hub", "PREVIEW_IMAGE", "PREVIEW_IMAGE_WITH_METADATA"]
