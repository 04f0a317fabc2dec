"""Input drift: live requests' field distributions against the training split's, as TFDV compares them.

`training_profile` (at export, stored in the manifest under `drift`) records, per model input
field, the training split's distribution: for a code field the share of each dictionary code plus
`<unknown>` and `<missing>`; for a multi-valued field the share of each code among all codes given
(plus `<unknown>`, and `<none>` for rows with none); for a number the share of rows in each of the
encoder's own bins (its quantile edges, in plain units) plus `<missing>`.

`Monitor` counts the same categories for live requests — one dict lookup or one bisect per field
per request, nothing computed on the request path — over a sliding window (the current block of
`window` rows plus the previous block). `distances()` compares, when asked (a /metrics scrape):
L∞ distance (largest absolute difference of shares) for codes and multi-valued fields, and
Jensen–Shannon divergence (base 2, so within [0, 1]) for numbers, as TFDV's drift comparators do;
a field is flagged when its distance reaches its measure's threshold (`threshold` for L∞,
`js_threshold` for Jensen–Shannon: the two live on different scales — 30% of requests moved to one
of five equally likely bins is L∞ 0.24 but Jensen–Shannon 0.049) and the window holds at least
`min_rows` rows.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from needs_rec import schema
from needs_rec.dictionaries import Dictionaries

UNKNOWN, MISSING, NONE = "<unknown>", "<missing>", "<none>"
NUMBER_FIELDS: tuple[str, ...] = tuple(c.name for c in schema.MODEL_INPUTS if c.kind in (schema.Kind.NUMBER,
                                                                                       schema.Kind.YEAR))
CODE_FIELDS: tuple[str, ...] = tuple(c.name for c in schema.MODEL_INPUTS if c.kind is schema.Kind.CODE)
MULTI_FIELDS: tuple[str, ...] = tuple(c.name for c in schema.MODEL_INPUTS if c.kind is schema.Kind.MULTI)
_POSITION = {name: i for i, name in enumerate(schema.MODEL_INPUT_NAMES)}


def _shares(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    return [round(c / total, 6) if total else 0.0 for c in counts]


def training_profile(frame: pd.DataFrame, dictionaries: Dictionaries,
                     bin_edges: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """The training distribution of every code, multi-valued and numeric model input of `frame`.

    `frame`: the training split's model inputs (`needs_rec.episodes.model_inputs`: normalised codes,
    `;`-joined multi fields, float numbers with NaN for missing). `bin_edges`: per number the
    encoder's bin edges in plain units (`FeatureEncoder.number_stats[name].bin_edges`).
    """
    fields: dict[str, Any] = {}
    vocab = {c.name: dictionaries.codes(c.vocabulary) for c in schema.MODEL_INPUTS if c.vocabulary is not None}
    for name in CODE_FIELDS:
        categories = [*vocab[name], UNKNOWN, MISSING]
        index = {code: i for i, code in enumerate(vocab[name])}
        counts = [0] * len(categories)
        for value in frame[name].astype(str):
            counts[index.get(value, len(categories) - 2) if value else len(categories) - 1] += 1
        fields[name] = {"kind": "code", "categories": categories, "shares": _shares(counts)}
    for name in MULTI_FIELDS:
        categories = [*vocab[name], UNKNOWN, NONE]
        index = {code: i for i, code in enumerate(vocab[name])}
        counts = [0] * len(categories)
        for value in frame[name].astype(str):
            codes = [c for c in value.split(schema.MULTI_SEPARATOR) if c]
            if not codes:
                counts[-1] += 1
            for code in codes:
                counts[index.get(code, len(categories) - 2)] += 1
        fields[name] = {"kind": "multi", "categories": categories, "shares": _shares(counts)}
    for name in NUMBER_FIELDS:
        edges = [float(e) for e in bin_edges.get(name, ())]
        values = frame[name].to_numpy(dtype=np.float64)
        present = values[np.isfinite(values)]
        counts = [int(values.size - present.size)]
        binned = np.searchsorted(np.asarray(edges), present, side="right") if edges else np.zeros(present.size, int)
        counts += np.bincount(binned, minlength=len(edges) + 1).tolist()
        fields[name] = {"kind": "number", "edges": edges, "categories": [MISSING, *map(str, range(len(edges) + 1))],
                        "shares": _shares(counts)}
    return {"rows": len(frame), "fields": fields}


def linf(p: Sequence[float], q: Sequence[float]) -> float:
    """L∞ distance: the largest absolute difference of two distributions' shares."""
    return float(max((abs(a - b) for a, b in zip(p, q, strict=True)), default=0.0))


