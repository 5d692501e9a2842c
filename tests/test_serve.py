"""`twosamplers serve` over plain HTTP and its websocket (Starlette's test client, in process): every endpoint,
under its ComfyUI path and under /api, with ComfyUI 0.30's shapes and status codes, the errors included."""

from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pytest
from PIL import Image
from serve_helpers import read_until_done, small_prompt

pytest.importorskip("starlette", reason="the [server] extra is not installed")
pytest.importorskip("multipart", reason="the [server] extra (python-multipart) is not installed")

from starlette.testclient import TestClient  # noqa: E402

from twosamplers.server import ServeConfig, build  # noqa: E402

PORT = 8188
BASE = f"http://127.0.0.1:{PORT}"
WS = f"ws://127.0.0.1:{PORT}"


def png_bytes(color=(10, 200, 30), size=(16, 16), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    (root / "in").mkdir()
    (root / "in" / "photo.png").write_bytes(png_bytes())
    (root / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    config = ServeConfig(port=PORT, output_dir=str(root / "out"), input_dir=str(root / "in"), max_upload_mb=1)
    app, server, _ = build(config)
    with TestClient(app, base_url=BASE) as client:
        yield client, server, root


def run_prompt(client, prompt: dict, cid: str = "tester", **extra) -> tuple[dict, list[dict]]:
    with client.websocket_connect(f"{WS}/ws?clientId={cid}") as ws:
        assert ws.receive_json()["type"] == "status"
        r = client.post("/prompt", json={"prompt": prompt, "client_id": cid, **extra})
        assert r.status_code == 200, r.text
        body = r.json()
        return body, read_until_done(ws, body["prompt_id"])


# ---------------------------------------------------------------------------------------------- a prompt's life
def test_prompt_runs_with_comfyui_messages_history_and_view(served):
    client, server, root = served
    body, msgs = run_prompt(client, small_prompt(seed=3, prefix="life"))
    assert set(body) == {"prompt_id", "number", "node_errors"} and body["node_errors"] == {}
    pid = body["prompt_id"]
    kinds = [m["type"] for m in msgs if "type" in m]
    for kind in ("execution_start", "execution_cached", "executing", "progress", "executed", "execution_success"):
        assert kind in kinds, kinds
    assert kinds.index("execution_start") < kinds.index("progress") < kinds.index("executed") \
        < kinds.index("execution_success")
    progress = [m["data"] for m in msgs if m.get("type") == "progress"]
    assert progress[0] == {"value": 1, "max": 2, "prompt_id": pid, "node": "3"}
    assert progress[-1]["value"] == 2
    executed = next(m["data"] for m in msgs if m.get("type") == "executed")
    assert executed["node"] == "9" and executed["prompt_id"] == pid
    image = executed["output"]["images"][0]
    assert image["type"] == "output" and image["subfolder"] == "" and image["filename"].startswith("life_")
    assert msgs[-1] == {"type": "executing", "data": {"node": None, "prompt_id": pid}}
    states = [m["data"] for m in msgs if m.get("type") == "progress_state"]
    assert states[-1]["prompt_id"] == pid and set(states[-1]["nodes"]) == {"3", "4", "5", "6", "7", "8", "9"}
    assert {n["state"] for n in states[-1]["nodes"].values()} == {"finished"}
    assert any(s["nodes"].get("3", {}).get("state") == "running" and s["nodes"]["3"]["value"] == 1 for s in states)
    # history: ComfyUI's entry
    hist = client.get(f"/history/{pid}").json()[pid]
    assert hist["prompt"][1] == pid and hist["prompt"][2]["3"]["class_type"] == "KSampler"
    assert hist["outputs"] == {"9": {"images": [image]}}
    assert hist["status"]["status_str"] == "success" and hist["status"]["completed"] is True
    assert [m[0] for m in hist["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    assert hist["meta"]["9"]["node_id"] == "9"
    # the file: written in the output folder with the prompt embedded; /view serves its bytes
    path = root / "out" / image["filename"]
    view = client.get("/view", params={"filename": image["filename"], "subfolder": "", "type": "output"})
    assert view.status_code == 200 and view.content == path.read_bytes()
    assert view.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(view.content)) as im:
        assert json.loads(im.text["prompt"])["3"]["inputs"]["seed"] == 3


def test_output_bytes_equal_the_workflow_runner(served, tmp_path):
    from twosamplers.workflow import run

    client, server, root = served
    prompt = small_prompt(seed=11, prefix="same")
    _, msgs = run_prompt(client, prompt)
    image = next(m["data"] for m in msgs if m.get("type") == "executed")["output"]["images"][0]
    mine = (root / "out" / image["filename"]).read_bytes()
    theirs = run(prompt, output_dir=tmp_path)[0]["files"][0]
    assert mine == open(theirs, "rb").read()


def test_unchanged_nodes_are_cached_between_prompts_and_outputs_always_written(served):
    client, server, root = served
    _, first = run_prompt(client, small_prompt(seed=21, prefix="cache"))
    _, second = run_prompt(client, small_prompt(seed=22, prefix="cache"))
    cached = next(m["data"]["nodes"] for m in second if m.get("type") == "execution_cached")
    assert set(cached) == {"4", "5", "6", "7"}
    ran = {m["data"]["node"] for m in second if m.get("type") == "executing"} - {None}
    assert ran == {"3", "8", "9"}
    _, third = run_prompt(client, small_prompt(seed=22, prefix="cache"))  # same prompt again: a new file
    names = [next(m["data"] for m in msgs if m.get("type") == "executed")["output"]["images"][0]["filename"]
             for msgs in (second, third)]
    assert names[0] != names[1]
    assert (root / "out" / names[0]).read_bytes() == (root / "out" / names[1]).read_bytes()


def test_messages_go_to_their_client_only(served):
    client, server, _ = served
    with client.websocket_connect(f"{WS}/ws?clientId=other") as other:
        assert other.receive_json()["type"] == "status"
        body, _ = run_prompt(client, small_prompt(seed=31, prefix="route"), cid="owner")
        seen = []
        while True:  # the other client gets the status broadcasts only
            other.send_text(json.dumps({"type": "ping"}))
            m = other.receive_json()
            seen.append(m["type"])
            if m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 0:
                break
        assert set(seen) == {"status"}


def test_feature_flags_handshake(served):
    client, _, _ = served
    with client.websocket_connect(f"{WS}/ws?clientId=ff") as ws:
        first = ws.receive_json()
        assert first["data"]["sid"] == "ff"
        ws.send_text(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        reply = ws.receive_json()
        assert reply["type"] == "feature_flags" and reply["data"]["supports_preview_metadata"] is True


def test_preview_image_goes_to_the_temp_folder(served):
    client, _, _ = served
    prompt = small_prompt(seed=41, prefix="unused")
    prompt["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    _, msgs = run_prompt(client, prompt)
    image = next(m["data"] for m in msgs if m.get("type") == "executed")["output"]["images"][0]
    assert image["type"] == "temp" and image["filename"].startswith("ComfyUI_temp_")
    view = client.get("/view", params={**image, "type": "temp"})
    assert view.status_code == 200 and view.content.startswith(b"\x89PNG")
    assert not any(m.get("binary") for m in msgs)  # no live previews unless asked for


def test_execution_error_is_one_line_without_traceback(served):
    client, _, _ = served
    prompt = small_prompt(prefix="broken")
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "broken.png"}}
    prompt["11"] = {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "broken"}}
    body, msgs = run_prompt(client, prompt)
    err = next(m["data"] for m in msgs if m.get("type") == "execution_error")
    assert err["node_id"] == "10" and err["node_type"] == "LoadImage" and err["traceback"] == []
    assert "\n" not in err["exception_message"] and err["exception_message"]
    hist = client.get(f"/history/{body['prompt_id']}").json()[body["prompt_id"]]
    assert hist["status"]["status_str"] == "error" and hist["status"]["completed"] is False


# ---------------------------------------------------------------------------------------------- /prompt errors
def post_error(client, payload, status=400, **kw):
    r = client.post("/prompt", json=payload, **kw) if not isinstance(payload, bytes) else \
        client.post("/prompt", content=payload, **kw)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "node_errors"} and set(body["error"]) == {"type", "message", "details",
                                                                              "extra_info"}
    assert "Traceback" not in r.text
    return body


def test_bad_json_no_prompt_and_bad_ids(served):
    client, _, _ = served
    assert post_error(client, b"{not json")["error"]["type"] == "invalid_prompt"
    assert post_error(client, [1, 2])["error"]["type"] == "invalid_prompt"
    assert post_error(client, {"client_id": "x"})["error"]["type"] == "no_prompt"
    assert post_error(client, {"prompt": small_prompt(), "prompt_id": "not-a-uuid"})["error"]["type"] == \
        "invalid_prompt_id"
    assert post_error(client, {"prompt": "text"})["error"]["type"] == "invalid_prompt"


def test_unknown_node_type(served):
    client, _, _ = served
    prompt = small_prompt()
    prompt["20"] = {"class_type": "UltimateSDUpscale", "inputs": {}, "_meta": {"title": "Upscaler"}}
    body = post_error(client, {"prompt": prompt})
    assert body["error"]["type"] == "missing_node_type"
    assert body["error"]["extra_info"] == {"node_id": "20", "class_type": "UltimateSDUpscale",
                                           "node_title": "Upscaler"}


def test_missing_model_and_per_node_errors(served):
    client, _, _ = served
    prompt = small_prompt()
    prompt["4"]["inputs"]["ckpt_name"] = "sd15_missing.safetensors"
    prompt["3"]["inputs"]["steps"] = 0
    prompt["3"]["inputs"]["sampler_name"] = "not_a_sampler"
    del prompt["6"]["inputs"]["text"]
    body = post_error(client, {"prompt": prompt})
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    errs = body["node_errors"]
    assert errs["4"]["class_type"] == "CheckpointLoaderSimple" and errs["4"]["dependent_outputs"] == ["9"]
    assert [e["type"] for e in errs["4"]["errors"]] == ["value_not_in_list"]
    assert {e["type"] for e in errs["3"]["errors"]} == {"value_smaller_than_min", "value_not_in_list"}
    assert [e["type"] for e in errs["6"]["errors"]] == ["required_input_missing"]
    assert errs["6"]["errors"][0]["extra_info"] == {"input_name": "text"}


def test_link_errors_and_no_outputs(served):
    client, _, _ = served
    prompt = small_prompt()
    prompt["8"]["inputs"]["samples"] = ["6", 0]  # CONDITIONING into LATENT
    errs = post_error(client, {"prompt": prompt})["node_errors"]
    assert errs["8"]["errors"][0]["type"] == "return_type_mismatch"
    prompt = small_prompt()
    prompt["8"]["inputs"]["samples"] = ["99", 0]
    assert post_error(client, {"prompt": prompt})["node_errors"]["8"]["errors"][0]["type"] == "bad_linked_input"
    prompt = small_prompt()
    del prompt["9"]
    assert post_error(client, {"prompt": prompt})["error"]["type"] == "prompt_no_outputs"
    prompt = small_prompt()
    prompt["5"]["inputs"]["width"] = "wide"
    assert post_error(client, {"prompt": prompt})["node_errors"]["5"]["errors"][0]["type"] == "invalid_input_type"


def test_one_bad_output_is_dropped_and_the_good_one_runs(served):
    client, _, root = served
    prompt = small_prompt(seed=51, prefix="good")
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "nowhere.png"}}
    prompt["11"] = {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "bad"}}
    body, msgs = run_prompt(client, prompt)
    assert body["node_errors"]["10"]["errors"][0]["type"] == "custom_validation_failed"
    assert body["node_errors"]["10"]["dependent_outputs"] == ["11"]
    executed = [m["data"]["node"] for m in msgs if m.get("type") == "executed"]
    assert executed == ["9"]
    assert not list((root / "out").glob("bad_*"))


