"""Re-takes docs/ui.png: the page started on a tiny ComfyUI-style models folder at ~/ComfyUI/models of a
temporary home folder (so the page shows `~/ComfyUI/models`, not a test's temporary path), an image uploaded, a
region painted with the mouse, Generate, then a full-page screenshot (1400 px viewport, saved 2/3 size in 256 colours).

    python docs/ui_screenshot.py [-o docs/ui.png]

Needs the [ui] extra, playwright, diffusers/transformers (the tiny models are built as the tests build them) and
Debian's chromium (/usr/bin/chromium or $TWOSAMPLERS_CHROMIUM)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=str(ROOT / "docs" / "ui.png"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ts-home-") as home:
        os.environ["HOME"] = home  # the page shows paths under the home folder as ~/...
        shoot(Path(home), Path(args.output))


def shoot(home: Path, output: Path) -> None:
    from conftest import build_models_dir, build_tiny_sd
    from PIL import Image
    from playwright.sync_api import sync_playwright
    from test_ui_browser import _poll, _wait_result, find_chromium, free_port, open_page, paint_stroke, upload_to_canvas

    from twosamplers.ui.app import launch

    models = build_models_dir(home / "ComfyUI" / "models", build_tiny_sd(home / "tiny-sd"))
    y, x = np.mgrid[0:256, 0:256]
    src = home / "input.png"
    Image.fromarray(np.stack([x, y, (x + y) // 2], -1).astype(np.uint8)).save(src)
    port = free_port()
    app = launch(port=port, models_dir=str(models), outputs_dir=str(home / "out"), block=False)
    try:
        with sync_playwright() as p, open_page(p, find_chromium(), f"http://127.0.0.1:{port}/") as page:
            upload_to_canvas(page, src, 30)
            paint_stroke(page)
            page.fill("#ts-base-steps input", "12")
            page.get_by_role("tab", name="Mask (inside) / region 1").click()
            page.fill("#ts-mask-steps input", "8")
            page.click("#ts-show-mask")
            _poll(page, "(sel) => document.querySelector(sel) !== null", "#ts-mask-view img")
            page.click("#ts-generate")
            _wait_result(page)
            _poll(page, "(sel) => document.querySelector(sel) !== null", "#ts-strip img")
            shot = home / "full.png"
            page.screenshot(path=str(shot), full_page=True)
    finally:
        app.close()
    with Image.open(shot) as im:
        w, h = im.size
        small = im.convert("RGB").resize((w * 2 // 3, h * 2 // 3), Image.LANCZOS)
        # 256 colours: a third of the bytes; only the canvas's gradient shows bands
        small.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(output, optimize=True)
    print(f"wrote {output} ({w * 2 // 3}x{h * 2 // 3})")


if __name__ == "__main__":
    main()
