"""The servers' guard: Host header (DNS rebinding), cross-origin browser requests, credentials off loopback."""

from __future__ import annotations

import asyncio
import base64

import pytest

from twosamplers.web.http_guard import TOKEN_COOKIE, Guard, GuardMiddleware, is_loopback, start_banner


async def _ok_app(scope, receive, send):
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def call(guard: Guard, headers: dict[str, str], *, query: str = "", kind: str = "http", method: str = "GET"):
    """Run one request through the middleware: (status or websocket message type, response headers)."""
    sent: list[dict] = []
    scope = {"type": kind, "method": method, "path": "/", "query_string": query.encode(),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(GuardMiddleware(_ok_app, guard)(scope, receive, send))
    first = sent[0]
    if kind == "websocket":
        return first["type"], {}
    return first["status"], {k.decode(): v.decode() for k, v in first.get("headers", [])}


LOCAL = Guard.for_bind("127.0.0.1", 8188)


@pytest.mark.parametrize("host", ["127.0.0.1:8188", "localhost:8188", "[::1]:8188", "LOCALHOST:8188", "127.0.0.1"])
def test_loopback_names_pass(host):
    assert call(LOCAL, {"host": host})[0] == 200


@pytest.mark.parametrize("host", ["evil.example:8188", "evil.example", "127.0.0.1.evil.example:8188",
                                  "localhost:9999", "127.0.0.1:80x", "", "192.168.1.5:8188"])
def test_rebinding_hosts_are_refused(host):
    assert call(LOCAL, {"host": host})[0] == 403


def test_missing_host_is_refused():
    assert call(LOCAL, {})[0] == 403


@pytest.mark.parametrize("origin,expected", [
    ("http://127.0.0.1:8188", 200), ("http://evil.example", 403), ("null", 403),
    ("http://localhost:8188", 403),  # another origin than the Host the page was loaded from
    ("file://", 403)])
def test_browser_origin_must_be_the_server_itself(origin, expected):
    assert call(LOCAL, {"host": "127.0.0.1:8188", "origin": origin}, method="POST")[0] == expected


def test_cross_site_fetch_metadata_is_refused():
    assert call(LOCAL, {"host": "127.0.0.1:8188", "sec-fetch-site": "cross-site"})[0] == 403
    assert call(LOCAL, {"host": "127.0.0.1:8188", "sec-fetch-site": "same-origin"})[0] == 200


def test_websocket_from_another_origin_is_closed_not_accepted():
    assert call(LOCAL, {"host": "127.0.0.1:8188", "origin": "http://evil.example"}, kind="websocket")[0] == \
        "websocket.close"
    assert call(LOCAL, {"host": "127.0.0.1:8188"}, kind="websocket")[0] == "websocket.accept"


def test_network_bind_makes_a_token_and_requires_it():
    g = Guard.for_bind("0.0.0.0", 7860)
    assert g.token and len(g.token) >= 24 and g.hosts is None
    assert call(g, {"host": "10.0.0.2:7860"})[0] == 401
    assert call(g, {"host": "10.0.0.2:7860", "authorization": f"Bearer {g.token}"})[0] == 200
    assert call(g, {"host": "10.0.0.2:7860", "authorization": "Bearer " + "x" * len(g.token)})[0] == 401
    status, headers = call(g, {"host": "10.0.0.2:7860"}, query=f"token={g.token}")
    assert status == 200 and headers["set-cookie"].startswith(f"{TOKEN_COOKIE}={g.token};")
    assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
    assert call(g, {"host": "10.0.0.2:7860", "cookie": f"{TOKEN_COOKIE}={g.token}"})[0] == 200
    assert call(g, {"host": "10.0.0.2:7860", "cookie": f"{TOKEN_COOKIE}=nope"})[0] == 401
    assert call(g, {"host": "10.0.0.2:7860", "cookie": "\x00;;=="})[0] == 401
    # a websocket without the credential is refused too
    assert call(g, {"host": "10.0.0.2:7860"}, kind="websocket")[0] == "websocket.close"
    assert g.token in start_banner(g, "0.0.0.0", 7860) and "NETWORK" in start_banner(g, "0.0.0.0", 7860)


def test_basic_auth():
    g = Guard.for_bind("0.0.0.0", 7860, auth="ann:s3cret")
    assert g.token is None
    status, headers = call(g, {"host": "h:7860"})
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    good = base64.b64encode(b"ann:s3cret").decode()
    bad = base64.b64encode(b"ann:wrong").decode()
    assert call(g, {"host": "h:7860", "authorization": f"Basic {good}"})[0] == 200
    assert call(g, {"host": "h:7860", "authorization": f"Basic {bad}"})[0] == 401
    assert call(g, {"host": "h:7860", "authorization": "Basic !!!"})[0] == 401


@pytest.mark.parametrize("auth", ["nopass", ":x", "x:", ""])
def test_bad_auth_values_are_refused(auth):
    with pytest.raises(ValueError, match="USER:PASS"):
        Guard.for_bind("0.0.0.0", 1, auth=auth)


def test_any_host_without_credential_is_impossible():
    with pytest.raises(ValueError):
        Guard(port=1, hosts=None)


def test_is_loopback():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.0.1", "example.com", ""))


@pytest.mark.parametrize("name", ["host", "origin", "authorization", "cookie", "sec-fetch-site"])
def test_a_repeated_security_header_is_refused(name):
    """Two Host (or Origin, ...) headers: the guard and the application could each read another one."""
    sent: list[dict] = []
    headers = [(b"host", b"127.0.0.1:8188"), (name.encode(), b"127.0.0.1:8188"), (b"host", b"127.0.0.1:8188")]
    if name == "host":
        headers = [(b"host", b"evil.example"), (b"host", b"127.0.0.1:8188")]
    else:
        headers = [(b"host", b"127.0.0.1:8188"), (name.encode(), b"x"), (name.encode(), b"y")]
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": headers}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(GuardMiddleware(_ok_app, LOCAL)(scope, receive, send))
    assert sent[0]["status"] == 400


@pytest.mark.parametrize("host", ["localhost.:8188", "127.0.0.1:8188@evil.example", "127.0.0.1 :8188",
                                  "127.0.0.1:08188x", "[::1", "0x7f.0.0.1:8188", "2130706433:8188"])
def test_odd_host_spellings_are_refused(host):
    assert call(LOCAL, {"host": host})[0] == 403


def test_local_paths_pass_only_for_clients_on_this_machine():
    """A server's own start-up probe (Gradio requests /gradio_api/startup-events of itself) needs no credential
    from this machine; from elsewhere, or on any other path or method, it does."""
    g = Guard(port=7860, hosts=None, token="t" * 24, local_paths=frozenset({"/probe"}))

    def status(path, client, method="GET"):
        sent = []
        scope = {"type": "http", "method": method, "path": path, "query_string": b"", "client": client,
                 "headers": [(b"host", b"10.0.0.2:7860")]}

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        asyncio.run(GuardMiddleware(_ok_app, g)(scope, receive, send))
        return sent[0]["status"]

    assert status("/probe", ("127.0.0.1", 5000)) == 200
    assert status("/probe", ("10.0.0.9", 5000)) == 401
    assert status("/probe", ("127.0.0.1", 5000), "POST") == 401
    assert status("/other", ("127.0.0.1", 5000)) == 401
    assert status("/probe", None) == 401
