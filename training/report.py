"""The report written next to each model version, for a sales director: `report.md` plus charts.

Only aggregates reach it: figures from the `Comparison`, label matrices and probabilities
(anonymous rows), stage and characteristic codes with their dictionary names, and the numeric
entries of `extra_summary` (counts). Text values of `extra_summary`, and any entry whose key is a
personal-data column name, are left out, so a name or an e-mail passed there by mistake never
reaches the report.

Charts are drawn with Matplotlib's Agg canvas directly (no pyplot, no display, no global backend
switch), at fixed sizes, so the same inputs give the same PNG bytes. Every file is written to a
temporary file in `directory` and renamed into place; `report.md` goes last, so when it exists
its charts do too.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.stats import rankdata

from needs_rec import schema
from needs_rec.errors import clipped
from needs_rec.evaluation import (
    ALL,
    COLD_START,
    EPISODE,
    LOG_LOSS_HEADERS,
    NOT_ON_THESE_CELLS,
    ORACLE,
    PRESENTED,
    RETURNING,
    Comparison,
    format_table,
    gain_curve,
    stage_segment,
)
from needs_rec.tuning import describe

REPORT_FILE = "report.md"
CALIBRATION_CHART = "report_calibration.png"
GAIN_CHART = "report_gain.png"
STAGES_CHART = "report_stages.png"
CHARACTERISTICS_CHART = "report_characteristics.png"
CHARTS = (CALIBRATION_CHART, GAIN_CHART, STAGES_CHART, CHARACTERISTICS_CHART)

#: How methods are called in the report; unknown method keys are shown as they are.
METHOD_NAMES = {
    "network": "the model",
    "popularity": "most popular overall",
    "group_popularity": "most popular for the stage and position",
    "stage_position_popularity": "most popular for the stage and position",
    "logistic": "logistic regression",
    "gradient_boosting": "gradient boosting",
    "gbt": "gradient boosting",
    ORACLE: "oracle (true probabilities)",
}
#: The "simple rule of thumb" the summary compares against, first one present.
RULE_OF_THUMB = ("group_popularity", "stage_position_popularity", "popularity")
N_BINS = 10
N_SHOWN = 10
DPI = 100
#: Permissions of the written files (mkstemp creates them owner-only).
FILE_MODE = 0o644
COLORS = {"network": "#1f77b4", "baseline": "#ff7f0e", "popularity": "#2ca02c", "random": "#7f7f7f"}


def write_report(
    directory: str | Path,
    *,
    title: str,
    comparison: Comparison,
    y_test: np.ndarray,
    proba_test: np.ndarray,
    selected_test: np.ndarray,
    stages_test: np.ndarray,
    stage_names: Mapping[str, str],
    characteristic_codes: Sequence[str],
    characteristic_names: Sequence[str] | Mapping[str, str],
    extra_summary: Mapping[str, Any] | None = None,
    presented_test: np.ndarray | None = None,
    audience: Mapping[str, Any] | None = None,
    similar: Mapping[str, Any] | None = None,
    search: Mapping[str, Any] | None = None,
) -> Path:
    """Write `report.md` and its PNG charts into `directory` (which must exist); return the report path.

    `audience` (`needs_rec.audience.audience_gain`) and `similar` (the summary of
    `needs_rec.similar.build_for_version`) add the sections on ranked audiences and similar organizations.

    `presented_test` (bool, like `y_test`): which characteristics were actually put to the contact.
    When given, calibration is drawn on those cells only — the network's probability is that of
    resonating when presented, so unpresented cells (never positive) would make it look inflated.

    `proba_test` and `selected_test` are the network's; `stages_test` the stage code of each test
    row; `stage_names` maps stage codes to names in funnel order; `characteristic_names` is either
    aligned with `characteristic_codes` or a code → name mapping. `search` (the manifest's record
    of `needs_rec.tuning.search`) adds how the network's configuration was chosen.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"report directory {directory} does not exist")
    y = (np.asarray(y_test) > 0).astype(np.int8)
    p = np.asarray(proba_test, dtype=np.float64)
    s = np.asarray(selected_test).astype(bool)
    stages = np.asarray(stages_test).astype(str)
    codes = [str(c) for c in characteristic_codes]
    if y.ndim != 2 or y.shape != p.shape or y.shape != s.shape:
        raise ValueError(
            f"y_test, proba_test and selected_test must be 2-D of equal shape; received {y.shape}, {p.shape}, {s.shape}"
        )
    if len(y) == 0:
        raise ValueError("the test split is empty: nothing to report")
    if stages.shape != (len(y),):
        raise ValueError(f"stages_test must hold one stage code per test row ({len(y)}); received shape {stages.shape}")
    if len(codes) != y.shape[1]:
        raise ValueError(f"characteristic_codes has {len(codes)} codes; the labels have {y.shape[1]} columns")
    names = _names(codes, characteristic_names)

    context = _Context(comparison, y, p, s, stages, dict(stage_names), codes, names)
    context.explicit = presented_test is not None
    context.search = dict(search) if search else None
    shown = None if presented_test is None else np.asarray(presented_test).astype(bool)
    if shown is not None and shown.shape != y.shape:
        raise ValueError(f"presented_test must have the shape of y_test {y.shape}; received {shown.shape}")
    charts = {
        CALIBRATION_CHART: _calibration_chart(context, shown),
        GAIN_CHART: _gain_chart(context),
        STAGES_CHART: _stages_chart(context),
        CHARACTERISTICS_CHART: _characteristics_chart(context),
    }
    for file_name, figure in charts.items():
        _write_atomic(directory / file_name, _png(figure))
    text = _markdown(context, title, extra_summary or {})
    text += "".join(f"\n{section}\n" for section in (_audience_section(audience), _similar_section(similar)) if section)
    path = directory / REPORT_FILE
    _write_atomic(path, text.encode("utf-8"))
    return path


