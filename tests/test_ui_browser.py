"""End to end in a real browser: Debian's chromium driven by Playwright (no browser download).

Starts `twosamplers ui` on a free local port, uploads an image, paints a stroke with the mouse, clicks Generate,
waits for the result, downloads the PNG (size + CLI metadata), loads it back through "Load settings from PNG"
and checks the fields and the mask. Screenshots go to test-artifacts/ui/ (gitignored), with the measured time
from the click on Generate to the result (test-artifacts/ui/timing.json). Every request the page makes must stay
on 127.0.0.1. Skips (with the reason) only when playwright, gradio or a chromium binary is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 600_000  # the shared 2-core CI machine can be very slow; a render is ~15 s when it is quiet
STEP_TIMEOUT_MS = 180_000  # a page interaction (not a render)


def find_chromium() -> str | None:
    for cand in (os.environ.get("TWOSAMPLERS_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chromium():
    pytest.importorskip("gradio", reason="the [ui] extra (gradio) is not installed")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    path = find_chromium()
    if path is None:
        pytest.skip("no chromium binary found (/usr/bin/chromium, $PATH or $TWOSAMPLERS_CHROMIUM); "
                    "install Debian's chromium to run the browser test")
    return path


@pytest.fixture(scope="module")
def server(chromium, tmp_path_factory, request):
    """One page server for the module (Gradio's upload tracker is process-global: two servers at once in one
    process lose uploads), started with conftest's tiny models folder when diffusers is there to build it."""
    from twosamplers.ui.app import launch

    try:
        models = request.getfixturevalue("tiny_models_dir")
    except pytest.skip.Exception:
        models = None
    out = tmp_path_factory.mktemp("ui-out")
    port = free_port()
    app = launch(host="127.0.0.1", port=port, models_dir=None if models is None else str(models),
                 outputs_dir=str(out), block=False)
    try:
        yield f"http://127.0.0.1:{port}/", out  # test_models_and_loras_round_trip asks for tiny_models_dir itself
    finally:
        app.close()


def _fill(page, selector: str, value: str, settle_s: float = 1.0) -> None:
    """Type `value` into a field and wait until it has held it for `settle_s`: a field in a tab that was just
    opened can still be mounted (and reset to its initial value) after Playwright's fill on a loaded machine."""
    t0 = time.perf_counter()
    held = None
    while True:
        if page.input_value(selector) != value:
            page.fill(selector, value)
            held = time.perf_counter()
        elif held is None:
            held = time.perf_counter()
        if time.perf_counter() - held >= settle_s:
            return
        if time.perf_counter() - t0 > TIMEOUT_MS / 1000:
            raise AssertionError(f"{selector} did not keep {value!r}")
        time.sleep(0.2)


def _poll(page, js: str, arg=None, timeout_ms: int = TIMEOUT_MS):
    """Evaluate `js` every 0.3 s until it is truthy (Playwright's wait_for_function polls on animation frames,
    which the canvas's WebGL loop can starve on a loaded machine)."""
    t0 = time.perf_counter()
    while True:
        v = page.evaluate(js, arg)
        if v:
            return v
        if time.perf_counter() - t0 > timeout_ms / 1000:
            raise AssertionError(f"timed out after {timeout_ms / 1000:.0f} s waiting for: {js}")
        time.sleep(0.3)


def _wait_result(page, needle: str = "done in") -> tuple[str, set]:
    """Wait for the status to say `needle`, failing at once when the page shows an error instead. Returns the
    final status and the progress lines seen on the way (and "live" if the live preview showed a picture)."""
    seen: set = set()
    _poll(
        page, "(needle) => { const s = document.querySelector('#ts-status');"
        " if (s && s.innerText.startsWith('step'))"
        "   window.__ts_steps = (window.__ts_steps || new Set()).add(s.innerText);"
        " if (document.querySelector('#ts-live img')) window.__ts_live = true;"
        " const e = document.querySelector('#ts-error'); return (s && s.innerText.includes(needle))"
        " || (e && e.offsetParent !== null && e.innerText.trim())"
        " || document.querySelector('.toast-body'); }", needle)
    toast = page.locator(".toast-body")
    assert toast.count() == 0, f"Gradio error toast: {toast.first.inner_text()}"
    assert not page.locator("#ts-error").is_visible(), page.inner_text("#ts-error")
    seen.update(page.evaluate("() => Array.from(window.__ts_steps || [])"))
    if page.evaluate("() => window.__ts_live === true") or page.locator("#ts-live img").count():
        seen.add("live")
    return page.inner_text("#ts-status"), seen