def test_values_are_converted_as_comfyui_converts_them(served):
    client, _, _ = served
    prompt = small_prompt(seed=61, prefix="conv")
    prompt["3"]["inputs"]["steps"] = "2"
    prompt["3"]["inputs"]["seed"] = 61.0
    body, msgs = run_prompt(client, prompt)
    hist = client.get(f"/history/{body['prompt_id']}").json()[body["prompt_id"]]
    assert hist["prompt"][2]["3"]["inputs"]["steps"] == 2 and hist["prompt"][2]["3"]["inputs"]["seed"] == 61


# ---------------------------------------------------------------------------------------------- queue, interrupt
def test_queue_delete_clear_front_and_interrupt(served):
    client, server, _ = served
    with client.websocket_connect(f"{WS}/ws?clientId=q") as ws:
        ws.receive_json()
        long = client.post("/prompt", json={"prompt": small_prompt(seed=71, steps=200, prefix="long"),
                                            "client_id": "q"}).json()
        ids = [client.post("/prompt", json={"prompt": small_prompt(seed=72 + i, prefix="wait")}).json()["prompt_id"]
               for i in range(3)]
        front = client.post("/prompt", json={"prompt": small_prompt(seed=80, prefix="front"), "front": True}).json()
        assert front["number"] < 0
        t0 = time.time()
        while not client.get("/queue").json()["queue_running"] and time.time() - t0 < 60:
            time.sleep(0.05)
        queue = client.get("/api/queue").json()
        assert queue["queue_running"][0][1] == long["prompt_id"] and len(queue["queue_running"][0]) == 5
        assert [e[1] for e in queue["queue_pending"]] == [front["prompt_id"], *ids]
        assert client.get("/prompt").json() == {"exec_info": {"queue_remaining": 5}}
        assert client.post("/queue", json={"delete": [ids[0]]}).status_code == 200
        assert [e[1] for e in client.get("/queue").json()["queue_pending"]] == [front["prompt_id"], *ids[1:]]
        assert client.post("/queue", json={"clear": True}).status_code == 200
        assert client.get("/queue").json()["queue_pending"] == []
        assert client.post("/interrupt", json={"prompt_id": "someone-else"}).status_code == 200
        assert client.post("/api/interrupt").status_code == 200
        msgs = read_until_done(ws, long["prompt_id"])
    stopped = next(m["data"] for m in msgs if m.get("type") == "execution_interrupted")
    assert stopped["prompt_id"] == long["prompt_id"] and stopped["node_id"] == "3"
    cached = next(m["data"]["nodes"] for m in msgs if m.get("type") == "execution_cached")
    assert stopped["node_type"] == "KSampler" and set(stopped["executed"]) | set(cached) == {"4", "5", "6", "7"}
    steps = [m for m in msgs if m.get("type") == "progress"]
    assert len(steps) < 200
    hist = client.get(f"/history/{long['prompt_id']}").json()[long["prompt_id"]]
    assert hist["status"]["status_str"] == "error" and hist["outputs"] == {}


