"""`twosamplers serve`: 20 small prompts queued at once, time per prompt against running the same workflows one
after another, and how soon the websocket's first `progress` message comes after a prompt starts.

    python benchmarks/serve.py [--prompts 20] [--size 64] [--steps 8]

Three ways, measured side by side in one run, on the same 20 workflows (the embedded `textures` model, euler,
cfg 1, seeds 1..N; all other inputs equal):
- `twosamplers run` in a loop: one CLI process per workflow (what a shell loop does: start Python, import torch,
  load the model, run, write the PNG);
- `workflow.run` in a loop in one process with one ModelCache (the engine alone, model kept loaded: the floor
  for any server), once in the main thread and once in a second thread as the server's worker runs it;
- `twosamplers serve` as its own process: the N prompts POSTed at once, followed on its websocket until the
  last one is done; per prompt = (last done - first execution_start) / N, from the client's clock. The
  worker-thread loop and the server take turns, --repeats rounds (3) of all N prompts each, so that the shared
  machine's load drifts over both alike; the figures are the sums over the rounds.
Targets (issue 25): serve per prompt <= 1.10 x the loop (all loops are printed; the in-process worker-thread
one is the strict like-for-like comparison), and first `progress` <= 0.5 s after that prompt's
`execution_start` (every prompt).
The server's PNGs are checked to be byte-identical to the in-process loop's.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def workflow(seed: int, size: int, steps: int) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "textures"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "grass", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
            "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": f"bench_{seed:03}"}},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_loop(files: list[Path], out: Path) -> float:
    t0 = time.perf_counter()
    for f in files:
        subprocess.run([sys.executable, "-m", "twosamplers", "run", str(f), "--output-dir", str(out), "-q"],
                       env=ENV, check=True, capture_output=True)
    return time.perf_counter() - t0


class Loop:
    """`workflow.run` one prompt after another in this process, one ModelCache (the model loaded once, as the
    server keeps it), in the main thread or in a second thread as the server's worker runs prompts (on a loaded
    machine torch's two-thread kernels run much slower from the main thread; see docs/serve.md)."""

    def __init__(self, out: Path, warm: dict) -> None:
        sys.path.insert(0, str(ROOT / "src"))
        from twosamplers.models import ModelCache
        from twosamplers.workflow import run

        self.run, self.cache, self.out = run, ModelCache(), out
        self.run(warm, output_dir=out / "warm", cache=self.cache)

    def chunk(self, prompts: list[dict], in_thread: bool) -> tuple[float, dict[str, bytes]]:
        import threading

        result = {}

        def loop() -> None:
            t0, c0, files = time.perf_counter(), time.process_time(), {}
            for p in prompts:
                f = Path(self.run(p, output_dir=self.out, cache=self.cache)[0]["files"][0])
                files[f.name] = f.read_bytes()
            result["t"], result["cpu"], result["files"] = time.perf_counter() - t0, time.process_time() - c0, files

        if in_thread:
            t = threading.Thread(target=loop)
            t.start()
            t.join()
        else:
            loop()
        return result["t"], result["cpu"], result["files"]


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


