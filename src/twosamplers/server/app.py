"""`twosamplers serve`: ComfyUI's HTTP and websocket API (paths, JSON shapes, status codes of ComfyUI 0.30) on
the twosamplers engine, as a Starlette (ASGI) app served by uvicorn.

Every route is served at its ComfyUI path and again under `/api` (what the current frontend calls). The app is
wrapped in `http_guard.GuardMiddleware` (Host header, cross-origin browser requests, token or password off
loopback). Handlers answer bad input with ComfyUI's status codes and one-line messages, never a traceback.
Blocking work (validation that looks at files, image decoding, file reads) runs in Starlette's thread pool;
prompts run on the worker thread(s) (`worker.py`), one at a time per device.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import logging
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import __version__
from ..nodes.folders import MODEL_KINDS, Folders, embedded_models
from ..nodes.registry import NODES
from ..workflow.errors import WorkflowError
from ..workflow.execute import load as load_workflow
from ..workflow.graph import plan
from . import frontend as fe
from .files import FileAreaError, FileAreas, content_type
from .hub import Hub
from .jobs import JOB_STATUSES, all_jobs
from .object_info import node_info, object_info
from .state import PromptQueue, QueueItem
from .validate import check_shape, validate_prompt
from .worker import PREVIEW_METHODS, LocalRunner, make_temp_dir, one_line, prune, worker_loop

log = logging.getLogger("twosamplers.serve")
COMFYUI_API_VERSION = "0.30.0"  # the ComfyUI whose API this serves
MAX_JSON_BYTES = 64 * 1024 * 1024
EMBEDDING_EXTENSIONS = (".safetensors", ".pt", ".pth", ".bin")
SENSITIVE_EXTRA_DATA = ("auth_token_comfy_org", "api_key_comfy_org")


@dataclass
class ServeConfig:
    """What `twosamplers serve` was started with (the CLI's flags)."""

    host: str = "127.0.0.1"
    port: int = 8188
    models: str | None = None
    comfyui: str | None = None
    input_dir: str | None = None
    output_dir: str | None = None
    extra_model_paths: str | None = None
    preview_method: str = "none"
    max_upload_mb: float = 100.0
    device: str | None = None
    dtype: str | None = None
    ray: str | bool | None = None
    ray_actors: int | None = None


def _json_error(status: int, kind: str, message: str, details: str = "") -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message, "details": details, "extra_info": {}},
                         "node_errors": {}}, status_code=status)


