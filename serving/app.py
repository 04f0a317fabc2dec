"""The HTTP service (contract §4): FastAPI routes, error answers, limits, logs and metrics.

Request bodies are read and validated by hand (orjson + `serving.requests`) rather than through
pydantic models: it is several times cheaper per request, and it lets every error be the
contract's `{"error": "..."}` naming the field. A pure-ASGI guard in front of the routes refuses
oversized bodies (413, from Content-Length before anything is read; streamed bytes are counted
too), sheds load beyond `max_concurrency` scoring requests in flight (503 + Retry-After), and
writes one JSON log line and the Prometheus observations per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from needs_rec.errors import NeedsRecError
from serving.observability import Metrics, configure_logging, log_event
from serving.registry import MODEL_NAME, Registry, ServingModel
from serving.requests import ParsedRequest, parse_json
from serving.scoring import Scorer
from serving.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SCORING_ENDPOINTS = frozenset({"recommendations", "recommendations_batch", "predict"})
_STATIC_ENDPOINTS = {
    "/v1/recommendations": "recommendations",
    "/v1/recommendations:batch": "recommendations_batch",
    "/healthz": "healthz",
    "/readyz": "readyz",
    "/metrics": "metrics",
}
_OUTCOMES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large", 503: "unavailable"}


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
    return "other"


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
        self.shutting_down = False
        self.in_flight = 0
        self.retry_headers = {"Retry-After": str(settings.retry_after_s)}

    def begin_shutdown(self) -> None:
        """Readiness drops from now on (SIGTERM); in-flight requests still finish."""
        if not self.shutting_down:
            self.shutting_down = True
            log_event(self.logger, "shutdown_started", in_flight=self.in_flight)

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

    def count_unknown(self, parsed: list[ParsedRequest]) -> None:
        for item in parsed:
            if item.unknown_fields:
                self.metrics.count_unknown(item.unknown_fields)

    # -- the ASGI guard --------------------------------------------------------------------

    def guard(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """Wrap the app: body-size and concurrency limits, then one log line + metrics per request."""
        logger = self.logger
        metrics = self.metrics

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
                if scoring:
                    self.in_flight += 1
                    metrics.in_flight.inc()
                    try:
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
                    logger.info("request", extra={"fields": fields})

        return guarded

    def _refusal(self, scope: Scope, scoring: bool) -> tuple[int, str, str, dict[str, str] | None] | None:
        """Why a request is refused before it reaches a route, or None."""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return 400, "header 'Content-Length' is not a number", "bad_request", None
                if length > self.settings.max_body_bytes:
                    limit = self.settings.max_body_bytes
                    return 413, f"body: {length} bytes is over the limit of {limit} bytes", "too_large", None
                break
        if scoring and self.in_flight >= self.settings.max_concurrency:
            limit = self.settings.max_concurrency
            return 503, f"overloaded: {limit} requests in flight; retry later", "shed", self.retry_headers
        return None


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
        raise ApiError(400, "body: the client disconnected before sending all of it", outcome="disconnected") from None
    return b"".join(chunks)


def _answer(model: ServingModel, parsed: ParsedRequest, probabilities: np.ndarray) -> dict[str, Any]:
    talking = model.talking
    chosen = talking.select(probabilities, model.thresholds, parsed.stage, top_k=parsed.top_k, cap=model.top_k)
    answer: dict[str, Any] = {
        "model_version": model.version,
        "stage": parsed.stage,
        "talking_points": talking.render(
            probabilities,
            chosen,
            stage=parsed.stage,
            thresholds=model.thresholds,
            position=parsed.position,
            industry=parsed.industry,
            interests=parsed.interests,
            products_owned=parsed.products_owned,
        ),
        "warnings": parsed.warnings,
    }
    if parsed.request_id is not None:
        answer["request_id"] = parsed.request_id
    return answer


def _version_number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def create_app(
    settings: Settings, *, registry: Registry | None = None, logger: logging.Logger | None = None
) -> FastAPI:
    """Build the FastAPI app; the registry starts loading the model when the app starts (lifespan)."""
    service = Service(settings, registry=registry, logger=logger)
    timeout = settings.request_timeout_s

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.scorer.start()
        service.registry.start()
        log_event(service.logger, "service_started", model=str(settings.model), host=settings.host, port=settings.port)
        try:
            yield
        finally:
            service.begin_shutdown()
            service.registry.stop()
            await service.scorer.stop()
            log_event(service.logger, "service_stopped")

    app = FastAPI(
        title="needs_rec",
        summary="Which product characteristics to stress with a contact at a funnel stage, with talking points",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.service = service

    # -- error answers ---------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> Response:
        if exc.outcome:
            request.state.outcome = exc.outcome
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(NeedsRecError)
    async def on_user_error(request: Request, exc: NeedsRecError) -> Response:
        return error_response(400, " ".join(str(exc).split()))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return error_response(400, f"field '{where}': {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = f"no such endpoint: {request.method} {request.url.path}" if exc.status_code == 404 else exc.detail
        return error_response(exc.status_code, str(message), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> Response:
        service.logger.error("unhandled_error", exc_info=exc, extra={"fields": {"path": request.url.path}})
        return error_response(500, "internal error; the service log has the details")

    @app.exception_handler(TimeoutError)
    async def on_timeout(request: Request, exc: TimeoutError) -> Response:
        request.state.outcome = "timeout"
        return error_response(503, f"request timed out after {timeout:g} s; retry later", service.retry_headers)

    # -- scoring ---------------------------------------------------------------------------

    # The three scoring routes are plain Starlette endpoints (`request` in, `Response` out): they
    # read and validate their bodies themselves, so FastAPI's per-request dependency solving would
    # only add latency.

    async def recommend(request: Request) -> Response:
        """Talking points for one contact at one stage."""
        model = service.model()
        request.state.model_version = model.version
        async with asyncio.timeout(timeout):
            body = parse_json(await read_body(request, settings.max_body_bytes))
            parsed = model.parser.recommendation(body)
            service.count_unknown([parsed])
            request.state.warnings = len(parsed.warnings)
            probabilities = await service.scorer.predict(model, [parsed.row])
        return json_response(_answer(model, parsed, probabilities[0]))

    async def score_items(
        request: Request, model: ServingModel, key: str, parse: Callable[[Any, str], ParsedRequest]
    ) -> tuple[list[ParsedRequest], np.ndarray]:
        """A list body (`requests` or `instances`): read, check the batch limit, validate each item, score them."""
        body = parse_json(await read_body(request, settings.max_body_bytes))
        items = model.parser.batch(body, key, settings.max_batch)
        parsed = [parse(item, f"{key}[{i}].") for i, item in enumerate(items)]
        request.state.items = len(parsed)
        service.count_unknown(parsed)
        request.state.warnings = sum(len(p.warnings) for p in parsed)
        if not parsed:
            return parsed, np.zeros((0, len(model.vocabulary)), dtype=np.float32)
        return parsed, await service.scorer.predict(model, [p.row for p in parsed])

    async def recommend_batch(request: Request) -> Response:
        """The same for a list of requests: `{"requests": [...]}` → `{"model_version", "results": [...]}`."""
        model = service.model()
        request.state.model_version = model.version
        async with asyncio.timeout(timeout):
            parsed, probabilities = await score_items(request, model, "requests", model.parser.recommendation)
        results = [_answer(model, p, probabilities[i]) for i, p in enumerate(parsed)]
        return json_response({"model_version": model.version, "results": results})

    async def tf_predict(request: Request, model: ServingModel) -> Response:
        request.state.model_version = model.version
        async with asyncio.timeout(timeout):
            parsed, probabilities = await score_items(request, model, "instances", model.parser.instance)
        warnings = [f"instances[{i}]: {w}" for i, p in enumerate(parsed) for w in p.warnings]
        answer: dict[str, Any] = {"predictions": probabilities, "model_version": model.version}
        if warnings:
            answer["warnings"] = warnings
        return json_response(answer)

    def check_model_name(name: str) -> None:
        if name != MODEL_NAME:
            raise ApiError(404, f"unknown model {name!r}; this service serves {MODEL_NAME!r}")

    def model_for_version(name: str, version: str) -> ServingModel:
        check_model_name(name)
        model = service.model()
        if _version_number(version) != model.version:
            raise ApiError(404, f"model {MODEL_NAME!r} has no version {version!r} loaded; serving {model.version}")
        return model

    async def predict(request: Request) -> Response:
        """TensorFlow Serving REST predict: `{"instances": [...]}` → `{"predictions": [[p, ...]]}`."""
        target = request.path_params["target"]
        name, _, verb = target.partition(":")
        check_model_name(name)
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

    app.add_route("/v1/recommendations", recommend, methods=["POST"])
    app.add_route("/v1/recommendations:batch", recommend_batch, methods=["POST"])
    app.add_route("/v1/models/{target}", predict, methods=["POST"])
    app.add_route("/v1/models/{name}/versions/{target}", predict_version, methods=["POST"])

    # -- model status and metadata --------------------------------------------------------

    @app.get("/v1/models/{name}")
    async def model_status(name: str) -> Response:
        """TensorFlow Serving status: every version this process knows and its state."""
        check_model_name(name)
        return json_response({"model_version_status": service.registry.status()})

    @app.get("/v1/models/{name}/versions/{version}")
    async def model_version_status(name: str, version: str) -> Response:
        """Status of one version; 404 for a version this process does not know."""
        check_model_name(name)
        entries = [e for e in service.registry.status() if e["version"] == version]
        if not entries:
            raise ApiError(404, f"model {MODEL_NAME!r} has no version {version!r}")
        return json_response({"model_version_status": entries})

    @app.get("/v1/models/{name}/metadata")
    async def metadata(request: Request, name: str) -> Response:
        """Manifest summary of the version being served: version, vocabulary, thresholds, metrics."""
        check_model_name(name)
        model = service.model()
        request.state.model_version = model.version
        return json_response(model.metadata())

    @app.get("/v1/models/{name}/versions/{version}/metadata")
    async def version_metadata(request: Request, name: str, version: str) -> Response:
        """Manifest summary of one version (404 unless it is the one being served)."""
        model = model_for_version(name, version)
        request.state.model_version = model.version
        return json_response(model.metadata())

    # -- health, readiness, metrics -------------------------------------------------------

    @app.get("/healthz")
    async def healthz() -> Response:
        """Alive: the process answers (whether or not a model is loaded)."""
        return json_response({"status": "alive"})

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        """Ready only once a model is loaded and warmed up, and not while shutting down."""
        if service.shutting_down:
            raise ApiError(503, "not ready: shutting down", outcome="shutting_down", headers=service.retry_headers)
        model = service.model()
        request.state.model_version = model.version
        return json_response({"status": "ready", "model_version": model.version})

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics."""
        content, content_type = service.metrics.render()
        return Response(content, media_type=content_type)

    app.add_middleware(_GuardMiddleware, service=service)
    return app


class _GuardMiddleware:
    """ASGI middleware adapter for `Service.guard` (Starlette instantiates middleware with the inner app)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], service: Service):
        self._guarded = service.guard(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._guarded(scope, receive, send)


__all__ = ["ApiError", "Service", "create_app"]
