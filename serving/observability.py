"""Structured JSON logs and Prometheus metrics for the service.

One JSON line per request (endpoint, status, outcome, latency, model version, item and warning
counts) and one per model event (loaded, switched, refused). Request bodies, contact fields,
error texts that may echo received values and warnings never reach a log line: they can carry
personal data, and the counts are what operations need.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

LOGGER_NAME = "needs_rec.serving"
#: Set (by `serving.workers`) for every worker of a multi-process service: the folder where the workers'
#: metrics live (prometheus_client's multiprocess mode reads it when it is imported) and where each worker
#: shares its drift counts, so any worker's /metrics answers for the whole service.
SHARED_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: How often a worker of a multi-process service shares its drift counts and CRM snapshot age (seconds).
SHARE_INTERVAL_S = 1.0
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, pid, event, the record's `fields` and any exception
    text. `pid` tells the processes of `--workers N` apart (their lines share one stream)."""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        exception = self.formatException(record.exc_info) if record.exc_info else None
        return self.line(record.created, record.levelname, record.name, record.getMessage(),
                         getattr(record, "fields", None), exception)  # fmt: skip

    def line(self, created: float, level: str, logger_name: str, event: str,
             fields: dict[str, Any] | None = None, exception: str | None = None) -> str:  # fmt: skip
        """The JSON line of one record, from its parts (`write_request_line` needs no LogRecord)."""
        second = int(created)
        if second != self._second:  # the date and time to the second change once a second, not per line
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        entry: dict[str, Any] = {
            "ts": f"{self._stamp}.{int((created - second) * 1000):03d}Z",  # LogRecord.msecs' arithmetic
            "level": level.lower(),
            "logger": logger_name,
            "pid": os.getpid(),
            "event": event,
        }
        if fields:
            entry.update(fields)
        if exception:
            entry["exception"] = exception
        return orjson.dumps(entry, default=str).decode()


