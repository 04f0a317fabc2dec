"""bench/public_multilabel.py: threshold-rule choice, CSV layout, and a smoke run on a small slice."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = Path("/work/shared/data/external")


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("public_multilabel", ROOT / "bench" / "public_multilabel.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = load_bench()


def test_rule_choice_prefers_a_per_label_cut_when_labels_need_different_cuts() -> None:
    # Label 0 is positive iff p > 0.8, label 1 iff p > 0.2: one pooled cut cannot serve both.
    rng = np.random.default_rng(0)
    p = rng.random((400, 2))
    y = np.stack([p[:, 0] > 0.8, p[:, 1] > 0.2], axis=1).astype(int)
    name, score = bench.choose_rule(y, p)
    assert name.startswith("per_label")
    assert score == pytest.approx(2.0, abs=0.05)  # micro-F1 1 + example-F1 1 − Hamming 0


def test_apply_rule_selects_with_cuts_tuned_on_oof() -> None:
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    oof = np.array([[0.9, 0.2], [0.1, 0.7], [0.8, 0.1], [0.3, 0.9]])
    test = np.array([[0.95, 0.05], [0.05, 0.95]])
    assert bench.apply_rule("per_label f1", y, oof, test).astype(int).tolist() == [[1, 0], [0, 1]]


def test_write_csv_layout(tmp_path: Path) -> None:
    path = tmp_path / "d" / "m.csv"
    bench.write_csv(path, ["a", "b-c"], np.array([[0.25, 0.5]]), np.array([[True, False]]))
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["p_a", "p_b-c", "y_a", "y_b-c"]
    assert frame.iloc[0].tolist() == [0.25, 0.5, 1, 0]


def test_table_lists_methods_and_published_row() -> None:
    metrics = dict.fromkeys(bench.MULTILABEL_KEYS, 0.5)
    row = bench.Scored("needs_rec", np.zeros((1, 1)), np.zeros((1, 1), bool), metrics, "global f1", "", 1.0,
                       spread=dict.fromkeys(bench.MULTILABEL_KEYS, 0.01))  # fmt: skip
    table = bench.format_table("yeast", [row])
    assert "| needs_rec | 0.500±0.010 |" in table
    assert "| published (A), other split | 0.193 | 0.682 |" in table


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "emotions").is_dir(), reason="shared Mulan data not present")
def test_quick_run_writes_one_csv_per_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--quick", "--datasets", "emotions", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "### emotions" in out
    assert "published (A)" in out
    labels = ["amazed-suprised", "happy-pleased", "relaxing-calm", "quiet-still", "sad-lonely", "angry-aggresive"]
    expected_columns = [f"p_{n}" for n in labels] + [f"y_{n}" for n in labels]
    for method in ("needs_rec", "br_logreg", "br_random_forest", "knn", "mlp_sklearn"):
        frame = pd.read_csv(tmp_path / "emotions" / f"{method}.csv")
        assert list(frame.columns) == expected_columns
        assert len(frame) == bench.QUICK_TEST
        p = frame[expected_columns[:6]].to_numpy()
        assert np.all((p >= 0) & (p <= 1))
        assert set(np.unique(frame[expected_columns[6:]].to_numpy())) <= {0, 1}
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["datasets"][0]["rows"]
    assert rows[0]["name"].startswith("needs_rec")
    assert set(rows[0]["metrics"]) == set(bench.MULTILABEL_KEYS)
    assert len(results["datasets"][0]["per_seed"]) == 2


@pytest.mark.slow
def test_parallel_folds_give_the_same_probabilities() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    y = (x[:, :3] + rng.normal(size=(120, 3)) > 0).astype(np.float32)
    config = bench.NEEDS_REC_CANDIDATES["bn"]
    config = bench.dataclasses.replace(config, training=bench.dataclasses.replace(config.training, max_epochs=3))
    one = bench.fit_needs_rec(x, y, x[:10], config, seed=1, folds=3, workers=1)
    two = bench.fit_needs_rec(x, y, x[:10], config, seed=1, folds=3, workers=2)
    np.testing.assert_array_equal(one.oof, two.oof)
    np.testing.assert_array_equal(one.test, two.test)
    assert one.oof.min() > 0  # every row got an out-of-fold probability