def test_history_listing_delete_and_clear(served):
    client, _, _ = served
    run_prompt(client, small_prompt(seed=91, prefix="h"))
    run_prompt(client, small_prompt(seed=92, prefix="h"))
    everything = client.get("/history").json()
    last = client.get("/history", params={"max_items": 1}).json()
    assert len(last) == 1 and list(last) == list(everything)[-1:]
    assert client.get("/history", params={"max_items": "x"}).status_code == 400
    victim = list(everything)[0]
    assert client.post("/history", json={"delete": [victim]}).status_code == 200
    assert client.get(f"/history/{victim}").json() == {}
    assert client.post("/api/history", json={"clear": True}).status_code == 200
    assert client.get("/history").json() == {}
    assert client.post("/history", content=b"[").status_code == 400


# ---------------------------------------------------------------------------------------------- files
def test_view_refuses_everything_outside_its_folders(served, tmp_path):
    client, _, root = served
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    os.symlink(secret, root / "out" / "link.png")
    (root / "out" / ".twosamplers").mkdir(exist_ok=True)
    (root / "out" / ".twosamplers" / "x.png").write_bytes(png_bytes())
    cases = [({"filename": "../in/photo.png"}, 400), ({"filename": "/etc/passwd"}, 400),
             ({"filename": "photo.png", "subfolder": "../in"}, 403), ({"filename": "photo.png", "type": "bogus"}, 400),
             ({"filename": "link.png"}, 403), ({"filename": "x.png", "subfolder": ".twosamplers"}, 403),
             ({"filename": "nothere.png"}, 404), ({}, 404), ({"filename": ".hidden"}, 400)]
    for params, status in cases:
        r = client.get("/view", params=params)
        assert r.status_code == status, (params, r.status_code, r.text)
        assert "Traceback" not in r.text
    ok = client.get("/api/view", params={"filename": "photo.png", "type": "input"})
    assert ok.status_code == 200 and ok.content == (root / "in" / "photo.png").read_bytes()
    annotated = client.get("/view", params={"filename": "photo.png [input]"})
    assert annotated.status_code == 200
    rgb = client.get("/view", params={"filename": "photo.png", "type": "input", "channel": "rgb"})
    assert rgb.status_code == 200 and Image.open(io.BytesIO(rgb.content)).mode == "RGB"
    web = client.get("/view", params={"filename": "photo.png", "type": "input", "preview": "webp;50"})
    assert web.headers["content-type"] == "image/webp"


