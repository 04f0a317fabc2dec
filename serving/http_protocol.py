"""uvicorn's HTTP protocol, answering a request it cannot parse with the service's JSON error shape.

A request line, header or body framing that the HTTP parser refuses (garbage bytes, a URL of
tens of kilobytes, `Content-Length: abc`, a broken chunk) never reaches the application, so the
app's error handlers cannot shape it: uvicorn answers `400 Invalid HTTP request received.` as
plain text. The contract promises `{"error": ...}` for every bad input, so these classes send the
same 400 with a JSON body saying what is wrong and what is allowed, then close the connection as
uvicorn does. Only the body and its content type change; parsing, limits and logging stay uvicorn's.

`python -m serving` passes `PROTOCOL` (an import string, so a worker process resolves it too) as
uvicorn's `http` option. `HttpToolsJsonErrors` is what it means when httptools is installed (the
project's dependency), `H11JsonErrors` otherwise, mirroring uvicorn's own "auto" choice.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.h11_impl import H11Protocol

#: What the body of the 400 says: the HTTP parser could not read the request, so no field can be named.
MESSAGE = (
    "malformed HTTP request: its request line, a header or the body's framing could not be parsed; "
    "send HTTP/1.1 (RFC 9112): a request line under 64 KiB, headers as 'Name: value' lines, "
    "a numeric Content-Length or valid chunks"
)
BODY = json.dumps({"error": MESSAGE}).encode()
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode()),
            (b"connection", b"close")]


class H11JsonErrors(H11Protocol):
    """uvicorn's h11 protocol with a JSON body on its parse-error 400 (module doc)."""

    def send_400_response(self, msg: str) -> None:
        import h11

        event = h11.Response(status_code=400, headers=_HEADERS, reason=b"Bad Request")
        for part in (event, h11.Data(data=BODY), h11.EndOfMessage()):
            self.transport.write(self.conn.send(part))
        self.transport.close()


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is a dependency; h11 is uvicorn's fallback
    PROTOCOL = f"{__name__}:H11JsonErrors"
else:

    class HttpToolsJsonErrors(HttpToolsProtocol):
        """uvicorn's httptools protocol with a JSON body on its parse-error 400 (module doc)."""

        def send_400_response(self, msg: str) -> None:
            content = [b"HTTP/1.1 400 Bad Request\r\n"]
            for name, value in [*self.server_state.default_headers, *_HEADERS]:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend([b"\r\n", BODY])
            self.transport.write(b"".join(content))
            self.transport.close()

    PROTOCOL = f"{__name__}:HttpToolsJsonErrors"
