"""`POST /v1/feedback` (contract §6): a manager says what happened when a characteristic was put.

The body's types are checked here; its values get exactly the rules an outcome row of a CSV file
gets and then, strictly, a stage or characteristic outside the served version's dictionaries, a
characteristic not offered at that stage, and a date in the future are 400s — both from
`needs_rec.schema.FeedbackRules` (pure Python, compiled once per served version, so a check costs
microseconds and runs in the event loop). An unknown contact is a 404 (looked up in the CRM
source, through the contact cache). The event is stored with `CrmSource.add_feedback` in one
transaction, committed before any 2xx is sent:

- 201 `{"feedback_id", "stored": true}` — a new row, committed;
- 200 `{"feedback_id", "stored": false, "duplicate": true}` — this feedback_id is stored already
  with the same content (a retry): nothing written. A retry the served version's dictionaries
  refuse (a promotion came in between) is looked up before its 400, so it is still this 200;
- 409 — this feedback_id is stored with different content;
- 503 — no CRM source (`--crm`), or the database cannot be written: nothing is half-stored, the
  caller retries with the same feedback_id.

Values get a CSV outcome row's rules (ids trimmed, codes and the outcome lower-cased too, a date as
an export writes it; `/openapi.json` says so): the answers echo `feedback_id` as sent, and a warning
(or the 409's text) says when it was compared and stored trimmed.
A body giving a field twice is a 400 (`serving.requests.parse_json_fields_once`): which of the two
was meant cannot be told, and a parser would keep the last one without a word.

The model version the answer came from (`request_id`) is stored with the event when known.
Lookups that miss the cache and the write run in the CRM thread pool, never in the event loop.
The lookup and the write together get `--request-timeout-s`: past it (a SQLite file locked by
another process waits up to its 30 s busy timeout) the answer is a 503 telling the caller to retry
with the same feedback_id; a write that still commits after it makes that retry a duplicate (200).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

import crm
from needs_rec import schema
from needs_rec.errors import DataError, RequestError, clipped
from needs_rec.schema import FeedbackRules, check_row
from serving import api_schemas as api
from serving.crm_link import Answer, CrmLink
from serving.requests import check_id, parse_json_fields_once, unknown_fields
from serving.service import ApiError, Service, json_response, read_body

REQUIRED = ("feedback_id", "contact_id", "stage", "characteristic", "outcome")
OPTIONAL = ("occurred_on", "request_id", "manager_id")
FIELDS = frozenset((*REQUIRED, *OPTIONAL))


def read_event(body: Any, warnings: list[str] | None = None) -> tuple[dict[str, str], bool]:
    """The body's fields as strings (types and lengths checked), and whether occurred_on was given.

    A required field must be present; an empty one is kept, so that the row rules refuse it in the
    words a CSV row's empty value gets. An empty optional field counts as absent. Any other key is
    named in `warnings` (when given) and never stored; personal fields are ignored without a word.
    """
    if not isinstance(body, dict):
        raise RequestError("body must be a JSON object with feedback_id, contact_id, stage, characteristic, outcome")
    if warnings is not None:
        unknown_fields(body, FIELDS, "", warnings)
    fields: dict[str, str] = {}
    for name in (*REQUIRED, *OPTIONAL):
        value = body.get(name)
        if value is None:
            if name in REQUIRED:
                raise RequestError(f"field '{name}' is required (a string)")
            continue
        if not isinstance(value, str):
            raise RequestError(f"field '{name}' must be a string, got {type(value).__name__}")
        value = value.strip()
        if name.endswith("_id"):
            check_id(name, value)
        if value or name in REQUIRED:
            fields[name] = value
    given = "occurred_on" in fields
    fields.setdefault("occurred_on", dt.datetime.now(dt.UTC).date().isoformat())
    return fields, given


def trimmed_note(sent: str, stored: str) -> str:
    """The warning for a feedback_id with surrounding spaces ("" without): ids get a CSV row's rule, so
    'collide ' and 'collide' are one event, and the caller should know which id it is kept under."""
    if sent == stored:
        return ""
    return (f"field 'feedback_id': surrounding spaces trimmed: compared and stored as {clipped(stored)!r} (a "
            "feedback_id differing only in them is the same event)")


def checked_event(fields: dict[str, str], given: bool, rules: FeedbackRules) -> crm.FeedbackEvent:
    """The event after the row rules and the strict feedback checks (DataError → 400 naming the field);
    its model_version is filled in once the answer it refers to is looked up."""
    return event_of(rules.check(fields), given)


async def stored_as_sent(link: CrmLink, fields: dict[str, str], given: bool) -> bool:
    """Whether an event the strict checks refuse is stored already under its feedback_id with this
    content: a retry that meets other dictionaries (a promotion in between) is still a duplicate."""
    clean, errors = check_row(fields, schema.FEEDBACK, schema.FEEDBACK.name)
    if errors:
        return False
    event = event_of(clean, given)
    stored = await link.call(link.source.stored_feedback, event.feedback_id)
    return stored is not None and event.same_content(stored)


def event_of(clean: dict[str, Any], given: bool) -> crm.FeedbackEvent:
    """The event of a row's clean values (`schema.check_row` of the feedback table)."""
    return crm.FeedbackEvent(
        feedback_id=clean["feedback_id"],
        contact_id=clean["contact_id"],
        stage=clean["stage"],
        characteristic=clean["characteristic"],
        outcome=clean["outcome"],
        occurred_on=clean["occurred_on"].isoformat(),
        request_id=clean["request_id"] or None,
        manager_id=clean["manager_id"] or None,
        occurred_on_given=given,
    )


