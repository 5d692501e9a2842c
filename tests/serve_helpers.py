"""Shared pieces of the `twosamplers serve` tests: small workflows, a real uvicorn server on a free port in a
thread, and reading a prompt's websocket messages to its end."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from workflow_cases import api_t2i


def small_prompt(seed: int = 1, prefix: str = "serve", steps: int = 2, text: str = "grass") -> dict:
    """The textures model at 32x32, euler, cfg 1 (one model call a step): a prompt that runs in about a second."""
    wf = api_t2i(seed=seed, prefix=prefix, text=text)
    wf["3"]["inputs"].update(steps=steps, cfg=1.0)
    return wf


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(config, **guard):
    """`twosamplers serve`'s app under uvicorn on config.port in a thread; yields (base url, Server)."""
    import uvicorn

    from twosamplers.server import build

    app, server, _ = build(config, **guard)
    uv = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                       timeout_graceful_shutdown=5))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    t0 = time.time()
    while not uv.started:
        if time.time() - t0 > 60 or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://{config.host}:{config.port}", server
    finally:
        uv.should_exit = True
        thread.join(60)


def read_until_done(ws, prompt_id: str, timeout_s: float = 300.0) -> list[dict]:
    """A Starlette test websocket's messages up to `executing` with node None for `prompt_id` (JSON messages as
    dicts, binary frames as {"binary": bytes})."""
    import json

    out = []
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        raw = ws.receive()
        if raw.get("type") == "websocket.close":
            raise AssertionError(f"the websocket closed: {raw}")
        if raw.get("bytes") is not None:
            out.append({"binary": raw["bytes"]})
            continue
        m = json.loads(raw["text"])
        out.append(m)
        if m["type"] == "executing" and m["data"]["node"] is None and m["data"].get("prompt_id") == prompt_id:
            return out
    raise AssertionError(f"prompt {prompt_id} did not finish in {timeout_s} s")
