"""`twosamplers serve --ray`: prompts run on Ray actors of a local cluster (started here, as the batch tests do);
progress and results come back through the same websocket and history, the files are those a local run
writes, and /interrupt reaches the actor."""

from __future__ import annotations

import time

import pytest
from serve_helpers import read_until_done, small_prompt

pytest.importorskip("starlette", reason="the [server] extra is not installed")
ray = pytest.importorskip("ray", reason="the [cluster] extra (ray) is not installed")

from starlette.testclient import TestClient  # noqa: E402

from twosamplers.server import ServeConfig, build  # noqa: E402

PORT = 8188
BASE, WS = f"http://127.0.0.1:{PORT}", f"ws://127.0.0.1:{PORT}"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_prompts_on_ray_actors_give_the_local_bytes_and_stop_on_interrupt(local_ray, tmp_path):
    from twosamplers.workflow import run

    config = ServeConfig(port=PORT, output_dir=str(tmp_path / "out"), input_dir=str(tmp_path / "in"), ray=True,
                         ray_actors=1)
    app, server, _ = build(config)
    assert len(server.runners) == 1 and type(server.runners[0]).__name__ == "RayRunner"
    prompt = small_prompt(seed=17, prefix="ray")
    with TestClient(app, base_url=BASE) as client, client.websocket_connect(f"{WS}/ws?clientId=r") as ws:
        ws.receive_json()
        first = client.post("/prompt", json={"prompt": prompt, "client_id": "r"}).json()
        msgs = read_until_done(ws, first["prompt_id"])
        kinds = [m["type"] for m in msgs]
        assert {"execution_start", "execution_cached", "executing", "progress", "executed",
                "execution_success"} <= set(kinds)
        image = next(m["data"] for m in msgs if m["type"] == "executed")["output"]["images"][0]
        assert image["filename"] == "ray_00001_.png" and image["type"] == "output"
        got = client.get("/view", params=image).content
        # a second prompt: the actor keeps the unchanged nodes; the counter continues in our output folder
        second = client.post("/prompt", json={"prompt": small_prompt(seed=18, prefix="ray"), "client_id": "r"}).json()
        msgs = read_until_done(ws, second["prompt_id"])
        assert set(next(m["data"]["nodes"] for m in msgs if m["type"] == "execution_cached")) == {"4", "5", "6", "7"}
        assert next(m["data"] for m in msgs if m["type"] == "executed")["output"]["images"][0]["filename"] == \
            "ray_00002_.png"
        # interrupt a long prompt on the actor
        long = client.post("/prompt", json={"prompt": small_prompt(seed=19, steps=500, prefix="long"),
                                            "client_id": "r"}).json()
        t0 = time.time()
        while not any(m for m in [ws.receive_json()] if m["type"] == "progress") and time.time() - t0 < 120:
            pass
        client.post("/interrupt")
        msgs = read_until_done(ws, long["prompt_id"])
        assert "execution_interrupted" in [m["type"] for m in msgs]
        hist = client.get(f"/history/{long['prompt_id']}").json()[long["prompt_id"]]
        assert hist["status"]["status_str"] == "error"
    local = run(prompt, output_dir=tmp_path / "local")[0]["files"][0]
    assert got == open(local, "rb").read()
