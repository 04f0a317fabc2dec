"""Model versions for the service: loading, verification, warm-up and hot reload.

A `ServingModel` is one version ready to answer: the SavedModel loaded with
`needs_rec.artifact.load` (which verifies every SavedModel file against the manifest's checksums),
the dictionaries copied into the version (their checksums checked against the manifest too), the
request parser and the talking-point renderer built from them, and the manifest's thresholds and
top_k cap. It is warmed up (predictions over a range of batch sizes) before anyone sees it.

`Registry` owns the current version. A background thread asks `needs_rec.versions` every
`poll_interval_s` which version should serve — `stable` (then `previous`) when the models directory
has labels.json, else the newest — and swaps in the first of those that loads, verifies and warms
up, with a single reference assignment, so a request that already holds the old version finishes
on it. A version is known by its directory's name, whatever its manifest says. A poll that finds
the served version still first in line and its files unchanged does nothing else (no load, no log
line). A version that fails is never served and is not retried until its files change; the old
one keeps serving. If the served version's directory disappears, the service keeps answering from
memory, says so in the status, and moves to the next loadable version in line.
Error texts that reach answers and the status name versions, never server paths (those go to the log).
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from needs_rec import artifact, dictionaries, fast_path, features, schema, versions
from needs_rec.errors import ModelError
from needs_rec.talking_points import TalkingPoints
from serving.observability import Metrics, log_event
from serving.requests import RequestParser

DICTIONARIES_DIR = "dictionaries"
MODEL_NAME = "needs_rec"
_NUMERIC = frozenset(schema.NUMERIC_INPUTS)
_SIGNATURE = features.input_signature()
DEFAULT_SIGNATURE = "serving_default"  # TF Serving's default `signature_name`
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/[^\s'\"(),;]+")
_TF_DTYPES = {"string": "DT_STRING", "float32": "DT_FLOAT", "float64": "DT_DOUBLE", "int64": "DT_INT64",
              "int32": "DT_INT32", "bool": "DT_BOOL"}


def _tensor_info(spec: Any) -> dict[str, Any]:
    """A `tf.TensorSpec` as TF Serving's JSON `TensorInfo` (dtype, tensor_shape, name)."""
    dims = None if spec.shape.rank is None else [{"size": str(-1 if d is None else d), "name": ""}
                                                 for d in spec.shape.as_list()]
    shape: dict[str, Any] = {"dim": dims or [], "unknown_rank": dims is None}
    return {"dtype": _TF_DTYPES.get(spec.dtype.name, "DT_" + spec.dtype.name.upper()),
            "tensor_shape": shape, "name": f"{spec.name}:0"}


