"""`POST /v1/recommendations` and `POST /v1/recommendations:batch` (contract §4): talking points.

Both are plain Starlette endpoints (`request` in, `Response` out): they read and validate their
bodies themselves (orjson + `serving.requests`), so FastAPI's per-request dependency solving would
only add latency on the hot path.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from needs_rec.errors import RequestError
from serving import api_schemas as api
from serving.cards import render_points
from serving.registry import ServingModel
from serving.requests import ParsedRequest, parse_json
from serving.service import Service, json_response, read_body


def parse_request(model: ServingModel, body: Any, contact_id: str | None, where: str = "") -> ParsedRequest:
    """`body` parsed by the served version's rules. For a contact looked up by id (`contact_id`), the
    organization and contact fields are the CRM's, so an error in one of them says so: the caller
    did not send that value and can only fix the CRM row or send the fields itself."""
    try:
        return model.parser.recommendation(body, where)
    except RequestError as exc:
        if contact_id is None or not (exc.field or "").startswith((f"{where}organization.", f"{where}contact.")):
            raise
        raise RequestError(
            f"contact {contact_id!r} in the CRM: {exc} (the value is the CRM row's, not this request's); "
            "fix the CRM row or send the contact's fields in the request"
        ) from None


def answer(model: ServingModel, parsed: ParsedRequest, probabilities: np.ndarray) -> dict[str, Any]:
    """The contract's answer for one request: model version, stage, talking points, warnings."""
    if parsed.top_k is None:  # the version's own selection, which `selected` then marks throughout
        chosen = picked = model.selection(probabilities, parsed.stage)
    else:  # the caller asked for that many: `selected` says which of them the rule picks
        chosen = model.talking.select(probabilities, model.thresholds, parsed.stage, top_k=parsed.top_k)
        picked = None
    result: dict[str, Any] = {
        "model_version": model.version,
        "stage": parsed.stage,
        "talking_points": render_points(model, parsed, probabilities, chosen, picked),
        "warnings": parsed.warnings,
    }
    return result


def answered(
    service: Service, model: ServingModel, parsed: ParsedRequest, probabilities: np.ndarray, contact_id: str | None
) -> dict[str, Any]:
    """`answer` plus its `request_id` (every answer has one, for feedback) and the `contact_id` it was
    asked for; the exposures are queued when the service has a CRM source."""
    result = answer(model, parsed, probabilities)
    result["request_id"] = service.record_answer(
        model, contact_id, parsed.stage, result["talking_points"], parsed.request_id
    )
    if contact_id is not None:
        result["contact_id"] = contact_id
    return result


def router(service: Service) -> APIRouter:
    """The recommendation endpoints over `service`."""
    settings = service.settings
    timeout = settings.request_timeout_s
    routes = APIRouter()

    async def recommend(request: Request) -> Response:
        """Talking points for one contact at one stage."""
        model = service.model()
        request.state.model_version = model.version
        async with asyncio.timeout(timeout):
            body = parse_json(await read_body(request, settings.max_body_bytes))
            contact_id = await service.resolve_contact(body, request=request)  # `contact_id` → the CRM's fields (§4 v2)
            parsed = parse_request(model, body, contact_id)
            probabilities = await service.score_parsed(request, model, [parsed])
        return json_response(answered(service, model, parsed, probabilities[0], contact_id))

    async def recommend_batch(request: Request) -> Response:
        """The same for a list of requests: `{"requests": [...]}` → `{"model_version", "results": [...], "warnings"}`
        (`warnings`: the body's own unknown keys; each result carries its request's)."""
        model = service.model()
        request.state.model_version = model.version
        contacts: dict[int, str | None] = {}

        async def parse(item: Any, where: str) -> ParsedRequest:
            contact_id = contacts[len(contacts)] = await service.resolve_contact(item, where, request)
            return parse_request(model, item, contact_id, where)

        warnings: list[str] = []
        async with asyncio.timeout(timeout):
            parsed, probabilities = await service.score_items(request, model, "requests", parse, warnings)
        results = [answered(service, model, p, probabilities[i], contacts.get(i)) for i, p in enumerate(parsed)]
        return json_response({"model_version": model.version, "results": results, "warnings": warnings})

    routes.add_route("/v1/recommendations", recommend, methods=["POST"])
    routes.add_route("/v1/recommendations:batch", recommend_batch, methods=["POST"])
    service.add_lane("POST", "/v1/recommendations", recommend)  # the hot path: answered from the guard
    service.docs.document(
        "POST", "/v1/recommendations", summary="Talking points for one contact at one stage",
        request=api.RecommendationBody, responses={200: api.RecommendationAnswer}, tags=["recommendations"],
        description="Ordered by probability, highest first. An unknown code or field is a warning, not an error.",
    )
    service.docs.document(
        "POST", "/v1/recommendations:batch", summary="The same for a list of requests (at most --max-batch)",
        request=api.BatchRequest, responses={200: api.BatchAnswer}, tags=["recommendations"],
    )
    return routes