def jensen_shannon(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen–Shannon divergence with base-2 logarithms (0: identical, 1: disjoint)."""
    a, b = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    a, b = a / a.sum() if a.sum() else a, b / b.sum() if b.sum() else b
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return max(0.0, 0.5 * kl(a) + 0.5 * kl(b))


class Monitor:
    """Live counts per field over a sliding window, compared with a training profile on demand."""

    def __init__(self, profile: Mapping[str, Any], *, window: int = 5000, min_rows: int = 200,
                 threshold: float = 0.1, js_threshold: float = 0.01):
        self.profile = profile
        self.window = window
        self.min_rows = min_rows
        self.threshold = threshold
        self.js_threshold = js_threshold
        self._lock = threading.Lock()
        self._codes: list[tuple[int, dict[str, int], int, int, list[int]]] = []
        self._multi: list[tuple[int, dict[str, int], int, int, list[int]]] = []
        self._numbers: list[tuple[int, list[float], list[int]]] = []
        self.fields: list[str] = []
        for name, spec in profile.get("fields", {}).items():
            if name not in _POSITION:
                continue
            categories = list(spec["categories"])
            counts = [0] * len(categories)
            if spec["kind"] == "number":
                self._numbers.append((_POSITION[name], [float(e) for e in spec["edges"]], counts))
            else:
                index = {c: i for i, c in enumerate(categories[:-2])}
                target = self._codes if spec["kind"] == "code" else self._multi
                target.append((_POSITION[name], index, len(categories) - 2, len(categories) - 1, counts))
            self.fields.append(name)
        kinds = {name: profile["fields"][name]["kind"] for name in self.fields}
        #: The field names in the order of `state()`'s counts: codes, then multi-valued fields, then numbers.
        self.ordered_fields = [n for kind in ("code", "multi", "number") for n in self.fields if kinds[n] == kind]
        self.rows = 0
        self._previous: list[list[int]] | None = None
        self._previous_rows = 0

    def observe(self, row: Sequence[Any]) -> None:
        """Count one request's model-input row (`schema.MODEL_INPUT_NAMES` order): lookups and increments only."""
        for pos, index, unknown, missing, counts in self._codes:
            value = row[pos]
            counts[index.get(value, unknown) if value else missing] += 1
        for pos, index, unknown, none, counts in self._multi:
            value = row[pos]
            if not value:
                counts[none] += 1
                continue
            for code in value.split(schema.MULTI_SEPARATOR):
                counts[index.get(code, unknown)] += 1
        for pos, edges, counts in self._numbers:
            value = row[pos]
            counts[0 if value != value else 1 + bisect.bisect_right(edges, value)] += 1
        self.rows += 1
        if self.rows >= self.window:
            self._roll()

    def _roll(self) -> None:
        """Keep the finished block as the previous one and start a new one (the window slides)."""
        with self._lock:
            blocks = [*(f[-1] for f in self._codes), *(f[-1] for f in self._multi), *(f[-1] for f in self._numbers)]
            self._previous = [list(counts) for counts in blocks]
            self._previous_rows = self.rows
            for counts in blocks:
                counts[:] = [0] * len(counts)
            self.rows = 0

    def state(self) -> tuple[int, list[list[int]]]:
        """The window's row count and its counts per field (`fields` order grouped by kind, as `distances`
        merges them): what a serving worker shares so /metrics can judge drift over every worker's requests."""
        with self._lock:
            blocks = [*(f[-1] for f in self._codes), *(f[-1] for f in self._multi), *(f[-1] for f in self._numbers)]
            previous = self._previous or [[0] * len(b) for b in blocks]
            live = [[a + b for a, b in zip(now, before, strict=True)] for now, before in zip(blocks, previous,
                                                                                              strict=True)]
            return self.rows + self._previous_rows, live

    def distances(self, others: Sequence[tuple[int, list[list[int]]]] = ()) -> dict[str, tuple[str, float | None,
                                                                                                   bool]]:
        """Per field: (measure, distance or None while the window is too small, flagged).

        `others`: `state()`s of other monitors of the same version (other serving workers), added to this
        one's counts before comparing, so the judgement covers every request the service received.
        """
        rows, live = self.state()
        for other_rows, other_counts in others:
            rows += other_rows
            live = [[a + b for a, b in zip(mine, theirs, strict=True)]
                    for mine, theirs in zip(live, other_counts, strict=True)]
        result: dict[str, tuple[str, float | None, bool]] = {}
        for name, counts in zip(self.ordered_fields, live, strict=True):
            spec = self.profile["fields"][name]
            number = spec["kind"] == "number"
            measure = "jensen_shannon" if number else "linf"
            if rows < self.min_rows or not sum(counts):
                result[name] = (measure, None, False)
                continue
            shares = [c / sum(counts) for c in counts]
            distance = jensen_shannon(shares, spec["shares"]) if number else linf(shares, spec["shares"])
            distance = 0.0 if math.isnan(distance) else distance
            result[name] = (measure, distance, distance >= (self.js_threshold if number else self.threshold))
        return result

    @property
    def window_rows(self) -> int:
        return self.rows + self._previous_rows