# --------------------------------------------------------------------------------------------
# inputs


class _Context:
    """Everything the sections share, computed once."""

    def __init__(
        self,
        comparison: Comparison,
        y: np.ndarray,
        p: np.ndarray,
        s: np.ndarray,
        stages: np.ndarray,
        stage_names: dict[str, str],
        codes: list[str],
        names: list[str],
    ):
        self.comparison: Comparison = comparison
        self.y, self.p, self.s, self.stages = y, p, s, stages
        self.stage_names: dict[str, str] = stage_names
        self.codes: list[str] = codes
        self.names: list[str] = names
        self.k = comparison.k
        self.network = comparison.network
        self.best = comparison.best_baseline(f"ndcg@{self.k}")
        self.rule = next((m for m in RULE_OF_THUMB if m in comparison.methods), self.best)
        self.auc, self.positives = _per_label_auc(y, p)
        self.explicit = False  # the CRM records negative outcomes (presented, did not resonate)
        self.search: dict[str, Any] | None = None


def _meaning(c: _Context) -> str:
    """The probability's meaning, in one sentence, for the kind of CRM the model learned from."""
    if c.explicit:
        return ("**What a probability means:** the chance that the characteristic resonates with this contact at "
                "this stage *when the manager presents it* (learned from the CRM's positive and negative outcomes).")
    return ("**What a probability means:** the chance that a conversation with this contact at this stage is "
            "recorded with the characteristic as having resonated (the CRM logs only what worked, so how often "
            "managers present it is part of the figure).")  # fmt: skip

def _names(codes: list[str], names: Sequence[str] | Mapping[str, str]) -> list[str]:
    if isinstance(names, Mapping):
        return [str(names.get(code, code)) for code in codes]
    names = [str(n) for n in names]
    if len(names) != len(codes):
        raise ValueError(f"characteristic_names has {len(names)} names for {len(codes)} codes")
    return names


def _method_name(method: str | None) -> str:
    return "—" if method is None else METHOD_NAMES.get(method, method)


