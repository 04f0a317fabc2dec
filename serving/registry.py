"""Model versions for the service: loading, verification, warm-up and hot reload.

A `ServingModel` is one version ready to answer: the SavedModel loaded with
`needs_rec.artifact.load` (which verifies every SavedModel file against the manifest's checksums),
the dictionaries copied into the version (their checksums checked against the manifest too), the
request parser and the talking-point renderer built from them, and the manifest's thresholds and
top_k cap. It is warmed up (predictions over a range of batch sizes) before anyone sees it.

`Registry` owns the current version. A background thread looks for a newer numbered version
every `poll_interval_s`; one that loads, verifies and warms up is swapped in with a single
reference assignment, so a request that already holds the old version finishes on it. A version
that fails is never served and is not retried until its files change; the old one keeps serving.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from needs_rec import artifact, dictionaries, fast_path, features, schema
from needs_rec.errors import ModelError
from needs_rec.talking_points import TalkingPoints
from serving.observability import Metrics, log_event
from serving.requests import RequestParser

DICTIONARIES_DIR = "dictionaries"
MODEL_NAME = "needs_rec"
_NUMERIC = frozenset(schema.NUMERIC_INPUTS)
_SIGNATURE = features.input_signature()


def rows_to_inputs(rows: Sequence[Sequence[Any]]) -> dict[str, np.ndarray]:
    """Rows in `schema.MODEL_INPUT_NAMES` order → the dict of 1-D arrays the SavedModel takes."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema.MODEL_INPUT_NAMES)
    return {
        name: np.asarray(column, dtype=np.float32 if name in _NUMERIC else object)
        for name, column in zip(schema.MODEL_INPUT_NAMES, columns, strict=True)
    }


def _concrete_serve(loaded: artifact.LoadedModel) -> Callable[[dict[str, Any]], Any] | None:
    """The loaded SavedModel's single concrete `serve` function, or None when that is not what it holds."""
    try:
        functions = loaded._module.serve.concrete_functions
    except AttributeError:
        return None
    return functions[0] if len(functions) == 1 else None


@dataclass
class ServingModel:
    """One loaded, verified version with everything a request needs."""

    version: int
    path: Path
    loaded: artifact.LoadedModel
    dictionaries: dictionaries.Dictionaries
    parser: RequestParser
    talking: TalkingPoints
    thresholds: np.ndarray
    top_k: int | None
    loaded_at: float = field(default_factory=time.time)
    twin: fast_path.Twin | None = None  # the verified NumPy twin (see `attach_twin`), None → TensorFlow only
    twin_note: str = "not built"

    @property
    def vocabulary(self) -> list[str]:
        return self.loaded.vocabulary

    def __post_init__(self) -> None:
        self._serve = _concrete_serve(self.loaded)

    def predict_rows(self, rows: Sequence[Sequence[Any]]) -> np.ndarray:
        """Probabilities (n, C) for rows of raw inputs (see `serving.requests.ParsedRequest.row`).

        Calls the SavedModel's one concrete `serve` function directly when there is exactly one
        (the same graph `LoadedModel.predict` runs, minus the polymorphic dispatch: ~30% less time
        per call); otherwise `LoadedModel.predict`.
        """
        inputs = rows_to_inputs(rows)
        if self._serve is None:
            return self.loaded.predict(inputs)
        tensors = {name: tf.convert_to_tensor(inputs[name], dtype=spec.dtype) for name, spec in _SIGNATURE.items()}
        return self._serve(tensors).numpy()

    def attach_twin(self) -> None:
        """Build the NumPy twin from the SavedModel's `fast_path` endpoint and keep it only if it matches `serve`.

        Probe rows cover every dictionary code plus unknown and missing values; a twin that differs by
        more than `fast_path.TOLERANCE` anywhere is dropped and the version is served by TensorFlow alone.
        """
        try:
            twin = fast_path.Twin.from_saved_model(self.loaded._module)
            if twin is None:
                self.twin_note = "the version has no fast_path endpoint"
                return
            codes = {c.name: self.dictionaries.codes(c.vocabulary) for c in schema.MODEL_INPUTS if c.vocabulary}
            gap = twin.verify(self.predict_rows, fast_path.probe_rows(codes))
        except Exception as exc:  # an older or unusual export: TensorFlow still serves it
            self.twin = None
            self.twin_note = "refused: " + (" ".join(str(exc).split()) or type(exc).__name__)
            return
        self.twin = twin
        self.twin_note = f"verified (largest difference {gap:.1e})"

    def predict_small(self, rows: Sequence[Sequence[Any]], max_rows: int) -> np.ndarray | None:
        """Probabilities from the verified twin when there is one and `rows` are at most `max_rows`; else None."""
        if self.twin is None or len(rows) > max_rows:
            return None
        return self.twin.predict_rows(rows)

    def metadata(self) -> dict[str, Any]:
        """Manifest summary for GET /v1/models/needs_rec/metadata (no personal data is ever in a manifest)."""
        manifest = self.loaded.manifest
        return {
            "model_spec": {"name": MODEL_NAME, "version": str(self.version)},
            "version": self.version,
            "created_at": manifest.get("created_at"),
            "vocabulary": self.vocabulary,
            "names": [ch.name for ch in self.talking.characteristics],
            "thresholds": [float(t) for t in self.thresholds],
            "top_k": self.top_k,
            "stages": self.parser.stages,
            "inputs": list(schema.MODEL_INPUT_NAMES),
            "metrics": manifest.get("metrics", {}),
            "data": manifest.get("data", {}),
            "libraries": manifest.get("libraries", {}),
        }


