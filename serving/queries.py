"""Snapshots behind the §8 queries: the CRM scored by the serving version, and its organization index.

`GET /v1/audience` ranks every contact of the CRM source, which at 200k contacts is far too slow to
score per request (about a second through the SavedModel). So a `Snapshot` reads and validates the
CRM once (with the version's own dictionaries), builds the audience population and the organization
index (the version's embeddings, with positives, last positive dates and managers counted from the
CRM's current outcomes), and scores every contact at each funnel stage once — in a background
thread, stage by stage in funnel order; a query for a stage not scored yet scores it first. A query
then only filters and partially sorts one probability column (milliseconds).

Validation is lenient (`schema.validate(lenient=True)`): a CRM row that breaks the contract is
left out of the snapshot, and every answer from it says so in `warnings` (the table, column, value
and row, as `training.validate` would say them), so one wrong row never takes the queries down for
every other contact; the log gets one `crm_rows_left_out` line per snapshot with the counts.

Freshness: a snapshot belongs to one model version. A query finding the serving version changed
(a promotion or reload) builds a new snapshot before answering; one older than `max_age_s` is
answered as it is while a new one is built in the background. Every answer says when its
probabilities were scored (`scored_at`), so a caller always knows how fresh it is.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from needs_rec import audience, schema, similar
from needs_rec.errors import DataError, NeedsRecError
from serving.observability import log_event

#: A snapshot older than this is rebuilt in the background (the old one answers meanwhile); the
#: service's `--queries-max-age-s`.
DEFAULT_MAX_AGE_S = 900.0


class SnapshotUnavailable(Exception):
    """The CRM source cannot be read or validated, or the version has no organization index (→ 503)."""


@dataclass
class Snapshot:
    """One version's view of the CRM: population, validated tables, per-stage probabilities, index."""

    model: Any  # serving.registry.ServingModel
    crm: schema.CrmData
    population: audience.Population
    index: similar.OrganizationIndex | None
    index_note: str
    invalid: tuple[schema.ValidationWarning, ...] = ()  # one `invalid_rows` warning per table with rows left out
    built_at: float = field(default_factory=time.time)
    scored_on: dt.date = field(default_factory=lambda: dt.datetime.now(dt.UTC).date())
    _scores: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)

    @property
    def left_out(self) -> tuple[str, ...]:
        """The answers' note per table with rows left out as invalid (what, where, which rows)."""
        return tuple(f"CRM data: {' '.join(w.message.split())}" for w in self.invalid)

    @property
    def left_out_rows(self) -> dict[str, int]:
        """Table → rows left out (for the log line: counts, never values)."""
        return {w.file: w.count for w in self.invalid}

    @property
    def version(self) -> int:
        return int(self.model.version)

    @functools.cached_property
    def org_ids(self) -> frozenset[str]:
        """Every org_id of the CRM source (for a 404 naming an unknown organization)."""
        return frozenset(str(o) for o in self.crm.organizations["org_id"])

    def probabilities(self, stage: str) -> tuple[np.ndarray, float]:
        """(contacts × characteristics probabilities at `stage`, when they were scored), scoring once."""
        found = self._scores.get(stage)
        if found is not None:
            return found
        with self._locks.setdefault(stage, threading.Lock()):
            found = self._scores.get(stage)
            if found is None:
                scored = audience.score_stage(self.model.loaded.predict, self.population, self.crm, stage,
                                              self.scored_on)
                found = self._scores[stage] = (scored, time.time())
            return found

    def score_all(self) -> None:
        """Score every stage in funnel order (the background warm-up)."""
        for stage in self.population.stage_codes:
            self.probabilities(stage)

    def scored_stages(self) -> list[str]:
        return [s for s in self.population.stage_codes if s in self._scores]


def build_snapshot(model: Any, read_crm: Callable[[], dict[str, Any]]) -> Snapshot:
    """Read and validate the CRM (leniently) with the version's dictionaries; population and
    organization index."""
    dicts = model.dictionaries
    raw = read_crm()
    try:
        crm, report = schema.validate(raw, dicts, lenient=True)  # managers' feedback rows count as outcomes
    except DataError as exc:
        raise SnapshotUnavailable(f"the CRM source's data does not validate: {' '.join(str(exc).split())}") from exc
    population = audience.Population.from_crm(crm, dicts)
    manifest = model.loaded.manifest
    side = model.path / similar.SIDE_DIR
    index, note = None, ""
    if side.is_dir() and isinstance(manifest.get("similar"), dict):
        try:
            index = similar.OrganizationIndex.read(
                side, model.vocabulary, manifest["similar"].get("kind", ""),
                positives=similar.positive_table(crm), managers=similar.manager_table(crm),
            )
        except NeedsRecError as exc:
            note = str(exc)
    else:
        note = f"model version {model.version} has no organization index (it was exported before they existed)"
    invalid = tuple(w for w in report.warnings if w.kind == "invalid_rows")
    return Snapshot(model=model, crm=crm, population=population, index=index, index_note=note, invalid=invalid)