def test_upload_image_names_types_and_limits(served):
    client, server, root = served
    data = png_bytes((1, 2, 3))
    r = client.post("/upload/image", files={"image": ("up.png", data, "image/png")})
    assert r.status_code == 200 and r.json() == {"name": "up.png", "subfolder": "", "type": "input"}
    assert (root / "in" / "up.png").read_bytes() == data
    again = client.post("/upload/image", files={"image": ("up.png", data, "image/png")}).json()
    assert again["name"] == "up.png"  # the same bytes: the same file
    other = png_bytes((9, 9, 9))
    renamed = client.post("/upload/image", files={"image": ("up.png", other, "image/png")}).json()
    assert renamed["name"] == "up (1).png" and (root / "in" / "up.png").read_bytes() == data
    mine = client.post("/upload/image", files={"image": ("up.png", other, "image/png")},
                       data={"overwrite": "true"}).json()
    assert mine["name"] == "up.png" and (root / "in" / "up.png").read_bytes() == other  # our own file
    theirs = client.post("/upload/image", files={"image": ("photo.png", other, "image/png")},
                         data={"overwrite": "true"}).json()
    assert theirs["name"] == "photo (1).png"  # never replaces a file the server did not write
    sub = client.post("/api/upload/image", files={"image": ("s.png", data, "image/png")},
                      data={"subfolder": "default_upload_folder"}).json()
    assert sub == {"name": "s.png", "subfolder": "default_upload_folder", "type": "input"}
    refused = [({"image": ("x.html", data, "text/html")}, {}, 400),
               ({"image": ("x.png", b"<html>not an image</html>", "image/png")}, {}, 400),
               ({"image": ("../x.png", data, "image/png")}, {}, 400),
               ({"image": ("x.png", data, "image/png")}, {"subfolder": "../out"}, 403),
               ({"image": ("x.png", data, "image/png")}, {"type": "elsewhere"}, 400),
               ({"image": ("big.png", b"\x89PNG" + os.urandom(2 * 1024 * 1024), "image/png")}, {}, 413),
               ({}, {"image": "just text"}, 400)]
    for files, form, status in refused:
        r = client.post("/upload/image", files=files or None, data=form)
        assert r.status_code == status, (files.get("image", ("",))[0], r.status_code, r.text)
    assert not (root / "out" / "x.png").exists()


