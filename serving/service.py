"""The one service object every router shares, the error answer type and the ASGI guard.

`Service` holds the settings, the model registry, the micro-batcher (`Scorer`), the logger and
the Prometheus metrics. Routers (`serving.routes.*`) are built from it by the app factory
(`serving.app.create_app`), so a route reaches everything through the closure: no per-request
lookups or dependency solving on the hot path.

The guard is a pure-ASGI wrapper in front of every route: it refuses oversized bodies (413, from
Content-Length before anything is read), sheds load beyond `max_concurrency` scoring requests in
flight (503 + Retry-After), and writes one JSON log line and the Prometheus observations per
request.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from needs_rec import drift
from needs_rec.errors import CrmRowError, NeedsRecError, SourceUnavailable
from serving import access
from serving.crm_link import CrmLink, new_request_id
from serving.observability import Metrics, configure_logging, log_event, write_request_line
from serving.openapi import ApiDocs
from serving.registry import MODEL_NAME, Registry, ServingModel
from serving.requests import ParsedRequest, check_id, parse_json
from serving.scoring import Scorer
from serving.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Endpoint = Callable[[Request], Awaitable[Response]]

#: Endpoints (log/metric labels) whose POSTs count against `max_concurrency` and may be shed.
SCORING_ENDPOINTS = frozenset({"recommendations", "recommendations_batch", "predict"})
#: Scoring requests let through in one stretch of a busy loop before queue-delay shedding starts
#: (`Service.start_lag_watch`): ~8 ms of work at ~1 ms a request, more than a quiet stretch ever holds.
QUEUED_BEFORE_SHEDDING = 8
#: The least time buffered exposures get to be written at shutdown, whatever the drain took (one
#: write of a full buffer takes milliseconds on a database that answers).
MIN_EXPOSURE_CLOSE_S = 1.0
_STATIC_ENDPOINTS = {
    "/v1/recommendations": "recommendations",
    "/v1/recommendations:batch": "recommendations_batch",
    "/healthz": "healthz",
    "/readyz": "readyz",
    "/metrics": "metrics",
    "/": "page_manager",
    "/contacts/card": "page_card",
    "/analyst": "page_analyst",
    "/v1/audience": "audience",
    "/v1/feedback": "feedback",
}
_OUTCOMES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
             415: "unsupported_encoding", 503: "unavailable"}


class ApiError(Exception):
    """An answer other than 200: status, the `error` text and extra headers."""

    def __init__(self, status: int, message: str, *, outcome: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.outcome = outcome
        self.headers = headers or {}


class PayloadTooLarge(ApiError):
    def __init__(self, limit: int):
        super().__init__(413, f"body: larger than the limit of {limit} bytes", outcome="too_large")


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer serialised with orjson (numpy arrays allowed)."""
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The contract's error shape: `{"error": "..."}`."""
    return json_response({"error": message}, status, headers)


def endpoint_of(method: str, path: str) -> str:
    """Low-cardinality endpoint label for logs and metrics (never the raw path)."""
    name = _STATIC_ENDPOINTS.get(path)
    if name is not None:
        return name
    if path.startswith("/v1/models/"):
        if method == "POST" and path.endswith(":predict"):
            return "predict"
        return "metadata" if path.endswith("/metadata") else "model_status"
    if path.startswith("/static/"):
        return "page_asset"
    if path.startswith("/analyst/"):
        return "page_chart"
    if path.startswith("/v1/organizations/") and path.endswith("/similar"):
        return "similar_organizations"
    return "other"


async def read_body(request: Request, limit: int) -> bytes:
    """The body, counting streamed bytes: 413 as soon as it passes `limit`, whatever Content-Length said."""
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        # 499 (nginx's "client closed request"): no answer reaches anyone, and a real 400 stays countable
        raise ApiError(499, "body: the client disconnected before sending all of it", outcome="disconnected") from None
    return b"".join(chunks)


