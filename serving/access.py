"""Who may use the pages and `/v1/feedback`, and the browser protections around them.

Contact data (names on the manager's page) and managers' feedback are for the firm's staff, so:

* **Credential.** When `auth_token` or `basic_auth` is configured, every request to a protected
  path must carry it — `Authorization: Bearer <token>` (the CRM, scripts), or HTTP Basic auth
  (browsers: they ask once and resend it; the token is accepted as the Basic password with any user
  name). Missing or wrong: 401 with `WWW-Authenticate: Basic`, so a browser shows its login box.
  Settings refuse to start a service that listens beyond loopback with neither configured
  (`serving.settings`); on loopback with none configured the pages are open to this machine only.
* **Cross-site requests.** A browser attaches Basic credentials (and cookies) to any request,
  also one a foreign page makes it send. So a state-changing request (POST, PUT, PATCH, DELETE) to
  a protected path is refused with 403 when its `Origin` names another host or `Sec-Fetch-Site`
  says `cross-site`/`same-site`, and — whenever it comes from a browser (it carries `Origin`,
  `Sec-Fetch-Site`, a cookie or Basic auth) — unless its `X-CSRF-Token` header equals the
  `needs_rec_csrf` cookie the pages set (double-submit: a foreign page can neither read the cookie
  nor add the header without a CORS preflight, which this service never grants). Programs that
  send a Bearer token, or nothing at all (the CRM on the same host), need no CSRF token: a
  browser adds neither a Bearer header nor a missing Origin on its own.
* **Guessing.** A client address that sends `FAILURE_LIMIT` wrong credentials within
  `FAILURE_WINDOW_S` is answered 429 with `Retry-After` until its window ends, whatever it sends
  (a right guess included, so the answer tells a guessing script nothing): it slows a script
  to a few guesses a minute, where a manager's typos never reach the limit. A missing credential
  (a browser's first request, before its login box) does not count.

Only protected paths pay for any of this: every other request passes with one prefix test, so the
JSON scoring endpoints keep their latency.
"""

from __future__ import annotations

import base64
import binascii
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import orjson

from needs_rec.errors import clipped
from serving import plain_page
from serving.plain_page import without_control
from serving.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths behind the credential (prefixes; "/" itself exactly): the pages, what they post to, and the
#: queries that answer with the CRM's own contacts and organizations. A `contact_id` recommendation
#: is checked where its body is read (`Service.resolve_contact`): the full-fields scoring path stays open.
PROTECTED_PREFIXES = ("/analyst", "/contacts", "/v1/feedback", "/v1/audience", "/v1/organizations/")
CSRF_COOKIE = "needs_rec_csrf"
CSRF_HEADER = "x-csrf-token"
REALM = 'Basic realm="needs_rec", charset="UTF-8"'
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_TOKEN_BYTES = 32
#: The request log's outcome for each refusal status of this module.
OUTCOMES = {401: "unauthorized", 403: "forbidden", 429: "throttled"}
#: Wrong credentials one client address may send per window before it is refused (429) until the window ends.
FAILURE_LIMIT = 20
FAILURE_WINDOW_S = 60.0
#: Client addresses remembered (the least recently failed forgotten first): bounded memory under a spray.
FAILURE_CLIENTS = 10_000


def is_protected(path: str) -> bool:
    """True for the manager page `/`, the analyst page, contact cards, `/v1/feedback` and the CRM queries."""
    return path == "/" or path.startswith(PROTECTED_PREFIXES)


def new_csrf_token() -> str:
    """A fresh random token for the `needs_rec_csrf` cookie and the page that carries it."""
    return secrets.token_urlsafe(_TOKEN_BYTES)


def valid_csrf_token(value: str | None) -> bool:
    """True for a token this service could have made (right length and alphabet); never trusts its content."""
    return bool(value) and len(value) == len(new_csrf_token()) and value.replace("-", "").replace("_", "").isalnum()