class Served:
    """`twosamplers serve` as its own process, followed on its websocket (client-clock times)."""

    def __init__(self, out: Path, warm: dict) -> None:
        from websockets.sync.client import connect

        port = free_port()
        self.out, self.base = out, f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "twosamplers", "serve", "--port", str(port),
                                      "--output-dir", str(out), "--input-dir", str(out / "in")], env=ENV,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            try:
                urllib.request.urlopen(self.base + "/system_stats", timeout=5)
                break
            except OSError:
                time.sleep(0.1)
        self.ws = connect(f"ws://127.0.0.1:{port}/ws?clientId=bench", max_size=None)
        self.ws.recv()
        self.chunk([warm])  # the model loaded once

    def cpu(self) -> float:
        """CPU seconds the server process has used (all its threads), from /proc."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def chunk(self, prompts: list[dict]) -> dict:
        c0 = self.cpu()
        ids = [post(self.base + "/prompt", {"prompt": p, "client_id": "bench"})["prompt_id"] for p in prompts]
        times = _follow(self.ws, len(ids))
        times["cpu"] = self.cpu() - c0
        files = {}
        for pid in ids:
            entry = json.loads(urllib.request.urlopen(f"{self.base}/history/{pid}", timeout=30).read())[pid]
            name = entry["outputs"]["9"]["images"][0]["filename"]
            files[name] = (self.out / name).read_bytes()
        return {**times, "files": files}

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(30)


def _follow(ws, n: int) -> dict:
    """Client-clock times of each prompt's execution_start, first progress and end, until n prompts ended."""
    start, first, end = {}, {}, {}
    while len(end) < n:
        msg = ws.recv()
        now = time.perf_counter()
        if isinstance(msg, bytes):
            continue
        m = json.loads(msg)
        pid = m["data"].get("prompt_id") if isinstance(m.get("data"), dict) else None
        if m["type"] == "execution_start":
            start[pid] = now
        elif m["type"] == "progress" and pid not in first:
            first[pid] = now
        elif m["type"] == "executing" and m["data"]["node"] is None:
            end[pid] = now
        elif m["type"] in ("execution_error", "execution_interrupted"):
            raise RuntimeError(f"prompt failed: {m}")
    lags = [first[p] - start[p] for p in start if p in first]
    return {"wall": max(end.values()) - min(start.values()), "lags": lags}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of (worker-thread loop, serve), alternating")
    a = ap.parse_args()
    prompts = [workflow(s, a.size, a.steps) for s in range(1, a.prompts + 1)]
    warm = workflow(999, a.size, a.steps)
    with tempfile.TemporaryDirectory(prefix="twosamplers-bench-serve-") as tmp:
        tmp = Path(tmp)
        files = []
        for i, p in enumerate(prompts):
            files.append(tmp / f"wf{i}.json")
            files[-1].write_text(json.dumps(p))
        t_cli = cli_loop(files, tmp / "cli")
        t_main, _, _ = Loop(tmp / "main", warm).chunk(prompts, in_thread=False)
        # the strict comparison, interleaved in rounds so that the machine's load drifts over both alike
        loop, served = Loop(tmp / "loop", warm), Served(tmp / "serve", warm)
        t_loop, t_serve, c_loop, c_serve, lags, loop_files, served_files = 0.0, 0.0, 0.0, 0.0, [], {}, {}
        try:
            for rep in range(a.repeats):
                t, c, f = loop.chunk(prompts, in_thread=True)
                got = served.chunk(prompts)
                t_loop, t_serve, lags = t_loop + t, t_serve + got["wall"], lags + got["lags"]
                c_loop, c_serve = c_loop + c, c_serve + got["cpu"]
                if rep == 0:  # the first round's files have the same names both ways
                    loop_files, served_files = f, got["files"]
        finally:
            served.close()
    n = a.prompts * a.repeats
    per = {"cli": t_cli / a.prompts, "main": t_main / a.prompts, "loop": t_loop / n, "serve": t_serve / n}
    same = sorted(loop_files.items()) == sorted(served_files.items())
    print(f"{a.prompts} prompts, textures model {a.size}x{a.size}, euler, {a.steps} steps, cfg 1, "
          f"{os.cpu_count()} cores (worker-thread loop and serve: {a.repeats} alternating rounds)")
    print(f"  twosamplers run, one process each : {per['cli']:.3f} s/prompt")
    print(f"  workflow.run loop, main thread    : {per['main']:.3f} s/prompt")
    print(f"  workflow.run loop, worker thread  : {per['loop']:.3f} s/prompt   (as the server runs prompts)")
    print(f"  twosamplers serve, {a.prompts} queued      : {per['serve']:.3f} s/prompt")
    print(f"  serve / run loop (CLI)            : {per['serve'] / per['cli']:.3f}")
    print(f"  serve / workflow.run main thread  : {per['serve'] / per['main']:.3f}")
    print(f"  serve / workflow.run worker thread: {per['serve'] / per['loop']:.3f}   (target <= 1.10)")
    print(f"  CPU s/prompt, worker-thread loop {c_loop / n:.3f}, serve process {c_serve / n:.3f}: "
          f"ratio {c_serve / c_loop:.3f}   (the same comparison in CPU time, which other jobs on a shared "
          "machine disturb less)")
    print(f"  first progress after execution_start: median {statistics.median(lags) * 1000:.0f} ms, "
          f"max {max(lags) * 1000:.0f} ms over {len(lags)} prompts   (target <= 500 ms)")
    print(f"  PNGs byte-identical to the loop's : {same}")
    ok = per["serve"] <= 1.10 * per["loop"] and max(lags) <= 0.5 and same
    print("targets met" if ok else "TARGETS NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
