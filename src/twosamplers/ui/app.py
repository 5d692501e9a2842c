"""The page: `build_app(...)` lays it out and wires the handlers; `launch(...)` serves it on 127.0.0.1.

Gradio runs each click in a worker; a render runs in its own thread so the page can stream per-step progress
and the live x0 preview while Cancel (which bypasses the queue) sets the session's cancel flag, checked by the
sampler's step callback. Nothing here talks to the network: analytics, the update check and Hugging Face
telemetry are switched off before Gradio is imported, and the theme uses system fonts (no Google Fonts).

Who may use it, and what it may open (docs/security.md), is ours, not assumed from Gradio:
- every request passes `http_guard.GuardMiddleware`: the Host header must be a name of the bound address (DNS
  rebinding), cross-site browser requests are refused, and off loopback a token or password is required;
- Gradio's upload and cache folder (GRADIO_TEMP_DIR) is a private folder of this process (mode 0700), not the
  /tmp/gradio every local user shares, and no `allowed_paths` are given: Gradio's file route serves only what
  this page uploaded or returned (its own results), never the rest of an outputs folder;
- results are written to a private temporary folder (0700) and, with `--outputs DIR`, copied there;
- a job runs only with the page's own files (`confine.confine_settings`): models, LoRAs, ControlNets and
  embeddings of the models folder, start images and hints the page was given. A loaded PNG's start image is
  opened only when it is one of the page's own uploads.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

for _k, _v in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1"),
               ("DO_NOT_TRACK", "1"), ("GRADIO_SERVER_NAME", "127.0.0.1")):
    os.environ[_k] = _v


def _private_gradio_folder() -> str:
    """A folder only this user can enter (mkdtemp: 0700), for Gradio's uploads and cache; inside the folder the
    user named with GRADIO_TEMP_DIR, if any, else in the system's temporary folder. Removed at exit."""
    parent = os.environ.get("TWOSAMPLERS_GRADIO_PARENT") or os.environ.get("GRADIO_TEMP_DIR") or None
    if parent is not None:
        os.environ["TWOSAMPLERS_GRADIO_PARENT"] = parent
        os.makedirs(parent, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="twosamplers-ui-gradio-", dir=parent)
    atexit.register(shutil.rmtree, folder, True)
    return folder


GRADIO_FOLDER = _private_gradio_folder()
os.environ["GRADIO_TEMP_DIR"] = GRADIO_FOLDER
os.environ["GRADIO_EXAMPLES_CACHE"] = os.path.join(GRADIO_FOLDER, "examples")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from .._files import copy_new  # noqa: E402
from ..engine.latent import latent_preview  # noqa: E402
from ..engine.schedules import SCHEDULER_NAMES  # noqa: E402
from ..samplers import SAMPLER_NAMES  # noqa: E402
from ..web.http_guard import Guard, GuardMiddleware, start_banner  # noqa: E402
from . import handlers as H  # noqa: E402
from .idle_frames import HEAD  # noqa: E402
from .render import LOCKS, Cancelled, page_job, render, sampler_view  # noqa: E402

GRADIO_6 = int(gr.__version__.split(".")[0]) >= 6
PREVIEW_EVERY_S = 0.25  # the live preview is sent at most this often (4/s; each one costs server and browser CPU)
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO_FONTS = ["ui-monospace", "monospace"]
CSS = """
#ts-error {border-left: 4px solid #d33; padding: 4px 10px; background: #fff3f3;}
#ts-status {min-height: 1.5em;}
"""


_EXTERNAL = re.compile(rb'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>|<link[^>]*\shref="https?://[^"]*"[^>]*>')


