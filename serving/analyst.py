"""What the analyst's page shows, read from the models directory: versions, metrics, report, promotions.

Everything here reads the files that training and promotion write — each version's manifest
(through `needs_rec.versions`, which checks its seal) and `report.md` with its charts,
`M/labels.json`, `M/promotions.jsonl` — and never loads TensorFlow, so the page stays cheap and
works while a version is still loading. Only
aggregates are read: manifests, reports and the promotion log carry no personal data by
construction (contract §3, §7).

The report is Markdown rendered by markdown-it-py with raw HTML switched off (any `<tag>` in the
file is shown as text) and its image links rewritten to this service's chart route, which serves
only `report_*.png` files that lie inside the version directory.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

from needs_rec import versions
from needs_rec.errors import ModelError

REPORT = "report.md"
#: Files the chart route serves from a version directory (what `training.report` writes).
CHART_NAME = re.compile(r"^report_[a-z0-9_]{1,40}\.png$")
#: Candidates shown beside stable and previous (newest first).
MAX_CANDIDATES = 4
#: Promotion log entries shown (newest first).
MAX_PROMOTIONS = 50
#: Headline metrics, in the order shown: (key in the manifest with `{k}` for the cut-off, Russian label).
HEADLINE = (
    ("ndcg@{k}", "NDCG@{k} — качество порядка"),
    ("hit@{k}", "Хотя бы одно попадание в первых {k}"),
    ("precision@{k}", "Точность в первых {k}"),
    ("recall@{k}", "Полнота в первых {k}"),
    ("micro_f1", "micro-F1 после порогов"),
    ("macro_roc_auc", "ROC-AUC (среднее по характеристикам)"),
    ("log_loss", "Log loss (меньше — лучше)"),
)

_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")


@dataclass(frozen=True)
class VersionRow:
    """One version column of the comparison table."""

    number: int
    roles: tuple[str, ...]  # "stable", "previous", "candidate", "served"
    created_at: str | None
    episodes: int | None
    test_episodes: int | None
    metrics: dict[str, float | None]
    best_baseline: str | None
    best_baseline_ndcg: float | None
    has_report: bool
    problem: str | None = None


@dataclass(frozen=True)
class Overview:
    """Everything about the models directory the analyst page shows."""

    models: Path
    labels: dict[str, int]
    labels_problem: str | None
    rows: list[VersionRow]
    metric_labels: list[tuple[str, str]]
    promotions: list[dict[str, Any]] | None  # None: no promotions.jsonl yet
    promotions_problem: str | None = None
    bad_promotion_lines: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def models_root(model_path: Path) -> Path:
    """The models directory: `model_path` itself, or its parent when it is one version directory."""
    return model_path.parent if versions.is_version_dir(model_path) else model_path


def read_labels(models: Path) -> tuple[dict[str, int], str | None]:
    """`labels.json` as {label: version}; ({}, None) when absent, ({}, reason) when invalid."""
    try:
        labels = versions.read_labels(models)
    except ModelError as exc:
        return {}, f"{versions.LABELS} не читается: {' '.join(str(exc).split())}"
    return (labels.to_dict() if labels is not None else {}), None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def headline_keys(k: int) -> list[tuple[str, str]]:
    """(metric key, label) pairs of the headline metrics for cut-off `k`."""
    return [(key.format(k=k), label.format(k=k)) for key, label in HEADLINE]


def version_row(models: Path, number: int, roles: Sequence[str]) -> tuple[VersionRow, int]:
    """One version's column (and its metrics' cut-off k) from its manifest; a refused manifest is shown, not raised."""
    directory = models / str(number)
    has_report = (directory / REPORT).is_file()
    try:
        manifest = versions.read_manifest(directory)
    except ModelError as exc:
        problem = " ".join(str(exc).split())
        return VersionRow(number, tuple(roles), None, None, None, {}, None, None, has_report, problem=problem), 5
    metrics = manifest.get("metrics") or {}
    k = int(metrics.get("k") or 5)
    segment = ((metrics.get("segments") or {}).get("all") or {})
    per_method = segment.get("metrics") or {}
    network = per_method.get(metrics.get("network") or "network") or {}
    values = {key: _number(network.get(key)) for key, _ in headline_keys(k)}
    best = (metrics.get("best_baseline") or {}).get(f"ndcg@{k}")
    best_ndcg = _number((per_method.get(best) or {}).get(f"ndcg@{k}")) if best else None
    data = manifest.get("data") or {}
    validation = data.get("validation") or {}
    split = data.get("split") or {}
    row = VersionRow(
        number=number,
        roles=tuple(roles),
        created_at=manifest.created_at,
        episodes=validation.get("episodes") if isinstance(validation.get("episodes"), int) else None,
        test_episodes=split.get("test_episodes") if isinstance(split.get("test_episodes"), int) else None,
        metrics=values,
        best_baseline=str(best) if best else None,
        best_baseline_ndcg=best_ndcg,
        has_report=has_report,
    )
    return row, k


def overview(model_path: Path, served: int | None, refused: Mapping[int, str] | None = None) -> Overview:
    """Stable, previous and the newest candidates side by side, plus the promotion log. `refused`:
    versions the service would not load, with why (their column says so: their metrics are the
    manifest's, but nothing of them is served)."""
    refused = refused or {}
    models = models_root(model_path)
    numbers = versions.list_versions(models)
    labels, labels_problem = read_labels(models)
    stable, previous = labels.get("stable"), labels.get("previous")
    chosen: list[int] = [n for n in (stable, previous) if n is not None and n in numbers]
    candidates = [n for n in reversed(numbers) if n not in chosen][:MAX_CANDIDATES]
    if served is not None and served not in chosen and served not in candidates and served in numbers:
        candidates.insert(0, served)
    rows = []
    k = 5
    for number in [*chosen, *candidates]:
        roles = []
        if number == stable:
            roles.append("stable")
        if number == previous:
            roles.append("previous")
        if labels and number not in (stable, previous):
            roles.append("candidate")  # without labels.json the newest version serves: no candidates (v1)
        if number == served:
            roles.append("served")
        if number in refused:
            roles.append("refused")
        row, row_k = version_row(models, number, roles)
        if number in refused and row.problem is None:
            row = dataclasses.replace(row, problem=f"сервис не загрузил эту версию: {refused[number]}")
        if not rows:
            k = row_k
        rows.append(row)
    promotions, bad = versions.read_promotions(models, MAX_PROMOTIONS)
    return Overview(
        models=models,
        labels=labels,
        labels_problem=labels_problem,
        rows=rows,
        metric_labels=headline_keys(k),
        promotions=promotions,
        bad_promotion_lines=bad,
    )


def version_numbers(model_path: Path) -> list[int]:
    """The numbered versions of the models directory (or of the one version given)."""
    return versions.list_versions(models_root(model_path))


def report_version(
    model_path: Path, requested: int | None, rows: Iterable[VersionRow], served: int | None = None,
    refused: Iterable[int] = (),
) -> int | None:
    """Which version's report to show: the requested one if it has a report; else the served
    version's, else the newest that has one among those not refused (a tampered or unloadable
    candidate's report is not the default: it describes no model that answers), else the newest."""
    models = models_root(model_path)
    if requested is not None:
        return requested if (models / str(requested) / REPORT).is_file() else None
    bad = set(refused) | {r.number for r in rows if r.problem}
    if served is not None and served not in bad and (models / str(served) / REPORT).is_file():
        return served
    with_report = [n for n in reversed(versions.list_versions(models)) if (models / str(n) / REPORT).is_file()]
    good = [n for n in with_report if n not in bad]
    return (good or with_report or [None])[0]


def refused_reason(rows: Iterable[VersionRow], refused: Mapping[int, str], number: int) -> str | None:
    """Why version `number` is not served (its manifest is refused, or the service would not load it), or None."""
    row = next((r for r in rows if r.number == number), None)
    if row is not None and row.problem:
        return row.problem
    return f"сервис не загрузил эту версию: {refused[number]}" if number in refused else None


def render_report(model_path: Path, number: int, chart_url: str) -> str:
    """`report.md` of version `number` as HTML (raw HTML escaped), image links pointing at `chart_url`.

    `chart_url` is a format string with `{version}` and `{name}`. Images that are not a version's
    chart file (another directory, another kind of file, an absolute URL) are dropped.
    """
    path = models_root(model_path) / str(number) / REPORT
    text = path.read_text(encoding="utf-8", errors="replace")
    tokens = _markdown.parse(text)
    for token in tokens:
        style = token.attrGet("style")
        if style:  # table alignment: a class instead of an inline style, which the pages' CSP forbids
            token.attrs.pop("style", None)
            align = str(style).removeprefix("text-align:").strip()
            if align in ("left", "right", "center"):
                token.attrSet("class", f"align-{align}")
        if token.children:
            token.children = [child for child in token.children if _chart_image(child, number, chart_url)]
    return _markdown.renderer.render(tokens, _markdown.options, {})


def _chart_image(token: Token, number: int, chart_url: str) -> bool:
    """Rewrite an image token to the chart route; False to drop an image that is not a chart (others pass)."""
    if token.type != "image":
        return True
    src = str(token.attrGet("src") or "")
    if not CHART_NAME.match(src):
        return False
    token.attrSet("src", chart_url.format(version=number, name=src))
    return True


def chart_path(model_path: Path, number: int, name: str) -> Path | None:
    """The chart file `name` of version `number`, or None unless it is a `report_*.png` inside that directory."""
    if not CHART_NAME.match(name):
        return None
    directory = models_root(model_path) / str(number)
    path = directory / name
    try:
        resolved = path.resolve(strict=True)
        if resolved.parent != directory.resolve(strict=True) or not resolved.is_file():
            return None
    except OSError:
        return None
    return resolved


def feedback_summary(
    rows: Iterable[Mapping[str, Any]], names: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Per characteristic: feedback count and share positive, most answered first.

    `rows` are feedback rows (at least `characteristic` and `outcome`); `names` maps codes to
    dictionary names (a code not in it is shown as its code).
    """
    counts: dict[str, list[int]] = {}
    for row in rows:
        code = str(row.get("characteristic") or "")
        if not code:
            continue
        cell = counts.setdefault(code, [0, 0])
        cell[0] += 1
        cell[1] += row.get("outcome") == "positive"
    summary = [
        {"characteristic": code, "name": names.get(code, code), "count": n, "positive": pos, "share": pos / n}
        for code, (n, pos) in counts.items()
    ]
    summary.sort(key=lambda item: (-item["count"], item["characteristic"]))
    return summary


def training_unknown_codes(manifest: Any) -> dict[str, int]:
    """Unknown-code rows per column in the training data of a version (its validation report's warnings).

    `manifest`: a `needs_rec.versions.Manifest` or its JSON object (anything with `.get`).
    """
    validation = ((manifest.get("data") or {}).get("validation")) or {}
    found: dict[str, int] = {}
    for warning in validation.get("warnings") or ():
        if isinstance(warning, dict) and warning.get("kind") == "unknown_code":
            column = str(warning.get("column") or "?")
            count = warning.get("count")
            found[column] = found.get(column, 0) + (int(count) if isinstance(count, int) else 0)
    return found
