"""Segments, per-segment metrics, gain curves and the side-by-side comparison."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from needs_rec import metrics, thresholds
from needs_rec.config import ThresholdConfig
from needs_rec.evaluation import (
    Comparison,
    compare_methods,
    evaluate_segments,
    format_table,
    gain_curve,
    hit_rate_at_k,
    segments_for,
)

CONFIG = ThresholdConfig(min_positives=3)


def test_segments_for_hand_made():
    stages = np.array(["lead", "deal", "lead", "meet"])
    cold = np.array([True, False, False, False])
    masks = segments_for(stages, ["lead", "meet", "deal", "won"], cold)
    assert list(masks) == ["all", "stage:lead", "stage:meet", "stage:deal", "stage:won", "cold_start", "returning"]
    assert masks["all"].tolist() == [True] * 4
    assert masks["stage:lead"].tolist() == [True, False, True, False]
    assert masks["stage:deal"].tolist() == [False, True, False, False]
    assert not masks["stage:won"].any()
    assert masks["cold_start"].tolist() == [True, False, False, False]
    assert masks["returning"].tolist() == [False, True, True, True]


def test_segments_for_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="equal length"):
        segments_for(np.array(["a", "b"]), ["a"], np.array([True]))


def test_hit_rate_hand_made():
    y = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 0]])
    p = np.array([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1], [0.2, 0.1, 0.0]])
    # row 0: top-1 is label 0, a positive; row 1: top-1 is label 0, not positive; row 2 has no positive
    assert hit_rate_at_k(y, p, k=1) == 0.5
    assert hit_rate_at_k(y, p, k=3) == 1.0
    assert math.isnan(hit_rate_at_k(np.zeros((2, 3)), p[:2], k=1))


def test_evaluate_segments_matches_metrics_on_each_subset_and_skips_empty():
    y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    p = np.array([[0.9, 0.2, 0.1], [0.8, 0.1, 0.3], [0.1, 0.2, 0.7], [0.6, 0.5, 0.4]])
    s = p >= 0.5
    segments = {
        "all": np.ones(4, dtype=bool),
        "first_two": np.array([True, True, False, False]),
        "none": np.zeros(4, dtype=bool),
    }
    result = evaluate_segments(y, p, s, segments, k=1)
    assert list(result) == ["all", "first_two"]
    assert result["first_two"] == {**metrics.evaluate(y[:2], p[:2], s[:2], k=1), "hit@1": 0.5}
    assert result["first_two"]["precision@1"] == 0.5  # row 0 hit, row 1 miss
    assert result["all"]["n"] == 4.0
    assert result["all"]["hit@1"] == 0.75


def test_evaluate_segments_rejects_a_wrong_mask():
    y = np.zeros((3, 2))
    with pytest.raises(ValueError, match="segment 'x': the mask must be a boolean array of length 3"):
        evaluate_segments(y, y, y.astype(bool), {"x": np.array([1, 0, 1])})


def test_gain_curve_perfect_constant_and_ties():
    y = np.array([[1, 0], [0, 0]])  # 1 positive in 4 cells
    grid = np.array([0.0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(gain_curve(y, np.array([[0.9, 0.1], [0.2, 0.3]]), grid), [0, 1, 1, 1])
    np.testing.assert_allclose(gain_curve(y, np.full((2, 2), 0.5), grid), grid)  # one run of ties = diagonal
    worst = gain_curve(y, np.array([[0.0, 0.9], [0.8, 0.7]]), grid)
    np.testing.assert_allclose(worst, [0, 0, 0, 1])


def _data(seed: int = 0, n: int = 160, labels: int = 10):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.02, 0.6, size=(1, labels)) * rng.uniform(0.2, 1.6, size=(n, labels))
    truth = np.clip(truth, 0, 1)
    stages = rng.choice(["lead", "meet", "deal"], n)
    cold = rng.random(n) < 0.3
    y_val = (rng.random((n, labels)) < truth).astype(np.uint8)
    y_test = (rng.random((n, labels)) < truth).astype(np.uint8)
    popularity = np.tile(y_val.mean(axis=0), (n, 1))
    noise = rng.random((n, labels))
    return truth, y_val, y_test, popularity, noise, segments_for(stages, ["lead", "meet", "deal"], cold)


def test_compare_methods_quiet_when_the_network_wins():
    truth, y_val, y_test, popularity, _, segments = _data()
    comparison = compare_methods(
        y_val,
        {"popularity": popularity, "network": truth},
        y_test,
        {"popularity": popularity, "network": truth},
        CONFIG,
        segments,
    )
    assert comparison.methods == ["network", "popularity"]  # the network first
    assert comparison.best_baseline() == "popularity"
    assert comparison.value("network", "ndcg@5") > comparison.value("popularity", "ndcg@5")
    assert comparison.warnings() == []
    assert set(comparison.results) == set(segments)
    assert comparison.sizes["all"] == len(y_test)
    np.testing.assert_array_equal(
        comparison.thresholds["popularity"], thresholds.tune_thresholds(y_val, popularity, CONFIG)
    )


def test_compare_methods_warns_when_a_baseline_beats_the_network():
    truth, y_val, y_test, popularity, noise, segments = _data()
    probas = {"network": noise, "popularity": popularity, "oracle": truth}
    comparison = compare_methods(y_val, probas, y_test, probas, CONFIG, segments)
    assert comparison.methods == ["network", "popularity", "oracle"]
    assert comparison.baselines == ["popularity"]
    warnings = comparison.warnings()
    assert any("does not beat the best baseline on ndcg@5" in w and "popularity" in w for w in warnings)
    assert all(f"over all {len(y_test)} test episodes" in w for w in warnings)


def test_compare_methods_same_tuner_and_top_k_cap():
    truth, y_val, y_test, popularity, _noise, segments = _data()
    capped = ThresholdConfig(min_positives=3, top_k=1, strategy="global")
    probas = {"network": truth, "popularity": popularity}
    comparison = compare_methods(y_val, probas, y_test, probas, capped, {"all": segments["all"]})
    for method, proba in probas.items():
        cuts = thresholds.tune_thresholds(y_val, proba, capped)
        np.testing.assert_array_equal(comparison.thresholds[method], cuts)
        selected = thresholds.select(proba, cuts, top_k=1)
        assert selected.sum(axis=1).max() <= 1
        expected = metrics.evaluate(y_test, proba, selected)["micro_f1"]
        assert comparison.value(method, "micro_f1") == pytest.approx(expected)


def test_compare_methods_requires_the_same_methods_and_shapes():
    truth, y_val, y_test, popularity, _, _segments = _data()
    with pytest.raises(ValueError, match=r"only in test: \['popularity'\]"):
        compare_methods(y_val, {"network": truth}, y_test, {"network": truth, "popularity": popularity}, CONFIG, {})
    with pytest.raises(ValueError, match="network: test probabilities have shape"):
        compare_methods(y_val, {"network": truth}, y_test, {"network": truth[:5]}, CONFIG, {})


def _comparison(values: dict[str, dict[str, float]]) -> Comparison:
    return Comparison(
        methods=list(values),
        results={"all": values},
        sizes={"all": 10},
        thresholds={m: np.array([0.5, np.nan]) for m in values},
    )


def test_best_baseline_skips_network_and_oracle_and_knows_lower_is_better():
    comparison = _comparison(
        {
            "network": {"ndcg@5": 0.9, "micro_f1": 0.5, "log_loss": 0.1},
            "a": {"ndcg@5": 0.4, "micro_f1": 0.6, "log_loss": 0.3},
            "b": {"ndcg@5": 0.5, "micro_f1": math.nan, "log_loss": 0.2},
            "oracle": {"ndcg@5": 0.99, "micro_f1": 0.9, "log_loss": 0.01},
        }
    )
    assert comparison.best_baseline("ndcg@5") == "b"
    assert comparison.best_baseline("micro_f1") == "a"  # NaN never wins
    assert comparison.best_baseline("log_loss") == "b"
    warnings = comparison.warnings()
    assert len(warnings) == 1 and "micro_f1" in warnings[0] and "network 0.5000 vs a 0.6000" in warnings[0]


def test_a_tie_is_not_a_win():
    comparison = _comparison({"network": {"ndcg@5": 0.5, "micro_f1": 0.7}, "a": {"ndcg@5": 0.5, "micro_f1": 0.1}})
    assert [w.split(" over ")[0] for w in comparison.warnings()] == [
        "The network does not beat the best baseline on ndcg@5"
    ]


def test_to_dict_is_strict_json():
    comparison = _comparison({"network": {"ndcg@5": 0.9, "micro_f1": math.nan}, "a": {"ndcg@5": 0.4, "micro_f1": 0.1}})
    data = json.loads(json.dumps(comparison.to_dict(), allow_nan=False))
    assert data["segments"]["all"]["n"] == 10
    assert data["segments"]["all"]["metrics"]["network"]["micro_f1"] is None
    assert data["thresholds"]["a"] == [0.5, None]
    assert data["best_baseline"] == {"ndcg@5": "a", "micro_f1": "a"}
    assert data["warnings"] == comparison.warnings() != []


def test_format_table_lists_every_method_and_metric():
    truth, y_val, y_test, popularity, noise, segments = _data()
    probas = {"network": truth, "popularity": popularity, "random": noise, "oracle": truth}
    comparison = compare_methods(y_val, probas, y_test, probas, CONFIG, segments)
    table = format_table(comparison, segments=("all", "stage:meet", "stage:won"))
    blocks = table.strip().split("\n\n")
    assert blocks[0].startswith(f"all (n={len(y_test)})")
    assert blocks[1].startswith("stage:meet (n=")
    assert blocks[2] == "stage:won: no test episodes"
    header = blocks[0].splitlines()[1]
    for metric in comparison.metric_names():
        assert metric in header
    assert "ndcg@5" in header and "hit@5" in header and " n " not in header
    rows = [line.split()[0] for line in blocks[0].splitlines()[2:]]
    assert rows == ["network", "popularity", "random", "oracle"]
    # every row has one cell per metric, and the columns line up
    lines = blocks[0].splitlines()[1:]
    assert len({len(line.rstrip("*")) for line in lines}) <= 2
    assert all(len(line.split()) == len(comparison.metric_names()) + 1 for line in lines)


def test_format_table_marks_the_best_non_oracle_value():
    comparison = _comparison(
        {
            "network": {"ndcg@5": 0.7, "log_loss": 0.5},
            "a": {"ndcg@5": 0.4, "log_loss": 0.3},
            "oracle": {"ndcg@5": 0.99, "log_loss": 0.1},
        }
    )
    lines = format_table(comparison).splitlines()
    network, baseline, oracle = lines[2], lines[3], lines[4]
    assert "0.700*" in network and "0.500*" not in network
    assert "0.300*" in baseline
    assert "*" not in oracle


def test_format_table_stars_log_loss_only_among_figures_on_the_same_cells():
    """A presented-cells log-loss (0.5) and an every-cell one (0.17) are on different cells: each column
    says which cells, and the star goes to the best of each column, never across them."""
    from needs_rec.evaluation import EPISODE, PRESENTED

    comparison = _comparison(
        {
            "network": {"ndcg@5": 0.7, "log_loss": 0.535},
            "popularity": {"ndcg@5": 0.4, "log_loss": 0.172},
            "logistic": {"ndcg@5": 0.5, "log_loss": 0.642},
            "plain_mlp": {"ndcg@5": 0.3, "log_loss": 0.173},
        }
    )
    comparison.log_loss_cells = {"network": PRESENTED, "logistic": PRESENTED, "popularity": EPISODE,
                                 "plain_mlp": EPISODE}  # fmt: skip
    lines = format_table(comparison).splitlines()
    assert lines[1].split() == ["method", "ndcg@5", "log_loss(presented)", "log_loss(all)"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows["network"] == ["0.700*", "0.535*", "·"]
    assert rows["logistic"] == ["0.500", "0.642", "·"]
    assert rows["popularity"] == ["0.400", "·", "0.172*"]
    assert rows["plain_mlp"] == ["0.300", "·", "0.173"]


def test_log_loss_is_counted_on_the_cells_each_probability_means() -> None:
    """A 'resonates when presented' probability is scored on presented cells, an episode probability on all."""
    from needs_rec.evaluation import EPISODE, PRESENTED, compare_methods, presented_log_loss, segments_for

    y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]])
    presented = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 0, 1]], dtype=bool)
    when_presented = np.array([[0.8, 0.3, 0.9], [0.5, 0.7, 0.2], [0.6, 0.5, 0.1], [0.2, 0.5, 0.6]])
    expected = presented_log_loss(y, when_presented, presented)
    cells = when_presented[presented]
    truth = y[presented]
    assert expected == pytest.approx(float(-(truth * np.log(cells) + (1 - truth) * np.log(1 - cells)).mean()))
    segments = segments_for(np.array(["a"] * 4), ["a"], np.zeros(4, dtype=bool))
    comparison = compare_methods(
        y, {"network": when_presented, "popularity": np.full((4, 3), 0.3)}, y,
        {"network": when_presented, "popularity": np.full((4, 3), 0.3)}, CONFIG, segments,
        presented_test=presented, meanings={"network": PRESENTED, "popularity": EPISODE},
    )  # fmt: skip
    assert comparison.value("network", "log_loss") == pytest.approx(expected)
    assert comparison.value("popularity", "log_loss") == pytest.approx(metrics.log_loss(y, np.full((4, 3), 0.3)))
    assert comparison.log_loss_cells == {"network": PRESENTED, "popularity": EPISODE}
    assert comparison.to_dict()["log_loss_cells"]["network"] == PRESENTED


def test_card_precision_per_cap_hand_computed() -> None:
    from needs_rec.evaluation import card_precision

    y = np.array([[1, 0, 1, 0], [0, 0, 0, 1]])
    p = np.array([[0.9, 0.8, 0.7, 0.1], [0.9, 0.6, 0.2, 0.5]])
    cuts = np.full(4, 0.55)
    card = card_precision(y, p, cuts, ThresholdConfig(top_k=2, min_selected=1), caps=(1, 2))
    by_cap = {row["cap"]: row for row in card["caps"]}
    # cap 1: row 1 shows ch0 (hit), row 2 shows ch0 (miss) → precision 1/2, hit rate 1/2
    assert by_cap[1]["shown"] == 1.0 and by_cap[1]["precision"] == 0.5 and by_cap[1]["hit_rate"] == 0.5
    # cap 2: row 1 ch0, ch1; row 2 ch0, ch1 → 1 hit of 4
    assert by_cap[2]["precision"] == 0.25 and by_cap[2]["shown"] == 2.0
    # no cap: row 1 passes ch0-ch2 (2 hits), row 2 ch0, ch1 → 2 of 5
    assert by_cap[None]["precision"] == pytest.approx(0.4)
    assert card["configured"]["precision"] == 0.25 and card["top_k"] == 2
    # with explicit negatives only presented shown items count
    presented = np.array([[1, 0, 1, 1], [1, 1, 0, 1]], dtype=bool)
    explicit = card_precision(y, p, cuts, ThresholdConfig(top_k=2, min_selected=1), presented=presented, caps=(2,))
    assert explicit["caps"][0]["precision"] == pytest.approx(1 / 3)  # shown & presented: r1 ch0; r2 ch0, ch1