class LocalOnlyHTML:
    """ASGI middleware: drops the page template's references to other hosts (Gradio's index.html loads an
    iframe-resizer script from cdnjs and preconnects to Google Fonts), so opening the page makes no outbound
    request. Only complete text/html responses are rewritten; everything else streams through untouched."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "GET":
            return await self.app(scope, receive, send)
        state: dict = {"start": None, "html": False, "chunks": []}

        async def capture(message):
            if message["type"] == "http.response.start":
                ctype = dict(message.get("headers", [])).get(b"content-type", b"")
                state["html"] = ctype.startswith(b"text/html")
                if not state["html"]:
                    return await send(message)
                state["start"] = message
                return None
            if not state["html"] or message["type"] != "http.response.body":
                return await send(message)
            state["chunks"].append(message.get("body", b""))
            if message.get("more_body"):
                return None
            body = _EXTERNAL.sub(b"", b"".join(state["chunks"]))
            start = state["start"]
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return await self.app(scope, receive, capture)


class Sessions:
    """Per-tab run state: the cancel flag of the running render and the tab's results."""

    def __init__(self) -> None:
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, key: str) -> threading.Event:
        with self._lock:
            ev = self._cancel[key] = threading.Event()
            return ev

    def cancel(self, key: str) -> bool:
        with self._lock:
            ev = self._cancel.get(key)
        if ev is None:
            return False
        ev.set()
        return True

    def finish(self, key: str, ev: threading.Event) -> None:
        with self._lock:
            if self._cancel.get(key) is ev:
                del self._cancel[key]


def _error(msg: str):
    return gr.update(value=f"**Error:** {msg}", visible=True)


def _no_error():
    return gr.update(value="", visible=False)


def _pass_panel(comp: dict, prefix: str, fields: dict, title: str, lists: dict, regional_note: bool = False) -> None:
    comp[f"{prefix}_prompt"] = gr.Textbox(label=f"{title} prompt", value=fields[f"{prefix}_prompt"], lines=2,
                                          elem_id=f"ts-{prefix}-prompt")
    comp[f"{prefix}_negative"] = gr.Textbox(label="negative", value=fields[f"{prefix}_negative"],
                                            elem_id=f"ts-{prefix}-negative")
    model = H.model_field(prefix)
    comp[model] = gr.Dropdown(lists["models_same" if prefix != "base" else "models"], value=fields[model],
                              label="model" + (" (also the VAE)" if prefix == "base" else ""),
                              allow_custom_value=True, elem_id=f"ts-{prefix}-model")
    with gr.Row(equal_height=True):
        comp[f"{prefix}_seed"] = gr.Number(label="seed", value=fields[f"{prefix}_seed"], precision=0,
                                           elem_id=f"ts-{prefix}-seed", scale=4)
        dice = gr.Button("dice", elem_id=f"ts-{prefix}-dice", scale=1, min_width=40)
        dice.click(H.random_seed, None, comp[f"{prefix}_seed"], queue=False)
    with gr.Row():
        comp[f"{prefix}_steps"] = gr.Number(label="steps" + (" (base's in regional)" if regional_note else ""),
                                            value=fields[f"{prefix}_steps"], precision=0,
                                            elem_id=f"ts-{prefix}-steps")
        comp[f"{prefix}_cfg"] = gr.Number(label="cfg", value=fields[f"{prefix}_cfg"],
                                          elem_id=f"ts-{prefix}-cfg")
        comp[f"{prefix}_denoise"] = gr.Slider(0.0, 1.0, value=fields[f"{prefix}_denoise"], step=0.01,
                                              label="denoise", elem_id=f"ts-{prefix}-denoise")
    with gr.Row():
        comp[f"{prefix}_sampler"] = gr.Dropdown(list(SAMPLER_NAMES), value=fields[f"{prefix}_sampler"],
                                                label="sampler", elem_id=f"ts-{prefix}-sampler")
        comp[f"{prefix}_scheduler"] = gr.Dropdown(list(SCHEDULER_NAMES), value=fields[f"{prefix}_scheduler"],
                                                  label="scheduler", elem_id=f"ts-{prefix}-scheduler")
    _lora_picker(comp, prefix, fields, lists["loras"])
    _controlnet_picker(comp, prefix, fields, lists["controlnet"])