async def store(link: CrmLink, event: crm.FeedbackEvent, warnings: list[str]) -> crm.FeedbackResult:
    """404 for an unknown contact; else the event, with the model version of its answer, stored
    (a request_id naming no known answer, or an answer given for another contact or stage, is stored
    as given, with a warning)."""
    if not await link.has_contact(event.contact_id):
        raise ApiError(404, f"field 'contact_id': no contact {event.contact_id!r} in the CRM")
    if event.request_id is not None:
        answer = await link.answer_of(event.request_id)
        warning = answer_warning(event, answer)
        if warning:
            warnings.append(warning)
        event = dataclasses.replace(event, model_version=None if answer is None else answer[0])
    return await link.call(link.source.add_feedback, event)


def answer_warning(event: crm.FeedbackEvent, answer: Answer | None) -> str:
    """What is odd about the answer the event's request_id names ("" when nothing): none is known, or
    it was given for another contact or at another stage (stored all the same: the contract does not
    forbid it, but the caller most likely sent the wrong request_id, contact_id or stage)."""
    shown = clipped(event.request_id or "")
    if answer is None:
        return (f"field 'request_id': no answer {shown!r} is known (neither remembered nor in exposures); stored "
                "without its model_version")
    _, answered, stage = answer
    odd = []
    if answered is not None and answered != event.contact_id:
        odd.append(f"for contact {clipped(answered)!r}, not {clipped(event.contact_id)!r}")
    if stage is not None and stage != event.stage:
        odd.append(f"at stage {clipped(stage)!r}, not {clipped(event.stage)!r}")
    if not odd:
        return ""
    given = ", and ".join(odd)
    return f"field 'request_id': answer {shown!r} was given {given}; stored with that answer's model_version"


def router(service: Service) -> APIRouter:
    """The feedback endpoint over `service`."""
    routes = APIRouter()
    settings = service.settings

    async def feedback(request: Request) -> Response:
        """Store one manager's report; idempotent by feedback_id (see the module doc)."""
        link = service.need_crm("POST /v1/feedback")
        model = service.model()  # the served version's dictionaries decide what a valid code is
        warnings: list[str] = []
        body = parse_json_fields_once(await read_body(request, settings.max_body_bytes))  # a repeat is a 400
        fields, given = read_event(body, warnings)
        sent_id = body["feedback_id"]  # answers echo the id as sent; it is compared and stored trimmed
        trimmed = trimmed_note(sent_id, fields["feedback_id"])
        if trimmed:
            warnings.append(trimmed)
        try:
            event = checked_event(fields, given, model.feedback_rules)  # 400 before any database call
        except DataError:
            if not await stored_as_sent(link, fields, given):
                raise
            return json_response(
                {"feedback_id": sent_id, "stored": False, "duplicate": True, "warnings": warnings}, 200
            )
        try:
            async with asyncio.timeout(settings.request_timeout_s):  # a locked SQLite file waits 30 s
                result = await store(link, event, warnings)
        except TimeoutError:
            raise ApiError(
                503,
                f"the CRM source did not store the feedback within {settings.request_timeout_s:g} s (busy or "
                "locked); nothing is half-stored: retry with the same feedback_id",
                outcome="timeout", headers=service.retry_headers,
            ) from None
        service.metrics.feedback.labels(str(result)).inc()
        if result is crm.FeedbackResult.STORED:
            return json_response({"feedback_id": sent_id, "stored": True, "warnings": warnings}, 201)
        if result is crm.FeedbackResult.DUPLICATE:
            return json_response(
                {"feedback_id": sent_id, "stored": False, "duplicate": True, "warnings": warnings}, 200
            )
        compared = f" (compared as {clipped(event.feedback_id)!r}: surrounding spaces are trimmed)" if trimmed else ""
        raise ApiError(
            409,
            f"field 'feedback_id': {clipped(sent_id)!r}{compared} is already stored with different content; a retry "
            "must send the same fields, a new event needs a new feedback_id",
            outcome="conflict",
        )

    routes.add_route("/v1/feedback", feedback, methods=["POST"])
    service.docs.document(
        "POST", "/v1/feedback", summary="A manager's report on a characteristic put to a contact (needs --crm)",
        request=api.FeedbackRequest, responses={201: api.FeedbackAnswer, 200: api.FeedbackAnswer, 409: api.ErrorAnswer},
        tags=["feedback"],
        description="201: stored and committed; 200: a duplicate of a stored event (nothing written); 409: the "
        "feedback_id is stored with other content; 404: unknown contact; 503: no --crm, or the database cannot be "
        "written (nothing half-stored: retry with the same feedback_id).",
    )
    return routes