def _wait_text(page, selector: str, needle: str, timeout_ms: int = TIMEOUT_MS) -> str:
    _poll(page, "([sel, needle]) => { const e = document.querySelector(sel); "
          "return e && e.innerText.includes(needle); }", [selector, needle], timeout_ms)
    return page.inner_text(selector)


def _wait_canvas_shows_image(page, timeout_s: float = TIMEOUT_MS / 1000) -> None:
    """Poll the canvas's pixels until the uploaded gradient (green in its lower left corner) is drawn."""
    import io

    from PIL import Image

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        shot = np.asarray(Image.open(io.BytesIO(page.locator("#ts-canvas canvas").last.screenshot())).convert("RGB"))
        green = (shot[..., 1].astype(int) - shot[..., 0] > 120) & (shot[..., 1] > 150)
        if green.sum() > 50:
            return
        time.sleep(0.5)
    raise AssertionError("the uploaded image never appeared on the canvas")


@contextlib.contextmanager
def open_page(p, chromium: str, url: str, on_request=None, **page_options):
    """A fresh page of a new chromium (1400x1100) with the app loaded; `on_request` observes every request
    from the first one. The browser closes on exit."""
    browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1100}, **page_options)
        if on_request is not None:
            page.on("request", on_request)
        page.goto(url)
        _poll(page, "(sel) => document.querySelector(sel) !== null", "#ts-generate")
        yield page
    finally:
        browser.close()


def upload_to_canvas(page, path, timeout_s: float) -> None:
    """Upload an image into the canvas editor (retried: an upload made while the editor starts can be dropped)."""
    for attempt in range(3):
        page.set_input_files("#ts-canvas input[type=file]", str(path))
        try:
            _wait_canvas_shows_image(page, timeout_s)
            return
        except AssertionError:
            if attempt == 2:
                raise


def paint_stroke(page) -> None:
    """A horizontal brush stroke of ~80 px through the canvas's centre, drawn with the mouse."""
    page.click("#ts-canvas button[aria-label=Brush]")
    box = page.locator("#ts-canvas canvas").last.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 40, cy)
    page.mouse.down()
    for i in range(21):
        page.mouse.move(cx - 40 + 4 * i, cy + (i % 5), steps=2)
    page.mouse.up()


def download(page, path: Path) -> Path:
    """Click Download PNG and save the file at `path`."""
    with page.expect_download(timeout=TIMEOUT_MS) as dl:
        page.click("#ts-download")
    dl.value.save_as(path)
    return path


def generate_and_download(page, path: Path) -> Path:
    """Click Generate, wait for the result, download its PNG to `path`."""
    page.click("#ts-generate")
    _wait_result(page)
    return download(page, path)


def _value(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} input, #{elem_id} textarea").first.input_value()