def _lora_picker(comp: dict, prefix: str, fields: dict, loras: list[str]) -> None:
    """A dropdown of the LoRAs found, strengths and "add", over the pass's LoRA list (one line each, editable)."""
    with gr.Accordion("LoRAs", open=bool(fields[f"{prefix}_loras"]), elem_id=f"ts-{prefix}-lora-box") as box:
        comp.setdefault("_boxes", []).append((box, f"{prefix}_loras"))
        if loras:
            with gr.Row(equal_height=True):
                pick = gr.Dropdown(loras, value=None, label="LoRA", scale=3, elem_id=f"ts-{prefix}-lora-pick")
                sm = gr.Number(label="strength", value=1.0, scale=1, elem_id=f"ts-{prefix}-lora-strength")
                sc = gr.Textbox(label="clip strength", value="", placeholder="same", scale=1,
                                elem_id=f"ts-{prefix}-lora-clip")
                add = gr.Button("add", scale=1, min_width=40, elem_id=f"ts-{prefix}-lora-add")
            comp.setdefault("_lora_adders", []).append((add, f"{prefix}_loras", pick, sm, sc))
        else:
            gr.Markdown("No LoRAs found: start with `--models DIR` (ComfyUI's layout, `DIR/loras/*.safetensors`). "
                        "A path still works in the list below, and `<lora:NAME:S>` in the prompt.")
        comp[f"{prefix}_loras"] = gr.Textbox(label=f"LoRAs, one per line: {H.LORA_LINE}",
                                             value=fields[f"{prefix}_loras"], lines=2, max_lines=6,
                                             elem_id=f"ts-{prefix}-loras")


def _controlnet_picker(comp: dict, prefix: str, fields: dict, controlnets: list[str]) -> None:
    """A dropdown of the ControlNets found, a hint image upload, strength, start/end and "add"."""
    with gr.Accordion("ControlNet", open=bool(fields[f"{prefix}_controlnets"]), elem_id=f"ts-{prefix}-cn-box") as box:
        comp.setdefault("_boxes", []).append((box, f"{prefix}_controlnets"))
        if controlnets:
            with gr.Row():
                pick = gr.Dropdown(controlnets, value=None, label="ControlNet", elem_id=f"ts-{prefix}-cn-pick")
                hint = gr.Image(label="hint image", type="numpy", image_mode="RGB", sources=["upload", "clipboard"],
                                height=140, elem_id=f"ts-{prefix}-cn-hint")
            with gr.Row(equal_height=True):
                st = gr.Number(label="strength", value=1.0, elem_id=f"ts-{prefix}-cn-strength")
                a = gr.Number(label="start", value=0.0, minimum=0, maximum=1, elem_id=f"ts-{prefix}-cn-start")
                b = gr.Number(label="end", value=1.0, minimum=0, maximum=1, elem_id=f"ts-{prefix}-cn-end")
                add = gr.Button("add", min_width=40, elem_id=f"ts-{prefix}-cn-add")
            comp.setdefault("_cn_adders", []).append((add, f"{prefix}_controlnets", pick, hint, st, a, b))
        else:
            gr.Markdown("No ControlNets found: start with `--models DIR` (`DIR/controlnet/*.safetensors`).")
        comp[f"{prefix}_controlnets"] = gr.Textbox(label=f"ControlNets, one per line: {H.CONTROLNET_LINE}",
                                                   value=fields[f"{prefix}_controlnets"], lines=2, max_lines=6,
                                                   elem_id=f"ts-{prefix}-controlnets")


def _canvas_column(c: dict, fields: dict) -> None:
    c["editor"] = gr.ImageEditor(
        value=None, type="numpy", image_mode="RGBA", sources=("upload", "clipboard"), layers=True, format="png",
        canvas_size=(256, 256), brush=gr.Brush(default_size=24, colors=["#ff4040"], color_mode="fixed"),
        eraser=gr.Eraser(default_size=24), transforms=(), elem_id="ts-canvas",
        label="Canvas: upload an image or use a blank one, paint the region (one layer per region)")
    with gr.Row(equal_height=True):
        c["width"] = gr.Number(label="width", value=fields["width"], precision=0, elem_id="ts-width")
        c["height"] = gr.Number(label="height", value=fields["height"], precision=0, elem_id="ts-height")
        c["blank"] = gr.Button("New blank canvas", elem_id="ts-blank")
        c["use_image"] = gr.Checkbox(label="start from the canvas image (img2img)", value=False,
                                     elem_id="ts-use-image")
    with gr.Row():
        c["grow"] = gr.Slider(-64, 64, value=fields["grow"], step=1, label="grow (px)", elem_id="ts-grow")
        c["feather"] = gr.Slider(0, 64, value=fields["feather"], step=0.5, label="feather (px)",
                                 elem_id="ts-feather")
    with gr.Row():
        # PNG: Gradio's default format (WebP) is lossy, and a loaded PNG's region 1 comes back through this box
        c["mask_upload"] = gr.Image(label="or upload a mask (white = inside; replaces region 1)", type="numpy",
                                    image_mode="RGBA", sources=["upload"], height=180, format="png",
                                    elem_id="ts-mask-upload")
        c["mask_view"] = gr.Image(label="mask as the sampler sees it (grown + feathered)", type="numpy",
                                  interactive=False, height=180, elem_id="ts-mask-view")
    c["show_mask"] = gr.Button("Show mask", elem_id="ts-show-mask")


