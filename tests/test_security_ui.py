"""The web page's side of the hostile-input catalogue (issue 21), over HTTP against a running `twosamplers ui`:
DNS rebinding (Host), cross-site requests, Gradio's file routes outside the page's own results, a PNG that names a
private file, hostile field values sent by a client that is not the page, auth off loopback, private folders.

The page's events are driven the way its own JavaScript drives them (Gradio's upload and queue protocol), with
httpx: no browser needed, so these run wherever gradio is installed.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from security_cases import job_dict, mask_png, snapshot, someone_elses_png, write_png

httpx = pytest.importorskip("httpx")
pytest.importorskip("gradio", reason="the [ui] extra (gradio) is not installed")

TIMEOUT = 600  # a render on the shared 2-core machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(root: Path, *args: str, env: dict | None = None):
    """`twosamplers ui ARGS` in its own process (Gradio keeps process-global state: a second page in the tests'
    process would disturb the browser tests' one) -> (process, port, the start-up lines)."""
    import subprocess
    import sys
    import time

    port = free_port()
    log = root / f"ui-{port}.log"
    environ = {**os.environ, "TWOSAMPLERS_GRADIO_PARENT": str(root / "gradio-parent"), **(env or {})}
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "twosamplers", "ui", "--port", str(port), *args],
                                stdout=f, stderr=subprocess.STDOUT, env=environ)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < TIMEOUT:
        if proc.poll() is not None:
            raise AssertionError(f"twosamplers ui exited {proc.returncode}: {log.read_text()}")
        if "Running on" in log.read_text() or "results:" in log.read_text():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    time.sleep(1)
                    return proc, port, log.read_text()
            except OSError:
                pass
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"twosamplers ui did not start: {log.read_text()}")


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except Exception:  # noqa: BLE001
        proc.kill()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("uisec")
    outputs, private, models = root / "outputs", root / "private", root / "models"
    for d in (outputs, private, models / "checkpoints", models / "loras", models / "controlnet"):
        d.mkdir(parents=True)
    write_png(outputs / "users-own.png", 33)
    write_png(private / "secret.png", 7)
    (private / "notes.txt").write_text("my notes")
    before = snapshot(private) | snapshot(outputs)
    proc, port, banner = start_ui(root, "--models", str(models), "--outputs", str(outputs))
    results = next(ln.split("results: ", 1)[1].split(" (private)")[0] for ln in banner.splitlines()
                   if ln.startswith("results: "))
    gradio_dir = next((root / "gradio-parent").iterdir())
    try:
        yield SimpleNamespace(port=port, url=f"http://127.0.0.1:{port}", root=root, outputs=outputs,
                              private=private, secret=private / "secret.png", models=models, results=Path(results),
                              gradio_dir=gradio_dir, banner=banner)
    finally:
        stop(proc)
    after = snapshot(private) | snapshot(outputs)
    assert {k: v for k, v in after.items() if k in before} == before, "a user file was changed or deleted"


def client(page, **kw) -> httpx.Client:
    return httpx.Client(base_url=page.url, timeout=TIMEOUT, **kw)


# ---------------------------------------------------------------------------------------------- requests
@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example:{port}",
                                  "localhost:1", "192.168.1.7:{port}", "[::1"])
def test_dns_rebinding_hosts_are_refused(page, host):
    with client(page) as c:
        for path in ("/", "/config", "/gradio_api/info", f"/gradio_api/file={page.secret}"):
            r = c.get(path, headers={"Host": host.format(port=page.port)})
            assert r.status_code == 403, (path, r.status_code)


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}"])
def test_the_page_answers_its_own_names(page, host):
    with client(page) as c:
        assert c.get("/", headers={"Host": host.format(port=page.port)}).status_code == 200


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Origin": "null"},
                                     {"Sec-Fetch-Site": "cross-site"},
                                     {"Origin": "http://localhost:1"}])
def test_cross_site_requests_are_refused(page, headers):
    with client(page) as c:
        r = c.post("/gradio_api/queue/join", json={"data": [], "fn_index": 0, "session_hash": "x"}, headers=headers)
        assert r.status_code == 403
        assert c.post("/gradio_api/upload", files={"files": ("a.png", b"x")}, headers=headers).status_code == 403


@pytest.mark.parametrize("target", ["SECRET", "/etc/passwd", "../../../../etc/passwd", "OUTPUTS/users-own.png",
                                    "RESULTS/inputs", "GRADIO", "~/.bashrc", "file:///etc/passwd",
                                    "SECRET%00.png", "/proc/self/environ"])