def _text(status: int, message: str) -> Response:
    return Response(message + "\n", status_code=status, media_type="text/plain; charset=utf-8")


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past `limit` bytes before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise FileAreaError(413, f"request body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FileAreaError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # later request.form() / .json() read this copy
    return body


async def _json_body(request: Request, default=None):
    body = await _body(request, MAX_JSON_BYTES)
    if not body.strip():
        return default
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise _BadJson(one_line(e)) from None


class _BadJson(Exception):
    pass


class Server:
    """The server's state (queue, history, sockets, folders, worker threads) and its route handlers."""

    def __init__(self, config: ServeConfig) -> None:
        if config.preview_method not in PREVIEW_METHODS:
            raise ValueError(f"--preview-method must be one of {', '.join(PREVIEW_METHODS)}")
        if not 0 < config.max_upload_mb <= 100_000:
            raise ValueError(f"--max-upload-mb {config.max_upload_mb} is out of range (0 .. 100000]")
        self.config = config
        opts = {k: v for k, v in (("device", config.device), ("dtype", config.dtype)) if v is not None}
        self.folders = Folders.create(config.models, comfyui=config.comfyui, input_dir=config.input_dir,
                                      output_dir=config.output_dir or "output",
                                      extra_model_paths=config.extra_model_paths, load_options=opts)
        out = self.folders.output_dir
        if out.exists() and not out.is_dir():
            raise ValueError(f"--output-dir {out} is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        self.folders.input_dir.mkdir(parents=True, exist_ok=True)
        self._temp = make_temp_dir()
        self.temp_dir = Path(self._temp.name)
        self.hub = Hub()
        self.queue = PromptQueue(on_change=self.queue_updated)
        self.areas = FileAreas(self.folders.input_dir, out, self.temp_dir, int(config.max_upload_mb * 1024 * 1024))
        self.user = fe.UserData(out / ".twosamplers" / "user" / "default")
        self.frontend = fe.frontend_root()
        self.number = 0
        self.number_lock = threading.Lock()
        self.runners = self._make_runners()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def _make_runners(self) -> list:
        if self.config.ray is None:
            return [LocalRunner(self.folders, self.temp_dir, self.config.preview_method)]
        from .ray_backend import ray_runners

        return ray_runners(self.config, self.folders, self.temp_dir)

    # ------------------------------------------------------------------ lifecycle
    def queue_info(self) -> dict:
        return {"exec_info": {"queue_remaining": self.queue.remaining()}}

    def queue_updated(self) -> None:
        self.hub.send("status", {"status": self.queue_info()})

    async def startup(self) -> None:
        self.hub.start()
        for i, runner in enumerate(self.runners):
            t = threading.Thread(target=worker_loop, args=(self.queue, runner, self.hub, self.stop), daemon=True,
                                 name=f"twosamplers-serve-worker-{i}")
            t.start()
            self.threads.append(t)

    async def shutdown(self) -> None:
        self.stop.set()
        self.queue.close()
        for t in self.threads:
            await asyncio.get_running_loop().run_in_executor(None, t.join, 30)
        for runner in self.runners:
            close = getattr(runner, "close", None)
            if close is not None:
                close()
        await self.hub.stop()
        self._temp.cleanup()

    # ------------------------------------------------------------------ /prompt
    async def post_prompt(self, request: Request) -> Response:
        try:
            data = await _json_body(request)
        except _BadJson as e:
            return _json_error(400, "invalid_prompt", "the request body is not valid JSON", str(e))
        if not isinstance(data, dict):
            return _json_error(400, "invalid_prompt", "the request body must be a JSON object {\"prompt\": ...}")
        number = self._number(data)
        if number is None:
            return _json_error(400, "invalid_prompt", "'number' must be a number", repr(data.get("number")))
        if "prompt" not in data:
            return _json_error(400, "no_prompt", "No prompt provided", "No prompt provided")
        prompt_id = data.get("prompt_id")
        if prompt_id is None:
            prompt_id = str(uuid.uuid4())
        elif not _canonical_uuid(prompt_id):
            return _json_error(400, "invalid_prompt_id", "prompt_id must be a valid UUID",
                               "a UUID in canonical lowercase hyphenated form; leave it out to get one")
        result = await run_in_threadpool(self._check_prompt, data["prompt"], data.get("partial_execution_targets"))
        if isinstance(result, Response):
            return result
        prompt, outputs, node_errors = result
        extra = data.get("extra_data") if isinstance(data.get("extra_data"), dict) else {}
        extra = {k: v for k, v in copy.deepcopy(extra).items() if k not in SENSITIVE_EXTRA_DATA}
        if isinstance(data.get("client_id"), str):
            extra["client_id"] = data["client_id"]
        extra["create_time"] = int(time.time() * 1000)
        self.queue.put(QueueItem(number, prompt_id, prompt, extra, outputs))
        return JSONResponse({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    def _number(self, data: dict):
        if "number" in data:
            try:
                value = float(data["number"])
            except (TypeError, ValueError):
                return None
            return value if value == value and abs(value) != float("inf") else None
        with self.number_lock:
            number = self.number
            self.number += 1
        return -number if data.get("front") else number

    def _check_prompt(self, raw, targets):
        problem = check_shape(raw)
        if problem is not None:
            return JSONResponse({"error": problem, "node_errors": {}}, status_code=400)
        try:
            prompt = load_workflow(copy.deepcopy(raw), self.folders).prompt
        except (WorkflowError, ValueError, TypeError) as e:
            return _json_error(400, "invalid_prompt", "not an API-format prompt", one_line(e))
        if targets is not None and not isinstance(targets, list):
            return _json_error(400, "invalid_prompt", "partial_execution_targets must be a list of node ids")
        ok, error, outputs, node_errors = validate_prompt(prompt, self.folders, targets)
        if not ok:
            return JSONResponse({"error": error, "node_errors": node_errors}, status_code=400)
        try:
            plan(prune(prompt, outputs), self.folders)
        except (WorkflowError, ValueError, TypeError, FileNotFoundError) as e:
            return _json_error(400, "prompt_outputs_failed_validation", "Prompt outputs failed validation",
                               one_line(e))
        return prompt, outputs, node_errors

    async def get_prompt(self, request: Request) -> Response:
        return JSONResponse(self.queue_info())

    # ------------------------------------------------------------------ queue, history, interrupt
    async def get_queue(self, request: Request) -> Response:
        running, pending = self.queue.snapshot()
        return JSONResponse({"queue_running": running, "queue_pending": pending})

    async def post_queue(self, request: Request) -> Response:
        data = await self._json_object(request)
        if isinstance(data, Response):
            return data
        if data.get("clear"):
            self.queue.wipe()
        if "delete" in data:
            ids = data["delete"]
            if not isinstance(ids, list):
                return _text(400, "'delete' must be a list of prompt ids")
            self.queue.delete(str(i) for i in ids)
        return Response(status_code=200)

    async def post_interrupt(self, request: Request) -> Response:
        try:
            data = await _json_body(request, {})
        except _BadJson:
            data = {}
        prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
        self.queue.interrupt(str(prompt_id) if prompt_id else None)
        return Response(status_code=200)

    async def get_history(self, request: Request) -> Response:
        q = request.query_params
        try:
            max_items = int(q["max_items"]) if "max_items" in q else None
            offset = int(q["offset"]) if "offset" in q else -1
        except ValueError:
            return _text(400, "max_items and offset must be integers")
        return JSONResponse(self.queue.get_history(max_items=max_items, offset=offset))

    async def get_history_id(self, request: Request) -> Response:
        return JSONResponse(self.queue.get_history(prompt_id=request.path_params["prompt_id"]))

    async def post_history(self, request: Request) -> Response:
        data = await self._json_object(request)
        if isinstance(data, Response):
            return data
        if data.get("clear"):
            self.queue.wipe_history()
        if "delete" in data:
            if not isinstance(data["delete"], list):
                return _text(400, "'delete' must be a list of prompt ids")
            self.queue.delete_history(str(i) for i in data["delete"])
        return Response(status_code=200)

    async def post_free(self, request: Request) -> Response:
        data = await self._json_object(request)
        if isinstance(data, Response):
            return data
        if data.get("unload_models") or data.get("free_memory"):
            for runner in self.runners:  # waits for a running prompt: the worker holds the runner's lock
                await run_in_threadpool(runner.free, bool(data.get("unload_models")))
        return Response(status_code=200)

    async def _json_object(self, request: Request):
        try:
            data = await _json_body(request, {})
        except _BadJson as e:
            return _text(400, f"the request body is not valid JSON: {e}")
        if not isinstance(data, dict):
            return _text(400, "the request body must be a JSON object")
        return data

    # ------------------------------------------------------------------ files
    async def view(self, request: Request) -> Response:
        q = request.query_params
        if "filename" not in q:
            return _text(404, "no filename given")
        path = self.areas.path(q.get("type", "output"), q.get("subfolder", ""), q["filename"])
        if "preview" in q or q.get("channel") in ("rgb", "a"):
            return await run_in_threadpool(_transformed, path, q.get("preview"), q.get("channel"))
        kind, download = content_type(path.name)
        disposition = f"attachment; filename=\"{_quoted(path.name)}\"" if download else \
            f"filename=\"{_quoted(path.name)}\""
        return FileResponse(path, media_type=kind, headers={"Content-Disposition": disposition,
                                                            "X-Content-Type-Options": "nosniff"})

    async def upload_image(self, request: Request) -> Response:
        return await self._upload(request, mask=False)

    async def upload_mask(self, request: Request) -> Response:
        return await self._upload(request, mask=True)

    async def _upload(self, request: Request, mask: bool) -> Response:
        await _body(request, self.areas.max_upload_bytes + 1024 * 1024)
        try:
            form = await request.form(max_files=1, max_fields=16)
        except Exception as e:  # multipart parser errors: malformed body
            return _text(400, f"the upload is not a multipart form: {one_line(e)}")
        image = form.get("image")
        if image is None or isinstance(image, str):
            return _text(400, "the form has no 'image' file")
        data = await image.read()
        overwrite = str(form.get("overwrite", "")).lower() in ("true", "1")
        args = (data, image.filename, form.get("type") or "input", form.get("subfolder") or "", overwrite)
        if mask:
            result = await run_in_threadpool(self.areas.save_mask, *args, form.get("original_ref"))
        else:
            result = await run_in_threadpool(self.areas.save_upload, *args)
        return JSONResponse(result)

    # ------------------------------------------------------------------ catalogues
    async def get_object_info(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(object_info, self.folders))

    async def get_object_info_node(self, request: Request) -> Response:
        name = request.path_params["node_class"]
        if name not in NODES:
            return JSONResponse({})
        return JSONResponse({name: await run_in_threadpool(node_info, name, self.folders)})

    async def get_embeddings(self, request: Request) -> Response:
        names = await run_in_threadpool(self.folders.list_models, "embeddings", EMBEDDING_EXTENSIONS)
        return JSONResponse([os.path.splitext(n)[0] for n in names])

    async def get_models(self, request: Request) -> Response:
        return JSONResponse(list(MODEL_KINDS))

    async def get_models_folder(self, request: Request) -> Response:
        folder = request.path_params["folder"]
        if folder not in MODEL_KINDS:
            return Response(status_code=404)
        files = await run_in_threadpool(self.folders.list_models, folder)
        return JSONResponse((list(embedded_models()) if folder == "checkpoints" else []) + files)

    async def experiment_models(self, request: Request) -> Response:
        from ..nodes.folders import CHECKPOINT_EXTENSIONS

        return JSONResponse([{"name": k, "folders": [], "extensions": sorted(CHECKPOINT_EXTENSIONS)}
                             for k in MODEL_KINDS])

    async def experiment_models_folder(self, request: Request) -> Response:
        folder = request.path_params["folder"]
        if folder not in MODEL_KINDS:
            return Response(status_code=404)
        files = await run_in_threadpool(self.folders.list_models, folder)
        return JSONResponse([{"name": f, "pathIndex": 0} for f in files])

    async def system_stats(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self._system_stats))

    def _system_stats(self) -> dict:
        import platform

        import torch

        from ..job.memory import available_bytes

        total = _total_ram()
        devices = [{"name": "cpu", "type": "cpu", "index": None, "vram_total": total,
                    "vram_free": available_bytes("cpu") or 0, "torch_vram_total": 0, "torch_vram_free": 0}]
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                free, tot = torch.cuda.mem_get_info(i)
                devices.insert(i, {"name": f"cuda:{i} {torch.cuda.get_device_name(i)}", "type": "cuda", "index": i,
                                   "vram_total": tot, "vram_free": free, "torch_vram_total": tot,
                                   "torch_vram_free": free})
        return {"system": {"os": sys.platform, "ram_total": total, "ram_free": available_bytes("cpu") or 0,
                           "comfyui_version": COMFYUI_API_VERSION, "twosamplers_version": __version__,
                           "required_frontend_version": fe.frontend_version() or "",
                           "installed_templates_version": None, "required_templates_version": None,
                           "python_version": sys.version, "pytorch_version": torch.__version__,
                           "embedded_python": False,
                           # no API nodes here: the editor then makes no call to comfy.org (release notes, ...)
                           "argv": ["twosamplers", "serve", "--disable-api-nodes"],
                           "machine": platform.machine()},
                "devices": devices}

    async def features(self, request: Request) -> Response:
        return JSONResponse(self.feature_flags())

    def feature_flags(self) -> dict:
        return {"supports_preview_metadata": True, "max_upload_size": self.areas.max_upload_bytes,
                "extension": {"manager": {"supports_v4": False}}, "node_replacements": False, "assets": False}

    # ------------------------------------------------------------------ websocket
    async def websocket(self, ws: WebSocket) -> None:
        await ws.accept()
        sid = ws.query_params.get("clientId") or uuid.uuid4().hex
        self.hub.add(sid, ws)
        try:
            await self.hub.send_now(ws, "status", {"status": self.queue_info(), "sid": sid})
            for item in self.queue.running_items():
                if item.client_id == sid and item.node is not None:
                    await self.hub.send_now(ws, "executing", {"node": item.node, "display_node": item.node,
                                                              "prompt_id": item.prompt_id})
            first = True
            while True:
                text = await ws.receive_text()
                if first:
                    self._feature_flags(sid, text)
                    first = False
                    if sid in self.hub.flags and self.hub.flags[sid]:
                        await self.hub.send_now(ws, "feature_flags", self.feature_flags())
        except (WebSocketDisconnect, RuntimeError, KeyError):
            pass
        finally:
            self.hub.remove(sid, ws)

    def _feature_flags(self, sid: str, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            return
        if isinstance(msg, dict) and msg.get("type") == "feature_flags" and isinstance(msg.get("data"), dict):
            with self.hub.lock:
                self.hub.flags[sid] = dict(msg["data"]) or {"announced": True}

    # ------------------------------------------------------------------ page and frontend support
    async def root(self, request: Request) -> Response:
        if self.frontend is not None:
            return FileResponse(self.frontend / "index.html", headers={"Cache-Control": "no-store, must-revalidate"})
        return HTMLResponse(fe.no_frontend_page(sorted({p for p, _, _ in self.api_routes()})))

    async def extensions(self, request: Request) -> Response:
        return JSONResponse(fe.extension_scripts(self.frontend))

    async def templates(self, request: Request) -> Response:
        """The editor's workflow-template catalogue: none here (ComfyUI ships them in another package)."""
        name = request.path_params["name"]
        return JSONResponse([] if name.startswith("index") else {}) if name.endswith(".json") else \
            Response(status_code=404)

    async def users(self, request: Request) -> Response:
        return JSONResponse({"storage": "server", "migrated": True})

    async def empty_object(self, request: Request) -> Response:
        return JSONResponse({})

    async def empty_list(self, request: Request) -> Response:
        return JSONResponse([])

    async def get_settings(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.user.settings))

    async def get_setting(self, request: Request) -> Response:
        settings = await run_in_threadpool(self.user.settings)
        return JSONResponse(settings.get(request.path_params["id"]))

    async def post_settings(self, request: Request) -> Response:
        data = await self._json_object(request)
        if isinstance(data, Response):
            return data
        await run_in_threadpool(self.user.save_settings, data)
        return Response(status_code=200)

    async def post_setting(self, request: Request) -> Response:
        try:
            value = await _json_body(request)
        except _BadJson as e:
            return _text(400, f"the request body is not valid JSON: {e}")
        await run_in_threadpool(self.user.save_settings, {request.path_params["id"]: value})
        return Response(status_code=200)

    async def list_userdata(self, request: Request) -> Response:
        q = request.query_params
        if not q.get("dir"):
            return _text(400, "Directory not provided")
        flag = lambda k: q.get(k, "").lower() == "true"  # noqa: E731
        return JSONResponse(await run_in_threadpool(self.user.listing, q["dir"], flag("recurse"), flag("full_info"),
                                                    flag("split")))

    async def userdata(self, request: Request) -> Response:
        """/userdata/{file} (GET, POST, DELETE) and /userdata/{file}/move/{dest} (POST); `file` may hold encoded
        slashes, so the raw path is split here."""
        raw = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1").split("?")[0]
        rest = raw.split("/userdata/", 1)[1]
        parts = rest.split("/")
        q = request.query_params
        overwrite = q.get("overwrite", "true") != "false"
        full = q.get("full_info", "false").lower() == "true"
        if request.method == "POST" and len(parts) == 3 and parts[1] == "move":
            dest = await run_in_threadpool(self.user.move, parts[0], parts[2], overwrite)
            return JSONResponse(self.user.info(dest) if full else dest.relative_to(self.user.root).as_posix())
        if len(parts) != 1:
            return _text(400, "user data file names must encode '/' as %2F")
        name = parts[0]
        if request.method == "GET":
            path = self.user.path(name, must_exist=True)
            css = path.name == "user.css" and path.parent == self.user.root
            kind = "text/css" if css else content_type(path.name)[0] if not content_type(path.name)[1] \
                else "application/octet-stream"
            return FileResponse(path, media_type=kind, headers={"X-Content-Type-Options": "nosniff",
                                                                "Content-Disposition": "inline" if css else
                                                                "attachment"})
        if request.method == "DELETE":
            await run_in_threadpool(self.user.delete, name)
            return Response(status_code=204)
        body = await _body(request, fe.MAX_USERDATA_BYTES)
        path = await run_in_threadpool(self.user.write, name, body, overwrite)
        return JSONResponse(self.user.info(path) if full else path.relative_to(self.user.root).as_posix())

    # ------------------------------------------------------------------ /api/jobs (the editor's queue panel)
    async def get_jobs(self, request: Request) -> Response:
        q = request.query_params
        statuses = [s.strip().lower() for s in q.get("status", "").split(",") if s.strip()] or list(JOB_STATUSES)
        if set(statuses) - set(JOB_STATUSES):
            return JSONResponse({"error": f"status must be among {', '.join(JOB_STATUSES)}"}, status_code=400)
        sort_order = q.get("sort_order", "desc").lower()
        if q.get("sort_by", "created_at") not in ("created_at", "execution_duration") or \
                sort_order not in ("asc", "desc"):
            return JSONResponse({"error": "sort_by must be created_at or execution_duration, sort_order asc or desc"},
                                status_code=400)
        try:
            limit = int(q["limit"]) if "limit" in q else None
            offset = max(0, int(q.get("offset", 0)))
        except ValueError:
            return JSONResponse({"error": "limit and offset must be integers"}, status_code=400)
        if limit is not None and limit <= 0:
            return JSONResponse({"error": "limit must be a positive integer"}, status_code=400)
        jobs = [j for j in all_jobs(self.queue) if j["status"] in statuses]
        jobs.sort(key=lambda j: j.get("create_time") or 0, reverse=sort_order == "desc")
        page = jobs[offset:offset + limit] if limit is not None else jobs[offset:]
        return JSONResponse({"jobs": page, "pagination": {"offset": offset, "limit": limit, "total": len(jobs),
                                                          "has_more": offset + len(page) < len(jobs)}})

    async def get_job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        job = next((j for j in all_jobs(self.queue, outputs=True) if j["id"] == job_id), None)
        return JSONResponse(job) if job is not None else JSONResponse({"error": "Job not found"}, status_code=404)

    async def cancel_job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        return JSONResponse({"cancelled": bool(self.queue.interrupt(job_id) or self.queue.delete([job_id]))})

    async def cancel_jobs(self, request: Request) -> Response:
        data = await self._json_object(request)
        if isinstance(data, Response):
            return data
        ids = data.get("job_ids", data.get("ids"))
        if not isinstance(ids, list):
            return JSONResponse({"error": "job_ids must be a list"}, status_code=400)
        cancelled = [bool(self.queue.interrupt(str(i)) or self.queue.delete([str(i)])) for i in ids]
        return JSONResponse({"cancelled": any(cancelled)})

    # ------------------------------------------------------------------ routes
    def api_routes(self) -> list[tuple[str, object, list[str]]]:
        return [
            ("/prompt", self.post_prompt, ["POST"]), ("/prompt", self.get_prompt, ["GET"]),
            ("/queue", self.get_queue, ["GET"]), ("/queue", self.post_queue, ["POST"]),
            ("/interrupt", self.post_interrupt, ["POST"]), ("/free", self.post_free, ["POST"]),
            ("/history", self.get_history, ["GET"]), ("/history", self.post_history, ["POST"]),
            ("/history/{prompt_id}", self.get_history_id, ["GET"]),
            ("/view", self.view, ["GET"]), ("/upload/image", self.upload_image, ["POST"]),
            ("/upload/mask", self.upload_mask, ["POST"]),
            ("/object_info", self.get_object_info, ["GET"]),
            ("/object_info/{node_class}", self.get_object_info_node, ["GET"]),
            ("/embeddings", self.get_embeddings, ["GET"]), ("/models", self.get_models, ["GET"]),
            ("/models/{folder}", self.get_models_folder, ["GET"]),
            ("/experiment/models", self.experiment_models, ["GET"]),
            ("/experiment/models/{folder}", self.experiment_models_folder, ["GET"]),
            ("/system_stats", self.system_stats, ["GET"]), ("/features", self.features, ["GET"]),
            ("/extensions", self.extensions, ["GET"]), ("/users", self.users, ["GET"]),
            ("/settings", self.get_settings, ["GET"]), ("/settings", self.post_settings, ["POST"]),
            ("/settings/{id}", self.get_setting, ["GET"]), ("/settings/{id}", self.post_setting, ["POST"]),
            ("/userdata", self.list_userdata, ["GET"]),
            ("/userdata/{rest:path}", self.userdata, ["GET", "POST", "DELETE"]),
            ("/i18n", self.empty_object, ["GET"]), ("/workflow_templates", self.empty_object, ["GET"]),
            ("/node_replacements", self.empty_object, ["GET"]), ("/global_subgraphs", self.empty_object, ["GET"]),
        ]

    def app(self) -> Starlette:
        routes: list = []
        for path, handler, methods in self.api_routes():
            wrapped = _safe(handler)
            routes.append(Route(path, wrapped, methods=methods))
            routes.append(Route("/api" + path, wrapped, methods=methods))
        for path, handler, methods in (("/api/jobs", self.get_jobs, ["GET"]), ("/api/jobs/cancel", self.cancel_jobs,
                                                                              ["POST"]),
                                       ("/api/jobs/{job_id}", self.get_job, ["GET"]),
                                       ("/api/jobs/{job_id}/cancel", self.cancel_job, ["POST"])):
            routes.append(Route(path, _safe(handler), methods=methods))
        routes += [WebSocketRoute("/ws", self.websocket), WebSocketRoute("/api/ws", self.websocket),
                   Route("/templates/{name}", _safe(self.templates), methods=["GET"]),
                   Route("/", _safe(self.root), methods=["GET"])]
        if self.frontend is not None:
            routes.append(Mount("/", app=StaticFiles(directory=self.frontend), name="frontend"))
        return Starlette(routes=routes, lifespan=self.lifespan, middleware=[Middleware(SameOriginOnly)])

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()


# The page may load and connect to this server only: a browser then refuses any request of the editor (or of a
# script injected into it) to another host, which is what keeps the editor on this machine.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:; "
                           "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
                           "connect-src 'self' data: blob:; media-src 'self' data: blob:; worker-src 'self' blob:; "
                           "frame-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'")


class SameOriginOnly:
    """ASGI middleware: CONTENT_SECURITY_POLICY on every HTTP response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_policy(message):
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []),
                           (b"content-security-policy", CONTENT_SECURITY_POLICY.encode())]
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, with_policy)


def _safe(handler):
    """Refusals with their status code and one line; anything unexpected is a 500 with one line, logged."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except FileAreaError as e:
            return _text(e.status, str(e))
        except Exception as e:  # never a traceback to a client
            log.warning("%s %s failed: %s: %s", request.method, request.url.path, type(e).__name__, one_line(e))
            return _text(500, f"internal error: {type(e).__name__}: {one_line(e)}")

    endpoint.__name__ = getattr(handler, "__name__", "endpoint")
    return endpoint


def _transformed(path: Path, preview: str | None, channel: str | None) -> Response:
    """/view's `preview=webp;90` / `jpeg;80` and `channel=rgb` / `a` variants of an image."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        if preview:
            fmt, *rest = preview.split(";")
            fmt = fmt if fmt in ("webp", "jpeg") and "a" not in (channel or "") else "webp"
            quality = int(rest[-1]) if rest and rest[-1].isdigit() and 1 <= int(rest[-1]) <= 100 else 90
            out = img.convert("RGB") if fmt == "jpeg" or channel == "rgb" else img
            buf = io.BytesIO()
            out.save(buf, format=fmt.upper(), quality=quality)
            return Response(buf.getvalue(), media_type=f"image/{fmt}")
        if channel == "rgb":
            out = img.convert("RGB")
        else:
            alpha = img.getchannel("A") if img.mode == "RGBA" else Image.new("L", img.size, 255)
            out = Image.new("RGBA", img.size)
            out.putalpha(alpha)
        buf = io.BytesIO()
        out.save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png")


def _quoted(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def _canonical_uuid(value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _total_ram() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


__all__ = ["COMFYUI_API_VERSION", "ServeConfig", "Server"]