def test_upload_mask_puts_the_alpha_on_the_original(served):
    client, _, root = served
    mask = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    mask.putpixel((3, 4), (0, 0, 0, 255))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    ref = json.dumps({"filename": "photo.png", "subfolder": "", "type": "input"})
    r = client.post("/upload/mask", files={"image": ("clipspace-mask.png", buf.getvalue(), "image/png")},
                    data={"original_ref": ref, "subfolder": "clipspace", "type": "input"})
    assert r.status_code == 200, r.text
    out = Image.open(root / "in" / "clipspace" / r.json()["name"])
    assert out.mode == "RGBA" and out.getpixel((3, 4)) == (10, 200, 30, 255) and out.getpixel((0, 0))[3] == 0
    bad = json.dumps({"filename": "../../etc/passwd", "type": "input"})
    assert client.post("/upload/mask", files={"image": ("m.png", buf.getvalue(), "image/png")},
                       data={"original_ref": bad}).status_code == 400


# ---------------------------------------------------------------------------------------------- catalogues
@pytest.mark.parametrize("prefix", ["", "/api"])
def test_catalogue_endpoints(served, prefix):
    client, _, _ = served
    info = client.get(f"{prefix}/object_info").json()
    from twosamplers.workflow import NODES

    assert set(info) == set(NODES)
    ks = info["KSampler"]
    assert ks["input"]["required"]["steps"][0] == "INT" and ks["input_order"]["required"][0] == "model"
    assert ks["output"] == ["LATENT"] and ks["output_is_list"] == [False] and ks["output_name"] == ["LATENT"]
    assert ks["name"] == "KSampler" and ks["category"] == "sampling" and ks["output_node"] is False
    assert info["SaveImage"]["output_node"] is True and info["CheckpointLoaderSimple"]["display_name"] == \
        "Load Checkpoint"
    assert "textures" in info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    assert "photo.png" in info["LoadImage"]["input"]["required"]["image"][0]
    assert client.get(f"{prefix}/object_info/KSampler").json() == {"KSampler": ks}
    assert client.get(f"{prefix}/object_info/NoSuchNode").json() == {}
    assert client.get(f"{prefix}/embeddings").json() == []
    kinds = client.get(f"{prefix}/models").json()
    assert "checkpoints" in kinds and "loras" in kinds
    assert client.get(f"{prefix}/models/checkpoints").json()[:2] == ["textures", "ideal"]
    assert client.get(f"{prefix}/models/nonsense").status_code == 404
    stats = client.get(f"{prefix}/system_stats").json()
    assert {"os", "ram_total", "ram_free", "comfyui_version", "python_version", "pytorch_version"} <= \
        set(stats["system"])
    assert {"name", "type", "index", "vram_total", "vram_free"} <= set(stats["devices"][0])
    features = client.get(f"{prefix}/features").json()
    assert features["supports_preview_metadata"] is True and features["max_upload_size"] == 1024 * 1024
    assert client.post(f"{prefix}/free", json={"unload_models": True}).status_code == 200