def test_paint_generate_download_reload(server, chromium, tmp_path):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from twosamplers.job.imageio import read_settings

    url, out_dir = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:256, 0:256]
    src = tmp_path / "input.png"
    Image.fromarray(np.stack([x, y, (x + y) // 2], -1).astype(np.uint8)).save(src)

    outbound: list[str] = []
    local = re.compile(r"^((https?|wss?)://127\.0\.0\.1[:/]|data:|blob:)")
    # requests are observed, not intercepted (Playwright's request interception disturbs Gradio's uploads)

    def observe(request) -> None:
        if not local.match(request.url):
            outbound.append(request.url)

    with sync_playwright() as p, open_page(p, chromium, url, observe, accept_downloads=True) as page:
        # upload an image, then paint a stroke with the mouse (brush tool)
        upload_to_canvas(page, src, STEP_TIMEOUT_MS / 3000)
        # the upload ticks "start from the canvas image" in the browser at once (no server round trip, which
        # waits for the editor's value and lost the tick to a quick Generate)
        _poll(page, "() => document.querySelector('#ts-use-image input').checked", None, 10_000)
        paint_stroke(page)
        _fill(page, "#ts-base-seed input", "5")
        _fill(page, "#ts-base-steps input", "12")
        page.get_by_role("tab", name="Mask (inside) / region 1").click()
        _fill(page, "#ts-mask-steps input", "8")
        page.click("#ts-show-mask")
        _poll(page, "(sel) => document.querySelector(sel) !== null", "#ts-mask-view img")
        page.screenshot(path=str(ARTIFACTS / "before.png"), full_page=True)

        t0 = time.perf_counter()
        page.click("#ts-generate")
        status, seen = _wait_result(page)
        click_to_result = time.perf_counter() - t0
        assert not page.locator("#ts-error").is_visible(), page.inner_text("#ts-error")
        _poll(page, "(sel) => document.querySelector(sel) !== null", "#ts-strip img")
        # per-step progress and the live x0 preview were shown while it ran
        assert "live" in seen and any(x.startswith("step ") for x in seen), seen
        page.screenshot(path=str(ARTIFACTS / "after.png"), full_page=True)

        png = download(page, tmp_path / "downloaded.png")
        with Image.open(png) as im:
            assert im.size == (256, 256)
        settings, mask = read_settings(png)
        assert settings["base_prompt"] == "grass" and settings["mask_prompt"] == "brick"
        assert settings["base_seed"] == 5 and settings["base_steps"] == 12 and settings["mask_steps"] == 8
        assert settings["width"] == settings["height"] == 256 and settings["mode"] == "two-pass"
        assert Path(settings["image"]).is_file()  # the input image is kept, so `--from` re-renders it
        assert mask is not None and tuple(mask.shape) == (256, 256)
        painted = mask.numpy() > 0.5
        assert 100 < painted.sum() < 256 * 256 // 4  # the stroke, not the whole canvas
        ys, xs = np.nonzero(painted)
        assert 80 < xs.mean() < 176 and 80 < ys.mean() < 176  # around the centre, where we painted

        # change fields, then load the PNG back: every field and the mask come back
        page.get_by_role("tab", name="Base (outside)").click()
        page.fill("#ts-base-prompt textarea", "water")
        page.fill("#ts-base-seed input", "99")
        page.click("#ts-blank")  # a blank canvas: no mask any more
        page.set_input_files("#ts-load input[type=file]", str(png))
        _poll(page, "() => (document.querySelector('#ts-base-prompt textarea') || {}).value === 'grass'", None,
              STEP_TIMEOUT_MS)
        assert _value(page, "ts-base-seed") == "5"
        assert _value(page, "ts-base-steps") == "12"
        assert _value(page, "ts-mask-prompt") == "brick"
        assert float(_value(page, "ts-feather")) == settings["feather"]
        page.click("#ts-show-mask")  # errors ("no mask") unless the mask came back into the canvas
        _poll(page, "() => document.querySelector('#ts-mask-view img') !== null", None, STEP_TIMEOUT_MS)
        assert not page.locator("#ts-error").is_visible(), page.inner_text("#ts-error")
        page.screenshot(path=str(ARTIFACTS / "reloaded.png"), full_page=True)
    (ARTIFACTS / "timing.json").write_text(json.dumps({"click_to_result_s": round(click_to_result, 2),
                                                        "status": status}, indent=1))
    print(f"click to result: {click_to_result:.2f} s ({status})")
    assert outbound == [], f"the page made outbound requests: {outbound}"


def test_errors_are_shown_in_the_page(server, chromium):
    """Generate with nothing painted: a clear message in the page, no traceback, and the server keeps going."""
    from playwright.sync_api import sync_playwright

    url, _ = server
    with sync_playwright() as p, open_page(p, chromium, url) as page:
        page.click("#ts-generate")
        text = _wait_text(page, "#ts-error", "no mask")
        assert "Traceback" not in text
        page.fill("#ts-width input", "3")
        page.click("#ts-blank")
        text = _wait_text(page, "#ts-error", "width = 3")
        assert "Traceback" not in text
        page.reload()
        _poll(page, "(sel) => document.querySelector(sel) !== null", "#ts-generate")  # still serving


def _pick(page, elem_id: str, option: str) -> None:
    """Choose `option` in a Gradio dropdown."""
    page.click(f"#{elem_id} input")
    page.get_by_role("option", name=option, exact=True).click()


def test_models_and_loras_round_trip(server, chromium, tmp_path, request):
    """A PNG with a checkpoint and a mask-pass LoRA (made by the render adapter, as the CLI would) loads into the
    model dropdown and the LoRA list; a base-pass LoRA added with the picker; Generate; the downloaded PNG
    records both LoRAs and the checkpoint."""
    from playwright.sync_api import sync_playwright

    from twosamplers.cli import demo_mask
    from twosamplers.job.imageio import read_settings
    from twosamplers.ui import handlers as H
    from twosamplers.ui.render import render

    url, _ = server
    tiny_models_dir = request.getfixturevalue("tiny_models_dir")  # the server's (skips without diffusers)
    ckpt = str(tiny_models_dir.resolve() / "checkpoints" / "sd1.safetensors")
    f = H.default_fields(ckpt)
    f.update(width=64, height=64, base_steps=2, mask_steps=2, base_prompt="a field", mask_prompt="a barn",
             mask_loras="style.safetensors:0.6")
    made = render(H.fields_to_settings(f, 1, tiny_models_dir), [demo_mask(64)], output=tmp_path / "made.png")
    with sync_playwright() as p, open_page(p, chromium, url, accept_downloads=True) as page:
        page.set_input_files("#ts-load input[type=file]", made["image"])
        page.get_by_role("tab", name="Mask (inside) / region 1").click()
        _poll(page, "() => (document.querySelector('#ts-mask-loras textarea') || {}).value === 'style.safetensors:0.6'",
              None, STEP_TIMEOUT_MS)
        page.get_by_role("tab", name="Base (outside)").click()
        assert _value(page, "ts-base-model") == "sd1.safetensors"  # the dropdown shows the checkpoint
        assert _value(page, "ts-base-prompt") == "a field"
        page.click("#ts-base-lora-box button.label-wrap")  # open the accordion
        _pick(page, "ts-base-lora-pick", "style.safetensors")
        page.fill("#ts-base-lora-strength input", "0.3")
        page.click("#ts-base-lora-add")
        _poll(page, "() => (document.querySelector('#ts-base-loras textarea') || {}).value === 'style.safetensors:0.3'",
              None, STEP_TIMEOUT_MS)
        page.screenshot(path=str(ARTIFACTS / "loras.png"), full_page=True)
        png = generate_and_download(page, tmp_path / "downloaded.png")
    settings, mask = read_settings(png)
    assert settings["model"] == ckpt and mask is not None
    assert [(e["name"], e["strength_model"]) for e in settings["base_loras"]] == [("style.safetensors", 0.3)]
    assert [(e["name"], e["strength_model"]) for e in settings["mask_loras"]] == [("style.safetensors", 0.6)]


def test_a_png_with_two_regions_and_kept_fields_comes_back_on_a_fresh_page(server, chromium, tmp_path):
    """Issue 13: a PNG with two regions and fields the page has no widget for (overlap_factor, comfyui_version),
    loaded into a fresh page (whose editor drops the layers a load sets): Generate gives the same PNG, both
    regions' masks and the kept fields included, pixel for pixel; "drop them" forgets the kept fields."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from twosamplers.cli import demo_mask
    from twosamplers.job.imageio import read_settings
    from twosamplers.ui import handlers as H
    from twosamplers.ui.render import render

    url, _ = server
    f = H.default_fields()
    f.update(width=64, height=64, base_steps=3, mask_steps=3, r2_steps=3, mode="regional", crop_to_mask=False,
             r2_prompt="water", r2_seed=4)
    m2 = demo_mask(64) * 0
    m2[:20, 40:] = 1.0
    kept = {"overlap_factor": 3, "comfyui_version": "0.3.64"}
    made = render(H.fields_to_settings(f, 2, None, kept), [demo_mask(64), m2], output=tmp_path / "made.png")
    with sync_playwright() as p, open_page(p, chromium, url, accept_downloads=True) as page:
        page.set_input_files("#ts-load input[type=file]", made["image"])
        line = _wait_text(page, "#ts-kept", "kept from the PNG", STEP_TIMEOUT_MS)
        assert "comfyui_version 0.3.64" in line and "overlap_factor 3" in line
        _poll(page, "() => document.querySelector('#ts-mask-view img') !== null", None, STEP_TIMEOUT_MS)
        png = generate_and_download(page, tmp_path / "downloaded.png")
        page.click("#ts-kept-drop")
        _poll(page, "() => !document.querySelector('#ts-kept') || document.querySelector('#ts-kept')"
              ".offsetParent === null", None, STEP_TIMEOUT_MS)
    settings, masks = H.load_png_settings(png)
    assert len(masks) == 2 and masks[0].equal(demo_mask(64)) and masks[1].equal(m2)
    assert settings["overlap_factor"] == 3 and settings["comfyui_version"] == "0.3.64"
    def same(d):  # the page's models folder (when diffusers is there to build it) sets lora_dir
        return {k: v for k, v in d.items() if k != "lora_dir"}
    assert same(read_settings(png)[0]) == same(read_settings(made["image"])[0])
    with Image.open(png) as a, Image.open(made["image"]) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
