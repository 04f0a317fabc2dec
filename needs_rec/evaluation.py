"""Side-by-side evaluation of the network and its baselines on the same split, per segment.

Every method gets the same treatment: its thresholds are tuned on the validation split with the
same tuner and config (`needs_rec.thresholds`), its selection is cut on the test split, and its
test metrics (`needs_rec.metrics.evaluate`) are computed for every segment (all episodes, each
funnel stage, cold-start and returning organizations). The result, a `Comparison`, says which
baseline is best, warns when the network does not beat it, goes into the manifest as a plain
dict, and prints as a compact table.

Besides the metrics of `needs_rec.metrics.evaluate`, each metrics dict carries `hit@k`: the share
of episodes with at least one positive whose top k holds at least one positive ("how often the
top 5 contains something that resonated"). `Comparison.gain_curves` holds each method's
cumulative-gain curve on the whole test split, for the report's chart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from needs_rec import metrics, thresholds
from needs_rec.config import ThresholdConfig

__all__ = [
    "Comparison",
    "compare_methods",
    "evaluate_segments",
    "format_table",
    "gain_curve",
    "hit_rate_at_k",
    "segments_for",
    "table_columns",
]

#: The method key of the network under test, and of the oracle row (true probabilities, when known).
NETWORK = "network"
ORACLE = "oracle"
ALL = "all"
COLD_START = "cold_start"
RETURNING = "returning"
STAGE_PREFIX = "stage:"
#: Metrics where a lower value is better; every other metric is better higher.
LOWER_IS_BETTER = metrics.LOWER_IS_BETTER
#: Points of the cumulative-gain curves: share of (contact, characteristic) pitches, 0 … 1.
GAIN_GRID = np.linspace(0.0, 1.0, 101)


#: What a method's probability means (for `compare_methods`' like-with-like log-loss).
PRESENTED = "presented"  # P(resonates | the characteristic is presented): scored on presented cells
EPISODE = "episode"  # P(positive in the episode's label): scored on every cell
#: Caps the card measurement tries (`card_precision`).
CARD_CAPS = tuple(range(1, 11))


def presented_log_loss(y_true: np.ndarray, proba: np.ndarray, presented: np.ndarray) -> float:
    """Mean binary log-loss over the presented cells only (NaN when none)."""
    shown = np.asarray(presented, dtype=bool)
    if not shown.any():
        return math.nan
    y = (np.asarray(y_true) > 0)[shown].astype(np.float64)
    p = np.clip(np.asarray(proba, dtype=np.float64)[shown], metrics.EPS, 1 - metrics.EPS)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def card_figures(y_true: np.ndarray, selected: np.ndarray, presented: np.ndarray | None = None) -> dict[str, float]:
    """What a manager sees on the card: mean items shown, precision of shown, hit rate.

    precision = shown items that resonated / shown items — with explicit negatives (`presented`)
    counted among the shown items that were presented (an unpresented item says nothing), in a
    positive-only CRM among all shown items (a lower bound: an unpresented item counts as a miss).
    hit rate = share of episodes with ≥ 1 positive where ≥ 1 shown item resonated.
    """
    y = np.asarray(y_true) > 0
    s = np.asarray(selected, dtype=bool)
    base = s if presented is None else s & np.asarray(presented, dtype=bool)
    hits = (s & y).sum()
    has = y.any(axis=1)
    return {
        "shown": float(s.sum(axis=1).mean()) if len(s) else math.nan,
        "precision": float(hits / base.sum()) if base.sum() else math.nan,
        "hit_rate": float((s & y).any(axis=1)[has].mean()) if has.any() else math.nan,
    }


def card_precision(
    y_true: np.ndarray,
    proba: np.ndarray,
    cuts: np.ndarray,
    config: ThresholdConfig,
    *,
    offered: np.ndarray | None = None,
    presented: np.ndarray | None = None,
    caps: Sequence[int] = CARD_CAPS,
) -> dict[str, Any]:
    """The card per cap (what `thresholds.top_k` would show) and as configured: `card_figures` each.

    This is the measurement the default cap is chosen by: precision of what is shown against how
    many are shown (bench/quality.py prints it per firm; the report states it).
    """
    rows = []
    for cap in [*caps, None]:
        chosen = thresholds.select(proba, cuts, top_k=cap, min_selected=config.min_selected, offered=offered)
        rows.append({"cap": cap, **card_figures(y_true, chosen, presented)})
    configured = thresholds.select_with(proba, cuts, config, offered)
    return {
        "top_k": config.top_k,
        "min_selected": config.min_selected,
        "caps": rows,
        "configured": card_figures(y_true, configured, presented),
        "precision_counts": "presented shown items" if presented is not None else "all shown items",
    }


def stage_segment(code: str) -> str:
    """The segment name of one funnel stage."""
    return f"{STAGE_PREFIX}{code}"


# --------------------------------------------------------------------------------------------
# segments


def segments_for(stages: np.ndarray, stage_order: Sequence[str], cold_start: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean row masks: "all", "stage:<code>" for each stage in funnel order, "cold_start", "returning".

    Stages present in `stages` but not in `stage_order` count in "all" only. Masks may be empty;
    `evaluate_segments` skips those.
    """
    stages = np.asarray(stages).astype(str)
    cold = np.asarray(cold_start)
    if stages.ndim != 1 or cold.shape != stages.shape:
        raise ValueError(
            f"stages and cold_start must be 1-D of equal length; received shapes {stages.shape} and {cold.shape}"
        )
    if cold.dtype != bool:
        raise ValueError(f"cold_start must be a boolean array; received dtype {cold.dtype}")
    masks: dict[str, np.ndarray] = {ALL: np.ones(len(stages), dtype=bool)}
    for code in stage_order:
        masks[stage_segment(code)] = stages == str(code)
    masks[COLD_START] = cold.copy()
    masks[RETURNING] = ~cold
    return masks