#: Request-body codings the guard decodes (TF Serving's HTTP server takes gzip bodies too); any other is a 415.
GZIP_CODINGS = (b"gzip", b"x-gzip")


def gunzipped(receive: Receive, limit: int) -> Receive:
    """`receive` with its body chunks gunzipped as they arrive (`Content-Encoding: gzip`).

    The decoded size counts against `limit` (413 as soon as it passes, so a small bomb cannot
    inflate into gigabytes); a body that is not gzip, or stops in the middle, is a 400. No body at all
    (a GET that names the coding) stays no body."""
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    size = received = 0

    async def receive_decoded() -> Message:
        nonlocal size, received
        message = await receive()
        if message["type"] != "http.request":
            return message
        chunk = message.get("body", b"")
        received += len(chunk)
        if not received:
            return message
        try:
            body = decoder.decompress(chunk, limit + 1 - size)
        except zlib.error as exc:
            raise ApiError(400, f"body: Content-Encoding is gzip but the body is not ({exc})") from None
        size += len(body)
        if size > limit or decoder.unconsumed_tail:
            raise PayloadTooLarge(limit)
        if not message.get("more_body", False) and (not decoder.eof or decoder.unused_data):
            raise ApiError(400, "body: Content-Encoding is gzip but the gzip stream is cut short or followed by "
                                "other bytes")
        return {**message, "body": body}

    return receive_decoded