def _settings_column(c: dict, fields: dict, models_dir: str | None, found: dict) -> None:
    lists = {"models": H.model_choices(models_dir, found), "models_same": H.model_choices(models_dir, found, True),
             "loras": found["loras"], "controlnet": found["controlnet"]}
    if models_dir:
        names = ", ".join(f"`embedding:{Path(e).stem}`" for e in found["embeddings"][:8])
        gr.Markdown(f"`{H.home_short(models_dir)}`: {len(found['checkpoints'])} checkpoints, "
                    f"{len(found['loras'])} LoRAs, {len(found['controlnet'])} ControlNets, "
                    f"{len(found['embeddings'])} embeddings"
                    + (f" (in a prompt: {names})" if names else ""), elem_id="ts-models-found")
    c["mode"] = gr.Radio(list(H.MODES), value=fields["mode"], label="mode", elem_id="ts-mode")
    c["regional_algorithm"] = gr.Radio(
        list(H.REGIONAL_ALGORITHMS), value=fields["regional_algorithm"], label="regions sampled",
        info="interleaved: a sampler per region; joint: one pass, the regions' prompts as masked conditioning "
        "(uses the base's cfg, sampler and scheduler; regions with another model, LoRAs or ControlNets interleave)",
        visible=fields["mode"] == "regional", elem_id="ts-regional-algorithm")
    with gr.Row(visible=False, equal_height=True) as c["kept_row"]:
        c["kept_line"] = gr.Markdown("", elem_id="ts-kept")
        c["kept_drop"] = gr.Button("drop them", size="sm", scale=0, min_width=80, elem_id="ts-kept-drop")
    c["kept"] = gr.State({})  # job fields of a loaded PNG that the page has no widget for (fields.KEPT_KEYS)
    with gr.Row():
        c["crop_to_mask"] = gr.Checkbox(label="crop to mask", value=fields["crop_to_mask"], elem_id="ts-crop")
        c["differential"] = gr.Checkbox(label="differential", value=fields["differential"],
                                        elem_id="ts-differential")
    with gr.Tabs():
        with gr.Tab("Base (outside)"):
            _pass_panel(c, "base", fields, "base", lists)
        with gr.Tab("Mask (inside) / region 1"):
            _pass_panel(c, "mask", fields, "mask", lists, regional_note=True)
        c["region_tabs"] = []
        for i in range(2, H.MAX_REGIONS + 1):
            with gr.Tab(f"Region {i} (layer {i})", visible=False) as tab:
                _pass_panel(c, f"r{i}", fields, f"region {i}", lists, regional_note=True)
            c["region_tabs"].append(tab)
    with gr.Row():
        c["generate"] = gr.Button("Generate", variant="primary", elem_id="ts-generate")
        c["cancel"] = gr.Button("Cancel", variant="stop", elem_id="ts-cancel")
    c["status"] = gr.Markdown("", elem_id="ts-status")
    c["live"] = gr.Image(label="live preview (current x0)", type="numpy", interactive=False, height=256,
                         format="jpeg", elem_id="ts-live")  # JPEG: 0.3 ms to encode where WebP takes 15