def hit_rate_at_k(y_true: np.ndarray, proba: np.ndarray, k: int = 5) -> float:
    """Share of rows with ≥ 1 positive whose k most probable labels hold ≥ 1 positive (NaN if none).

    Ties at the k-th place go to the lower label index, as in `needs_rec.thresholds.select`.
    """
    y = np.asarray(y_true) > 0
    p = np.asarray(proba, dtype=np.float64)
    has_positive = y.any(axis=1)
    if not has_positive.any():
        return math.nan
    y, p = y[has_positive], p[has_positive]
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return float(np.take_along_axis(y, top, axis=1).any(axis=1).mean())


def evaluate_segments(
    y_true: np.ndarray,
    proba: np.ndarray,
    selected: np.ndarray,
    segments: Mapping[str, np.ndarray],
    k: int = 5,
) -> dict[str, dict[str, float]]:
    """Segment name → `metrics.evaluate` on that segment's rows (plus `hit@k`); empty segments skipped."""
    y = np.asarray(y_true)
    p = np.asarray(proba)
    s = np.asarray(selected)
    if not (y.ndim == 2 and y.shape == p.shape == s.shape):
        raise ValueError(
            f"y_true, proba and selected must be 2-D of equal shape; received {y.shape}, {p.shape}, {s.shape}"
        )
    results: dict[str, dict[str, float]] = {}
    for name, mask in segments.items():
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (len(y),):
            raise ValueError(
                f"segment {name!r}: the mask must be a boolean array of length {len(y)}; "
                f"received dtype {mask.dtype}, shape {mask.shape}"
            )
        if not mask.any():
            continue
        values = dict(metrics.evaluate(y[mask], p[mask], s[mask], k=k))
        values.setdefault(f"hit@{k}", hit_rate_at_k(y[mask], p[mask], k))
        results[name] = {key: float(value) for key, value in values.items()}
    return results


def gain_curve(y_true: np.ndarray, proba: np.ndarray, grid: np.ndarray = GAIN_GRID) -> np.ndarray:
    """Cumulative gain over (row, label) cells ranked by probability, highest first.

    Value i is the share of all positive cells found after going through a share `grid[i]` of all
    cells. Tied probabilities count at their expected value under a random order (the curve is a
    straight line across each run of ties), so a constant score gives the diagonal.
    """
    y = (np.asarray(y_true) > 0).ravel()
    p = np.asarray(proba, dtype=np.float64).ravel()
    total = y.sum()
    if len(y) == 0 or total == 0:
        return np.full(len(grid), math.nan)
    order = np.argsort(-p, kind="stable")
    p_sorted = p[order]
    found = np.cumsum(y[order])
    run_end = np.append(p_sorted[:-1] != p_sorted[1:], True)
    x = np.concatenate([[0.0], (np.flatnonzero(run_end) + 1) / len(y)])
    g = np.concatenate([[0.0], found[run_end] / total])
    return np.interp(grid, x, g)