def _per_label_auc(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC of each label over the test rows (NaN for a label with a single class), and positives."""
    positives = y.sum(axis=0)
    negatives = len(y) - positives
    ranks = rankdata(p, axis=0)  # average ranks for ties
    rank_sum = (ranks * y).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)
    auc = np.where((positives > 0) & (negatives > 0), auc, np.nan)
    return auc, positives


# --------------------------------------------------------------------------------------------
# charts


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # a name in a script the font lacks shows as a box; that must not fail the report
        warnings.filterwarnings("ignore", message="Glyph .* missing", category=UserWarning)
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _short(text: str, limit: int = 38) -> str:
    return clipped(text, limit, "…")


def _calibration_bins(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per probability bin: mean predicted, observed positive rate (NaN when empty), count."""
    edges = np.linspace(0.0, 1.0, N_BINS + 1)
    index = np.clip(np.digitize(p.ravel(), edges[1:-1]), 0, N_BINS - 1)
    counts = np.bincount(index, minlength=N_BINS)
    predicted = np.bincount(index, weights=p.ravel(), minlength=N_BINS)
    observed = np.bincount(index, weights=y.ravel().astype(np.float64), minlength=N_BINS)
    with np.errstate(invalid="ignore", divide="ignore"):
        return predicted / counts, observed / counts, counts


def _calibration_chart(c: _Context, presented: np.ndarray | None = None) -> Figure:
    if presented is None:
        predicted, observed, counts = _calibration_bins(c.y, c.p)
    else:
        predicted, observed, counts = _calibration_bins(c.y[presented], c.p[presented])
    figure = _figure(6.0, 7.0)
    top, bottom = figure.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    top.plot([0, 1], [0, 1], linestyle="--", color=COLORS["random"], label="perfectly calibrated")
    seen = counts > 0
    top.plot(predicted[seen], observed[seen], marker="o", color=COLORS["network"], label="the model")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("share that actually resonated")
    top.set_title("Predicted vs observed (test split" + (", presented only)" if presented is not None else ")"))
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    centres = np.linspace(0.05, 0.95, N_BINS)
    bottom.bar(centres, np.maximum(counts, 0), width=0.09, color=COLORS["network"], alpha=0.7)
    if counts.max() > 0:
        bottom.set_yscale("log")
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("pairs")
    figure.tight_layout()
    return figure


def _gain_curves(c: _Context) -> dict[str, np.ndarray]:
    curves = {c.network: gain_curve(c.y, c.p)}
    for method in ("popularity", c.best):
        if method and method not in curves and method in c.comparison.gain_curves:
            curves[method] = np.asarray(c.comparison.gain_curves[method])
    return curves


def _gain_chart(c: _Context) -> Figure:
    figure = _figure(7.0, 5.0)
    axes = figure.subplots()
    grid = np.linspace(0, 100, len(next(iter(_gain_curves(c).values()))))
    styles = [COLORS["network"], COLORS["popularity"], COLORS["baseline"]]
    for color, (method, curve) in zip(styles, _gain_curves(c).items(), strict=False):
        axes.plot(grid, 100 * curve, color=color, label=_method_name(method))
    axes.plot([0, 100], [0, 100], linestyle="--", color=COLORS["random"], label="random order")
    axes.set_xlim(0, 100)
    axes.set_ylim(0, 100)
    axes.set_xlabel("% of all contact–characteristic pitches made, most likely first")
    axes.set_ylabel("% of everything that resonated, covered")
    axes.set_title("Cumulative gain (test split)")
    axes.legend(loc="lower right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _stage_values(c: _Context, method: str | None, metric: str) -> list[float]:
    return [c.comparison.value(method, metric, stage_segment(code)) if method else math.nan for code in c.stage_names]


def _stages_chart(c: _Context) -> Figure:
    figure = _figure(9.0, 4.5)
    labels = [_short(name, 18) for name in c.stage_names.values()]
    x = np.arange(len(labels))
    for axes, metric in zip(figure.subplots(1, 2), (f"ndcg@{c.k}", f"precision@{c.k}"), strict=True):
        for offset, method, color in ((-0.2, c.network, COLORS["network"]), (0.2, c.best, COLORS["baseline"])):
            if method is None:
                continue
            values = np.nan_to_num(np.array(_stage_values(c, method, metric)), nan=0.0)
            axes.bar(x + offset, values, width=0.4, color=color, label=_method_name(method))
        for position, code in zip(x, c.stage_names, strict=True):
            if stage_segment(code) not in c.comparison.results:
                axes.text(position, 0.02, "no test data", rotation=90, ha="center", va="bottom", fontsize="small")
        axes.set_xticks(x, labels, rotation=30, ha="right")
        axes.set_ylim(0, 1)
        axes.set_title(metric.upper().replace("@", " @ "))
        axes.grid(axis="y", alpha=0.3)
        axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    return figure


def _ranked_characteristics(c: _Context) -> tuple[list[int], list[int]]:
    """Indices of the best and the worst characteristics by test ROC-AUC (disjoint, best first)."""
    scored = np.flatnonzero(~np.isnan(c.auc))
    order = scored[np.argsort(-c.auc[scored], kind="stable")]
    shown = min(N_SHOWN, math.ceil(len(order) / 2))  # few characteristics: half best, half worst
    top = [int(i) for i in order[:shown]]
    bottom = [int(i) for i in order[shown:][::-1][:shown]]
    return top, bottom


def _characteristics_chart(c: _Context) -> Figure:
    top, bottom = _ranked_characteristics(c)
    figure = _figure(9.0, 7.0)
    for axes, indices, heading in zip(
        figure.subplots(2, 1), (top, bottom), ("Best ranked", "Worst ranked"), strict=True
    ):
        if not indices:
            axes.text(0.5, 0.5, "not enough test data", ha="center", va="center")
            axes.set_axis_off()
            continue
        labels = [_short(f"{c.names[i]} ({c.codes[i]})", 48) for i in indices]
        y_pos = np.arange(len(indices))[::-1]
        axes.barh(y_pos, c.auc[indices], color=COLORS["network"])
        axes.axvline(0.5, linestyle="--", color=COLORS["random"])
        axes.set_yticks(y_pos, labels, fontsize="small")
        axes.set_xlim(0, 1)
        axes.set_title(f"{heading} characteristics by ROC-AUC (0.5 = guessing)")
        axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------------------------
# markdown


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.0f}%"


def _num(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.3f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _summary(c: _Context) -> list[str]:
    k, comp = c.k, c.comparison
    n = len(c.y)
    hit = comp.value(c.network, f"hit@{k}")
    recall = comp.value(c.network, f"recall@{k}")
    lines = [
        f"On {n} test conversations (contacts at a funnel stage, later in time than anything the model learned from):",
        "",
    ]
    rule_text = ""
    if c.rule is not None:
        rule_text = (
            f" The simple rule of thumb ({_method_name(c.rule)}) manages {_pct(comp.value(c.rule, f'hit@{k}'))}."
        )
    lines.append(
        f"- In **{_pct(hit)}** of the conversations where something resonated, at least one of the model's "
        f"top {k} characteristics was among what resonated.{rule_text}"
    )
    rule_recall = f" (rule of thumb: {_pct(comp.value(c.rule, f'recall@{k}'))})" if c.rule else ""
    lines.append(
        f"- The model's top {k} holds on average **{_pct(recall)}** of the characteristics that resonated{rule_recall}."
    )
    if c.best is not None:
        metric = f"ndcg@{k}"
        mine, theirs = comp.value(c.network, metric), comp.value(c.best, metric)
        verdict = "ahead of" if mine > theirs else "not ahead of"
        lines.append(
            f"- The strongest alternative tried is {_method_name(c.best)}; on ranking quality (NDCG@{k}) the model is "
            f"{verdict} it: {_num(mine)} vs {_num(theirs)}."
        )
    per_contact = c.s.sum(axis=1)
    card = comp.card or {}
    cap = card.get("top_k")
    rule = f"at most {cap}" if cap else "no cap"
    if card.get("min_selected"):
        rule += f", at least {card['min_selected']}"
    precision = (card.get("configured") or {}).get("precision")
    shown_text = (f"; **{_pct(precision)}** of the items shown resonated (counted among {card['precision_counts']})"
                  if precision is not None else "")  # fmt: skip
    lines.append(
        f"- The card ({rule}) shows {per_contact.mean():.1f} characteristics per contact on average "
        f"({int((per_contact == 0).sum())} contacts get none){shown_text}."
    )
    for warning in comp.warnings():
        lines.append(f"- **Caution:** {warning}")
    return lines


def _metrics_section(c: _Context) -> list[str]:
    segments = [ALL, *(stage_segment(code) for code in c.stage_names), COLD_START, RETURNING]
    present = [s for s in segments if s in c.comparison.results]
    legend = [
        f"- ndcg@{c.k}: how well the top {c.k} is ordered (1 = everything that resonated is on top).",
        f"- precision@{c.k} / recall@{c.k}: share of the top {c.k} that resonated / share of what resonated that is "
        f"in the top {c.k}.",
        f"- hit@{c.k}: share of conversations where the top {c.k} holds at least one characteristic that resonated.",
        "- mrr: 1 / position of the first characteristic that resonated, averaged.",
        "- micro_f1 / macro_f1: quality of the cut-off selection, over all pairs / averaged per characteristic.",
        "- log_loss (lower is better) and macro_roc_auc: quality of the probabilities themselves. Log-loss is computed "
        "on the cells each method's probability means: " + _log_loss_cells(c) + ".",
        "- `*` marks the best value in each column of a block (the oracle, which knows the true probabilities, "
        "excluded); a log-loss is starred only against figures on the same cells.",
        "- Segments: `stage:<code>` is one funnel stage; cold_start = organizations first seen after training.",
    ]
    methods = ", ".join(f"`{m}` = {_method_name(m)}" for m in c.comparison.methods)
    return [
        f"Methods: {methods}. Every method's cut-offs were tuned the same way on the validation split.",
        "",
        "```text",
        format_table(c.comparison, segments=present).rstrip("\n"),
        "```",
        "",
        *legend,
    ]


def _audience_section(gain: Mapping[str, Any] | None) -> str:
    """"Who to call": cumulative gain and lift of ranked audiences per method (empty without figures)."""
    if not gain or not gain.get("audiences"):
        return ""
    shares = gain["shares"]
    lines = [
        "## Who to call: ranked audiences",
        "",
        f"For every characteristic and stage with at least {gain['min_positives']} positives among the test "
        f"conversations ({gain['audiences']} audiences, {gain['positives']} positives), the contacts were ranked by "
        "each method the way `GET /v1/audience` ranks them (owners of the product left out before the last stage); "
        "the table shows the share of all positives found in the top of each ranking (lift over a random order).",
        "",
        "| method | " + " | ".join(f"top {q:.0%}" for q in shares) + " |",
        "| --- |" + " ---: |" * len(shares),
    ]
    for method, values in gain["methods"].items():
        cells = ["—" if g is None else f"{g:.1%} (×{lift:.2f})" for g, lift in zip(values["gain"], values["lift"],
                                                                                  strict=True)]
        lines.append(f"| {_cell(_method_name(method))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _similar_section(summary: Mapping[str, Any] | None) -> str:
    """"Where it worked before": which organization embedding was chosen and its neighbour lift."""
    if not summary:
        return ""
    lines = [
        "## Where it worked before: similar organizations",
        "",
        f"Embedding used: `{summary['kind']}` ({summary['organizations']} organizations, {summary['dimensions']} "
        f"dimensions), chosen by the higher lift on the validation period. Lift: how much more often a "
        f"characteristic had resonated at an organization's {summary['k']} most similar organizations than at "
        "organizations of its industry, where it later resonated at the organization itself.",
        "",
        "| embedding | validation lift | test lift | test: similar rate | test: same-industry rate |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind in summary["lift_test"]:
        v, t = summary["lift_validation"][kind], summary["lift_test"][kind]
        lines.append(f"| {kind} | {_num(v['lift'])} | {_num(t['lift'])} | {_pct(t['neighbour_rate'])} "
                     f"| {_pct(t['industry_rate'])} |")
    return "\n".join(lines)


def _log_loss_cells(c: _Context) -> str:
    """Which methods' log-loss is in which column of the table, and on which cells (`table_columns`)."""
    cells = c.comparison.log_loss_cells or {}
    if not cells:
        return "every method is scored on every cell"
    presented = [m for m in c.comparison.methods if cells.get(m) == PRESENTED]
    others = [m for m in c.comparison.methods if m not in presented]
    parts = []
    if presented:
        parts.append(f"`{LOG_LOSS_HEADERS[PRESENTED]}` — {', '.join(f'`{m}`' for m in presented)} (resonates when "
                     "presented), on the presented cells only")
    if others:
        parts.append(f"`{LOG_LOSS_HEADERS[EPISODE]}` — {', '.join(f'`{m}`' for m in others)} (positive in the "
                     "conversation), on every cell")
    text = "; ".join(parts)
    if presented and others:
        text += (f"; the two columns are on different cells and are not compared with each other "
                 f"(`{NOT_ON_THESE_CELLS}`: not scored on that column's cells)")
    return text


def _card_section(c: _Context) -> list[str]:
    card = c.comparison.card
    if not card:
        return ["No card measurement."]
    lines = [
        "What the card shows against how many items it shows (test split; precision counts "
        f"{card['precision_counts']}; hit rate = conversations where at least one shown item resonated):",
        "",
        "| cap | shown per contact | precision of shown | hit rate |",
        "| --- | --- | --- | --- |",
    ]
    for row in card["caps"]:
        cap = "none" if row["cap"] is None else str(row["cap"])
        mark = " (configured)" if row["cap"] == card["top_k"] else ""
        lines.append(f"| {cap}{mark} | {row['shown']:.2f} | {_pct(row['precision'])} | {_pct(row['hit_rate'])} |")
    if not c.explicit:
        lines += ["", "With positive outcomes only, an item shown but never presented counts as a miss: the precision "
                  "is a lower bound."]  # fmt: skip
    return lines


def _search_section(c: _Context) -> list[str]:
    search = c.search
    if not search:
        return ["The configuration was taken as given (no search)."]
    cut = " — **stopped by the time budget**" if search.get("stopped_by_budget") else ""
    lines = [
        f"{len(search['trials'])} configurations tried in {search['elapsed_s']:.0f} s on {search['rows_per_trial']} "
        f"training conversations each, scored by {search['objective']}{cut}; chosen: trial {search['chosen_trial']}.",
        "",
        "| trial | configuration | validation NDCG@5 | epochs | seconds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in search["trials"]:
        mark = " **(chosen)**" if t["number"] == search["chosen_trial"] else ""
        lines.append(f"| {t['number']}{mark} | {describe(t['params'])} | {t['ndcg@5']:.4f} | {t['best_epoch']} | "
                     f"{t['seconds']:.0f} |")  # fmt: skip
    return lines


def _stages_section(c: _Context) -> list[str]:
    """Per stage: the model's NDCG@k and precision@k, beside the strongest baseline's when there is one
    (without baselines the comparison columns are left out rather than filled with placeholders)."""
    k = c.k
    methods = [c.network] if c.best is None else [c.network, c.best]
    labels = ["model"] if c.best is None else ["model", _method_name(c.best)]
    metrics = (f"ndcg@{k}", f"precision@{k}")
    headers = [f"{label} {'NDCG' if metric.startswith('ndcg') else 'precision'}@{k}"
               for metric in metrics for label in labels]  # fmt: skip
    lines = [
        "| stage | code | test conversations | " + " | ".join(headers) + " |",
        "| --- | --- | ---: |" + " ---: |" * len(headers),
    ]
    for code, name in c.stage_names.items():
        count = int((c.stages == str(code)).sum())
        if count == 0:
            lines.append(f"| {_cell(name)} | {_cell(code)} | 0 | no test conversations |" + " |" * (len(headers) - 1))
            continue
        values = [_num(c.comparison.value(method, metric, stage_segment(code))) for metric in metrics
                  for method in methods]  # fmt: skip
        lines.append(f"| {_cell(name)} | {_cell(code)} | {count} | " + " | ".join(values) + " |")
    return lines


def _characteristics_section(c: _Context) -> list[str]:
    top, bottom = _ranked_characteristics(c)
    if not top:
        return ["Not enough test data to score single characteristics (each needs both outcomes in the test split)."]
    lines = []
    for heading, indices in (("Best ranked", top), ("Worst ranked", bottom)):
        if not indices:
            continue
        lines += [
            f"**{heading}**",
            "",
            "| characteristic | code | ROC-AUC | resonated in test |",
            "| --- | --- | ---: | ---: |",
        ]
        lines += [
            f"| {_cell(c.names[i])} | {_cell(c.codes[i])} | {c.auc[i]:.3f} | {int(c.positives[i])} |" for i in indices
        ]
        lines.append("")
    unscored = int(np.isnan(c.auc).sum())
    if unscored:
        lines.append(f"{unscored} characteristics had a single outcome in the test split and are not scored.")
    return lines


def _is_count(value: Any) -> bool:
    """A finite real number (not a bool): the only kind of value the data summary shows."""
    numeric = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)
    return numeric and math.isfinite(float(value))


def _flatten_counts(summary: Mapping[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    """Numeric entries only, nested keys joined with " / "; personal-data keys and text left out."""
    rows: list[tuple[str, float]] = []
    for key, value in summary.items():
        key = str(key)
        if key.strip().lower() in schema.PERSONAL_COLUMNS:
            continue
        label = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows += _flatten_counts(value, f"{label} / ")
        elif _is_count(value):
            rows.append((label, float(value)))
    return rows


def _data_section(c: _Context, extra_summary: Mapping[str, Any]) -> list[str]:
    rows = [
        ("test conversations", float(len(c.y))),
        ("characteristics in the vocabulary", float(len(c.codes))),
        ("funnel stages", float(len(c.stage_names))),
        ("positive outcomes in test", float(c.y.sum())),
        *_flatten_counts(extra_summary),
    ]
    lines = ["| item | count |", "| --- | ---: |"]
    for label, value in rows:
        shown = f"{int(value)}" if value.is_integer() else f"{value:.4g}"
        lines.append(f"| {_cell(label)} | {shown} |")
    return lines


def _markdown(c: _Context, title: str, extra_summary: Mapping[str, Any]) -> str:
    curves = _gain_curves(c)
    at_ten = ", ".join(f"{_method_name(m)} {_pct(curve[10])}" for m, curve in curves.items())
    sections = [
        f"# {title}",
        "",
        _meaning(c),
        "",
        "## In one minute",
        "",
        *_summary(c),
        "",
        "## How the model compares",
        "",
        *_metrics_section(c),
        "",
        "## The card: how many to show",
        "",
        *_card_section(c),
        "",
        "## How the network was chosen",
        "",
        *_search_section(c),
        "",
        "## Charts",
        "",
        f"![Calibration]({CALIBRATION_CHART})",
        "",
        "*When the model says 30%, about 30% of such pitches should resonate: the closer the line is to the "
        "diagonal, the more its probabilities can be taken at face value (bottom: how many pairs fall in each band).*",
        "",
        f"![Cumulative gain]({GAIN_CHART})",
        "",
        "*Going through every possible contact–characteristic pitch from the most to the least likely, the share of "
        f"everything that resonated you have covered; after the first 10% of pitches: {at_ten}, random order 10%.*",
        "",
        f"![Quality per stage]({STAGES_CHART})",
        "",
        f"*How well the top {c.k} is ordered (left) and how much of it resonates (right) at each funnel stage, "
        + ("for the model (no baselines were run).*" if c.best is None else f"the model vs {_method_name(c.best)}.*"),
        "",
        f"![Best and worst characteristics]({CHARACTERISTICS_CHART})",
        "",
        "*Characteristics the model tells apart best and worst (ROC-AUC: 1 = always ranks the contacts it resonates "
        "with higher, 0.5 = guessing).*",
        "",
        "## Per stage",
        "",
        *_stages_section(c),
        "",
        "## Characteristics",
        "",
        *_characteristics_section(c),
        "",
        "## Data summary",
        "",
        *_data_section(c, extra_summary),
        "",
    ]
    return "\n".join(sections)


# --------------------------------------------------------------------------------------------
# files


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file next to `path`, then rename it into place."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