def test_file_routes_serve_only_the_pages_own_results(page, target):
    target = (target.replace("SECRET", str(page.secret)).replace("OUTPUTS", str(page.outputs))
              .replace("RESULTS", str(page.results)).replace("GRADIO", str(page.gradio_dir)))
    with client(page) as c:
        for prefix in ("/gradio_api/file=", "/file="):
            r = c.get(prefix + target)
            assert r.status_code in (403, 404), (prefix + target, r.status_code)
            assert b"my notes" not in r.content and r.content[:4] != b"\x89PNG"


def test_results_and_uploads_are_in_private_folders(page):
    results, gradio_dir = page.results, page.gradio_dir
    for d in (results, gradio_dir):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
        assert d.stat().st_uid == os.getuid()
    assert gradio_dir.name.startswith("twosamplers-ui-gradio-") and gradio_dir != Path("/tmp/gradio")
    assert not results.is_relative_to(page.outputs)


def test_non_loopback_needs_a_credential(tmp_path):
    """Off loopback the page asks for its token or the --auth password, on every route; it says so at start."""
    import base64

    token = "a-token-of-the-test-" + "x" * 12
    proc, port, banner = start_ui(tmp_path, "--host", "0.0.0.0", "--auth", "ann:s3cret-pass", "--token", token)
    try:
        assert "LISTENING ON THE NETWORK" in banner and token in banner
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            for path in ("/", "/config", "/gradio_api/info", "/gradio_api/file=/etc/passwd"):
                assert c.get(path).status_code == 401, path
            assert c.get("/", headers={"Authorization": "Bearer " + "x" * len(token)}).status_code == 401
            bad = base64.b64encode(b"ann:wrong").decode()
            assert c.get("/", headers={"Authorization": f"Basic {bad}"}).status_code == 401
            good = base64.b64encode(b"ann:s3cret-pass").decode()
            assert c.get("/", headers={"Authorization": f"Basic {good}"}).status_code == 200
            r = c.get("/", params={"token": token})
            assert r.status_code == 200 and "HttpOnly" in r.headers["set-cookie"]
            assert c.get("/config").status_code == 200  # the cookie now
    finally:
        stop(proc)


def test_cli_refuses_bad_credentials_and_prints_the_token(capsys, monkeypatch):
    from twosamplers import cli
    from twosamplers.ui import app as ui_app

    assert cli.main(["ui", "--host", "0.0.0.0", "--auth", "nopassword"]) == 2
    assert "USER:PASS" in capsys.readouterr().err
    assert cli.main(["ui", "--token", "short"]) == 2
    seen = {}
    monkeypatch.setattr(ui_app, "launch", lambda **kw: seen.update(kw))
    assert cli.main(["ui", "--host", "0.0.0.0", "--port", "7999"]) == 0
    guard = seen["guard"]
    assert guard.token and guard.hosts is None
    assert cli.main(["ui"]) == 0 and seen["guard"].token is None and "127.0.0.1" in seen["guard"].hosts