def _results_row(c: dict) -> None:
    with gr.Row():
        c["gallery"] = gr.Gallery(label="results", columns=4, height=300, object_fit="contain", elem_id="ts-gallery",
                                  type="filepath")
        with gr.Column():
            c["strip"] = gr.Image(label="mask | base | result", type="filepath", interactive=False,
                                  elem_id="ts-strip")
            c["download"] = gr.DownloadButton("Download PNG", value=None, interactive=False, elem_id="ts-download")
            c["load_png"] = gr.File(label="Load settings from PNG (made by the CLI or this page)",
                                    file_types=[".png"], type="filepath", elem_id="ts-load")
    c["results"] = gr.State([])
    # the masks of the last loaded PNG: Generate uses them while no layer is painted (the editor can drop the
    # layers a load sets: Gradio 5.50 fails to add them on a page whose canvas was never used); New blank canvas
    # forgets them
    c["loaded_masks"] = gr.State(None)


LOADED_JS = "() => { setTimeout(() => { window.__tsLoading = false; }, 2000); }"
RUN_OUTPUTS = ("error", "status", "live", "gallery", "strip", "download", "results")


def _keep(n: int) -> list:
    return [gr.update() for _ in range(n)]


class Page:
    """The page's event handlers; `c` maps names (the FIELDS and the widgets) to components."""

    def __init__(self, c: dict, out_dir: Path, models_dir: str | None = None, copy_to: Path | None = None) -> None:
        self.c, self.out_dir, self.models_dir, self.copy_to = c, out_dir, models_dir, copy_to
        self.sessions = Sessions()
        self._n = 0
        self._n_lock = threading.Lock()

    # ------------------------------------------------------------------ canvas
    def on_mode(self, mode):
        regional, two_pass = mode == "regional", mode == "two-pass"
        return ([gr.update(visible=regional) for _ in self.c["region_tabs"]]
                + [gr.update(interactive=two_pass), gr.update(interactive=two_pass), gr.update(visible=regional)])

    def on_add_lora(self, text, name, strength, clip_strength):
        try:
            return H.add_lora_line(text, name, strength, clip_strength), _no_error()
        except H.UIError as e:
            return gr.update(), _error(H.error_message(e))

    def on_add_controlnet(self, text, name, hint, strength, start, end):
        """The hint image is saved under the outputs folder (by content hash) and the line names its path."""
        try:
            path = None if hint is None else H.save_input(hint, self.out_dir)
            return H.add_controlnet_line(text, name, path, strength, start, end), _no_error()
        except Exception as e:  # shown in the page
            return gr.update(), _error(H.error_message(e))

    def on_blank(self, w, h):
        try:
            return H.blank_canvas(w, h), False, _no_error(), None
        except H.UIError as e:
            return gr.update(), gr.update(), _error(H.error_message(e)), gr.update()

    def on_upload(self, value):
        bg = H.editor_background(value)
        if bg is None:
            return _keep(2)
        return bg.shape[1], bg.shape[0]

    def on_show_mask(self, data: dict):
        try:
            value = data[self.c["editor"]]
            settings, masks = self._job(data, save_image=False)
            return H.overlay(H.editor_background(value), sampler_view(settings, masks)), _no_error()
        except Exception as e:  # shown in the page; the server keeps running
            return None, _error(H.error_message(e))

    # ------------------------------------------------------------------ running
    def _job(self, data: dict, save_image: bool = True) -> tuple[dict, list]:
        """The page's job dict (confined to the page's own files) and its masks, from the widgets' values."""
        value = data[self.c["editor"]]
        masks = H.canvas_masks(value, data[self.c["mask_upload"]], data[self.c["loaded_masks"]])
        return self._settings({k: data[self.c[k]] for k in H.FIELDS}, masks, data[self.c["kept"]], value,
                              save_image), masks

    def _settings(self, values: dict, masks: list, kept: dict | None, editor=None, save_image: bool = True) -> dict:
        settings = H.fields_to_settings(values, len(masks), self.models_dir, kept)
        if values.get("use_image"):
            bg = H.editor_background(editor)
            if bg is None:
                raise H.UIError("'start from the canvas image' is on but the canvas has no image")
            if save_image:  # the mask view needs only the image's size
                settings["image"] = H.save_input(bg, self.out_dir)
            settings["width"], settings["height"] = bg.shape[1], bg.shape[0]
        return H.confine_settings(settings, self.models_dir, self.out_dir)

    def on_generate(self, data: dict, request: gr.Request):
        try:
            settings, masks = self._job(data)
        except Exception as e:
            yield [_error(H.error_message(e))] + _keep(len(RUN_OUTPUTS) - 1)
            return
        with self._n_lock:
            self._n += 1
            name = f"ts-{time.strftime('%Y%m%d-%H%M%S')}-{self._n:04d}"
        key = getattr(request, "session_hash", None) or "default"
        ev = self.sessions.start(key)
        progress = {"step": -1, "total": 0, "x0": None, "model": None}
        outcome: dict = {}

        def work():
            try:
                outcome["ok"] = render(settings, masks, output=self.out_dir / f"{name}.png",
                                       preview=self.out_dir / f"{name}-preview.png", cancel=ev,
                                       on_step=lambda i, n, x0, m: progress.update(step=i, total=n, x0=x0, model=m))
            except Cancelled:
                outcome["cancelled"] = True
            except Exception as e:  # reported in the page
                outcome["error"] = H.error_message(e)

        waiting = LOCKS.busy(page_job(settings, masks).models())
        thread = threading.Thread(target=work, name=f"twosamplers-{name}", daemon=True)
        thread.start()
        first = "waiting: another run is using this model" if waiting else "loading the model..."
        yield [_no_error(), first] + _keep(len(RUN_OUTPUTS) - 2)
        try:
            yield from self._stream(thread, progress)
        finally:
            if thread.is_alive():
                ev.set()  # the tab went away: stop the render too
            self.sessions.finish(key, ev)
        yield self._outcome(outcome, progress, data[self.c["results"]])

    def _stream(self, thread: threading.Thread, progress: dict):
        """Per-step status and the live x0 preview (at most every PREVIEW_EVERY_S) while the render runs."""
        shown, last_sent = -1, 0.0
        while thread.is_alive():
            thread.join(0.05)
            step, now = progress["step"], time.perf_counter()
            if step != shown and now - last_sent >= PREVIEW_EVERY_S and progress["x0"] is not None:
                shown, last_sent = step, now
                model = progress["model"]
                img = latent_preview(progress["x0"], model.latent_format, model.decode_latent)
                pct = 100.0 * (step + 1) / max(progress["total"], 1)
                yield [gr.update(), f"step {step + 1}/{progress['total']} ({pct:.0f}%)", img] + _keep(4)

    def _copy_out(self, res: dict) -> str | None:
        """With --outputs: the result and its preview copied there (never over a file already there)."""
        if self.copy_to is None:
            return None
        try:
            for key in ("image", "preview"):
                if res.get(key):
                    copy_new(Path(res[key]), self.copy_to)
        except OSError as e:
            return f"not copied to the outputs folder: {e.strerror or e}"
        return None

    def _outcome(self, outcome: dict, progress: dict, done: list | None) -> list:
        if "ok" in outcome:
            res = outcome["ok"]
            done = [res["image"]] + list(done or [])
            msg = f"done in {res['seconds']:.2f} s: `{Path(res['image']).name}`"
            problem = self._copy_out(res)
            if problem:
                msg += f" ({problem})"
            if res.get("note"):
                msg += f" ({res['note']})"
            return [_no_error(), msg, gr.update(), done, res["preview"],
                    gr.update(value=res["image"], interactive=True), done]
        if outcome.get("cancelled"):
            return [_no_error(), f"cancelled at step {progress['step'] + 1}/{progress['total']}"] + _keep(5)
        return [_error(outcome.get("error", "the render stopped")), "failed"] + _keep(5)

    def on_cancel(self, request: gr.Request):
        key = getattr(request, "session_hash", None) or "default"
        return "cancelling..." if self.sessions.cancel(key) else "nothing is running"

    # ------------------------------------------------------------------ load settings
    @staticmethod
    def kept_updates(kept: dict) -> list:
        """The kept fields' state, their line and its row (hidden when nothing is kept)."""
        return [kept, H.kept_line(kept), gr.update(visible=bool(kept))]

    def _loaded_view(self, f: dict, masks: list, bg: np.ndarray, kept: dict):
        """A loaded PNG's regions as its sampler will see them (the editor may not show its layers); the regions
        as stored when the PNG's job is not one the page can run (e.g. its model is not in the models folder)."""
        masks = [H.fit_mask(m, bg.shape[:2]) for m in masks]
        try:
            return H.overlay(bg, sampler_view(self._settings(dict(f, use_image=False), masks, kept), masks))
        except Exception:  # noqa: BLE001 (a view only: Generate reports the problem)
            return H.overlay(bg, masks)

    def on_load(self, path, *current):
        boxes = self.c.get("_boxes", [])
        if path is None:
            return _keep(len(H.FIELDS) + 8 + len(boxes))
        try:
            settings, masks = H.load_png_settings(path)
            f = H.settings_to_fields(settings, dict(zip(H.FIELDS, current, strict=True)), self.models_dir)
            bg = H.own_image(settings.get("image"), self.out_dir)
            if bg is None:
                bg = np.full((int(f["height"]), int(f["width"]), 3), 128, np.uint8)
                f["use_image"] = False
            value = H.editor_value(bg, masks)
            kept = H.kept_settings(settings)
            view = self._loaded_view(f, masks, bg, kept)  # also where the editor drops the layers
        except Exception as e:
            return _keep(len(H.FIELDS) + 2) + [_error(H.error_message(e))] + _keep(5 + len(boxes))
        # Gradio 5.50's editor fails to add the layers (and background) a load sets on a page whose canvas was never
        # used (its undo history there is a copy without methods: "this.history.push is not a function"), so the
        # masks also go to a State that Generate uses while no layer is painted, and region 1 to the mask upload
        # a LoRA / ControlNet box with loaded lines opens (Gradio 6 renders a closed accordion's fields lazily)
        opened = [gr.update(open=True) if str(f.get(field) or "").strip() else gr.update() for _, field in boxes]
        return ([f[k] for k in H.FIELDS] + [value, H.mask_image(masks[0]), _no_error()]
                + self.kept_updates(kept) + [masks, view] + opened)


