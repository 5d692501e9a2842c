"""Who may talk to our servers (the web page, `twosamplers serve`): one ASGI middleware for both.

The trusted party is the local user. A server binds 127.0.0.1 by default; then any web page open in that user's
browser can still reach it, two ways, and both are refused here:

- DNS rebinding: a page at evil.example resolves its own name to 127.0.0.1 and then talks to us as "same
  origin". The request's `Host:` is evil.example, so a loopback server answers only the loopback host names it is
  bound under (`127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`).
- Cross-site requests: a page may POST to http://127.0.0.1:PORT/ (a "simple" request needs no preflight) or open
  a websocket to it. Browsers send `Origin` (and `Sec-Fetch-Site`) with those; a request whose origin is not one
  of ours is refused. Clients that are not browsers send neither and pass.

Off loopback a server also needs a credential: a token (printed at start, or given) as `Authorization: Bearer
TOKEN`, `?token=TOKEN` (then kept in an HttpOnly, SameSite=Strict cookie for the page's own requests) or a
cookie; or HTTP Basic `USER:PASS` (`--auth`). With a credential the Host check is relaxed to the names given
(default: any), because a rebinding page has no credential for its own origin.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

TOKEN_COOKIE = "twosamplers_token"
SINGLE_HEADERS = ("host", "origin", "authorization", "cookie", "sec-fetch-site")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


def is_loopback(host: str) -> bool:
    """Whether a bind address or host name is this machine only (127.0.0.0/8, ::1, localhost)."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def split_host_header(value: str) -> tuple[str, int | None]:
    """'example:80' -> ('example', 80); '[::1]:8188' -> ('[::1]', 8188); a malformed port or bracket -> (value,
    -1)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, -1  # malformed: never one of our names
        name, rest = value[: end + 1], value[end + 1:]
    else:
        name, _, port = value.partition(":")
        rest = ":" + port if port else ""
    if not rest:
        return name, None
    if not rest.startswith(":") or not rest[1:].isdigit():
        return value, -1
    return name, int(rest[1:])


@dataclass(frozen=True)
class Guard:
    """What a server accepts. `hosts`: host names (no port) that may appear in `Host:`; None = any (only allowed
    with a credential). `port`: the port those names must carry (None: any). `token` / `basic`: credentials, at
    least one required off loopback."""

    port: int | None
    hosts: frozenset[str] | None = field(default_factory=lambda: frozenset(LOOPBACK_NAMES))
    token: str | None = None
    basic: tuple[str, str] | None = None
    # GET/HEAD paths that a client on this machine may request without the credential (the Host and origin
    # checks still apply): a server's own start-up probe (Gradio requests /gradio_api/startup-events of itself)
    local_paths: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.hosts is None and not self.needs_credential:
            raise ValueError("a guard that accepts any Host header must require a token or a password")

    @property
    def needs_credential(self) -> bool:
        return self.token is not None or self.basic is not None

    @classmethod
    def for_bind(cls, host: str, port: int, *, auth: str | None = None, token: str | None = None,
                 allowed_hosts: Iterable[str] | None = None) -> Guard:
        """The guard for a server bound to host:port. `auth`: "USER:PASS" (HTTP Basic). Off loopback with neither
        auth nor token, a random token is made (read it from `.token` and print it)."""
        basic = None
        if auth is not None:
            user, sep, password = auth.partition(":")
            if not sep or not user or not password:
                raise ValueError("--auth must look like USER:PASS (both non-empty)")
            basic = (user, password)
        if token is not None and len(token) < 16:
            raise ValueError("--token must be at least 16 characters")
        hosts: frozenset[str] | None
        if allowed_hosts:
            hosts = frozenset(h.strip().lower() for h in allowed_hosts)
        elif is_loopback(host):
            hosts = frozenset(LOOPBACK_NAMES)
        else:
            hosts = None
        if not is_loopback(host) and basic is None and token is None:
            token = secrets.token_urlsafe(24)
        return cls(port=port, hosts=hosts, token=token, basic=basic)

    # ------------------------------------------------------------------ checks
    def host_ok(self, host_header: str | None) -> bool:
        if host_header is None:
            return False
        name, port = split_host_header(host_header)
        if port == -1:
            return False
        if self.port is not None and port is not None and port != self.port:
            return False
        if self.hosts is None:
            return True
        return name in self.hosts or name.strip("[]") in self.hosts

    def origin_ok(self, origin: str | None, host_header: str | None) -> bool:
        """A browser's Origin must be this server itself (same host and port as `Host:`)."""
        if origin is None:
            return True
        if origin == "null":
            return False
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        return host_header is not None and parts.netloc.lower() == host_header.strip().lower()

    def credential_ok(self, headers: dict[str, str], query: str) -> tuple[bool, bool]:
        """(accepted, came from the query string: the response then sets the cookie)."""
        if not self.needs_credential:
            return True, False
        authz = headers.get("authorization", "")
        scheme, _, value = authz.partition(" ")
        value = value.strip()
        if self.token is not None:
            if scheme.lower() == "bearer" and _same(value, self.token):
                return True, False
            cookie = SimpleCookie()
            try:
                cookie.load(headers.get("cookie", ""))
            except Exception:  # a malformed Cookie header is no credential
                cookie = SimpleCookie()
            if TOKEN_COOKIE in cookie and _same(cookie[TOKEN_COOKIE].value, self.token):
                return True, False
            for given in parse_qs(query).get("token", []):
                if _same(given, self.token):
                    return True, True
        if scheme.lower() == "basic" and value:
            try:
                user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return False, False
            if self.basic is not None and _same(user, self.basic[0]) and _same(password, self.basic[1]):
                return True, False
            if self.token is not None and _same(password, self.token):
                return True, False
        return False, False

    def check(self, scope: dict) -> tuple[int, str, bool]:
        """(status, reason, set_cookie) for an ASGI http/websocket scope: status 0 = allowed."""
        pairs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])]
        headers = dict(pairs)
        for name in SINGLE_HEADERS:  # two of them: this check and the application could read different ones
            if sum(1 for k, _ in pairs if k == name) > 1:
                return 400, f"bad request: more than one {name!r} header", False
        host = headers.get("host")
        if not self.host_ok(host):
            return 403, f"forbidden: Host {host!r} is not a name this server answers to", False
        if not self.origin_ok(headers.get("origin"), host):
            return 403, f"forbidden: cross-origin request from {headers.get('origin')!r}", False
        if headers.get("sec-fetch-site", "").lower() == "cross-site":
            return 403, "forbidden: cross-site request", False
        if self.local_probe(scope):
            return 0, "", False
        ok, from_query = self.credential_ok(headers, scope.get("query_string", b"").decode("latin-1"))
        if not ok:
            return 401, "unauthorized: this server needs its token or password", False
        return 0, "", from_query


    def local_probe(self, scope: dict) -> bool:
        """A GET/HEAD of one of `local_paths` from a client on this machine."""
        client = scope.get("client") or ("", 0)
        return (scope.get("type") == "http" and scope.get("method") in ("GET", "HEAD")
                and scope.get("path") in self.local_paths and is_loopback(str(client[0])))


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


