"""`GET /v1/audience` and `GET /v1/organizations/<org_id>/similar` (contract §8), from the CRM source.

Both answer from a `serving.queries.Snapshot` of the service's CRM source scored by the serving
version (see that module for how fresh it is; every answer says when it was scored). Without a CRM
source (`--crm`) they answer 503, as §5 says; so do they when the snapshot is not ready within
`--request-timeout-s` (a SQLite file another process holds locked waits its 30 s busy timeout), as
`/v1/feedback` and the manager's card give up then too — its build goes on for the retry. Query
parameters are checked here, each error naming its parameter (400); a parameter the contract does
not know is named in `warnings`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from needs_rec import audience, schema, similar
from needs_rec.errors import NeedsRecError, RequestError, SourceUnavailable, clipped
from serving import api_schemas as api
from serving.queries import Snapshot, SnapshotUnavailable, iso_utc, snapshots_for
from serving.service import ApiError, Service, json_response

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
AUDIENCE_PARAMS = ("characteristic", "stage", "limit", "industry", "region", "clients", "exclude_presented_days")
SIMILAR_PARAMS = ("characteristic", "k")


def _parameters(*specs: tuple[str, str, bool, dict[str, Any]]) -> dict[str, Any]:
    """OpenAPI query parameters (documented only: the route checks them itself, naming each in a 400)."""
    return {"parameters": [{"name": name, "in": "query", "required": required, "description": text, "schema": kind}
                           for name, text, required, kind in specs]}


CODE = {"type": "string"}
AUDIENCE_DOC = _parameters(
    ("characteristic", "characteristic code (characteristics.yaml)", True, CODE),
    ("stage", "funnel stage code", True, CODE),
    ("limit", f"best N contacts (default {DEFAULT_LIMIT})", False, {"type": "integer", "minimum": 1,
                                                                    "maximum": MAX_LIMIT}),
    ("industry", "only organizations of this industry code", False, CODE),
    ("region", "only organizations of this region code", False, CODE),
    ("clients", "only clients (client_since set) or only prospects", False, {"type": "string",
                                                                              "enum": ["only", "exclude"]}),
    ("exclude_presented_days", "leave out contacts C was presented to in the last N days", False,
     {"type": "integer", "minimum": 1, "maximum": audience.MAX_EXCLUDE_DAYS}),
)
SIMILAR_DOC = _parameters(
    ("characteristic", "characteristic code (characteristics.yaml)", True, CODE),
    ("k", f"how many organizations (default {similar.DEFAULT_K})", False, {"type": "integer", "minimum": 1,
                                                                         "maximum": similar.MAX_K}),
)


def _whole(params: Any, name: str, default: int | None, low: int, high: int | None = None) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return default
    value = schema.ascii_int(text, signed=True)  # a '-' still parses, to say the range
    allowed = f"from {low} to {high}" if high is not None else f">= {low}"
    if value is None:
        what = allowed if schema.is_ascii_int(text, signed=True) else "a whole number"  # too many digits: its range
        raise RequestError(f"field '{name}': must be {what}; received {clipped(text)!r}")
    if value < low or (high is not None and value > high):
        raise RequestError(f"field '{name}': must be {allowed}; received {value}")
    return value


def _required(params: Any, name: str) -> str:
    value = (params.get(name) or "").strip()
    if not value:
        raise RequestError(f"field '{name}': required (a code from the dictionaries)")
    return value


def _unknown(params: Any, known: tuple[str, ...]) -> list[str]:
    """Warnings for parameters the contract does not know, and for a known one given more than once."""
    found = [f"unknown parameter {name!r} ignored; known: {', '.join(known)}" for name in params if name not in known]
    counts = Counter(name for name, _ in params.multi_items())
    found += [f"parameter {name!r} given {n} times; the last value is used"
              for name, n in counts.items() if n > 1 and name in known]
    return found


def _left_out(service: Service, current: Snapshot) -> list[str]:
    """The snapshot's notes on CRM rows it left out as invalid (no server location in them)."""
    return [service.public_text(text) for text in current.left_out]