def _page_folders(outputs_dir: str | None) -> tuple[Path, Path | None]:
    """(the private results folder, made here with mode 0700 and its inputs/ folder; the --outputs folder that
    results are copied to, or None)."""
    out_dir = Path(tempfile.mkdtemp(prefix="twosamplers-ui-")).resolve()  # 0700: this user only
    H.page_inputs(out_dir).mkdir(mode=0o700)
    copy_to = None
    if outputs_dir is not None:
        copy_to = Path(outputs_dir).expanduser().resolve()
        if copy_to.exists() and not copy_to.is_dir():
            raise H.UIError(f"--outputs {outputs_dir}: not a folder")
    return out_dir, copy_to


def build_app(models_dir: str | None = None, outputs_dir: str | None = None) -> gr.Blocks:
    """The Blocks app. `models_dir`: a ComfyUI-style models folder; `outputs_dir`: where results are copied
    (they are written to a private temporary folder, which is what the page serves)."""
    found = H.scan_models(models_dir)
    out_dir, copy_to = _page_folders(outputs_dir)
    fields = H.default_fields()
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    c: dict = {}
    style = {"theme": theme, "css": CSS, "head": HEAD}
    with gr.Blocks(title="twosamplers", analytics_enabled=False, **({} if GRADIO_6 else style)) as app:
        gr.Markdown("## twosamplers: one sampler outside the mask, another inside")
        c["error"] = gr.Markdown("", visible=False, elem_id="ts-error")
        with gr.Row():
            with gr.Column(scale=3):
                _canvas_column(c, fields)
            with gr.Column(scale=2):
                _settings_column(c, fields, models_dir, found)
        _results_row(c)
        page = Page(c, out_dir, models_dir, copy_to)
        field_comps = [c[k] for k in H.FIELDS]
        c["mode"].change(page.on_mode, c["mode"], c["region_tabs"] + [c["crop_to_mask"], c["differential"],
                                                                      c["regional_algorithm"]], queue=False)
        for add, field, pick, sm, sc in c.get("_lora_adders", []):
            add.click(page.on_add_lora, [c[field], pick, sm, sc], [c[field], c["error"]], queue=False)
        for add, field, pick, hint, st, a, b in c.get("_cn_adders", []):
            add.click(page.on_add_controlnet, [c[field], pick, hint, st, a, b], [c[field], c["error"]], queue=False)
        c["blank"].click(page.on_blank, [c["width"], c["height"]], [c["editor"], c["use_image"], c["error"],
                                                                   c["loaded_masks"]], queue=False)
        # the tick happens in the browser at once: the server-side handler needs the editor's value, which the
        # page uploads first (seconds on a loaded machine), and a Generate clicked meanwhile would miss the tick
        # Gradio 6 also fires the editor's upload event when a load sets its value: while "Load settings from PNG"
        # is applying its result (window.__tsLoading, set in the browser when a PNG is dropped, cleared a moment
        # after the load's outputs are in) the tick keeps the loaded value
        c["editor"].upload(None, [c["use_image"]], c["use_image"], js="(v) => window.__tsLoading ? v : true",
                           queue=False)
        c["editor"].upload(page.on_upload, c["editor"], [c["width"], c["height"]], queue=False)
        job_inputs = set(field_comps + [c["editor"], c["mask_upload"], c["kept"], c["loaded_masks"]])
        c["show_mask"].click(page.on_show_mask, job_inputs, [c["mask_view"], c["error"]])
        c["generate"].click(page.on_generate, job_inputs | {c["results"]},
                            [c[k] for k in RUN_OUTPUTS], concurrency_limit=2, concurrency_id="render",
                            show_progress="minimal")
        c["cancel"].click(page.on_cancel, None, c["status"], queue=False)
        kept_outputs = [c["kept"], c["kept_line"], c["kept_row"]]
        c["load_png"].upload(None, None, None, js="() => { window.__tsLoading = true; }", queue=False)
        c["load_png"].upload(page.on_load, [c["load_png"]] + field_comps,
                             field_comps + [c["editor"], c["mask_upload"], c["error"]] + kept_outputs
                             + [c["loaded_masks"], c["mask_view"]] + [box for box, _ in c.get("_boxes", [])]
                             ).then(None, None, None, js=LOADED_JS, queue=False)
        c["kept_drop"].click(lambda: page.kept_updates({}), None, kept_outputs, queue=False)
    app.queue(default_concurrency_limit=2)
    app.twosamplers_style = style if GRADIO_6 else {}  # Gradio 6 takes the theme, CSS and head at launch
    app.twosamplers_outputs = out_dir  # the private results folder (tests, the start-up message)
    app.twosamplers_copy_to = copy_to
    return app


