"""The model report: files written atomically, valid PNGs, every stage mentioned, aggregates only."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from needs_rec.config import ThresholdConfig
from needs_rec.evaluation import compare_methods, segments_for
from needs_rec.thresholds import select
from training.report import CHARTS, REPORT_FILE, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STAGE_NAMES = {"lead": "Первый контакт", "meet": "Встреча", "deal": "Сделка", "won": "Closed won"}
CONFIG = ThresholdConfig(min_positives=3)


def _inputs(network_good: bool = True) -> dict:
    """A fresh (shallow) copy of the cached inputs, so a test may replace entries."""
    return dict(_cached_inputs(network_good))


@functools.cache
def _cached_inputs(network_good: bool, seed: int = 0, n: int = 150, labels: int = 24) -> dict:
    rng = np.random.default_rng(seed)
    truth = np.clip(rng.uniform(0.02, 0.5, size=(1, labels)) * rng.uniform(0.2, 1.8, size=(n, labels)), 0, 1)
    y_val = (rng.random((n, labels)) < truth).astype(np.uint8)
    y_test = (rng.random((n, labels)) < truth).astype(np.uint8)
    stages = rng.choice(["lead", "meet", "deal"], n)  # nobody at "won" in test
    segments = segments_for(stages, list(STAGE_NAMES), rng.random(n) < 0.3)
    popularity = np.tile(y_val.mean(axis=0), (n, 1))
    network = truth if network_good else rng.random((n, labels))
    probas = {"network": network, "popularity": popularity, "group_popularity": np.clip(popularity * 1.1, 0, 1)}
    comparison = compare_methods(y_val, probas, y_test, probas, CONFIG, segments)
    codes = [f"c{i:02d}" for i in range(labels)]
    return {
        "title": "needs_rec — version 7",
        "comparison": comparison,
        "y_test": y_test,
        "proba_test": network,
        "selected_test": select(network, comparison.thresholds["network"]),
        "stages_test": stages,
        "stage_names": STAGE_NAMES,
        "characteristic_codes": codes,
        "characteristic_names": [f"Характеристика {i}" for i in range(labels)],
        "extra_summary": {
            "episodes": {"train": 1200, "validation": 150, "test": 150},
            "organizations": 87,
            "cold_start_share": 0.3,
        },
    }


def test_writes_report_and_valid_pngs(tmp_path):
    path = write_report(tmp_path, **_inputs())
    assert path == tmp_path / REPORT_FILE
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# needs_rec — version 7\n")
    for chart in CHARTS:
        data = (tmp_path / chart).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
        assert f"]({chart})" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([REPORT_FILE, *CHARTS])  # no temp files left


def test_report_mentions_every_stage_and_the_rule_of_thumb(tmp_path):
    text = write_report(tmp_path, **_inputs()).read_text(encoding="utf-8")
    for code, name in STAGE_NAMES.items():
        assert name in text and code in text
    assert "| Closed won | won | 0 | no test conversations |" in text
    assert "most popular for the stage and position" in text
    assert "```text\nall (n=150)" in text
    assert "Caution" not in text  # the network is the truth here: it beats the baselines


def test_report_cautions_when_a_baseline_wins(tmp_path):
    text = write_report(tmp_path, **_inputs(network_good=False)).read_text(encoding="utf-8")
    assert "**Caution:** The network does not beat the best baseline on ndcg@5" in text
    assert "the model is not ahead of it" in text


def test_report_shows_numeric_summary_only(tmp_path):
    inputs = _inputs()
    inputs["extra_summary"] = {
        **inputs["extra_summary"],
        "email": "ivan.petrov@example.com",
        "full_name": 42,  # a personal-data key, even with a number, stays out
        "top_contact": "Иван Петров",
        "contacts": {"phone": "+7 900 000-00-00", "count": 311, "is_sample": True},
        "list_of_names": ["Мария Иванова"],
    }
    text = write_report(tmp_path, **inputs).read_text(encoding="utf-8")
    for secret in ("ivan.petrov", "Иван Петров", "+7 900", "Мария", "full_name", "top_contact", "is_sample"):
        assert secret not in text
    assert "| episodes / train | 1200 |" in text
    assert "| organizations | 87 |" in text
    assert "| cold_start_share | 0.3 |" in text
    assert "| contacts / count | 311 |" in text


def test_report_is_deterministic(tmp_path):
    inputs = _inputs()
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    write_report(first, **inputs)
    write_report(second, **inputs)
    for name in (REPORT_FILE, *CHARTS):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_characteristic_names_by_mapping_and_best_worst_lists(tmp_path):
    inputs = _inputs()
    codes = inputs["characteristic_codes"]
    inputs["characteristic_names"] = {code: f"Name of {code}" for code in codes[::2]}  # odd codes unnamed
    text = write_report(tmp_path, **inputs).read_text(encoding="utf-8")
    section = text.split("## Characteristics\n")[1].split("## Data summary")[0]
    assert "**Best ranked**" in section and "**Worst ranked**" in section
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    shown = {row[1]: row[0].lstrip("| ") for row in rows if row[1] != "code"}
    assert len(shown) == 20  # 10 best + 10 worst, disjoint, out of 24
    for code, name in shown.items():
        assert name == (f"Name of {code}" if codes.index(code) % 2 == 0 else code)


def test_rejects_inconsistent_inputs(tmp_path):
    inputs = _inputs()
    with pytest.raises(ValueError, match="characteristic_codes has 3 codes"):
        write_report(tmp_path, **{**inputs, "characteristic_codes": ["a", "b", "c"]})
    with pytest.raises(ValueError, match="one stage code per test row"):
        write_report(tmp_path, **{**inputs, "stages_test": inputs["stages_test"][:3]})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(tmp_path / "missing", **inputs)
    assert list(tmp_path.iterdir()) == []


def test_few_characteristics_split_into_best_and_worst_halves():
    from types import SimpleNamespace

    from training.report import _ranked_characteristics

    auc = np.array([0.6, np.nan, 0.9, 0.5, 0.7, 0.8])
    top, bottom = _ranked_characteristics(SimpleNamespace(auc=auc))
    assert top == [2, 5, 4]  # best first
    assert bottom == [3, 0]  # worst first, the unscored label left out


def test_calibration_on_presented_cells_changes_the_chart_and_checks_the_shape(tmp_path):
    inputs = _inputs()
    y = np.asarray(inputs["y_test"])
    (tmp_path / "all").mkdir()
    (tmp_path / "shown").mkdir()
    write_report(tmp_path / "all", **inputs)
    presented = (y > 0) | (np.arange(y.size).reshape(y.shape) % 3 == 0)
    write_report(tmp_path / "shown", **inputs, presented_test=presented)
    chart = "report_calibration.png"
    assert (tmp_path / "all" / chart).read_bytes() != (tmp_path / "shown" / chart).read_bytes()
    with pytest.raises(ValueError, match="presented_test"):
        write_report(tmp_path / "shown", **inputs, presented_test=presented[:, :1])


def test_log_loss_columns_say_their_cells_and_star_only_like_with_like(tmp_path):
    """With explicit negatives the network's log-loss is on presented cells, popularity's on every cell:
    the report's table puts them in separate, named columns and the legend says so."""
    from needs_rec.evaluation import EPISODE, PRESENTED

    inputs = _inputs()
    y = np.asarray(inputs["y_test"])
    presented = (y > 0) | (np.arange(y.size).reshape(y.shape) % 3 == 0)
    probas = {"network": inputs["proba_test"], "popularity": np.tile(y.mean(axis=0), (len(y), 1))}
    segments = {"all": np.ones(len(y), dtype=bool)}
    inputs["comparison"] = compare_methods(
        y, probas, y, probas, CONFIG, segments, presented_test=presented,
        meanings={"network": PRESENTED, "popularity": EPISODE},
    )  # fmt: skip
    text = (write_report(tmp_path, **inputs, presented_test=presented)).read_text(encoding="utf-8")
    table = text[text.index("```text"):text.index("```", text.index("```text") + 3)]
    header = next(line for line in table.splitlines() if line.startswith("method"))
    assert "log_loss(presented)" in header and "log_loss(all)" in header
    rows = {line.split()[0]: line.split() for line in table.splitlines()[3:]}
    column = header.split().index("log_loss(presented)")
    assert rows["network"][column].endswith("*") and rows["popularity"][column] == "·"
    assert "`log_loss(presented)` — `network`" in text and "`log_loss(all)` — `popularity`" in text