def write_request_line(logger: logging.Logger, fields: dict[str, Any]) -> None:
    """`logger.info("request", extra={"fields": fields})`: the same line, without a LogRecord when it can.

    Every answer logs one line. Through `logging` that costs a record, the filter and handler chain
    and two lock rounds (≈ 20 µs here, 5% of an answer). When the logger's one handler is a plain
    StreamHandler with the JSON formatter, no filters and no propagation (what `configure_logging`
    sets up), the line is formatted and written directly, under the handler's lock; anything else
    (another handler, a filter, a test's capture) takes the logging path.
    """
    handlers = logger.handlers
    if len(handlers) == 1 and not logger.propagate and not logger.filters:
        handler = handlers[0]
        formatter = handler.formatter
        if (type(handler) is logging.StreamHandler and isinstance(formatter, JsonFormatter)
                and not handler.filters and handler.level <= logging.INFO):  # fmt: skip
            text = formatter.line(time.time(), "INFO", logger.name, "request", fields)
            handler.acquire()
            try:
                handler.stream.write(text + handler.terminator)
                handler.stream.flush()
                return
            except Exception:  # a closed or broken stream: logging's own error handling below
                pass
            finally:
                handler.release()
    logger.info("request", extra={"fields": fields})


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
    """The service's Prometheus metrics, in a registry of their own (one per app, so tests stay isolated).

    In a worker of a multi-process service (`SHARED_DIR_ENV` set, see `serving.workers`) the values
    live in prometheus_client's per-process files in that folder, and `render` adds every worker's up:
    counters and histograms summed, the in-flight gauge summed over live workers, the model version
    per live worker (a `pid` label: a version switch shows worker by worker). Drift is judged over
    every worker's requests from the counts each worker shares once a second (`start_sharing`).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        shared = os.environ.get(SHARED_DIR_ENV)
        self.shared_dir: Path | None = Path(shared) if shared else None
        self._sharing: threading.Thread | None = None
        self._stop_sharing = threading.Event()
        self._snapshot_age: Callable[[], float] | None = None
        self._drift: Callable[[], Any] | None = None
        self.requests = Counter(
            "needs_rec_requests_total", "HTTP requests by endpoint and status", ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "needs_rec_request_duration_seconds", "HTTP request latency by endpoint and status",
            ["endpoint", "status"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.in_flight = Gauge("needs_rec_requests_in_flight", "scoring requests being served", registry=self.registry,
                               multiprocess_mode="livesum")
        self.model_version = Gauge("needs_rec_model_version", "model version being served (0 = none)",
                                   registry=self.registry, multiprocess_mode="liveall")
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
                                           registry=self.registry, multiprocess_mode="livemax")
        self.crm_snapshot_age = Gauge("needs_rec_crm_snapshot_age_seconds",
                                      "seconds since the CRM snapshot in use was read (-1: none; with several "
                                      "workers the oldest, as of each worker's last second)",
                                      registry=self.registry, multiprocess_mode="livemax")
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
        self._service_registry = self.registry
        self._workers_collector: MultiProcessCollector | None = None
        if self.shared_dir is not None:
            forget_dead_workers(self.shared_dir)
            self._service_registry = CollectorRegistry()  # what /metrics renders: every worker's values
            self._workers_collector = MultiProcessCollector(self._service_registry, path=str(self.shared_dir))

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

    def watch_drift(self, current: Callable[[], Any]) -> None:
        """Expose drift, computed at scrape time: `current()` → (version, `needs_rec.drift.Monitor`) or None."""
        self._drift = current
        self._service_registry.register(_DriftCollector(current, self.shared_dir))

    def watch_snapshot_age(self, age: Callable[[], float]) -> None:
        """Expose the CRM snapshot's age: read at scrape time, or each second by a worker of several."""
        if self.shared_dir is None:
            self.crm_snapshot_age.set_function(age)
        else:
            self._snapshot_age = age
            self.crm_snapshot_age.set(age())

    def unknown_counts(self) -> dict[str, int]:
        """Unknown codes received per field since start (every worker's, with several), for the analyst page."""
        if self._workers_collector is None:
            return dict(self.unknown_totals)
        totals: dict[str, int] = {}
        for family in self._workers_collector.collect():  # the workers' files only: no drift computed for this
            if family.name == "needs_rec_unknown_codes":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        field = sample.labels["field"]
                        totals[field] = totals.get(field, 0) + int(sample.value)
        return totals

    def start_sharing(self) -> None:
        """In a worker of several: share this worker's drift counts and snapshot age once a second."""
        if self.shared_dir is None or self._sharing is not None:
            return
        self._stop_sharing.clear()
        self._sharing = threading.Thread(target=self._share_loop, name="metrics-share", daemon=True)
        self._sharing.start()

    def stop_sharing(self) -> None:
        if self._sharing is not None:
            self._stop_sharing.set()
            self._sharing.join(timeout=5)
            self._sharing = None
            if self.shared_dir is not None:
                with contextlib.suppress(OSError):
                    drift_file(self.shared_dir, os.getpid()).unlink()

    def share_now(self) -> None:
        """Write this worker's drift counts (atomically: readers see the old file or the new) and snapshot age."""
        if self.shared_dir is None:
            return
        if self._snapshot_age is not None:
            self.crm_snapshot_age.set(self._snapshot_age())
        current = self._drift() if self._drift is not None else None
        if current is None:
            return
        version, monitor = current
        rows, counts = monitor.state()
        path = drift_file(self.shared_dir, os.getpid())
        part = path.with_suffix(".part")
        part.write_bytes(orjson.dumps({"version": version, "fields": monitor.ordered_fields, "rows": rows,
                                       "counts": counts}))
        os.replace(part, path)

    def _share_loop(self) -> None:
        while not self._stop_sharing.wait(SHARE_INTERVAL_S):
            try:
                self.share_now()
            except OSError:  # a full or vanished folder must not stop the worker; the next second tries again
                continue

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type, for GET /metrics (with several workers: live workers' gauges)."""
        if self.shared_dir is not None:
            forget_dead_workers(self.shared_dir)
        return generate_latest(self._service_registry), CONTENT_TYPE_LATEST


_WORKER_FILE = re.compile(r"_(\d+)\.(db|json)$")


def drift_file(shared_dir: Path, pid: int) -> Path:
    """Where worker `pid` shares its drift counts."""
    return shared_dir / f"drift_{pid}.json"


def is_alive(pid: int) -> bool:
    """True while process `pid` runs: it exists (signal 0 checks without sending anything) and, where /proc
    says so, has not exited (a killed worker stays a zombie until the supervisor reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (not Linux) or gone meanwhile: signal 0's answer stands
        return True


def forget_dead_workers(shared_dir: Path) -> None:
    """Drop the live gauges and drift counts of workers that no longer run (a worker that died and was replaced:
    its in-flight count and version must not linger; its counters stay, as Prometheus counters must)."""
    alive: dict[int, bool] = {}  # each worker has several files: ask about each pid once
    for path in shared_dir.iterdir():
        match = _WORKER_FILE.search(path.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if alive.setdefault(pid, is_alive(pid)):
            continue
        if path.suffix == ".json":
            with contextlib.suppress(OSError):
                path.unlink()
        else:
            mark_process_dead(pid, str(shared_dir))


class _DriftCollector:
    """Prometheus collector: per-field distance of live inputs to training, and its flag (see needs_rec.drift).

    With several workers, the counts the other workers shared for the same version are added to this
    worker's own before the distances are computed, so the figures cover the whole service (`Metrics.render`
    has just dropped the files of workers that no longer run).
    """

    def __init__(self, current: Callable[[], Any], shared_dir: Path | None) -> None:
        self._current = current
        self._shared_dir = shared_dir

    def describe(self) -> list[Any]:
        return []

    def _others(self, version: int, fields: list[str]) -> list[tuple[int, list[list[int]]]]:
        if self._shared_dir is None:
            return []
        others = []
        for path in self._shared_dir.glob("drift_*.json"):
            match = _WORKER_FILE.search(path.name)
            if match is None or int(match.group(1)) == os.getpid():
                continue
            try:
                shared = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):  # replaced or removed meanwhile: skip it this scrape
                continue
            if shared.get("version") == version and shared.get("fields") == fields:
                others.append((int(shared["rows"]), shared["counts"]))
        return others

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        distance = GaugeMetricFamily(
            "needs_rec_drift_distance", "distance of live inputs to the training split, per field "
            "(L-infinity for codes, Jensen-Shannon for numbers); absent until enough requests",
            labels=["field", "measure"])
        flag = GaugeMetricFamily("needs_rec_drift_flag", "1 when the field's distance reaches its measure's threshold "
                                   "(--drift-threshold for linf, --drift-js-threshold for jensen_shannon)",
                                 labels=["field"])
        rows = GaugeMetricFamily("needs_rec_drift_window_requests", "live requests in the drift window "
                                 "(every worker's)")
        threshold = GaugeMetricFamily("needs_rec_drift_threshold", "the threshold per measure (--drift-threshold, "
                                      "--drift-js-threshold)", labels=["measure"])
        current = self._current()
        if current is not None:
            version, monitor = current
            others = self._others(version, monitor.ordered_fields)
            for field, (measure, value, flagged) in monitor.distances(others).items():
                if value is not None:
                    distance.add_metric([field, measure], value)
                flag.add_metric([field], 1.0 if flagged else 0.0)
            rows.add_metric([], monitor.window_rows + sum(r for r, _ in others))
            threshold.add_metric(["linf"], monitor.threshold)
            threshold.add_metric(["jensen_shannon"], monitor.js_threshold)
        yield from (distance, flag, rows, threshold)