def signature_defs(module: Any) -> dict[str, Any]:
    """The loaded SavedModel's signatures in TF Serving's metadata shape (`signature_def` map)."""
    defs: dict[str, Any] = {}
    for name, function in getattr(module, "signatures", {}).items():
        _, inputs = function.structured_input_signature
        defs[name] = {
            "inputs": {key: _tensor_info(spec) for key, spec in sorted(inputs.items())},
            "outputs": {key: _tensor_info(spec) for key, spec in sorted(function.structured_outputs.items())},
            "method_name": "tensorflow/serving/predict",
        }
    return defs


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
    min_selected: int = 0  # the selection rule's floor (manifest `min_selected`), applied like `top_k`
    twin: fast_path.Twin | None = None  # the verified NumPy twin (see `attach_twin`), None → TensorFlow only
    twin_note: str = "not built"
    drift: Any = None  # the live-input drift monitor (`needs_rec.drift.Monitor`), made by the service on first use

    @property
    def vocabulary(self) -> list[str]:
        return self.loaded.vocabulary

    @functools.cached_property
    def feedback_rules(self) -> schema.FeedbackRules:
        """The checks of a posted feedback event against this version's dictionaries (built on first use)."""
        return schema.FeedbackRules(self.dictionaries)

    def __post_init__(self) -> None:
        self._serve = _concrete_serve(self.loaded)
        self.signature_def = signature_defs(self.loaded._module)
        self.signature_names = sorted(self.signature_def) or [DEFAULT_SIGNATURE]

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
        """Build the NumPy twin from the version's twin file and keep it only if it matches `serve`.

        Probe rows cover every dictionary code plus unknown and missing values; a twin that differs by
        more than `fast_path.TOLERANCE` anywhere is dropped and the version is served by TensorFlow alone.
        """
        try:
            twin = fast_path.Twin.from_version(self.path / artifact.SAVED_MODEL)
            if twin is None:
                self.twin_note = f"the version has no {fast_path.TWIN_FILE}"
                return
            codes = {c.name: self.dictionaries.codes(c.vocabulary) for c in schema.MODEL_INPUTS if c.vocabulary}
            gap = twin.verify(self.predict_rows, fast_path.probe_rows(codes))
        except Exception as exc:  # an older or unusual export: TensorFlow still serves it
            self.twin = None
            self.twin_note = "refused: " + (" ".join(str(exc).split()) or type(exc).__name__)
            return
        self.twin = twin
        self.twin_note = f"verified (largest difference {gap:.1e})"

    def explain(self, row: Sequence[Any], chosen: Sequence[int]) -> dict[int, list[fast_path.Factor]]:
        """Model-based factors of the chosen characteristics (gradient × input on the verified twin).

        Empty without a twin (the version is served by TensorFlow alone) or if the twin fails: a
        reason is an extra, it never fails a request.
        """
        if self.twin is None or not len(chosen):
            return {}
        try:
            return self.twin.explain(row, [int(j) for j in chosen])
        except Exception:  # explanations are best effort: the answer stands without them
            return {}

    def selection(self, probabilities: np.ndarray, stage: str) -> np.ndarray:
        """The version's selection rule for one contact (`needs_rec.thresholds.select`: offered at
        `stage`, passing the cut, capped at the manifest's top_k, at least min_selected), most probable
        first: the default answer, and what `selected` marks on every path (HTTP, the card, batch)."""
        return self.talking.select(probabilities, self.thresholds, stage, cap=self.top_k,
                                   min_selected=self.min_selected)

    def predict_small(self, rows: Sequence[Sequence[Any]], max_rows: int) -> np.ndarray | None:
        """Probabilities from the verified twin when there is one and `rows` are at most `max_rows`; else None."""
        if self.twin is None or len(rows) > max_rows:
            return None
        return self.twin.predict_rows(rows)

    def metadata(self) -> dict[str, Any]:
        """Manifest summary for GET /v1/models/needs_rec/metadata (no personal data is ever in a manifest)."""
        manifest = self.loaded.manifest
        return {
            "model_spec": {"name": MODEL_NAME, "signature_name": "", "version": str(self.version)},
            "version": self.version,
            "created_at": manifest.get("created_at"),
            "vocabulary": self.vocabulary,
            "names": [ch.name for ch in self.talking.characteristics],
            "thresholds": [float(t) for t in self.thresholds],
            "top_k": self.top_k,
            "min_selected": self.min_selected,
            "stages": self.parser.stages,
            "inputs": list(schema.MODEL_INPUT_NAMES),
            "metadata": {"signature_def": {"signature_def": self.signature_def}},
            "metrics": manifest.get("metrics", {}),
            "data": public_data(manifest.get("data", {})),
            "libraries": manifest.get("libraries", {}),
        }


#: What the metadata answer keeps of each validation warning: no example values or row ids (the CRM's own data).
WARNING_SUMMARY = ("kind", "file", "column", "count")


