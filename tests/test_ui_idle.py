"""The page's idle-frames script in a real browser (Debian's chromium driven by Playwright, like
test_ui_browser.py, whose fixtures it shares): an idle page gets about one animation frame a second, a moving
mouse full-rate frames. Without the script Gradio 5's canvas editor redraws every frame (65 frames/s measured),
a CPU core in a browser without a GPU, which slowed every render on a 2-core machine (docs/ui.md, Latency)."""

from __future__ import annotations

import time

import test_ui_browser as B

chromium, server = B.chromium, B.server  # the same fixtures (a server of its own for this module)

COUNT_FRAMES = """() => { window.__ts_frames = 0; const inner = window.requestAnimationFrame;
  window.requestAnimationFrame = (cb) => { window.__ts_frames++; return inner(cb); }; }"""


def test_idle_page_holds_back_the_canvas_redraw(server, chromium):
    """Gradio 5's canvas editor redraws every animation frame forever (a CPU core in a software-GL browser); the
    page's idle-frames script grants an idle page about one frame a second, and full-rate frames while the mouse
    moves."""
    from playwright.sync_api import sync_playwright

    from twosamplers.ui.idle_frames import IDLE_FRAME_MS, IDLE_MS

    url = server[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=B.CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url)
            B._poll(page, "(sel) => document.querySelector(sel) !== null", "#ts-canvas canvas")
            time.sleep(IDLE_MS / 1000 + 0.5)
            page.evaluate(COUNT_FRAMES)
            t0 = time.perf_counter()
            time.sleep(3.0)
            idle = page.evaluate("() => window.__ts_frames") / (time.perf_counter() - t0)
            box = page.locator("#ts-canvas canvas").last.bounding_box()
            page.evaluate("() => { window.__ts_frames = 0; }")
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 1.5:
                page.mouse.move(box["x"] + 10 + 200 * (time.perf_counter() - t0), box["y"] + box["height"] / 2)
            busy = page.evaluate("() => window.__ts_frames") / (time.perf_counter() - t0)
        finally:
            browser.close()
    chains = 4  # animation-frame loops the idle page keeps (the editor's); each gets a frame per IDLE_FRAME_MS
    assert idle <= chains * 1000 / IDLE_FRAME_MS + 1, f"{idle:.1f} frames/s on an idle page"
    assert busy > 2 * idle, f"{busy:.1f} frames/s while the mouse moves (idle {idle:.1f})"