def launch(host: str = "127.0.0.1", port: int = 7860, models_dir: str | None = None,
           outputs_dir: str | None = None, block: bool = True, guard: Guard | None = None) -> gr.Blocks:
    """Serve the page on host:port (127.0.0.1 by default; never a public share link). `guard`: who may use it
    (default `Guard.for_bind(host, port)`: loopback names only; off loopback a random token, printed)."""
    guard = guard or Guard.for_bind(host, port)
    # Gradio's launch requests its own /gradio_api/startup-events (it only runs the start-up events once)
    guard = replace(guard, local_paths=guard.local_paths | {"/gradio_api/startup-events", "/startup-events"})
    app = build_app(models_dir, outputs_dir)
    banner = start_banner(guard, host, port)
    print(banner + f"\nresults: {app.twosamplers_outputs} (private)"
          + (f", copied to {app.twosamplers_copy_to}" if app.twosamplers_copy_to else ""),
          file=sys.stderr)
    no_api = {"footer_links": ["gradio", "settings"]} if GRADIO_6 else {"show_api": False}
    app.launch(server_name=host, server_port=port, share=False, inbrowser=False, ssr_mode=False,
               prevent_thread_lock=not block, quiet=True, max_file_size="64mb", pwa=False, mcp_server=False,
               enable_monitoring=False, **no_api, **app.twosamplers_style,
               app_kwargs={"middleware": [Middleware(GuardMiddleware, guard=guard), Middleware(LocalOnlyHTML)]})
    app.twosamplers_guard = guard
    return app