def test_frontend_support_endpoints(served):
    client, _, root = served
    assert client.get("/users").json() == {"storage": "server", "migrated": True}
    assert client.post("/settings", json={"Comfy.A": 1}).status_code == 200
    assert client.post("/api/settings/Comfy.B", json="two").status_code == 200
    assert client.get("/settings").json() == {"Comfy.A": 1, "Comfy.B": "two"}
    assert client.get("/settings/Comfy.B").json() == "two"
    wf = json.dumps({"nodes": [], "links": []}).encode()
    r = client.post("/userdata/workflows%2Fmy%20flow.json?overwrite=false&full_info=true", content=wf)
    assert r.status_code == 200 and r.json()["path"] == "workflows/my flow.json"
    assert client.post("/userdata/workflows%2Fmy%20flow.json?overwrite=false", content=wf).status_code == 409
    listing = client.get("/userdata", params={"dir": "workflows", "recurse": "true", "full_info": "true"}).json()
    assert [e["path"] for e in listing] == ["my flow.json"]
    got = client.get("/api/userdata/workflows%2Fmy%20flow.json")
    assert got.content == wf and got.headers["content-disposition"] == "attachment"
    moved = client.post("/userdata/workflows%2Fmy%20flow.json/move/workflows%2Fb.json")
    assert moved.status_code == 200 and moved.json() == "workflows/b.json"
    assert client.delete("/userdata/workflows%2Fb.json").status_code == 204
    assert client.get("/userdata/workflows%2Fb.json").status_code == 404
    for bad in ("..%2F..%2Fsecret", "%2Fetc%2Fpasswd", "workflows%2F..%2F..%2Fx"):
        assert client.post(f"/userdata/{bad}", content=b"x").status_code == 403
    assert client.get("/userdata", params={"dir": "nothere"}).status_code == 404
    assert (root / "out" / ".twosamplers" / "user" / "default" / "comfy.settings.json").is_file()
    for path in ("/i18n", "/workflow_templates", "/global_subgraphs", "/node_replacements"):
        assert client.get(path).json() == {}
    assert isinstance(client.get("/extensions").json(), list)


