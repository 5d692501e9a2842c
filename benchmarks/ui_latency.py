"""Web UI: time from the click on Generate to the result in the page, next to `twosamplers demo` (same model,
size, prompts, seeds, steps, feather and crop: the demo's disc is uploaded as the mask), measured alternately
in one run. Also checks that the page's picture is bit-identical to the CLI demo's.

    python benchmarks/ui_latency.py [--repeats 2] [--chromium /usr/bin/chromium]

Target (issue 13): click to result <= the CLI demo's wall time + 2 s. The CLI figure includes starting Python
and loading the model; the UI's first click includes loading the model (the server keeps it afterwards).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_demo(out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "twosamplers", "demo", "-o", str(out), "--no-preview", "-q"], check=True,
                   env=env, capture_output=True)
    return time.perf_counter() - t0


def ui_click(page, n: int, timeout_s: float = 900) -> tuple[float, str]:
    """Click Generate and wait for the n-th result's name in the status line (polled from here, every 50 ms)."""
    t0 = time.perf_counter()
    page.click("#ts-generate")
    while f"-{n:04d}.png" not in page.inner_text("#ts-status"):
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError("no result")
        time.sleep(0.05)
    return time.perf_counter() - t0, page.inner_text("#ts-status").splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from playwright.sync_api import sync_playwright

    from twosamplers.cli import demo_mask
    from twosamplers.imageio import mask_to_uint8
    from twosamplers.ui.app import launch

    tmp = Path(tempfile.mkdtemp(prefix="ts-ui-bench-"))
    mask_png = tmp / "disc.png"
    Image.fromarray(mask_to_uint8(demo_mask(256))).save(mask_png)
    port = free_port()
    app = launch(port=port, outputs_dir=str(tmp / "ui"), block=False)
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#ts-generate", timeout=300_000)
            page.set_input_files("#ts-mask-upload input[type=file]", str(mask_png))
            page.wait_for_selector("#ts-mask-upload img", timeout=300_000)
            for r in range(args.repeats):
                cli = cli_demo(tmp / f"cli{r}.png")
                ui, status = ui_click(page, r + 1)
                rows.append((r, cli, ui, status))
                print(f"run {r}: CLI demo {cli:.2f} s | UI click->result {ui:.2f} s ({status})", flush=True)
            browser.close()
    finally:
        app.close()
    ui_pngs = sorted((tmp / "ui").glob("ts-*[0-9].png"))
    same = np.array_equal(np.asarray(Image.open(ui_pngs[-1])), np.asarray(Image.open(tmp / "cli0.png")))
    print(f"UI picture == CLI demo picture: {same}")
    cli_med = float(np.median([c for _, c, _, _ in rows]))
    ui_med = float(np.median([u for _, _, u, _ in rows]))
    print(f"median: CLI demo {cli_med:.2f} s, UI click->result {ui_med:.2f} s, difference {ui_med - cli_med:+.2f} s "
          f"(target <= +2 s); first UI click includes loading the model")


if __name__ == "__main__":
    main()