class Service:
    """Everything the routes share: settings, the model registry, the micro-batcher, logs and metrics."""

    def __init__(self, settings: Settings, *, registry: Registry | None = None, logger: logging.Logger | None = None):
        self.settings = settings
        self.logger = logger or configure_logging(settings.log_level)
        self.metrics = Metrics()
        self.registry = registry or Registry(
            settings.model,
            poll_interval_s=settings.poll_interval_s,
            warmup_rounds=settings.warmup_rounds,
            max_rows=settings.max_rows_per_call,
            logger=self.logger,
            metrics=self.metrics,
        )
        if self.registry.metrics is None:
            self.registry.metrics = self.metrics
        self.scorer = Scorer(
            max_rows=settings.max_rows_per_call,
            workers=settings.model_workers,
            metrics=self.metrics,
            fast_rows=settings.fast_path_max_rows,
        )
        self.scorer.on_twin_error = self.twin_failed
        self.metrics.watch_drift(self.current_drift)
        self.docs = ApiDocs()  # hand-routed operations' documentation (serving.openapi)
        self.crm_link: CrmLink | None = None
        if settings.crm:
            import crm

            source = crm.open_source(settings.crm, flag="--crm")  # ConfigError for a malformed URL, at start
            self.crm_link = CrmLink(
                source,
                cache_s=settings.crm_cache_s,
                cache_size=settings.crm_cache_size,
                workers=settings.crm_workers,
                exposure_buffer=settings.exposure_buffer,
                metrics=self.metrics,
                logger=self.logger,
                stop_budget=self.shutdown_budget_left,
                siblings=settings.workers > 1,
            )
        self._crm_locations = _locations(settings.crm, self.crm_link.source if self.crm_link else None)
        self.shutting_down = False
        self._shutdown_began = 0.0  # time.monotonic() of begin_shutdown (SIGTERM)
        self.in_flight = 0
        self.loop_lag = 0.0  # seconds the event loop ran behind at its last check (`watch_loop_lag`)
        self._lag_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lag_interval = 0.0
        self._beat = 0.0  # loop time of the lag watcher's last wake-up
        self._stretch_accepted = 0  # scoring requests let through since then
        self.retry_headers = {"Retry-After": str(settings.retry_after_s)}
        self.credentials = access.Credentials(settings)
        self._host_names = settings.host_names  # None: any Host
        #: (method, path) → a hand-tuned endpoint the guard answers itself (`add_lane`).
        self.lanes: dict[tuple[str, str], Endpoint] = {}
        #: exception class → its `{"error"}` answer (`serving.errors.handlers`, set by the app factory).
        self.error_handlers: dict[type[Exception], Callable[[Request, Exception], Response]] = {}

    async def start_lag_watch(self, interval: float = 0.005) -> None:
        """Measure how far the event loop runs behind, every `interval` s, for load shedding.

        Accepted requests wait in the loop's ready queue before any route (or the in-flight count)
        sees them: a request answered by the NumPy twin never yields, so in-flight stays at 1 however
        many wait. How late a timer fires is how long that queue takes to drain. `loop_lag` is the
        smallest of the last three measurements: a sustained queue, not one stall (a collection, a
        version loading beside the served one). `queue_delay` adds what the last measurement cannot
        see yet: how long the loop has now been running past the watcher's next wake-up, which is how
        long a request read at the start of this stretch has waited. A stretch sheds only once
        `QUEUED_BEFORE_SHEDDING` requests went through in it: a queue, not a stall that a few requests
        happened to wait out (the process descheduled, a collection).
        """
        if self.settings.max_queue_delay_ms <= 0:
            return
        loop = asyncio.get_running_loop()
        self._loop, self._lag_interval = loop, interval
        self._beat = loop.time()

        async def watch() -> None:
            recent = [0.0, 0.0, 0.0]
            while True:
                before = loop.time()
                await asyncio.sleep(interval)
                self._beat = loop.time()
                self._stretch_accepted = 0
                recent = [*recent[1:], max(0.0, self._beat - before - interval)]
                self.loop_lag = min(recent)

        self._lag_task = asyncio.create_task(watch(), name="loop-lag")

    def queue_delay(self) -> float:
        """Seconds new requests are waiting in the event loop now (see `start_lag_watch`; 0 when it is off)."""
        if self._loop is None:
            return 0.0
        return max(self.loop_lag, self._loop.time() - self._beat - self._lag_interval)

    async def stop_lag_watch(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task

    def begin_shutdown(self) -> None:
        """Readiness drops from now on (SIGTERM); in-flight requests still finish."""
        if not self.shutting_down:
            self.shutting_down = True
            self._shutdown_began = time.monotonic()
            log_event(self.logger, "shutdown_started", in_flight=self.in_flight)

    def shutdown_budget_left(self) -> float | None:
        """Seconds left of `--shutdown-timeout-s` for the last shutdown step (writing buffered exposures).

        The budget starts once the `--shutdown-delay-s` of serving with readiness down is over, as
        uvicorn's drain of in-flight requests does, and the exposures get at least
        `MIN_EXPOSURE_CLOSE_S` of it even after a drain that used it all. None (no limit) for 0,
        which is what 0 means to uvicorn's drain too."""
        timeout = self.settings.shutdown_timeout_s
        if not timeout:
            return None
        began = self._shutdown_began or time.monotonic()
        spent = max(0.0, time.monotonic() - began - self.settings.shutdown_delay_s)
        return max(MIN_EXPOSURE_CLOSE_S, timeout - spent)

    def twin_failed(self, model: ServingModel, exc: Exception) -> None:
        """A NumPy twin raised: log it (type only: the message could quote request values) and drop the twin."""
        model.twin = None
        model.twin_note = f"dropped after {type(exc).__name__}"
        log_event(self.logger, "fast_path_dropped", logging.ERROR, version=model.version, error=type(exc).__name__)

    def model(self) -> ServingModel:
        """The version to answer with (held for the whole request), or 503 when none is ready."""
        model = self.registry.current
        if model is None:
            reason = self.registry.last_error or "the model is still loading"
            raise ApiError(503, f"not ready: {reason}", outcome="not_ready", headers=self.retry_headers)
        return model

    # -- the CRM source (--crm) ---------------------------------------------------------------

    #: What a CRM call raises when the database cannot be reached (answered 503), and what a
    #: request built from CRM values may raise when the request rules refuse them (answered 400).
    crm_unavailable = SourceUnavailable
    request_errors = NeedsRecError

    @property
    def crm(self) -> Any:
        """The `crm.CrmSource` given with `--crm`, or None."""
        return self.crm_link.source if self.crm_link is not None else None

    def public_text(self, message: str) -> str:
        """`message` as an API client may read it: the CRM source's location (a server path, a database
        host) replaced by "the CRM source" — the service log keeps the location."""
        for location in self._crm_locations:
            message = message.replace(f"CRM database {location}", "CRM database").replace(location, "the CRM source")
        return message

    def need_crm(self, what: str) -> CrmLink:
        """The CRM link, or 503 saying that `what` needs `--crm`."""
        if self.crm_link is None:
            raise ApiError(
                503,
                f"{what} needs a CRM source (--crm): start the service with --crm D, a CRM directory or a database "
                "URL such as sqlite:///crm.db",
                outcome="no_crm",
            )
        return self.crm_link

    def check_credential(self, request: Request, what: str) -> None:
        """401 unless `request` carries the configured credential (nothing to check when none is):
        for answers that hold the CRM's own data outside the protected paths of `serving.access`."""
        refused = access.credential_refusal(request.scope, self.credentials)
        if refused is not None:
            status, message, headers = refused
            if status == 401:
                message = f"{what} needs the service's credential: {message}"
            raise ApiError(status, message, outcome=access.OUTCOMES[status], headers=headers)

    async def resolve_contact(self, body: Any, where: str = "", request: Request | None = None) -> str | None:
        """For a body naming `contact_id` (contract §4 v2): put the CRM's organization and contact fields
        in its place and return the id; None for a full-fields body. 401 without the credential of
        `request` when one is configured (before anything says whether the contact exists), 400 for
        a bad or doubled contact, 404 for an unknown one, 503 without --crm or when the CRM cannot be
        read."""
        if not isinstance(body, dict) or "contact_id" not in body:
            return None
        if request is not None:  # a CRM contact's data: behind the pages' credential when one is set
            self.check_credential(request, f"field '{where}contact_id' (a CRM lookup)")
        contact_id = body.pop("contact_id")
        if not isinstance(contact_id, str) or not contact_id.strip():
            raise ApiError(400, f"field '{where}contact_id' must be a non-empty string (a CRM contact id)")
        wanted = contact_id.strip()
        check_id(f"{where}contact_id", wanted)
        if "organization" in body or "contact" in body:
            raise ApiError(400, f"field '{where}contact_id': give either contact_id or the organization and contact "
                                "objects, not both")
        link = self.need_crm(f"field '{where}contact_id'")
        try:
            record = await link.contact(wanted)
        except CrmRowError as exc:  # a batch item is named, as every other error in a batch names it
            if not where:
                raise
            raise ApiError(400, f"field '{where}contact_id': {exc}") from None
        if record is None:
            raise ApiError(404, f"field '{where}contact_id': no contact {contact_id!r} in the CRM")
        if record.organization is None:
            raise ApiError(404, f"field '{where}contact_id': contact {contact_id!r} names organization "
                                f"{record.org_id!r}, which is not in the CRM's organizations")
        body["organization"], body["contact"] = dict(record.organization), dict(record.contact)
        return record.contact_id

    def record_answer(
        self,
        model: ServingModel,
        contact_id: str | None,
        stage: str,
        points: list[dict[str, Any]],
        request_id: str | None = None,
    ) -> str:
        """The answer's request_id (the caller's, else a fresh one); with a CRM source, its
        exposures are queued for writing (off the request path) and its model version remembered."""
        request_id = request_id or new_request_id(model.version)
        if self.crm_link is not None:
            self.crm_link.record_answer(model.version, contact_id, stage, points, request_id)
        return request_id

    def check_model_name(self, name: str) -> None:
        """404 unless `name` is the model this service serves (TF Serving paths carry it)."""
        if name != MODEL_NAME:
            raise ApiError(404, f"unknown model {name!r}; this service serves {MODEL_NAME!r}")

    def observe(self, model: ServingModel, parsed: list[ParsedRequest]) -> None:
        """Count what the requests carried: unknown codes per field, and each field for the drift monitor."""
        self.count_unknown(parsed)
        monitor = self.drift_monitor(model)
        if monitor is None:
            return
        for item in parsed:
            monitor.observe(item.row)

    def current_drift(self) -> tuple[int, drift.Monitor] | None:
        """The served version's number and drift monitor (for /metrics), or None."""
        model = self.registry.current
        monitor = self.drift_monitor(model)
        return None if model is None or monitor is None else (model.version, monitor)

    def drift_monitor(self, model: ServingModel | None) -> drift.Monitor | None:
        """`model`'s live-input drift monitor, made on first use; None without a model or a training profile."""
        if model is None:
            return None
        if model.drift is None:
            profile = model.loaded.manifest.get("drift")
            if not profile:
                return None
            settings = self.settings
            model.drift = drift.Monitor(profile, window=settings.drift_window, min_rows=settings.drift_min_rows,
                                        threshold=settings.drift_threshold, js_threshold=settings.drift_js_threshold)
        return model.drift

    def count_unknown(self, parsed: list[ParsedRequest]) -> None:
        for item in parsed:
            if item.unknown_fields:
                self.metrics.count_unknown(item.unknown_fields)

    async def score_items(
        self,
        request: Request,
        model: ServingModel,
        key: str,
        parse: Callable[[Any, str], ParsedRequest | Awaitable[ParsedRequest]],
        warnings: list[str] | None = None,
    ) -> tuple[list[ParsedRequest], np.ndarray]:
        """A list body (`requests` or `instances`): read, check the batch limit, validate each item, score them.

        `warnings` (optional) receives the body's own unknown keys (each item's go to that item)."""
        settings = self.settings
        body = parse_json(await read_body(request, settings.max_body_bytes))
        items = model.parser.batch(body, key, settings.max_batch, warnings)
        parsed = []
        for i, item in enumerate(items):
            one = parse(item, f"{key}[{i}].")
            parsed.append(await one if inspect.isawaitable(one) else one)  # an async parser may look contacts up
        request.state.items = len(parsed)
        return parsed, await self.score_parsed(request, model, parsed)

    async def score_parsed(self, request: Request, model: ServingModel, parsed: list[ParsedRequest]) -> np.ndarray:
        """Probabilities (n, C) of validated requests: drift observed, warnings counted for the log line."""
        self.observe(model, parsed)
        request.state.warnings = sum(len(p.warnings) for p in parsed)
        if not parsed:
            return np.zeros((0, len(model.vocabulary)), dtype=np.float32)
        return await self.scorer.predict(model, [p.row for p in parsed])

    # -- the ASGI guard --------------------------------------------------------------------

    def add_lane(self, method: str, path: str, endpoint: Endpoint) -> None:
        """Answer `method path` with `endpoint` right from the guard, past the router and the inner middleware.

        For the scoring hot path only: a request in a lane skips route matching over every router
        and two middleware layers (≈ 0.05 ms), and still gets the guard's limits, shedding, log
        line and metrics, and the same `{"error"}` answers (`serving.errors`). The route stays
        registered with the router too, so the app behaves the same without the guard.
        """
        self.lanes[(method, path)] = endpoint

    async def _run_lane(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as exc:  # every error the router's handlers would answer, answered the same
            response = self.answer_error(request, exc)
        await response(scope, receive, send)

    def answer_error(self, request: Request, exc: Exception) -> Response:
        """The `{"error"}` answer for `exc`: the handler of its most specific class in `error_handlers`,
        walking its class hierarchy as Starlette's own lookup does (`Exception` catches the rest)."""
        handler = next(self.error_handlers[cls] for cls in type(exc).__mro__ if cls in self.error_handlers)
        return handler(request, exc)

    def guard(self, app: ASGIApp) -> ASGIApp:
        """Wrap the app: body-size and concurrency limits, then one log line + metrics per request."""
        logger = self.logger
        metrics = self.metrics
        lanes = self.lanes

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            method = scope["method"]
            endpoint = endpoint_of(method, scope["path"])
            state = scope.setdefault("state", {})
            status_box = [500]

            async def send_capturing(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status_box[0] = message["status"]
                await send(message)

            scoring = endpoint in SCORING_ENDPOINTS and method == "POST"
            try:
                refusal = self._refusal(scope, scoring)
                if refusal is not None:
                    status, message, outcome, headers = refusal
                    state["outcome"] = outcome
                    await error_response(status, message, headers)(scope, receive, send_capturing)
                    return
                if state.get("gzip"):
                    receive = gunzipped(receive, self.settings.max_body_bytes)
                if scoring:
                    self.in_flight += 1
                    metrics.in_flight.inc()
                    try:
                        lane = lanes.get((method, scope["path"])) if self.error_handlers else None
                        if lane is not None:
                            await self._run_lane(lane, scope, receive, send_capturing)
                        else:
                            await app(scope, receive, send_capturing)
                    finally:
                        self.in_flight -= 1
                        metrics.in_flight.dec()
                else:
                    await app(scope, receive, send_capturing)
            finally:
                elapsed = time.perf_counter() - started
                status = status_box[0]
                metrics.observe_request(endpoint, status, elapsed)
                if logger.isEnabledFor(logging.INFO):
                    outcome = state.get("outcome") or ("ok" if status < 400 else _OUTCOMES.get(status, "error"))
                    fields = {
                        "method": method,
                        "endpoint": endpoint,
                        "status": status,
                        "outcome": outcome,
                        "latency_ms": round(elapsed * 1000, 3),
                        "model_version": state.get("model_version"),
                    }
                    if "items" in state:
                        fields["items"] = state["items"]
                    if state.get("warnings"):
                        fields["warnings"] = state["warnings"]
                    write_request_line(logger, fields)

        return guarded

    def _refusal(self, scope: Scope, scoring: bool) -> tuple[int, str, str, dict[str, str] | None] | None:
        """Why a request is refused before it reaches a route, or None."""
        hosts = self._host_names
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return 400, "header 'Content-Length' is not a number", "bad_request", None
                if length > self.settings.max_body_bytes:
                    limit = self.settings.max_body_bytes
                    return 413, f"body: {length} bytes is over the limit of {limit} bytes", "too_large", None
            elif name == b"host" and hosts is not None and access.host_name(value) not in hosts:
                return 400, access.foreign_host_message(value, hosts), "bad_host", None
            elif name == b"content-encoding":
                coding = value.strip().lower()
                if coding in GZIP_CODINGS:
                    scope["state"]["gzip"] = True
                elif coding not in (b"", b"identity"):
                    shown = value.decode("latin-1")[:40]
                    return 415, (f"header 'Content-Encoding': {shown!r} is not supported; send the body as it is "
                                 "or gzip"), "unsupported_encoding", None
        if scoring and self.in_flight >= self.settings.max_concurrency:
            limit = self.settings.max_concurrency
            return 503, f"overloaded: {limit} requests in flight; retry later", "shed", self.retry_headers
        delay_limit_ms = self.settings.max_queue_delay_ms
        if scoring and delay_limit_ms > 0:
            if self.queue_delay() * 1000 > delay_limit_ms and self._stretch_accepted >= QUEUED_BEFORE_SHEDDING:
                return 503, "overloaded: requests are queueing; retry later", "shed", self.retry_headers
            self._stretch_accepted += 1
        return None


def _locations(given: Any, source: Any) -> list[str]:
    """The ways a message may name the CRM source (its description, the `--crm` text), longest first."""
    found = {str(given)} if given else set()
    if source is not None:
        found.add(source.describe())
    return sorted((text for text in found if text), key=len, reverse=True)