def public_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's `data` block as any API client may read it: each validation warning as its
    kind, file, column and count, without the examples and message that quote CRM ids and values
    (those are for the analyst's page, behind the credential)."""
    validation = data.get("validation")
    if not isinstance(validation, Mapping) or not isinstance(validation.get("warnings"), list):
        return dict(data)
    warnings = [{key: w[key] for key in WARNING_SUMMARY if key in w} for w in validation["warnings"]
                if isinstance(w, Mapping)]
    return {**data, "validation": {**validation, "warnings": warnings}}


def load_version(version_dir: str | Path) -> ServingModel:
    """Load one version directory, verifying the SavedModel files and the copied dictionaries' checksums."""
    version_dir = Path(version_dir)
    if not versions.is_version_dir(version_dir):  # artifact.load would read it as a models directory
        raise ModelError(f"version {version_dir.name}: missing {versions.MANIFEST}; not a model version (a copy "
                         "or an export that did not finish?)")
    loaded = artifact.load(version_dir)  # checks the manifest's seal and files before tf.saved_model.load
    info = loaded.info if loaded.info is not None else versions.Manifest.from_dict(loaded.manifest)
    manifest = loaded.manifest
    name = f"version {loaded.version}"
    dict_dir = version_dir / DICTIONARIES_DIR
    expected = info.dictionary_checksums
    if not expected:
        raise ModelError(f"{name}: manifest field 'dictionaries.checksums' is missing")
    if not dict_dir.is_dir():
        raise ModelError(f"{name}: missing '{DICTIONARIES_DIR}/' (the dictionaries the model was trained with)")
    actual = dictionaries.checksums(dict_dir)
    bad = sorted(k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k))
    if bad:
        raise ModelError(f"{name}: {DICTIONARIES_DIR}/ files do not match the manifest's dictionary checksums: "
                         f"{', '.join(bad[:5])}")
    dicts = dictionaries.load(dict_dir)
    if loaded.vocabulary != dicts.characteristic_codes:
        raise ModelError(f"{name}: manifest 'vocabulary' differs from {DICTIONARIES_DIR}/characteristics.yaml")
    if info.stages is not None and list(info.stages) != dicts.stage_codes:
        raise ModelError(f"{name}: manifest 'stages' differs from {DICTIONARIES_DIR}/funnel_stages.yaml")
    top_k = info.top_k
    floor = info.get("min_selected", 0)
    if not isinstance(floor, int) or isinstance(floor, bool) or floor < 0:
        raise ModelError(f"{name}: manifest 'min_selected' must be an integer >= 0, not {floor!r}")
    model = ServingModel(
        version=loaded.version,
        path=version_dir,
        loaded=loaded,
        dictionaries=dicts,
        parser=RequestParser(dicts),
        talking=TalkingPoints(dicts, loaded.vocabulary, manifest.get("resonance")),
        thresholds=loaded.thresholds,
        top_k=top_k,
        min_selected=floor,
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
        model.talking.render(p, chosen, stage=stage, picked=chosen, interests=(need,))


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


Signature = tuple[tuple[str, int, int], ...]

#: While a version loads beside the served one, the interpreter hands the GIL over this often (default
#: 5 ms): restoring a SavedModel is long stretches of Python, and a request waiting a whole default
#: interval at each of its GIL hand-offs would add tens of milliseconds during the switch.
LOADING_SWITCH_INTERVAL_S = 0.0005


#: Niceness added to the loader thread once a version serves: later loads and warm-ups then yield
#: the CPU to request handling when the machine is busy.
LOADER_NICENESS = 10


def _lower_thread_priority() -> None:
    """Raise this thread's niceness by LOADER_NICENESS (Linux: niceness is per thread; others keep theirs).

    Done only after the first version is loaded, when TensorFlow's thread pools (which would inherit
    it) already exist; never undone, as an unprivileged process could not undo it.
    """
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + LOADER_NICENESS))
    except (AttributeError, OSError):  # not Linux, or not allowed: loads simply compete as equals
        pass


