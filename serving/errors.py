"""Every exception a route can raise → the contract's `{"error": "..."}` answer, in one table.

A browser's page request (a path outside `/v1/` whose `Accept` asks for HTML: a stale bookmark, a
form posted to a GET-only page) gets the same status and words as a plain page instead
(`serving.plain_page`); everything else gets the JSON.

The app factory registers these with FastAPI (`serving.app.create_app`) and keeps them on the
service, whose guard answers the hand-tuned endpoints of its lanes with the same table
(`Service.answer_error`), so an error reads the same whichever way its request went.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from needs_rec.errors import NeedsRecError, SourceUnavailable
from serving import plain_page
from serving.service import ApiError, Service, error_response

Handler = Callable[[Request, Exception], Response]


def handlers(service: Service) -> dict[type[Exception], Handler]:
    """Exception class → the answer for it (a bug is a 500 that names nothing internal)."""
    timeout = service.settings.request_timeout_s

    def answer(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        if plain_page.wanted(request.url.path, request.headers.get("accept")):
            page_headers = {**(headers or {}), **plain_page.HEADERS}
            return HTMLResponse(plain_page.body(status, message), status, page_headers)
        return error_response(status, message, headers)

    def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if exc.outcome:
            request.state.outcome = exc.outcome
        return answer(request, exc.status, service.public_text(exc.message), exc.headers)

    def on_crm_unavailable(request: Request, exc: Exception) -> Response:
        request.state.outcome = "crm_unavailable"
        message = " ".join(str(exc).split())
        service.logger.warning("crm_unavailable", extra={"fields": {"path": request.url.path, "error": message}})
        public = " ".join(getattr(exc, "public", message).split())  # without the driver's words (host, port)
        return answer(request, 503, service.public_text(public), service.retry_headers)

    def on_user_error(request: Request, exc: Exception) -> Response:  # a CRM data error too: no location
        return answer(request, 400, service.public_text(" ".join(str(exc).split())))

    def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return answer(request, 400, f"field '{where}': {first.get('msg', 'invalid')}")

    def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}; allowed: {headers.get('Allow', '')}"
        else:
            message = exc.detail
        return answer(request, exc.status_code, str(message), headers)

    def on_timeout(request: Request, exc: Exception) -> Response:
        request.state.outcome = "timeout"
        return answer(request, 503, f"request timed out after {timeout:g} s; retry later", service.retry_headers)

    def on_bug(request: Request, exc: Exception) -> Response:
        service.logger.error("unhandled_error", exc_info=exc, extra={"fields": {"path": request.url.path}})
        return answer(request, 500, "internal error; the service log has the details")

    return {
        ApiError: on_api_error,
        SourceUnavailable: on_crm_unavailable,
        NeedsRecError: on_user_error,
        RequestValidationError: on_validation_error,
        StarletteHTTPException: on_http_error,
        TimeoutError: on_timeout,
        Exception: on_bug,
    }

