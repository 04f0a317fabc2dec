"""The HTTP service (contract §4): the app factory that assembles the routers on one `Service`.

`create_app(settings)` builds the shared `serving.service.Service` (settings, model registry,
micro-batcher, logs, metrics), maps errors to the contract's `{"error": "..."}` answers, includes
one router per group of endpoints and puts the ASGI guard (body limit, load shedding, one log line
per request) in front of them all.

Adding endpoints: write a new module `serving/routes/<name>.py` with

    def router(service: Service) -> APIRouter:
        routes = APIRouter()

        @routes.get("/v1/...")            # or routes.add_route(path, endpoint, methods=[...]) for a
        async def handler(...) -> ...:    # hand-tuned Starlette endpoint that reads its own body
            model = service.model()       # the version to answer with, or 503 while none is ready
            ...
            raise ApiError(404, "...")    # any non-200: the contract's {"error": ...} with that status
        return routes

and add the one line `<name>.router,` to `ROUTERS` below (plus its import). Everything a
route needs is on `service` (settings, registry, scorer, metrics, logger). Raise `ApiError` (or a
`needs_rec.errors.NeedsRecError`, answered 400) for every non-200; never let a bad input reach the
catch-all 500. Give a POST's log/metric label in `serving.service.endpoint_of` if it should be
counted apart from `other`, and in `SCORING_ENDPOINTS` if it runs the model (then it is shed under
overload).

Documenting it (`/openapi.json`, `/docs`; tests/serving/test_fuzz.py fuzzes every operation listed
there with Schemathesis): a decorated route documents itself — give it `responses={200: {"model":
AnswerModel}, 409: {"model": ErrorAnswer}}` for its answers and any status beyond the common
400/404/413/503; a hand-tuned `add_route` route is declared with
`service.docs.document("POST", path, summary=..., request=RequestModel, responses={200: Answer})`
(models in `serving.api_schemas`); a route that is not JSON (a page) passes `include_in_schema=False`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from needs_rec import __version__
from serving import errors, lifecycle
from serving.access import AccessMiddleware
from serving.observability import log_event
from serving.openapi import mount_docs
from serving.registry import Registry
from serving.routes import feedback, health, labels, pages, queries, recommendations, tf_serving
from serving.service import ApiError, Receive, Scope, Send, Service
from serving.settings import Settings
from serving.web import HEAD_SCOPE_KEY

#: The routers, in matching order: each module's `router(service)` (see the module docstring).
ROUTERS: tuple[Callable[[Service], APIRouter], ...] = (
    recommendations.router,
    feedback.router,
    tf_serving.router,
    labels.router,
    health.router,
    pages.router,
    queries.router,
)


def create_app(
    settings: Settings, *, registry: Registry | None = None, logger: logging.Logger | None = None
) -> FastAPI:
    """Build the FastAPI app; the registry starts loading the model when the app starts (lifespan)."""
    service = Service(settings, registry=registry, logger=logger)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        lifecycle.drop_readiness_on_signals(service, settings)  # under uvicorn: /readyz 503 from SIGTERM on
        await service.scorer.start()
        await service.start_lag_watch()
        service.registry.start()
        service.metrics.start_sharing()  # a worker of several shares its drift counts (no-op otherwise)
        if settings.workers > 1:  # a worker of several listens once it can answer: the kernel would hand a
            # not-ready worker its share of connections (503s) while a sibling is ready (a one-process
            # service listens at once instead, so /readyz can say why it is not ready)
            await asyncio.to_thread(service.registry.first_poll_done.wait)
        if service.crm_link is not None:
            service.crm_link.start()
            log_event(service.logger, "crm_source", crm=service.crm_link.source.describe())  # no password
        log_event(service.logger, "service_started", model=str(settings.model), host=settings.host, port=settings.port)
        try:
            yield
        finally:
            service.begin_shutdown()
            service.registry.stop()
            service.metrics.stop_sharing()
            await service.scorer.stop()
            await service.stop_lag_watch()
            if service.crm_link is not None:
                service.crm_link.stop()  # buffered exposures are written first
            log_event(service.logger, "service_stopped")

    app = GuardedApp(
        service,
        title="needs_rec",
        summary="Which product characteristics to stress with a contact at a funnel stage, with talking points",
        lifespan=lifespan,
        version=__version__,
        docs_url=None,  # served by `serving.openapi.mount_docs` instead: local files, per-version vocabularies
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,  # `…/versions/1/` is a 404 like any unknown path, not a 307 to this Host's name
    )
    app.state.service = service
    add_error_handlers(app, service)
    for build in ROUTERS:
        app.include_router(build(service))
    mount_docs(app, service)  # /openapi.json and /docs (Swagger UI, served locally)
    # pages, /v1/feedback, CRM queries: credential (the service's, one guessing count), cross-site checks
    app.add_middleware(AccessMiddleware, credentials=service.credentials)
    return app


class GuardedApp(FastAPI):
    """FastAPI with the service's guard (`Service.guard`) in front of its whole middleware stack.

    Every request meets the guard first: its limits, shedding, log line and metrics. A lane
    (`Service.add_lane`, the scoring hot path) is answered there, past FastAPI's own layers
    (server-error, telemetry, body limit, route matching); the rest go through them as usual.

    HEAD is answered wherever GET is (RFC 9110 §9.3.2; uptime monitors ask `HEAD /healthz`): it is
    the GET, with the status and headers of its answer and no body. FastAPI's routes know GET only.
    """

    def __init__(self, service: Service, **kwargs: Any):
        super().__init__(**kwargs)
        self._guarded = service.guard(super().__call__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            await self._guarded({**scope, "method": "GET", HEAD_SCOPE_KEY: True}, receive, _headers_only(send))
            return
        await self._guarded(scope, receive, send)


def _headers_only(send: Send) -> Send:
    """`send` that passes the start of an answer and ends it with an empty body (a HEAD's answer)."""

    async def send_head(message: Any) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return send_head


def add_error_handlers(app: FastAPI, service: Service) -> None:
    """Every error becomes the contract's `{"error": "..."}` (`serving.errors`), for FastAPI's routes and the
    guard's lanes alike."""
    service.error_handlers = errors.handlers(service)
    for cls, handler in service.error_handlers.items():
        app.add_exception_handler(cls, _async(handler))


def _async(handler: errors.Handler) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, exc: Exception) -> Response:
        return handler(request, exc)

    return handle


__all__ = ["ROUTERS", "ApiError", "Service", "create_app"]