class GuardMiddleware:
    """ASGI middleware applying a `Guard` to every http and websocket request (lifespan passes through)."""

    def __init__(self, app, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        status, reason, set_cookie = self.guard.check(scope)
        if status:
            if scope["type"] == "websocket":
                # refusing the handshake: the client sees HTTP 403
                return await send({"type": "websocket.close", "code": 1008})
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            if status == 401 and self.guard.basic is not None:
                headers.append((b"www-authenticate", b'Basic realm="twosamplers", charset="UTF-8"'))
            body = reason.encode("utf-8") + b"\n"
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            return await send({"type": "http.response.body", "body": body})
        if not set_cookie or scope["type"] != "http":
            return await self.app(scope, receive, send)
        cookie = (f"{TOKEN_COOKIE}={self.guard.token}; HttpOnly; SameSite=Strict; Path=/").encode("latin-1")

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        return await self.app(scope, receive, send_with_cookie)


def start_banner(guard: Guard, host: str, port: int, what: str = "page") -> str:
    """The lines a server prints at start: where it listens, and the token or warning off loopback."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    url = f"http://{shown}:{port}/"
    if is_loopback(host):
        return f"twosamplers {what} on {url} (this machine only)"
    lines = [f"twosamplers {what} on {url}: LISTENING ON THE NETWORK; anyone who can reach this address and "
             "has the credential can use this machine"]
    if guard.token is not None:
        lines.append(f"open {url}?token={guard.token} (clients: 'Authorization: Bearer {guard.token}')")
    if guard.basic is not None:
        lines.append(f"HTTP Basic user {guard.basic[0]!r} (password as given with --auth)")
    return "\n".join(lines)


__all__ = ["Guard", "GuardMiddleware", "LOOPBACK_NAMES", "TOKEN_COOKIE", "is_loopback", "split_host_header",
           "start_banner"]