def load_version(version_dir: str | Path) -> ServingModel:
    """Load one version directory, verifying the SavedModel files and the copied dictionaries' checksums."""
    version_dir = Path(version_dir)
    loaded = artifact.load(version_dir)  # verifies manifest["files"] before tf.saved_model.load
    manifest = loaded.manifest
    dict_dir = version_dir / DICTIONARIES_DIR
    expected = (manifest.get("dictionaries") or {}).get("checksums")
    if not isinstance(expected, dict) or not expected:
        raise ModelError(f"{version_dir / artifact.MANIFEST}: field 'dictionaries.checksums' is missing")
    if not dict_dir.is_dir():
        raise ModelError(f"{version_dir}: missing '{DICTIONARIES_DIR}/' (the dictionaries the model was trained with)")
    actual = dictionaries.checksums(dict_dir)
    bad = sorted(k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k))
    if bad:
        raise ModelError(f"{dict_dir}: files do not match the manifest's dictionary checksums: {', '.join(bad[:5])}")
    dicts = dictionaries.load(dict_dir)
    if loaded.vocabulary != dicts.characteristic_codes:
        raise ModelError(f"{version_dir}: manifest 'vocabulary' differs from {DICTIONARIES_DIR}/characteristics.yaml")
    stages = manifest.get("stages")
    if stages is not None and list(stages) != dicts.stage_codes:
        raise ModelError(f"{version_dir}: manifest 'stages' differs from {DICTIONARIES_DIR}/funnel_stages.yaml")
    top_k = manifest.get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ModelError(f"{version_dir / artifact.MANIFEST}: 'top_k' must be an integer >= 1 or null, not {top_k!r}")
    model = ServingModel(
        version=loaded.version,
        path=version_dir,
        loaded=loaded,
        dictionaries=dicts,
        parser=RequestParser(dicts),
        talking=TalkingPoints(dicts, loaded.vocabulary, manifest.get("resonance")),
        thresholds=loaded.thresholds,
        top_k=top_k,
    )
    model.attach_twin()
    return model


def warm_up(model: ServingModel, rounds: int, max_rows: int) -> None:
    """Run predictions over batch sizes 1, 2, 4, … max_rows and render every stage once.

    The first calls of a restored function trace and allocate; doing them here keeps them out of
    the first requests' latency.
    """
    if rounds <= 0:
        return
    dicts = model.dictionaries
    need = dicts.needs[0].code
    rows: list[list[Any]] = []
    for i, stage in enumerate(model.parser.stages):
        fields = dict.fromkeys(schema.MODEL_INPUT_NAMES, "")
        fields.update(
            stage=stage,
            industry=dicts.industries[i % len(dicts.industries)].code,
            position=dicts.positions[i % len(dicts.positions)].code,
            interests=need,
            occurred_on="2024-01-01",
        )
        rows.append([np.nan if name in _NUMERIC else fields[name] for name in schema.MODEL_INPUT_NAMES])
    sizes = [1]
    while sizes[-1] < max_rows:
        sizes.append(min(sizes[-1] * 2, max_rows))
    for _ in range(rounds):
        for size in sizes:
            batch = [rows[i % len(rows)] for i in range(size)]
            model.predict_rows(batch)
    probabilities = model.predict_rows(rows)
    if model.twin is not None:
        for _ in range(rounds * 50):  # the twin is cheap; many passes settle NumPy's caches
            model.twin.predict_rows(rows[:1])
    for row, p in zip(rows, probabilities, strict=True):
        stage = row[0]
        chosen = model.talking.select(p, model.thresholds, stage, top_k=3)
        model.talking.render(p, chosen, stage=stage, thresholds=model.thresholds, interests=(need,))


def freeze_libraries() -> None:
    """Move every object alive now (TensorFlow, Keras, the service's modules) out of the cyclic GC's reach.

    Those ~400,000 long-lived objects would make every full collection take ~200 ms with the GIL
    held — a 200 ms stall in whatever requests are running. Frozen (`gc.freeze`), they are never
    scanned again. Model versions are deliberately not frozen: one adds only ~20,000 objects, so
    collecting after a swap (`collect_replaced`) frees the replaced version's reference cycles in
    a few milliseconds instead of leaking them or stalling for a full pass.
    """
    gc.collect()
    gc.freeze()


def collect_replaced() -> None:
    """Free the replaced version's reference cycles (scans only what `freeze_libraries` left: a few ms)."""
    gc.collect()