# ---------------------------------------------------------------------------------------------- the page's events
class Page:
    """Drives the page's Gradio events as its JavaScript does: upload files, join the queue, read the result."""

    def __init__(self, page):
        self.page = page
        self.c = client(page)
        cfg = self.c.get("/config").json()
        self.components = {x["id"]: x for x in cfg["components"]}
        self.by_elem = {x.get("props", {}).get("elem_id"): x["id"] for x in cfg["components"]}
        self.deps = cfg["dependencies"]
        self.session = uuid.uuid4().hex[:10]

    def upload(self, path: Path) -> dict:
        r = self.c.post("/gradio_api/upload", files={"files": (path.name, path.read_bytes(), "image/png")})
        assert r.status_code == 200, r.text
        return {"path": r.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def event(self, elem_id: str, trigger: str, values: dict) -> tuple[bool, dict]:
        """Run the event `trigger` of `elem_id` with the page's default values, `values` (elem_id -> value) over
        them; -> (success, {output elem_id or component id: value})."""
        comp = self.by_elem[elem_id]
        dep = next(d for d in self.deps if [comp, trigger] in [list(t) for t in d["targets"]]
                   and d.get("backend_fn", True))  # not a browser-only (js) handler of the same trigger
        data = []
        for i in dep["inputs"]:
            elem = self.components[i].get("props", {}).get("elem_id")
            data.append(values[elem] if elem in values else self.components[i].get("props", {}).get("value"))
        r = self.c.post("/gradio_api/queue/join", json={"data": data, "fn_index": dep["id"], "trigger_id": comp,
                                                         "session_hash": self.session, "event_data": None})
        assert r.status_code == 200, r.text
        with self.c.stream("GET", "/gradio_api/queue/data", params={"session_hash": self.session}) as s:
            for line in s.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed":
                    out = msg.get("output") or {}
                    names = [self.components[i].get("props", {}).get("elem_id") or i for i in dep["outputs"]]
                    return bool(msg.get("success")), dict(zip(names, out.get("data") or [], strict=False))
        raise AssertionError("the event never completed")

    def close(self):
        self.c.close()


def _error(outputs: dict) -> str:
    e = outputs.get("ts-error")
    return (e.get("value") if isinstance(e, dict) else e) or ""


def _texts(outputs: dict) -> str:
    return json.dumps(outputs, default=str)


def test_a_png_naming_a_private_image_does_not_open_it(page):
    """Item 1: "Load settings from PNG" with a PNG whose `image` is a private file: the page does not read it
    (the canvas is grey, not the secret), and the path is never served."""
    png = someone_elses_png(page.root / "theirs.png", job_dict(image=str(page.secret), base_denoise=0.5))
    p = Page(page)
    try:
        ok, out = p.event("ts-load", "upload", {"ts-load": p.upload(png)})
    finally:
        p.close()
    assert ok
    editor = out.get("ts-canvas") or {}
    bg = editor.get("background") if isinstance(editor, dict) else None
    assert bg is not None, out
    served = httpx.get(page.url + "/gradio_api/file=" + bg["path"], timeout=60)
    assert served.status_code == 200
    with Image.open(__import__("io").BytesIO(served.content)) as im:
        assert int(np.asarray(im.convert("RGB")).mean()) == 128  # the grey canvas, not the secret (all 7s)
    assert str(page.secret) not in json.dumps(out.get("ts-canvas"), default=str)


HOSTILE_FIELDS = {
    "model outside": {"ts-base-model": "SECRET"},
    "model /dev/zero": {"ts-base-model": "/dev/zero"},
    "model hub": {"ts-base-model": "someone/model"},
    "mask model outside": {"ts-mask-model": "/etc/passwd"},
    "lora path": {"ts-mask-loras": "PRIVATE/secret.safetensors:1"},
    "lora escape": {"ts-base-loras": "../../private/secret:1"},
    "lora tag escape": {"ts-mask-prompt": "brick <lora:../../private/secret>"},
    "controlnet hint outside": {"ts-mask-controlnets": "cn.safetensors:SECRET:1:0:1"},
    "controlnet model outside": {"ts-base-controlnets": "PRIVATE/cn.safetensors:SECRET:1:0:1"},
    "width huge": {"ts-width": 10**9},
    "steps huge": {"ts-base-steps": 2**63},
    "mode bogus": {"ts-mode": "../../x"},
}


@pytest.mark.parametrize("case", list(HOSTILE_FIELDS))
def test_generate_with_hostile_field_values(page, case):
    """A client that is not the page (any HTTP client: the guard lets local ones through) sends field values the
    page's widgets would never send: each is refused with a message in the page, nothing is written."""
    before = sorted(page.outputs.iterdir())
    values = {k: (v.replace("SECRET", str(page.secret)).replace("PRIVATE", str(page.private))
                  if isinstance(v, str) else v) for k, v in HOSTILE_FIELDS[case].items()}
    mask = mask_png(page.root / "m.png", 64)
    p = Page(page)
    try:
        values["ts-mask-upload"] = p.upload(mask)
        ok, out = p.event("ts-generate", "click", values)
    finally:
        p.close()
    assert _error(out) or not ok, (case, _texts(out)[:400])  # our message, or Gradio's refusal of a bad choice
    assert "Traceback" not in _texts(out)
    assert sorted(page.outputs.iterdir()) == before


def test_generate_serves_its_own_result_and_copies_it(page):
    """The page's own result is served (through Gradio's private cache) and copied to --outputs, never over a
    file already there."""
    mask = mask_png(page.root / "m.png", 64)
    p = Page(page)
    try:
        ok, out = p.event("ts-generate", "click", {"ts-mask-upload": p.upload(mask), "ts-width": 64,
                                                   "ts-height": 64, "ts-base-steps": 2, "ts-mask-steps": 2})
    finally:
        p.close()
    assert ok and not _error(out), _texts(out)[:400]
    result = out["ts-download"]["value"] if "value" in (out.get("ts-download") or {}) else out["ts-download"]
    path = result["path"]
    assert path.startswith(str(page.gradio_dir))
    r = httpx.get(page.url + "/gradio_api/file=" + path, timeout=60)
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    copied = [f for f in page.outputs.iterdir() if f.name.startswith("ts-")]
    assert copied and (page.outputs / "users-own.png").exists()