def router(service: Service) -> APIRouter:
    """The query endpoints over `service` and its CRM source (`service.crm`)."""
    routes = APIRouter()
    snapshots = snapshots_for(service)

    async def snapshot(request: Request, what: str) -> Snapshot:
        source = getattr(service, "crm", None)
        if source is None:
            raise ApiError(503, f"{what} needs a CRM source (--crm): start the service with --crm D "
                           "(a CRM directory or a database URL)", outcome="no_crm")
        model = service.model()
        request.state.model_version = model.version
        timeout = service.settings.request_timeout_s
        try:
            async with asyncio.timeout(timeout):  # a locked SQLite file waits its 30 s busy timeout
                return await asyncio.to_thread(snapshots.get, model, source.read_crm)
        except TimeoutError:  # the thread goes on: the snapshot is there for a retry once the CRM answers
            raise ApiError(
                503,
                f"{what}: the CRM snapshot was not ready within {timeout:g} s (the CRM source busy or locked, or "
                "still being read); it goes on being built: retry in a minute",
                outcome="timeout", headers=service.retry_headers,
            ) from None
        except SnapshotUnavailable as exc:
            raise ApiError(503, str(exc), outcome="crm_unavailable", headers=service.retry_headers) from None
        except SourceUnavailable:  # the 503 every CRM endpoint gives: the driver's words (host, port) only logged
            raise
        except NeedsRecError as exc:  # the source cannot be read (unreachable database, missing file)
            raise ApiError(503, f"the CRM source cannot be read: {' '.join(str(exc).split())}",
                           outcome="crm_unavailable", headers=service.retry_headers) from None

    @routes.get("/v1/audience", responses={200: {"model": api.AudienceAnswer}}, tags=["queries"],
                openapi_extra=AUDIENCE_DOC)
    async def audience_query(request: Request) -> Response:
        """Contacts of the CRM ranked by the probability that a characteristic resonates at a stage."""
        params = request.query_params
        characteristic, stage = _required(params, "characteristic"), _required(params, "stage")
        limit = _whole(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        filters = audience.Filters(
            industry=params.get("industry") or None,
            region=params.get("region") or None,
            clients=params.get("clients") or None,
            exclude_presented_days=_whole(params, "exclude_presented_days", None, 1, audience.MAX_EXCLUDE_DAYS),
        )
        current = await snapshot(request, "GET /v1/audience")
        population = current.population
        # checks the codes before scoring anything
        audience.rank(population, _zeros(len(population)), characteristic, stage, filters=filters, limit=1)
        code = population.stage_codes[population.stage_index(stage)]
        probabilities, scored_at = await asyncio.to_thread(current.probabilities, code)
        ranked = audience.rank(population, probabilities, characteristic, code, filters=filters, limit=limit,
                               today=current.scored_on)
        return json_response({
            "model_version": current.version,
            "characteristic": population.characteristic_codes[population.characteristic_index(characteristic)],
            "stage": code,
            "contacts": ranked.to_json(population),
            "total": ranked.total,
            "scored_at": iso_utc(scored_at),
            "warnings": [*_unknown(params, AUDIENCE_PARAMS),
                         *audience.filter_warnings(filters, current.model.dictionaries), *_left_out(service, current)],
        })

    # {org_id:path}: an id holding a '/' (sent as %2F, decoded before routing) is one id too
    @routes.get("/v1/organizations/{org_id:path}/similar", responses={200: {"model": api.SimilarAnswer}},
                tags=["queries"], openapi_extra=SIMILAR_DOC)
    async def similar_query(request: Request, org_id: str) -> Response:
        """Organizations most like `org_id` where the characteristic resonated."""
        params = request.query_params
        characteristic = _required(params, "characteristic")
        k = _whole(params, "k", similar.DEFAULT_K, 1, similar.MAX_K)
        current = await snapshot(request, "GET /v1/organizations/<org_id>/similar")
        index = current.index
        if index is None:
            raise ApiError(503, f"similar organizations are not available: {current.index_note}",
                           outcome="no_index")
        code = index.characteristic(characteristic)
        org = org_id.strip()
        if org not in current.org_ids:  # gone from the CRM: the version's index may still hold it
            raise ApiError(404, f"unknown organization {clipped(org_id)!r}: not in the CRM source")
        try:
            found = index.similar(org, code, k)
        except LookupError as exc:
            raise ApiError(404, str(exc).strip("'\"")) from None
        names = {item.code: item.name for item in current.model.dictionaries.industries}
        return json_response({
            "model_version": current.version,
            "org_id": org,
            "characteristic": code,
            "embedding": index.kind,
            "similar": [n.to_json(index.has_managers) for n in found],
            "reason": similar.similar_reason(found, names),
            "scored_at": iso_utc(current.built_at),
            "warnings": [*_unknown(params, SIMILAR_PARAMS), *_left_out(service, current)],
        })

    return routes


def _zeros(n: int) -> Any:
    import numpy as np

    return np.zeros(n, dtype=np.float32)
