"""Structured JSON logs and Prometheus metrics for the service.

One JSON line per request (endpoint, status, outcome, latency, model version, item and warning
counts) and one per model event (loaded, switched, refused). Request bodies, contact fields,
error texts that may echo received values and warnings never reach a log line: they can carry
personal data, and the counts are what operations need.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LOGGER_NAME = "needs_rec.serving"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, the record's `fields` and any exception text."""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # the date and time to the second change once a second, not per line
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        entry: dict[str, Any] = {
            "ts": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


#: Python loggers of the libraries whose records join the service's JSON log (TensorFlow, absl, Keras,
#: `warnings` via `logging.captureWarnings`); anything else propagating to the root logger does too.
LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "tensorflow", "absl", "keras", "py.warnings")


def configure_logging(level: str = "info", stream: Any = None) -> logging.Logger:
    """JSON lines on stderr (or `stream`) for the service and the libraries' Python logs; returns the service logger."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in (LOGGER_NAME, *LIBRARY_LOGGERS):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper() if name == LOGGER_NAME or name.startswith("uvicorn") else logging.WARNING)
        logger.propagate = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    logging.getLogger("uvicorn.access").disabled = True  # our request line replaces it
    return logging.getLogger(LOGGER_NAME)


def wrap_native_log(logger: logging.Logger) -> None:
    """Send the lines native code writes to stderr (TensorFlow's C++ log) into `logger` as JSON records.

    Each becomes a `native_log` record with its level and text; TensorFlow's start-up chatter and
    known-harmless messages are demoted to debug, so an info-level log starts with our own lines.
    """
    from needs_rec import native_log

    def on_line(line: str) -> None:
        level, text = native_log.parse_native(line)
        number = logging.DEBUG if native_log.is_tensorflow_noise(line) else logging.getLevelName(level.upper())
        log_event(logger, "native_log", number, text=text)

    native_log.capture_native_stderr(on_line)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log `event` with structured `fields` (never request contents)."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": fields})


class Metrics:
    """The service's Prometheus metrics, in a registry of their own (one per app, so tests stay isolated)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "needs_rec_requests_total", "HTTP requests by endpoint and status", ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "needs_rec_request_duration_seconds", "HTTP request latency by endpoint and status",
            ["endpoint", "status"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.in_flight = Gauge("needs_rec_requests_in_flight", "scoring requests being served", registry=self.registry)
        self.model_version = Gauge("needs_rec_model_version", "model version being served (0 = none)",
                                   registry=self.registry)
        self.model_loads = Counter("needs_rec_model_loads_total", "model version loads by result", ["result"],
                                   registry=self.registry)
        self.unknown_codes = Counter("needs_rec_unknown_codes_total", "unknown dictionary codes received, by field",
                                     ["field"], registry=self.registry)
        self.model_calls = Counter("needs_rec_model_calls_total", "model calls by path (numpy twin or tensorflow)",
                                   ["path"], registry=self.registry)
        self.rows_per_call = Histogram(
            "needs_rec_model_call_rows", "rows per model call (micro-batching merges concurrent requests)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=self.registry,
        )
        self.crm_lookups = Counter("needs_rec_crm_lookups_total", "contact lookups that read the CRM (cache misses)",
                                   registry=self.registry)
        self.crm_cache_hits = Counter("needs_rec_crm_cache_hits_total", "contact lookups answered from the cache",
                                      registry=self.registry)
        self.crm_snapshot_contacts = Gauge("needs_rec_crm_snapshot_contacts",
                                           "contacts in the CRM snapshot lookups are answered from",
                                           registry=self.registry)
        self.crm_snapshot_age = Gauge("needs_rec_crm_snapshot_age_seconds",
                                      "seconds since the CRM snapshot in use was read (-1: none)",
                                      registry=self.registry)
        self.exposures = Counter(
            "needs_rec_exposures_total",
            "exposure rows by fate: written, dropped_buffer_full (the buffer was full), dropped_write_failed",
            ["fate"], registry=self.registry,
        )
        self.feedback = Counter("needs_rec_feedback_total", "feedback posts by result (stored, duplicate, conflict)",
                                ["result"], registry=self.registry)
        self._request_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._unknown_children: dict[str, Any] = {}
        self.unknown_totals: dict[str, int] = {}  # the same counts as plain numbers, for the analyst page
        self.numpy_calls = self.model_calls.labels("numpy")  # label children cached: counted on every request
        self.tensorflow_calls = self.model_calls.labels("tensorflow")

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one request and its latency (label children cached: this runs on every request)."""
        key = (endpoint, status)
        children = self._request_children.get(key)
        if children is None:
            label = str(status)
            children = (self.requests.labels(endpoint, label), self.latency.labels(endpoint, label))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_unknown(self, fields: list[str]) -> None:
        """Count unknown codes per field name (a field name, never the code itself)."""
        for field in fields:
            child = self._unknown_children.get(field)
            if child is None:
                child = self._unknown_children[field] = self.unknown_codes.labels(field)
            child.inc()
            self.unknown_totals[field] = self.unknown_totals.get(field, 0) + 1

    def watch_drift(self, current: Any) -> None:
        """Expose the served version's drift (`current()` → the ServingModel or None), computed at scrape time."""
        self.registry.register(_DriftCollector(current))

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type, for GET /metrics."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _DriftCollector:
    """Prometheus collector: per-field distance of live inputs to training, and its flag (see needs_rec.drift)."""

    def __init__(self, current: Any) -> None:
        self._current = current

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        distance = GaugeMetricFamily(
            "needs_rec_drift_distance", "distance of live inputs to the training split, per field "
            "(L-infinity for codes, Jensen-Shannon for numbers); absent until enough requests",
            labels=["field", "measure"])
        flag = GaugeMetricFamily("needs_rec_drift_flag", "1 when the field's distance reaches --drift-threshold",
                                 labels=["field"])
        rows = GaugeMetricFamily("needs_rec_drift_window_requests", "live requests in the drift window")
        threshold = GaugeMetricFamily("needs_rec_drift_threshold", "the threshold per measure (--drift-threshold, "
                                      "--drift-js-threshold)", labels=["measure"])
        model = self._current()
        monitor = getattr(model, "drift", None)
        if monitor is not None:
            for field, (measure, value, flagged) in monitor.distances().items():
                if value is not None:
                    distance.add_metric([field, measure], value)
                flag.add_metric([field], 1.0 if flagged else 0.0)
            rows.add_metric([], monitor.window_rows)
            threshold.add_metric(["linf"], monitor.threshold)
            threshold.add_metric(["jensen_shannon"], monitor.js_threshold)
        yield from (distance, flag, rows, threshold)
