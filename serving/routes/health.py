"""`GET /healthz`, `GET /readyz` (contract §4) and `GET /metrics` (Prometheus): never shed, never logged bodies."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving.service import ApiError, Service, json_response


def router(service: Service) -> APIRouter:
    """Liveness, readiness and metrics over `service`."""
    routes = APIRouter()

    @routes.get("/healthz")
    async def healthz() -> Response:
        """Alive: the process answers (whether or not a model is loaded)."""
        return json_response({"status": "alive"})

    @routes.get("/readyz")
    async def readyz(request: Request) -> Response:
        """Ready only once a model is loaded and warmed up, and not while shutting down."""
        if service.shutting_down:
            raise ApiError(503, "not ready: shutting down", outcome="shutting_down", headers=service.retry_headers)
        model = service.model()
        request.state.model_version = model.version
        return json_response({"status": "ready", "model_version": model.version})

    @routes.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics."""
        content, content_type = service.metrics.render()
        return Response(content, media_type=content_type)

    return routes