def cookie_value(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    """The value of cookie `name` in the request's `Cookie` headers, or None."""
    for key, raw in headers:
        if key != b"cookie":
            continue
        jar = SimpleCookie()
        try:
            jar.load(raw.decode("latin-1"))
        except CookieError:
            continue
        if name in jar:
            return jar[name].value
    return None


class FailureThrottle:
    """Wrong credentials per client address in fixed windows (see "Guessing" in the module doc).

    One per service process: with `--workers N` each worker counts its own connections, so a
    script meets the limit N times over at most, still a few guesses a minute per worker.
    """

    def __init__(self, limit: int = FAILURE_LIMIT, window_s: float = FAILURE_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic, clients: int = FAILURE_CLIENTS):
        self.limit, self.window_s, self.clock, self.clients = limit, window_s, clock, clients
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()  # address → (window start, failures)
        self._lock = threading.Lock()

    def wait_s(self, client: str) -> float:
        """Seconds until `client` may try again (0.0: it may now)."""
        with self._lock:
            window = self._windows.get(client)
            if window is None:
                return 0.0
            started, failures = window
            left = started + self.window_s - self.clock()
            if left <= 0:
                del self._windows[client]
                return 0.0
            return left if failures >= self.limit else 0.0

    def failed(self, client: str) -> None:
        """Count one wrong credential from `client`."""
        now = self.clock()
        with self._lock:
            started, failures = self._windows.pop(client, (now, 0))
            if now - started >= self.window_s:
                started, failures = now, 0
            self._windows[client] = (started, failures + 1)  # moved to the end: the most recent
            while len(self._windows) > self.clients:
                self._windows.popitem(last=False)


class Credentials:
    """The configured token and/or Basic-auth pair, compared in constant time, and the guessing throttle."""

    def __init__(self, settings: Settings):
        self.token = settings.auth_token.get_secret_value().encode() if settings.auth_token else None
        self.basic: tuple[bytes, bytes] | None = None
        if settings.basic_auth is not None:
            user, _, password = settings.basic_auth.get_secret_value().partition(":")
            self.basic = (user.encode(), password.encode())
        self.throttle = FailureThrottle()

    @property
    def required(self) -> bool:
        return self.token is not None or self.basic is not None

    def accepts(self, authorization: bytes | None) -> bool:
        """True when the `Authorization` header value carries a configured credential."""
        if authorization is None:
            return False
        scheme, _, value = authorization.strip().partition(b" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == b"bearer":
            return self.token is not None and secrets.compare_digest(value, self.token)
        if scheme != b"basic":
            return False
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return False
        user, colon, password = decoded.partition(b":")
        if not colon:
            return False
        ok = False
        if self.basic is not None:  # evaluate both halves: no early exit that times which one was wrong
            same_user = secrets.compare_digest(user, self.basic[0])
            same_password = secrets.compare_digest(password, self.basic[1])
            ok = same_user and same_password
        if self.token is not None:
            ok = secrets.compare_digest(password, self.token) or ok
        return ok


def host_name(value: bytes) -> str:
    """The name in a Host header value, lower case and without its port: `[::1]:8080` → `::1`."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    return text.rpartition(":")[0] if ":" in text else text


def foreign_host_message(value: bytes, allowed: frozenset[str]) -> str:
    """The 400's text for a Host header that names none of the `allowed` names."""
    given = clipped(without_control(value.decode("latin-1")), 80)
    names = ", ".join(f"[{name}]" if ":" in name else name for name in sorted(allowed))
    return (f"header 'Host': {given!r} is not a name of this service; allowed: {names} "
            "(NEEDS_REC_ALLOWED_HOSTS adds names)")


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _client(scope: Scope) -> str:
    """The request's client address (the proxy's, unless uvicorn is told to trust its forwarded headers)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def credential_refusal(scope: Scope, credentials: Credentials) -> tuple[int, str, dict[str, str]] | None:
    """Why a request lacks the configured credential — (401, text, WWW-Authenticate), or (429, text,
    Retry-After) for an address over the guessing limit — or None when it has it or none is
    configured: for the protected paths here, and for answers a route protects itself
    (`Service.check_credential`)."""
    if not credentials.required:
        return None
    client = _client(scope)
    wait = credentials.throttle.wait_s(client)
    if wait > 0:
        seconds = math.ceil(wait)
        return (429, f"too many wrong credentials from this address: try again in {seconds} s",
                {"Retry-After": str(seconds)})
    authorization = _header(scope.get("headers", []), b"authorization")
    if credentials.accepts(authorization):
        return None
    if authorization is not None:
        credentials.throttle.failed(client)
    what = "wrong credential" if authorization else "a credential is required"
    text = f"{what}: send 'Authorization: Bearer <token>' or sign in with HTTP Basic auth"
    return 401, text, {"WWW-Authenticate": REALM}


def refusal(scope: Scope, credentials: Credentials) -> tuple[int, str, dict[str, str]] | None:
    """Why a request to a protected path is refused (status, error text, headers), or None to let it through."""
    headers = scope.get("headers", [])
    refused = credential_refusal(scope, credentials)
    if refused is not None:
        return refused
    authorization = _header(headers, b"authorization")
    if scope["method"] not in _UNSAFE:
        return None
    origin = _header(headers, b"origin")
    fetch_site = _header(headers, b"sec-fetch-site")
    host = _header(headers, b"host")
    if origin is not None and origin != b"null":
        if host is None or urlsplit(origin.decode("latin-1")).netloc.lower() != host.decode("latin-1").lower():
            return 403, "cross-site request refused: the Origin is not this service; use the service's own page", {}
    elif origin == b"null":
        return 403, "cross-site request refused: Origin 'null'; use the service's own page", {}
    if fetch_site is not None and fetch_site not in (b"same-origin", b"none"):
        return 403, "cross-site request refused (Sec-Fetch-Site); use the service's own page", {}
    scheme = authorization.strip()[:7].lower() if authorization is not None else b""
    if scheme == b"bearer ":  # a browser never adds a Bearer header on its own: a program sent this
        return None
    cookie = _header(headers, b"cookie")
    if origin is not None or fetch_site is not None or cookie is not None or scheme.startswith(b"basic "):
        expected = cookie_value(headers, CSRF_COOKIE)
        given = _header(headers, CSRF_HEADER.encode())
        if (
            not expected
            or given is None
            or not secrets.compare_digest(given, expected.encode("latin-1", errors="replace"))
        ):
            return 403, "missing or stale CSRF token (header 'X-CSRF-Token'): reload the page and try again", {}
    return None


class AccessMiddleware:
    """ASGI middleware: credential and cross-site checks on protected paths (see the module docstring)."""

    def __init__(self, app: ASGIApp, credentials: Credentials):
        self.app = app
        self.credentials = credentials  # the service's: one guessing count for the pages and the lookups

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        refused = refusal(scope, self.credentials)
        if refused is None:
            await self.app(scope, receive, send)
            return
        status, message, extra = refused
        scope.setdefault("state", {})["outcome"] = OUTCOMES[status]
        accept = _header(scope.get("headers", []), b"accept")
        if plain_page.wanted(scope["path"], accept.decode("latin-1") if accept is not None else None):
            body, kind = plain_page.body(status, message), plain_page.CONTENT_TYPE.encode()  # once the login box
        else:  # is cancelled; the JSON API's answer for /v1/ paths and clients that do not ask for HTML
            body, kind = orjson.dumps({"error": message}), b"application/json"
        headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in {**extra, **plain_page.HEADERS}.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
