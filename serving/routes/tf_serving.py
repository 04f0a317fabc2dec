"""TensorFlow Serving's REST paths (contract §4): predict, model status and metadata.

`POST /v1/models/needs_rec:predict` (and `/versions/N:predict`) is a plain Starlette endpoint on
the hot path, like the recommendation routes; the GET status and metadata routes are ordinary
FastAPI routes. As in TF Serving's REST API: the row form `{"instances": [...]}` answers
`{"predictions": [...]}`, the columnar form `{"inputs": {name: [...]}}` answers `{"outputs": [...]}`;
`signature_name` (default `serving_default`) must name one of the SavedModel's signatures, else 400;
metadata carries `metadata.signature_def` in TF Serving's shape.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from needs_rec import schema
from needs_rec.errors import RequestError, clipped
from serving import analyst
from serving import api_schemas as api
from serving.registry import DEFAULT_SIGNATURE, MODEL_NAME, ServingModel, status_entry
from serving.requests import ParsedRequest, parse_json
from serving.service import ApiError, Service, json_response, read_body


async def predict_with(service: Service, request: Request, model: ServingModel) -> Response:
    """The TF Serving predict answer for `request`'s body, scored by `model`.

    Row form `{"instances": [...]}` → `{"predictions": [...]}`; columnar form `{"inputs": {...}}` →
    `{"outputs": [...]}`; `signature_name` must be one of the version's signatures (400 otherwise).
    """
    settings = service.settings
    request.state.model_version = model.version
    async with asyncio.timeout(settings.request_timeout_s):
        body = parse_json(await read_body(request, settings.max_body_bytes))
        items, columnar, warnings = model.parser.predict_items(body, settings.max_batch)
        check_signature(model, body.get("signature_name"))
        parsed: list[ParsedRequest] = []
        for row, (item, where) in enumerate(items):
            try:
                parsed.append(model.parser.instance(item, where))
            except RequestError as error:
                raise model.parser.in_columns(error, row) if columnar else error from None
        request.state.items = len(parsed)
        service.observe(model, parsed)
        warnings += [f"{where.rstrip('.')}: {w}" for (_, where), p in zip(items, parsed, strict=True)
                     for w in p.warnings]
        request.state.warnings = len(warnings)
        probabilities = await service.scorer.predict(model, [p.row for p in parsed]) if parsed else []
    answer: dict[str, Any] = {"outputs" if columnar else "predictions": probabilities, "model_version": model.version}
    if warnings:
        answer["warnings"] = warnings
    return json_response(answer)


def check_signature(model: ServingModel, name: Any) -> None:
    """400 unless `name` (TF Serving's `signature_name`; absent or empty: the default) is one of `model`'s."""
    if name is None or name == "":
        return
    if not isinstance(name, str) or name not in model.signature_names:
        allowed = ", ".join(model.signature_names)
        shown = clipped(repr(name), 60)
        raise ApiError(400, f"field 'signature_name': unknown signature {shown}; allowed: {allowed} "
                            f"(default {DEFAULT_SIGNATURE})")


def status_answer(service: Service, entries: list[dict[str, Any]]) -> Response:
    """A TF Serving status answer of `entries`, with `warnings` while labels.json cannot be read."""
    answer: dict[str, Any] = {"model_version_status": entries}
    warnings = service.registry.status_warnings()
    if warnings:
        answer["warnings"] = warnings
    return json_response(answer)


def router(service: Service) -> APIRouter:
    """The TF Serving endpoints over `service`."""
    routes = APIRouter()

    async def tf_predict(request: Request, model: ServingModel) -> Response:
        return await predict_with(service, request, model)

    def model_for_version(name: str, version: str) -> ServingModel:
        """The served version, or the `previous` one held beside it (both are loaded, as in TF Serving)."""
        service.check_model_name(name)
        model = service.model()
        number = schema.ascii_int(version)
        if number == model.version:
            return model
        held = service.registry.held(number) if number is not None else None
        if held is None:
            raise ApiError(404, f"model {MODEL_NAME!r} has no version {version!r} loaded; serving {model.version}")
        return held

    async def predict(request: Request) -> Response:
        """TensorFlow Serving REST predict: `{"instances": [...]}` → `{"predictions": [[p, ...]]}`."""
        service.check_model_name(request.path_params["name"])
        return await tf_predict(request, service.model())

    async def predict_version(request: Request) -> Response:
        """TensorFlow Serving REST predict on an explicit version (404 unless it is served or held as `previous`)."""
        name, version = request.path_params["name"], request.path_params["version"]
        return await tf_predict(request, model_for_version(name, version))

    routes.add_route("/v1/models/{name:segment}:predict", predict, methods=["POST"])
    routes.add_route("/v1/models/{name:segment}/versions/{version:segment}:predict", predict_version, methods=["POST"])
    for path in (f"/v1/models/{MODEL_NAME}:predict", f"/v1/models/{MODEL_NAME}/versions/{{version}}:predict"):
        service.docs.document(
            "POST", path, summary="TensorFlow Serving REST predict: one probability per characteristic",
            request=api.PredictRequest, responses={200: api.PredictAnswer}, tags=["tensorflow serving"],
            description="Row form {instances: [...]} answers {predictions}; columnar form {inputs: {...}} "
                        "answers {outputs}. A version neither served nor held as previous is a 404.",
        )
    status_answers: dict[int | str, dict[str, Any]] = {200: {"model": api.ModelStatus}}
    metadata_answers: dict[int | str, dict[str, Any]] = {200: {"model": api.Metadata}}

    @routes.get("/v1/models/{name:segment}", responses=status_answers, tags=["tensorflow serving"])
    async def model_status(request: Request, name: str) -> Response:
        """TensorFlow Serving status: every version this process knows and its state."""
        service.check_model_name(name)
        return status_answer(service, service.registry.status())

    @routes.get("/v1/models/{name:segment}/versions/{version:segment}", responses=status_answers,
                tags=["tensorflow serving"])
    async def model_version_status(request: Request, name: str, version: str) -> Response:
        """Status of one version; 404 for a version this process does not know."""
        service.check_model_name(name)
        number = schema.ascii_int(version)  # "01" is version 1, as TF Serving reads it
        entries = [e for e in service.registry.status() if number is not None and e["version"] == str(number)]
        if not entries and number is not None and number in analyst.version_numbers(service.settings.model):
            entries = [status_entry(number, "END", message="in the models directory, not loaded by this service "
                                                           "(a candidate, or a version older than previous)")]
        if not entries:
            raise ApiError(404, f"model {MODEL_NAME!r} has no version {version!r}")
        return status_answer(service, entries)

    @routes.get("/v1/models/{name:segment}/metadata", responses=metadata_answers, tags=["tensorflow serving"])
    async def metadata(request: Request, name: str) -> Response:
        """Manifest summary of the version being served: version, vocabulary, thresholds, metrics."""
        service.check_model_name(name)
        model = service.model()
        request.state.model_version = model.version
        return json_response(model.metadata())

    @routes.get("/v1/models/{name}/versions/{version}/metadata", responses=metadata_answers,
                tags=["tensorflow serving"])
    async def version_metadata(request: Request, name: str, version: str) -> Response:
        """Manifest summary of one version (404 unless it is served or held as `previous`)."""
        model = model_for_version(name, version)
        request.state.model_version = model.version
        return json_response(model.metadata())

    return routes
