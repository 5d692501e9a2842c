"""A real ComfyUI client library from PyPI, unchanged, against `twosamplers serve` under uvicorn:
comfy-api-simplified (MIT; requests + websockets) posts a workflow, waits on the websocket, fetches the history
and downloads the image through /view. The bytes must be those `twosamplers run` writes for the same workflow
(the CLI in its own process). Also its upload, queue, object_info, embeddings, system_stats and interrupt calls,
and HTTP Basic auth off loopback the way the library sends it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from serve_helpers import free_port, live_server, small_prompt

pytest.importorskip("uvicorn", reason="the [server] extra is not installed")
capi = pytest.importorskip("comfy_api_simplified", reason="comfy-api-simplified (test extra) is not installed")

from twosamplers.server import ServeConfig  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")


def titled(prompt: dict) -> dict:
    """The library finds nodes by title (`_meta.title`), as ComfyUI's "Save (API)" writes them."""
    titles = {"3": "KSampler", "4": "Load Checkpoint", "5": "Empty Latent Image", "6": "Positive", "7": "Negative",
              "8": "VAE Decode", "9": "Save Image"}
    return {nid: {**node, "_meta": {"title": titles.get(nid, nid)}} for nid, node in prompt.items()}


def cli_run(workflow: Path, out: Path) -> bytes:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "twosamplers", "run", str(workflow), "--output-dir", str(out),
                           "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = json.loads(proc.stdout)["outputs"][0]["files"]
    return Path(files[0]).read_bytes()


def test_comfy_api_simplified_gets_the_bytes_of_twosamplers_run(tmp_path):
    from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper

    prompt = titled(small_prompt(seed=1234, prefix="client", steps=3))
    wf_path = tmp_path / "wf.json"
    wf_path.write_text(json.dumps(prompt))
    config = ServeConfig(port=free_port(), output_dir=str(tmp_path / "out"), input_dir=str(tmp_path / "in"))
    with live_server(config) as (url, server):
        api = ComfyApiWrapper(url)
        wf = ComfyWorkflowWrapper(str(wf_path))
        wf.set_node_param("KSampler", "seed", 1234)
        images = api.queue_and_wait_images(wf, "Save Image")
        assert len(images) == 1
        (name, data), = images.items()
        assert name.startswith("client_") and data[:8] == b"\x89PNG\r\n\x1a\n"
        # the rest of the library's calls
        assert "KSampler" in api.get_object_info() and set(api.get_object_info("VAEDecode")) == {"VAEDecode"}
        assert api.get_embeddings() == []
        assert api.get_system_stats()["system"]["comfyui_version"]
        assert api.get_queue() == {"queue_running": [], "queue_pending": []}
        up = api.upload_image(str(tmp_path / "out" / name))
        assert up == {"name": name, "subfolder": "default_upload_folder", "type": "input"}
        api.interrupt()
    assert data == cli_run(wf_path, tmp_path / "cli")


def test_comfy_api_simplified_with_basic_auth(tmp_path):
    """--auth USER:PASS (required as soon as it is given, loopback too): the library's requests and its websocket
    carry HTTP Basic."""
    from comfy_api_simplified import ComfyApiWrapper
    from comfy_api_simplified.exceptions import ComfyApiError

    port = free_port()
    config = ServeConfig(port=port, output_dir=str(tmp_path / "out"), input_dir=str(tmp_path / "in"))
    with live_server(config, auth="alice:s3cret-pass") as (url, server):
        with pytest.raises(ComfyApiError):
            ComfyApiWrapper(url).get_queue()
        api = ComfyApiWrapper(url, user="alice", password="s3cret-pass")
        images = api.queue_and_wait_images(titled(small_prompt(seed=9, prefix="auth")), "Save Image")
        assert list(images)[0].startswith("auth_")


def test_the_serve_command_starts_and_answers(tmp_path):
    """`twosamplers serve` as a user starts it: the start line, then ComfyUI's endpoints; Ctrl-C-like stop."""
    import signal
    import urllib.request

    port = free_port()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "twosamplers", "serve", "--port", str(port), "--output-dir",
                             str(tmp_path / "out"), "--input-dir", str(tmp_path / "in")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line and "this machine only" in line, line
        stats = None
        for _ in range(300):
            try:
                stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/system_stats",
                                                          timeout=5).read())
                break
            except OSError:
                import time

                time.sleep(0.1)
        assert stats is not None and stats["system"]["comfyui_version"]
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert "Traceback" not in out, out
