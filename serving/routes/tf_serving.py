"""TensorFlow Serving's REST paths (contract §4): predict, model status and metadata.

`POST /v1/models/needs_rec:predict` (and `/versions/N:predict`) is a plain Starlette endpoint on
the hot path, like the recommendation routes; the GET status and metadata routes are ordinary
FastAPI routes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving.registry import MODEL_NAME, ServingModel
from serving.service import ApiError, Service, json_response


def _version_number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


async def predict_with(service: Service, request: Request, model: ServingModel) -> Response:
    """The TF Serving predict answer for `request`'s `{"instances": [...]}`, scored by `model`."""
    request.state.model_version = model.version
    async with asyncio.timeout(service.settings.request_timeout_s):
        parsed, probabilities = await service.score_items(request, model, "instances", model.parser.instance)
    warnings = [f"instances[{i}]: {w}" for i, p in enumerate(parsed) for w in p.warnings]
    answer: dict[str, Any] = {"predictions": probabilities, "model_version": model.version}
    if warnings:
        answer["warnings"] = warnings
    return json_response(answer)


def router(service: Service) -> APIRouter:
    """The TF Serving endpoints over `service`."""
    routes = APIRouter()

    async def tf_predict(request: Request, model: ServingModel) -> Response:
        return await predict_with(service, request, model)

    def model_for_version(name: str, version: str) -> ServingModel:
        service.check_model_name(name)
        model = service.model()
        if _version_number(version) != model.version:
            raise ApiError(404, f"model {MODEL_NAME!r} has no version {version!r} loaded; serving {model.version}")
        return model

    async def predict(request: Request) -> Response:
        """TensorFlow Serving REST predict: `{"instances": [...]}` → `{"predictions": [[p, ...]]}`."""
        target = request.path_params["target"]
        name, _, verb = target.partition(":")
        service.check_model_name(name)
        if verb != "predict":
            raise ApiError(404, f"no such endpoint: POST /v1/models/{target}; use /v1/models/{MODEL_NAME}:predict")
        return await tf_predict(request, service.model())

    async def predict_version(request: Request) -> Response:
        """TensorFlow Serving REST predict on an explicit version (404 unless it is the one being served)."""
        name, target = request.path_params["name"], request.path_params["target"]
        version, _, verb = target.partition(":")
        if verb != "predict":
            raise ApiError(404, f"no such endpoint: POST {request.url.path}")
        return await tf_predict(request, model_for_version(name, version))

    routes.add_route("/v1/models/{target}", predict, methods=["POST"])
    routes.add_route("/v1/models/{name}/versions/{target}", predict_version, methods=["POST"])

    @routes.get("/v1/models/{name}")
    async def model_status(name: str) -> Response:
        """TensorFlow Serving status: every version this process knows and its state."""
        service.check_model_name(name)
        return json_response({"model_version_status": service.registry.status()})

    @routes.get("/v1/models/{name}/versions/{version}")
    async def model_version_status(name: str, version: str) -> Response:
        """Status of one version; 404 for a version this process does not know."""
        service.check_model_name(name)
        entries = [e for e in service.registry.status() if e["version"] == version]
        if not entries:
            raise ApiError(404, f"model {MODEL_NAME!r} has no version {version!r}")
        return json_response({"model_version_status": entries})

    @routes.get("/v1/models/{name}/metadata")
    async def metadata(request: Request, name: str) -> Response:
        """Manifest summary of the version being served: version, vocabulary, thresholds, metrics."""
        service.check_model_name(name)
        model = service.model()
        request.state.model_version = model.version
        return json_response(model.metadata())

    @routes.get("/v1/models/{name}/versions/{version}/metadata")
    async def version_metadata(request: Request, name: str, version: str) -> Response:
        """Manifest summary of one version (404 unless it is the one being served)."""
        model = model_for_version(name, version)
        request.state.model_version = model.version
        return json_response(model.metadata())

    return routes
