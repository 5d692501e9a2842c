"""`twosamplers serve`: ComfyUI's server API (HTTP + websocket) on the twosamplers engine, so ComfyUI clients,
and ComfyUI's own editor when `comfyui-frontend-package` is installed, work unchanged (docs/serve.md).

- `app.py`: the routes (each also under /api) and `Server` (queue, history, sockets, folders);
- `state.py`: the queue and history; `worker.py`: running prompts, ComfyUI's websocket messages; `hub.py`: the
  websocket clients; `cache.py`: node results kept between prompts; `validate.py`: /prompt's checks and error
  shapes; `object_info.py`: the node registry in ComfyUI's schema; `files.py`: /view and uploads;
  `frontend.py`: the editor page and its settings / user data; `preview.py`: live previews;
  `ray_backend.py`: `--ray`, prompts on the batch machinery's Ray actors.

Needs the `server` extra (starlette, uvicorn, websockets, python-multipart).
"""

from __future__ import annotations

from .app import ServeConfig, Server


def build(config: ServeConfig, *, auth: str | None = None, token: str | None = None,
          allowed_hosts: list[str] | None = None):
    """(ASGI app with the guard around it, the Server, the Guard) for `config`."""
    from ..web.http_guard import Guard, GuardMiddleware

    guard = Guard.for_bind(config.host, config.port, auth=auth, token=token, allowed_hosts=allowed_hosts)
    server = Server(config)
    return GuardMiddleware(server.app(), guard), server, guard


def serve(config: ServeConfig, *, auth: str | None = None, token: str | None = None,
          allowed_hosts: list[str] | None = None) -> None:
    """Run the server until Ctrl-C (prints where it listens, and the token off loopback)."""
    import uvicorn

    from ..web.http_guard import start_banner

    app, server, guard = build(config, auth=auth, token=token, allowed_hosts=allowed_hosts)
    print(start_banner(guard, config.host, config.port, what="server (ComfyUI API)"), flush=True)
    if server.frontend is None:
        print("ComfyUI's editor is not installed (pip install comfyui-frontend-package); the API works without it",
              flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", server_header=False,
                proxy_headers=False, timeout_graceful_shutdown=5)


__all__ = ["ServeConfig", "Server", "build", "serve"]