def test_without_baselines_the_report_shows_the_model_alone_with_no_placeholders(tmp_path):
    """`--no-baselines`: the stage chart's caption read "the model vs —" and the per-stage table had
    "— NDCG@5" / "— precision@5" columns full of "—"."""
    inputs = _inputs()
    network = inputs["proba_test"]
    y = inputs["y_test"]
    segments = segments_for(inputs["stages_test"], list(STAGE_NAMES), np.zeros(len(y), dtype=bool))
    inputs["comparison"] = compare_methods(y, {"network": network}, y, {"network": network}, CONFIG, segments)
    text = write_report(tmp_path, **inputs).read_text(encoding="utf-8")
    assert "vs —" not in text and "| — NDCG" not in text and "— precision" not in text
    stages = text[text.index("## Per stage"):text.index("## Characteristics")]
    header = next(line for line in stages.splitlines() if line.startswith("| stage"))
    assert header == "| stage | code | test conversations | model NDCG@5 | model precision@5 |"
    rows = [line for line in stages.splitlines() if line.startswith("| ") and not line.startswith("| stage")]
    assert rows and all(line.count("|") == header.count("|") for line in rows)
    assert all("—" not in line for line in rows if "no test conversations" not in line)
    assert "at each funnel stage, for the model (no baselines were run)." in text