@contextmanager
def _yielding_gil() -> Iterator[None]:
    """Run the block with a short GIL switch interval, restoring the previous one after."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, LOADING_SWITCH_INTERVAL_S))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)



def _signature(path: Path) -> Signature:
    """Cheap fingerprint of a version directory (names, sizes, mtimes): content changed ↔ fingerprint changed.

    Empty when the directory is gone.
    """
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


def redact(message: str, replacements: Sequence[tuple[Path, str]]) -> str:
    """`message` with each server path (as given and resolved) replaced by its public name (a version, "models")."""
    for path, public in replacements:
        for form in {str(path.resolve()), str(path)}:
            if form and form != ".":
                message = message.replace(form, public)
    return _ABSOLUTE_PATH.sub("<path>", message)  # any other server path (TensorFlow's own, a library's)


@dataclass
class _Refused:
    signature: Signature
    error: str


def status_entry(version: int, state: str, code: str = "OK", message: str = "") -> dict[str, Any]:
    """One TensorFlow Serving `model_version_status` entry (state AVAILABLE, LOADING, END, …)."""
    return {"version": str(version), "state": state, "status": {"error_code": code, "error_message": message}}


class Registry:
    """The current model version and the background loader that follows labels.json (or the newest version)."""

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
        preload: bool = True,
    ):
        self.model_path = Path(model_path)
        self.fixed = versions.is_version_dir(self.model_path)  # one version directory: no reload
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
        #: labels.json as it stood when the last poll finished (published after the swap it caused, so
        #: `labels/stable` names the version answering). None: no labels.json.
        self.labels: versions.Labels | None = None
        self._seen_labels: versions.Labels | None = None
        self.labels_error: str | None = None
        self.current_gone = False  # the served version's directory disappeared; answering from memory
        self._signatures: dict[int, Signature] = {}  # fingerprint of each loaded version's files at load time
        #: Versions held loaded but not served (`previous`, the newest candidate) with their fingerprints.
        self.standby: dict[int, tuple[ServingModel, Signature]] = {}
        self.preload = preload
        self._lock = threading.Lock()
        self._stop = threading.Event()
        #: Set once the first look for a version has finished, served or not (a worker of several listens then).
        self.first_poll_done = threading.Event()
        self._collect_due = False
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Load the version to serve and keep polling, in a daemon thread (the server starts at once)."""
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
        lowered = False
        while not self._stop.is_set():
            if self._collect_due:
                self._collect_due = False
                collect_replaced()  # the replaced version's reference cycles go now, its requests long done
            try:
                self.poll_once()
            except Exception:  # never let the loader thread die: the service keeps its current version
                self.logger.exception("model_poll_failed")
            self.first_poll_done.set()
            if not lowered and self.current is not None:
                lowered = True
                _lower_thread_priority()
            if (self.fixed or self.poll_interval_s <= 0) and self.current is not None:
                return  # nothing more to look for
            if self._stop.wait(self.poll_interval_s if self.poll_interval_s > 0 else 1.0):
                return

    # -- loading -----------------------------------------------------------------------------

    def candidates(self) -> list[tuple[int, Path]]:
        """Versions that should serve, best first: [stable, previous] with labels, else newest first.

        For a fixed version directory: that directory until it is loaded, then nothing.
        """
        if self.fixed:
            if self.current is not None:
                return []
            name = self.model_path.resolve().name
            return [(schema.ascii_int(name) or 0, self.model_path)]
        try:
            labels = versions.read_labels(self.model_path)
        except ModelError as exc:  # a broken labels.json: keep what we serve (never guess a candidate), say so once
            message = redact(str(exc), [(self.model_path, "models")])
            if message != self.labels_error:
                log_event(self.logger, "labels_unreadable", logging.ERROR, error=message,
                          serving=self.current.version if self.current else None)
            self.labels_error = message
            if self.current is None:
                self.last_error = message
            return []
        self.labels_error = None
        if labels != self._seen_labels:
            if labels is not None:
                log_event(self.logger, "labels_changed", **labels.to_dict())
            self._seen_labels = labels
        order = versions.serving_order(versions.list_versions(self.model_path), labels)
        return [(v, self.model_path / str(v)) for v in order]

    def poll_once(self) -> bool:
        """Serve the first candidate that loads, unless the current version already is it. True when swapped.

        The served version is kept (and nothing loaded) while it is first in line with its files
        unchanged; a version refused before is skipped until its files change.
        """
        try:
            return self._poll()
        finally:
            self.labels = self._seen_labels

    def _poll(self) -> bool:
        current = self.current
        if current is not None and not self.fixed:
            gone = not current.path.is_dir()
            if gone != self.current_gone:
                self.current_gone = gone
                if gone:
                    log_event(self.logger, "model_directory_gone", logging.ERROR, version=current.version,
                              path=str(current.path))
        for number, path in self.candidates():
            if self._stop.is_set():
                return False
            signature = _signature(path)
            if current is not None and number == current.version and not self.fixed:
                if not signature:  # its directory is gone: look further down the line
                    continue
                if signature == self._signatures.get(number):
                    self._keep_standby()
                    return False  # already serving the best choice, unchanged: nothing to swap
            refused = self.refused.get(number)
            if refused is not None and refused.signature == signature:
                if current is not None and number == current.version:
                    return False  # its files changed into something refused: keep serving it from memory
                continue
            if self._try_load(number, path, signature):
                return True
            if current is not None and number == current.version:
                return False
        return False

    def _load(self, number: int, path: Path, signature: Signature) -> ServingModel | None:
        """Load, verify and warm up one version (None, recorded as refused, when any step fails)."""
        try:
            with _yielding_gil():
                model = self.loader(path)
                warm_up(model, self.warmup_rounds, self.max_rows)
        except Exception as exc:  # whatever breaks (checksums, TensorFlow, warm-up), the version is refused
            full = " ".join(str(exc).split()) or type(exc).__name__
            message = redact(full, [(path, f"version {number}"), (self.model_path, "models")])
            with self._lock:
                self.refused[number] = _Refused(signature, message)
                self.last_error = f"version {number} refused: {message}"
                self.loading = None
            if self.metrics:
                self.metrics.model_loads.labels("refused").inc()
            log_event(
                self.logger, "model_refused", logging.ERROR, version=number, error=full, path=str(path),
                serving=self.current.version if self.current else None,
            )
            return None
        model.version = number  # the directory's name is the number, whatever the manifest says
        return model

    def _try_load(self, number: int, path: Path, signature: Signature) -> bool:
        """Swap in version `number`: from the standby versions when held with these very files, else loaded now."""
        started = time.perf_counter()
        held = self.standby.pop(number, None)
        preloaded = held is not None and held[1] == signature
        if preloaded:
            model = held[0]
        else:
            self.loading = number
            loaded = self._load(number, path, signature)
            if loaded is None:
                return False
            model = loaded
        seconds = round(time.perf_counter() - started, 3)
        with self._lock:
            previous = self.current
            self.labels = self._seen_labels  # published with the swap, so `labels/stable` never names the old one
            self.current = model  # the swap: one reference assignment; requests holding `previous` finish on it
            if previous is not None and previous.version != number:
                self.retired.append(previous.version)
                # kept loaded beside the served one: a rollback to it is a swap, no load
                self.standby[previous.version] = (previous, self._signatures.pop(previous.version, ()))
            self.retired = [v for v in self.retired if v != number]
            self._signatures[number] = signature
            self.refused.pop(number, None)
            self.loading = None
            self.last_error = None
            self.current_gone = False
        if self.metrics:
            self.metrics.model_loads.labels("loaded").inc()
            self.metrics.model_version.set(model.version)
        log_event(
            self.logger, "model_switched" if previous else "model_loaded", version=model.version,
            previous=previous.version if previous else None, load_seconds=seconds, path=str(path),
            fast_path=model.twin_note, preloaded=preloaded,
        )
        self._keep_standby()
        return True

    def _keep_standby(self) -> None:
        """Hold `previous` and the newest candidate loaded beside `stable` (TF Serving keeps labelled versions
        loaded too), so a rollback or a promotion is a swap, not a load; free every other held version.

        At most one version is loaded per poll, after the swaps: the load happens when a candidate
        appears (retrain exports it before the gate decides), at the loader thread's lower priority.
        """
        labels = self._seen_labels
        wanted: list[int] = []
        if labels is not None and self.current is not None and not self.fixed and self.preload:
            present = versions.list_versions(self.model_path)
            if labels.previous is not None and labels.previous in present:
                wanted.append(labels.previous)
            newer = [v for v in present if v > labels.stable and v not in (labels.stable, labels.previous)]
            if newer:
                wanted.append(newer[-1])
        dropped = [v for v in self.standby if v not in wanted]
        for number in dropped:
            del self.standby[number]
        if dropped:
            self._collect_due = True  # their reference cycles go with the next collection
        for number in wanted:
            if number in self.standby or number == self.current.version or self._stop.is_set():  # type: ignore[union-attr]
                continue
            path = self.model_path / str(number)
            signature = _signature(path)
            refused = self.refused.get(number)
            if not signature or (refused is not None and refused.signature == signature):
                continue
            model = self._load(number, path, signature)
            if model is not None:
                self.standby[number] = (model, signature)
                if self.metrics:
                    self.metrics.model_loads.labels("preloaded").inc()
                log_event(self.logger, "model_preloaded", version=number, serving=self.current.version)  # type: ignore[union-attr]
            return  # one load per poll

    # -- status ------------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """TensorFlow Serving `model_version_status` entries, newest version first."""
        entries: dict[int, dict[str, Any]] = {}

        def put(version: int, state: str, code: str = "OK", message: str = "") -> None:
            entries[version] = status_entry(version, state, code, message)

        with self._lock:
            for version in self.retired:
                put(version, "END")
            for version, refused in self.refused.items():
                put(version, "END", "UNKNOWN", refused.error)
            if self.loading is not None:
                put(self.loading, "LOADING")
            for version in self.standby:  # a candidate held for a fast promotion (previous is overwritten below)
                put(version, "END", message="a candidate, held loaded for a fast promotion; not served until "
                                            "labels.json makes it stable")
            previous = self.labels.previous if self.labels is not None else None
            if previous is not None and previous in self.standby:  # held loaded beside stable (a rollback is a
                put(previous, "AVAILABLE")  # swap), so addressable by its number; the served entry comes last
            if self.current is not None:
                if self.current_gone:
                    put(self.current.version, "AVAILABLE", "NOT_FOUND",
                        f"version {self.current.version}'s directory is gone; answering from memory until "
                        "another version loads")
                else:
                    put(self.current.version, "AVAILABLE")
        return [entries[v] for v in sorted(entries, reverse=True)]

    def status_warnings(self) -> list[str]:
        """What a status answer adds beside its entries: labels.json's problem while it cannot be read (the
        service then keeps serving what it served, and without this only the log said so)."""
        if self.labels_error is None:
            return []
        serving = f"version {self.current.version}" if self.current is not None else "nothing yet"
        return [f"{self.labels_error}; labels.json is not followed until it is fixed (serving {serving})"]

    def held(self, version: int) -> ServingModel | None:
        """The loaded model of `version` when it is served or held as `previous` (never a mere candidate)."""
        with self._lock:
            current = self.current
            if current is not None and current.version == version:
                return current
            labels = self.labels
            held = self.standby.get(version)
            if held is not None and labels is not None and labels.previous == version:
                return held[0]
        return None

    def labelled(self, label: str) -> int | None:
        """The version `label` names in the models directory's labels.json as last read (None: no such label)."""
        labels = self.labels
        return labels.get(label) if labels is not None else None