class Snapshots:
    """The current snapshot per service, rebuilt on a version change (waiting) or when stale (background)."""

    def __init__(self, max_age_s: float = DEFAULT_MAX_AGE_S, logger: logging.Logger | None = None):
        self.max_age_s = max_age_s
        self.logger = logger or logging.getLogger("needs_rec.serving")
        self._current: Snapshot | None = None
        self._lock = threading.Lock()
        self._refreshing = False

    def get(self, model: Any, read_crm: Callable[[], dict[str, Any]]) -> Snapshot:
        """The snapshot for `model` (blocking: call it from a worker thread)."""
        current = self._current
        if current is not None and current.version == model.version and current.model is model:
            if time.time() - current.built_at > self.max_age_s:
                self._refresh_in_background(model, read_crm)
            return current
        with self._lock:
            current = self._current
            if current is None or current.version != model.version or current.model is not model:
                current = self._install(build_snapshot(model, read_crm))
            return current

    def peek(self, model: Any, read_crm: Callable[[], dict[str, Any]] | None = None) -> Snapshot | None:
        """The snapshot of `model` if one is built, never waiting; with `read_crm`, a missing or stale
        one is built in the background for the next call (the card asks this way: it never waits)."""
        current = self._current
        fresh = current is not None and current.model is model
        if read_crm is not None and (not fresh or time.time() - current.built_at > self.max_age_s):
            self._refresh_in_background(model, read_crm)
        return current if fresh else None

    def _install(self, snapshot: Snapshot) -> Snapshot:
        self._note_left_out(snapshot)
        self._current = snapshot
        threading.Thread(target=_quietly(snapshot.score_all), name="audience-scoring", daemon=True).start()
        return snapshot

    def _refresh_in_background(self, model: Any, read_crm: Callable[[], dict[str, Any]]) -> None:
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True

        def refresh() -> None:
            try:
                fresh = build_snapshot(model, read_crm)
                self._note_left_out(fresh)
                fresh.score_all()  # swap in only once scored, so answers never wait on a refresh
                with self._lock:
                    current = self._current
                    if current is None or current.model is not fresh.model or current.built_at < fresh.built_at:
                        self._current = fresh
            except Exception:  # a failed refresh keeps the old snapshot; the next stale query retries
                pass
            finally:
                self._refreshing = False

        threading.Thread(target=refresh, name="audience-refresh", daemon=True).start()

    def _note_left_out(self, snapshot: Snapshot) -> None:
        """One log line for a snapshot that left CRM rows out (counts only: values stay out of the log)."""
        if snapshot.left_out_rows:
            log_event(self.logger, "crm_rows_left_out", logging.WARNING, model_version=snapshot.version,
                      rows=snapshot.left_out_rows)


_PER_SERVICE: weakref.WeakKeyDictionary[Any, Snapshots] = weakref.WeakKeyDictionary()


def snapshots_for(service: Any) -> Snapshots:
    """The one `Snapshots` of a service (shared by the query router and the manager's card)."""
    found = _PER_SERVICE.get(service)
    if found is None:
        settings = getattr(service, "settings", None)
        max_age_s = settings.queries_max_age_s if settings is not None else DEFAULT_MAX_AGE_S
        found = _PER_SERVICE[service] = Snapshots(max_age_s, logger=getattr(service, "logger", None))
    return found


def similar_reasons(service: Any, model: Any, org_id: str, characteristics: list[str]) -> dict[str, str]:
    """The card's «сработало у N похожих организаций …» per characteristic for one organization.

    Answers only from a snapshot already built for `model` (a missing one starts building for the
    next card), so a card never waits on the CRM; {} without a CRM source, an index or neighbours.
    """
    source = getattr(service, "crm", None)
    if source is None or not org_id:
        return {}
    current = snapshots_for(service).peek(model, source.read_crm)
    if current is None or current.index is None:
        return {}
    names = {item.code: item.name for item in model.dictionaries.industries}
    found = current.index.card_neighbours(org_id, characteristics)
    reasons = {code: similar.similar_reason(neighbours, names) for code, neighbours in found.items()}
    return {code: text for code, text in reasons.items() if text}


def _quietly(work: Callable[[], None]) -> Callable[[], None]:
    """Run `work`, swallowing errors: a stage that fails here is scored (and reported) by its query."""

    def run() -> None:
        with contextlib.suppress(Exception):
            work()

    return run


def iso_utc(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp, dt.UTC).replace(microsecond=0).isoformat()