def _signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap fingerprint of a version directory (names, sizes, mtimes): a refused one is retried only if it changes."""
    try:
        return tuple(
            sorted(
                (p.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns)
                for p in path.rglob("*")
                if p.is_file() and (st := p.stat())
            )
        )
    except OSError:
        return ()


@dataclass
class _Refused:
    signature: tuple[tuple[str, int, int], ...]
    error: str


class Registry:
    """The current model version and the background loader that swaps in newer ones."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        poll_interval_s: float = 5.0,
        warmup_rounds: int = 3,
        max_rows: int = 256,
        logger: logging.Logger | None = None,
        metrics: Metrics | None = None,
        loader: Callable[[Path], ServingModel] = load_version,
    ):
        self.model_path = Path(model_path)
        self.fixed = (self.model_path / artifact.MANIFEST).is_file()  # one version directory: no reload
        self.poll_interval_s = poll_interval_s
        self.warmup_rounds = warmup_rounds
        self.max_rows = max_rows
        self.logger = logger or logging.getLogger("needs_rec.serving")
        self.metrics = metrics
        self.loader = loader
        self.current: ServingModel | None = None
        self.loading: int | None = None
        self.retired: list[int] = []
        self.refused: dict[int, _Refused] = {}
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._collect_due = False
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Load the newest good version and keep polling, in a daemon thread (the server starts at once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-registry", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling (a load in progress finishes first, up to `timeout`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        freeze_libraries()  # before any version: nobody is waiting for an answer yet
        while not self._stop.is_set():
            if self._collect_due:
                self._collect_due = False
                collect_replaced()  # the replaced version's reference cycles go now, its requests long done
            try:
                self.poll_once()
            except Exception:  # never let the loader thread die: the service keeps its current version
                self.logger.exception("model_poll_failed")
            if (self.fixed or self.poll_interval_s <= 0) and self.current is not None:
                return  # nothing more to look for
            if self._stop.wait(self.poll_interval_s if self.poll_interval_s > 0 else 1.0):
                return

    # -- loading -----------------------------------------------------------------------------

    def candidates(self) -> list[tuple[int, Path]]:
        """Versions newer than the current one, newest first (or the fixed version directory)."""
        if self.fixed:
            if self.current is not None:
                return []
            name = self.model_path.resolve().name
            return [(int(name) if name.isdigit() else 0, self.model_path)]
        floor = self.current.version if self.current is not None else 0
        return [(v, self.model_path / str(v)) for v in reversed(artifact.list_versions(self.model_path)) if v > floor]

    def poll_once(self) -> bool:
        """Try the candidates newest first; swap in the first that loads. True when a version was swapped in."""
        for number, path in self.candidates():
            if self._stop.is_set():
                return False
            refused = self.refused.get(number)
            if refused is not None and refused.signature == _signature(path):
                continue
            if self._try_load(number, path):
                return True
        return False

    def _try_load(self, number: int, path: Path) -> bool:
        started = time.perf_counter()
        self.loading = number
        signature = _signature(path)
        try:
            model = self.loader(path)
            warm_up(model, self.warmup_rounds, self.max_rows)
        except Exception as exc:  # whatever breaks (checksums, TensorFlow, warm-up), the version is refused
            message = " ".join(str(exc).split()) or type(exc).__name__
            with self._lock:
                self.refused[number] = _Refused(signature, message)
                self.last_error = f"version {number} refused: {message}"
                self.loading = None
            if self.metrics:
                self.metrics.model_loads.labels("refused").inc()
            log_event(
                self.logger, "model_refused", logging.ERROR, version=number, error=message,
                serving=self.current.version if self.current else None,
            )
            return False
        seconds = round(time.perf_counter() - started, 3)
        with self._lock:
            previous = self.current
            self.current = model  # the swap: one reference assignment; requests holding `previous` finish on it
            if previous is not None:
                self.retired.append(previous.version)
            self.refused.pop(number, None)
            self.loading = None
            self.last_error = None
            self._collect_due = previous is not None
        if self.metrics:
            self.metrics.model_loads.labels("loaded").inc()
            self.metrics.model_version.set(model.version)
        log_event(
            self.logger, "model_switched" if previous else "model_loaded", version=model.version,
            previous=previous.version if previous else None, load_seconds=seconds, path=str(path),
            fast_path=model.twin_note,
        )
        return True

    # -- status ------------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """TensorFlow Serving `model_version_status` entries, newest version first."""
        entries: dict[int, dict[str, Any]] = {}

        def put(version: int, state: str, code: str = "OK", message: str = "") -> None:
            entries[version] = {
                "version": str(version),
                "state": state,
                "status": {"error_code": code, "error_message": message},
            }

        with self._lock:
            for version in self.retired:
                put(version, "END")
            for version, refused in self.refused.items():
                put(version, "END", "UNKNOWN", refused.error)
            if self.loading is not None:
                put(self.loading, "LOADING")
            if self.current is not None:
                put(self.current.version, "AVAILABLE")
        return [entries[v] for v in sorted(entries, reverse=True)]