# --------------------------------------------------------------------------------------------
# comparison


def _better(metric: str, a: float, b: float) -> bool:
    """True when value a is strictly better than b for `metric` (NaN is never better)."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a < b if metric in LOWER_IS_BETTER else a > b


def _plain(value: Any) -> Any:
    """JSON-ready: floats rounded to 6 digits, NaN/inf → None, arrays → lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return round(float(value), 6) if math.isfinite(value) else None
    return value


@dataclass
class Comparison:
    """Test metrics of every method on every segment, with each method's tuned thresholds.

    `results[segment][method]` is a metrics dict; `sizes[segment]` its number of test rows;
    `thresholds[method]` the cuts tuned on validation; `gain_curves[method]` the cumulative-gain
    curve on the whole test split (see `gain_curve`; not part of `to_dict`).
    """

    methods: list[str]
    results: dict[str, dict[str, dict[str, float]]]
    sizes: dict[str, int]
    thresholds: dict[str, np.ndarray]
    k: int = 5
    gain_curves: dict[str, np.ndarray] = field(default_factory=dict)
    network: str = NETWORK
    #: Per method, the cells its log-loss is computed on: PRESENTED or EPISODE (see `compare_methods`).
    log_loss_cells: dict[str, str] = field(default_factory=dict)
    #: The network's card per cap (`card_precision`), when measured.
    card: dict[str, Any] | None = None

    @property
    def baselines(self) -> list[str]:
        """Every method except the network and the oracle, in order."""
        return [m for m in self.methods if m not in (self.network, ORACLE)]

    @property
    def segments(self) -> list[str]:
        """Segments that had test rows, in the order given."""
        return list(self.results)

    def metric_names(self) -> list[str]:
        """Metric names in the order the metrics module returns them (union over all results), "n" left out."""
        names: dict[str, None] = {}
        for per_method in self.results.values():
            for values in per_method.values():
                names.update(dict.fromkeys(values))
        names.pop("n", None)
        return list(names)

    def value(self, method: str, metric: str, segment: str = ALL) -> float:
        """One figure; NaN when the segment, method or metric is absent."""
        return float(self.results.get(segment, {}).get(method, {}).get(metric, math.nan))

    def best_baseline(self, metric: str = "ndcg@5", segment: str = ALL) -> str | None:
        """The baseline with the best `metric` on `segment` (first on ties); None when there is none."""
        best: str | None = None
        for method in self.baselines:
            if best is None or _better(metric, self.value(method, metric, segment), self.value(best, metric, segment)):
                best = method
        return best

    def warnings(self) -> list[str]:
        """Plain sentences for every headline metric where the network does not beat the best baseline."""
        if self.network not in self.methods or not self.baselines or ALL not in self.results:
            return []
        messages = []
        n = self.sizes.get(ALL, 0)
        for metric in (f"ndcg@{self.k}", "micro_f1"):
            best = self.best_baseline(metric)
            if best is None:
                continue
            mine, theirs = self.value(self.network, metric), self.value(best, metric)
            if not _better(metric, mine, theirs):
                messages.append(
                    f"The network does not beat the best baseline on {metric} over all {n} test episodes: "
                    f"network {mine:.4f} vs {best} {theirs:.4f}."
                )
        return messages

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for the manifest (NaN → null)."""
        headline = (f"ndcg@{self.k}", "micro_f1")
        return _plain(
            {
                "k": self.k,
                "network": self.network,
                "methods": self.methods,
                "best_baseline": {metric: self.best_baseline(metric) for metric in headline},
                "warnings": self.warnings(),
                "segments": {
                    segment: {"n": self.sizes.get(segment, 0), "metrics": per_method}
                    for segment, per_method in self.results.items()
                },
                "thresholds": self.thresholds,
                "log_loss_cells": self.log_loss_cells,
                "card": self.card,
            }
        )


def _ordered_methods(names: Sequence[str], network: str) -> list[str]:
    first = [network] if network in names else []
    last = [ORACLE] if ORACLE in names and network != ORACLE else []
    return first + [m for m in names if m not in (network, ORACLE)] + last


def compare_methods(
    y_val: np.ndarray,
    val_probas: Mapping[str, np.ndarray],
    y_test: np.ndarray,
    test_probas: Mapping[str, np.ndarray],
    threshold_config: ThresholdConfig,
    segments: Mapping[str, np.ndarray],
    *,
    k: int = 5,
    network: str = NETWORK,
    offered_test: np.ndarray | None = None,
    presented_test: np.ndarray | None = None,
    meanings: Mapping[str, str] | None = None,
) -> Comparison:
    """Tune every method's thresholds on validation, cut and evaluate on test, per segment.

    `val_probas` and `test_probas` map the same method names (the network under `network`,
    baselines under their names, optionally true probabilities under "oracle") to (n, C)
    probabilities for `y_val` and `y_test`. `segments` holds test-row masks (see `segments_for`).
    Selection is the model's rule (`thresholds.select` with the config's cap and floor, only
    `offered_test` cells when given), as served.

    Log-loss compares like with like: a method whose probability means "resonates when presented"
    (`meanings[method] == PRESENTED`, possible only with explicit negatives, `presented_test`) is
    scored on the presented cells, one meaning "positive in the episode's label" (`EPISODE`, the
    default) on every cell; `Comparison.log_loss_cells` says which for each method.
    """
    missing_val = [m for m in test_probas if m not in val_probas]
    missing_test = [m for m in val_probas if m not in test_probas]
    if missing_val or missing_test or not test_probas:
        raise ValueError(
            "val_probas and test_probas must name the same, non-empty set of methods; "
            f"only in test: {missing_val}, only in validation: {missing_test}"
        )
    y_val, y_test = np.asarray(y_val), np.asarray(y_test)
    for split, y, probas in (("validation", y_val, val_probas), ("test", y_test, test_probas)):
        for method, proba in probas.items():
            if np.shape(proba) != y.shape:
                raise ValueError(
                    f"{method}: {split} probabilities have shape {np.shape(proba)}, the {split} labels {y.shape}"
                )
    methods = _ordered_methods(list(test_probas), network)
    results: dict[str, dict[str, dict[str, float]]] = {}
    cuts: dict[str, np.ndarray] = {}
    curves: dict[str, np.ndarray] = {}
    log_loss_cells: dict[str, str] = {}
    for method in methods:
        cuts[method] = np.asarray(thresholds.tune_thresholds(y_val, np.asarray(val_probas[method]), threshold_config))
        proba = np.asarray(test_probas[method])
        selected = thresholds.select_with(proba, cuts[method], threshold_config, offered_test)
        meaning = (meanings or {}).get(method, EPISODE)
        cells = presented_test if meaning == PRESENTED and presented_test is not None else None
        for segment, values in evaluate_segments(y_test, proba, selected, segments, k=k).items():
            if cells is not None:
                mask = np.asarray(segments[segment])
                values["log_loss"] = presented_log_loss(y_test[mask], proba[mask], np.asarray(cells)[mask])
            results.setdefault(segment, {})[method] = values
        log_loss_cells[method] = PRESENTED if cells is not None else EPISODE
        curves[method] = gain_curve(y_test, proba)
    order = [name for name in segments if name in results]
    return Comparison(
        methods=methods,
        results={name: results[name] for name in order},
        sizes={name: int(np.asarray(segments[name]).sum()) for name in order},
        thresholds=cuts,
        k=k,
        gain_curves=curves,
        network=network,
        log_loss_cells=log_loss_cells,
    )


# --------------------------------------------------------------------------------------------
# table


def _format_value(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.3f}"


#: How a log-loss column is headed for the cells it is computed on (see `table_columns`).
LOG_LOSS_HEADERS = {PRESENTED: "log_loss(presented)", EPISODE: "log_loss(all)"}
#: A method's cell in a log-loss column of cells its probability does not mean.
NOT_ON_THESE_CELLS = "·"


@dataclass(frozen=True)
class Column:
    """One column of `format_table`: `header` shows `metric` for the methods scored on `cells`
    (a `log_loss_cells` value), or for every method when `cells` is None."""

    header: str
    metric: str
    cells: str | None = None


def table_columns(comparison: Comparison, metrics_shown: Sequence[str]) -> list[Column]:
    """The table's columns: one per metric, except log-loss, which gets one column per kind of cells
    the methods are scored on (`LOG_LOSS_HEADERS`), so each log-loss figure sits beside those measured
    on the same cells and the header says which cells they are. A comparison that does not record
    its cells (`log_loss_cells` empty) keeps a single plain `log_loss` column."""
    kinds = [k for k in (PRESENTED, EPISODE) if k in comparison.log_loss_cells.values()]
    columns: list[Column] = []
    for metric in metrics_shown:
        if metric == "log_loss" and kinds:
            columns += [Column(LOG_LOSS_HEADERS[kind], metric, kind) for kind in kinds]
        else:
            columns.append(Column(metric, metric))
    return columns


def _scored_on(comparison: Comparison, method: str, column: Column) -> bool:
    """True when `method`'s figure belongs in `column` (its log-loss is on that column's cells)."""
    return column.cells is None or comparison.log_loss_cells.get(method, EPISODE) == column.cells


def _best_in_column(comparison: Comparison, column: Column, rows: Sequence[str], segment: str) -> str | None:
    """The method with the best value of `column` in one block, among the methods scored on its cells
    (the oracle, an upper bound, excluded); None when no method qualifies."""
    best: str | None = None
    for method in rows:
        if method == ORACLE or not _scored_on(comparison, method, column):
            continue
        value = comparison.value(method, column.metric, segment)
        if best is None or _better(column.metric, value, comparison.value(best, column.metric, segment)):
            best = method
    return best


def _table_block(comparison: Comparison, segment: str, columns: Sequence[Column], width: int) -> str:
    """One segment's block: its header line, the column headers, one row per method."""
    per_method = comparison.results[segment]
    rows = [m for m in comparison.methods if m in per_method]
    best = [_best_in_column(comparison, column, rows, segment) for column in columns]
    cells = {
        method: [
            _format_value(comparison.value(method, column.metric, segment)) + ("*" if winner == method else " ")
            if _scored_on(comparison, method, column)
            else NOT_ON_THESE_CELLS + " "
            for column, winner in zip(columns, best, strict=True)
        ]
        for method in rows
    }
    widths = [max(len(column.header), *(len(cells[m][i]) for m in rows)) for i, column in enumerate(columns)]
    lines = [f"{segment} (n={comparison.sizes.get(segment, 0)})"]
    headers = [column.header for column in columns]
    lines.append("  ".join([f"{'method':<{width}}", *(f"{h:>{w}}" for h, w in zip(headers, widths, strict=True))]))
    for method in rows:
        lines.append(
            "  ".join([f"{method:<{width}}", *(f"{c:>{w}}" for c, w in zip(cells[method], widths, strict=True))])
        )
    return "\n".join(line.rstrip() for line in lines)


def format_table(
    comparison: Comparison,
    segments: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> str:
    """Aligned plain-text table: one block per segment, methods as rows, metrics as columns.

    `segments` defaults to every segment of the comparison (one without test rows says so),
    `columns` to every metric but "n" (the block header shows it).
    The best non-oracle value of each column in a block is marked with `*`; the oracle row (true
    probabilities, an upper bound) comes last. Log-loss is split by the cells it is computed on
    (`table_columns`): `log_loss(presented)` for the methods whose probability means "resonates when
    presented", `log_loss(all)` for the others, a method's cell in the other column showing
    `NOT_ON_THESE_CELLS`; so a star is only ever awarded among figures measured on the same cells.
    """
    names = list(columns) if columns is not None else comparison.metric_names()
    shown = table_columns(comparison, names)
    wanted = list(segments) if segments is not None else comparison.segments
    width = max(len("method"), *(len(m) for m in comparison.methods))
    blocks = [
        _table_block(comparison, segment, shown, width)
        if segment in comparison.results
        else f"{segment}: no test episodes"
        for segment in wanted
    ]
    return "\n\n".join(blocks) + "\n"
