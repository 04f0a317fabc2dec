"""`GET /healthz`, `GET /readyz` (contract §4) and `GET /metrics` (Prometheus): never shed, never logged bodies."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from serving import api_schemas as api
from serving.service import ApiError, Service, json_response


def router(service: Service) -> APIRouter:
    """Liveness, readiness and metrics over `service`."""
    routes = APIRouter()

    @routes.get("/healthz", responses={200: {"model": api.Alive}}, tags=["operations"])
    async def healthz() -> Response:
        """Alive: the process answers (whether or not a model is loaded)."""
        return json_response({"status": "alive"})

    @routes.get("/readyz", responses={200: {"model": api.Ready}}, tags=["operations"])
    async def readyz(request: Request) -> Response:
        """Ready only once a model is loaded and warmed up, and not while shutting down."""
        if service.shutting_down:
            raise ApiError(503, "not ready: shutting down", outcome="shutting_down", headers=service.retry_headers)
        model = service.model()
        request.state.model_version = model.version
        return json_response({"status": "ready", "model_version": model.version})

    @routes.get("/metrics", response_class=PlainTextResponse, tags=["operations"],
                responses={200: {"description": "Prometheus text exposition format"}})
    async def metrics() -> Response:
        """Prometheus metrics."""
        content, content_type = service.metrics.render()
        return Response(content, media_type=content_type)

    return routes
