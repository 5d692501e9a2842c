"""ComfyUI's own editor (comfyui-frontend-package, optional) served by `twosamplers serve`, in Debian's chromium
driven by Playwright (no browser download): the editor starts, its node library is our /object_info, a
workflow that uses the embedded `textures` model is loaded through the editor's file input, Run queues it, and
the Save Image node shows the picture. Every request the page makes must go to the server on 127.0.0.1 (any
other is recorded and aborted). Screenshots go to test-artifacts/serve/ (gitignored). Skips with the reason
when playwright, the frontend package or a chromium binary is missing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from serve_helpers import free_port, live_server, small_prompt
from test_ui_browser import CHROMIUM_ARGS, find_chromium

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "serve"
TIMEOUT_MS = 300_000  # the shared 2-core machine can be slow; the editor starts in ~3 s when it is quiet


@pytest.fixture(scope="module")
def chromium():
    pytest.importorskip("uvicorn", reason="the [server] extra is not installed")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")
    pytest.importorskip("comfyui_frontend_package", reason="comfyui-frontend-package (test extra) is not installed")
    path = find_chromium()
    if path is None:
        pytest.skip("no chromium binary found (/usr/bin/chromium, $PATH or $TWOSAMPLERS_CHROMIUM)")
    return path


def fit_view(page) -> None:
    """The editor's "fit view" command (the "." key), so that every node is on screen."""
    page.mouse.click(300, 700)
    page.keyboard.press(".")
    page.evaluate("() => { try { return app.extensionManager.command.execute('Comfy.Canvas.FitView') } "
                  "catch (e) { return null } }")
    page.wait_for_timeout(1000)


def test_comfyui_editor_queues_a_textures_workflow_and_shows_the_image(chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    from twosamplers.server import ServeConfig

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    workflow = tmp_path / "textures_api.json"
    workflow.write_text(json.dumps(small_prompt(seed=77, prefix="editor", steps=3, text="brick")))
    config = ServeConfig(port=free_port(), output_dir=str(tmp_path / "out"), input_dir=str(tmp_path / "in"))
    outside, views = [], []
    with live_server(config) as (url, server), sync_playwright() as p:
        assert server.frontend is not None
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})

            def route(r):
                target = r.request.url
                if target.startswith((url + "/", "data:", "blob:")):
                    return r.continue_()
                outside.append(target)
                return r.abort()

            page.route("**/*", route)
            page.on("websocket", lambda ws: None if ws.url.startswith(url.replace("http", "ws") + "/")
                    else outside.append(ws.url))
            page.on("response", lambda r: views.append((r.status, r.url)) if "/view?" in r.url else None)
            # a returning user: the first-start templates dialog (empty here: no template package) is done
            import urllib.request

            req = urllib.request.Request(url + "/settings", data=json.dumps({"Comfy.TutorialCompleted": True})
                                         .encode(), method="POST", headers={"Content-Type": "application/json"})
            assert urllib.request.urlopen(req, timeout=30).status == 200
            page.goto(url + "/", wait_until="domcontentloaded")
            page.wait_for_function("() => window.app && app.graph && window.LiteGraph && "
                                   "Object.keys(LiteGraph.registered_node_types).length > 20", timeout=TIMEOUT_MS)
            # the node library is our registry, ComfyUI's core nodes and Impact Pack's two-sampler family
            from twosamplers.workflow import NODES

            registered = set(page.evaluate("() => Object.keys(LiteGraph.registered_node_types)"))
            assert set(NODES) <= registered, set(NODES) - registered
            assert page.evaluate("() => LiteGraph.registered_node_types['CheckpointLoaderSimple'].nodeData"
                                 ".input.required.ckpt_name[0]")[:2] == ["textures", "ideal"]
            # load the workflow as a user does (the editor's file input), fit the view, press Run
            page.set_input_files("#comfy-file-input", str(workflow))
            page.wait_for_function("() => app.graph.nodes.some(n => n.type === 'SaveImage') && "
                                   "app.graph.nodes.length === 7", timeout=TIMEOUT_MS)
            page.keyboard.press("Escape")
            fit_view(page)
            page.screenshot(path=str(ARTIFACTS / "loaded.png"))
            t0 = time.perf_counter()
            page.locator("button:has-text('Run')").first.click()
            page.wait_for_function("() => JSON.stringify(app.nodeOutputs || {}).includes('editor_')",
                                   timeout=TIMEOUT_MS)
            fit_view(page)  # the Save Image node must be on screen for the editor to load its picture
            page.wait_for_function("() => { const n = app.graph.nodes.find(n => n.type === 'SaveImage'); return n"
                                   " && n.imgs && n.imgs.length && n.imgs[0].complete && n.imgs[0].naturalWidth > 0 }",
                                   timeout=TIMEOUT_MS)
            seconds = time.perf_counter() - t0
            src = page.evaluate("() => app.graph.nodes.find(n => n.type === 'SaveImage').imgs[0].src")
            page.screenshot(path=str(ARTIFACTS / "result.png"))
        finally:
            browser.close()
        history = server.queue.get_history()
    assert outside == [], f"requests that left 127.0.0.1: {outside}"
    (entry,) = history.values()
    assert entry["status"]["status_str"] == "success"
    image = entry["outputs"]["9"]["images"][0]
    assert image["filename"].startswith("editor_") and f"filename={image['filename']}" in src
    assert any(status == 200 and image["filename"] in u for status, u in views)
    saved = Path(config.output_dir) / image["filename"]
    from PIL import Image

    with Image.open(saved) as im:
        assert im.size == (32, 32) and json.loads(im.text["prompt"])["6"]["inputs"]["text"] == "brick"
        assert "workflow" in im.text  # the editor sends its graph: it is embedded as ComfyUI embeds it
    (ARTIFACTS / "timing.json").write_text(json.dumps({"run_click_to_image_s": round(seconds, 2)}))
