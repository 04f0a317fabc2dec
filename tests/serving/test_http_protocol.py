"""serving.http_protocol: a request uvicorn's parser refuses still gets the contract's `{"error": ...}`."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from serving import http_protocol

CLASSES = ["H11JsonErrors", "HttpToolsJsonErrors"]
MALFORMED = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "header without a colon": b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",
    "non-numeric Content-Length": b"POST /v1/feedback HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n",
    "broken chunk": b"POST /v1/feedback HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json"),
                                                                 (b"content-length", b"15")]})
    await send({"type": "http.response.body", "body": b'{"status":"ok"}'})


@pytest.fixture(params=CLASSES)
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    with _server(request.param) as free:
        yield free


@contextlib.contextmanager
def _server(protocol: str) -> Iterator[int]:
    """A uvicorn serving `_app` on a free loopback port through `protocol` of serving.http_protocol."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    config = uvicorn.Config(_app, host="127.0.0.1", port=free, log_config=None, lifespan="off",
                            http=f"{http_protocol.__name__}:{protocol}")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield free
    server.should_exit = True
    thread.join(10)


def _exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes; everything the server answers until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("raw", list(MALFORMED.values()), ids=list(MALFORMED))
def test_an_unparsable_request_gets_a_json_error_and_the_connection_closes(port: int, raw: bytes) -> None:
    answer = _exchange(port, raw)  # returns only once the server closed the connection
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert lines[0] == "HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == {"error": http_protocol.MESSAGE}
    assert "64 KiB" in http_protocol.MESSAGE and "Content-Length" in http_protocol.MESSAGE


def test_a_request_line_over_64_kib_gets_the_json_error_from_httptools() -> None:
    # httptools (the installed parser) refuses a request line over 64 KiB; h11 accepts it
    with _server("HttpToolsJsonErrors") as port:
        answer = _exchange(port, b"GET /healthz?" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n") and answer.endswith(http_protocol.BODY)


def test_a_well_formed_request_is_served_as_before(port: int) -> None:
    answer = _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b'{"status":"ok"}')


def test_the_service_uses_the_installed_parser_with_json_errors() -> None:
    assert f"{http_protocol.__name__}:HttpToolsJsonErrors" == http_protocol.PROTOCOL  # httptools is a dependency