def test_root_page(served, monkeypatch):
    client, server, _ = served
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    if server.frontend is not None:
        assert "pip install comfyui-frontend-package" not in page.text
    monkeypatch.setattr(server, "frontend", None)  # without the editor: how to get it, and the API
    page = client.get("/")
    assert "pip install comfyui-frontend-package" in page.text and "/prompt" in page.text
    assert "/object_info/{node_class}" in page.text


# ---------------------------------------------------------------------------------------------- guard
def test_guard_refuses_rebinding_and_cross_site_requests(served):
    client, _, _ = served
    assert client.get("/queue", headers={"host": "evil.example:8188"}).status_code == 403
    assert client.post("/prompt", json={"prompt": small_prompt()},
                       headers={"origin": "http://evil.example"}).status_code == 403
    assert client.get("/queue", headers={"origin": BASE}).status_code == 200
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect(f"{WS}/ws", headers={"origin": "http://evil.example"}) as ws:
            ws.receive_json()


def test_token_off_loopback(tmp_path):
    config = ServeConfig(host="0.0.0.0", port=9999, output_dir=str(tmp_path / "o"), input_dir=str(tmp_path / "i"))
    app, server, guard = build(config)
    assert guard.token
    with TestClient(app, base_url="http://10.0.0.5:9999") as client:
        assert client.get("/queue").status_code == 401
        assert client.get("/queue", headers={"authorization": f"Bearer {guard.token}"}).status_code == 200


# ---------------------------------------------------------------------------------------------- previews
def test_live_previews_only_when_asked(tmp_path):
    config = ServeConfig(port=PORT, output_dir=str(tmp_path / "o"), input_dir=str(tmp_path / "i"),
                         preview_method="auto")
    app, server, _ = build(config)
    with TestClient(app, base_url=BASE) as client:
        body, msgs = run_prompt(client, small_prompt(seed=5, prefix="p"))
    frames = [m["binary"] for m in msgs if "binary" in m]
    assert frames, "no preview frame"
    assert frames[0][:8] == b"\x00\x00\x00\x01\x00\x00\x00\x01" and frames[0][8:11] == b"\xff\xd8\xff"
    img = np.asarray(Image.open(io.BytesIO(frames[-1][8:])))
    assert img.shape == (32, 32, 3)


def test_serve_cli_rejects_bad_flags(capsys):
    from twosamplers.cli import main

    assert main(["serve", "--port", "0"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["serve", "--models", "/nonexistent/models/dir"]) == 2
    assert "not found" in capsys.readouterr().err


def test_jobs_api_and_page_policy(served):
    client, _, _ = served
    body, _ = run_prompt(client, small_prompt(seed=101, prefix="job"))
    jobs = client.get("/api/jobs", params={"status": "completed,failed,cancelled", "limit": 64}).json()
    assert set(jobs) == {"jobs", "pagination"} and jobs["pagination"]["offset"] == 0
    job = next(j for j in jobs["jobs"] if j["id"] == body["prompt_id"])
    assert job["status"] == "completed" and job["outputs_count"] == 1
    assert job["preview_output"]["nodeId"] == "9" and job["preview_output"]["filename"].startswith("job_")
    assert job["execution_end_time"] >= job["execution_start_time"]
    one = client.get(f"/api/jobs/{body['prompt_id']}").json()
    assert one["outputs"]["9"]["images"][0]["filename"] == job["preview_output"]["filename"]
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.get("/api/jobs", params={"status": "weird"}).status_code == 400
    assert client.get("/api/jobs", params={"limit": 0}).status_code == 400
    assert client.post("/api/jobs/nope/cancel").json() == {"cancelled": False}
    assert client.get("/templates/index.json").json() == []
    csp = client.get("/queue").headers["content-security-policy"]
    assert "connect-src 'self'" in csp and "default-src 'self'" in csp
