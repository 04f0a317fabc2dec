"""needs_rec.thresholds: F-beta cuts on hand-computed cases, fallbacks, top-k and floors."""

from __future__ import annotations

import numpy as np
import pytest

from needs_rec.config import ThresholdConfig
from needs_rec.thresholds import NEVER, best_cuts, select, select_row, select_with, shrink, tune_thresholds


def brute_force_cut(y: np.ndarray, p: np.ndarray, beta: float) -> float:
    """Best F-beta over every distinct probability used as `p >= cut` (highest cut wins ties)."""
    best, best_f = None, -1.0
    for cut in sorted(set(p.tolist()), reverse=True):
        chosen = p >= cut
        tp = float((chosen & (y == 1)).sum())
        f = (1 + beta**2) * tp / (beta**2 * y.sum() + chosen.sum())
        if f > best_f:
            best, best_f = cut, f
    assert best is not None
    return best


def test_hand_computed_cut_with_ties() -> None:
    # Sorted: .9(+) .8(+) .8(-) .4(+) .1(-). Cuts: .9 → F1 2/4; .8 (both tied rows) → 4/6;
    # .4 → 6/7 (best); .1 → 6/8. The cut lies halfway between .4 and the next value .1.
    y = np.array([[1], [1], [0], [1], [0]])
    p = np.array([[0.9], [0.8], [0.8], [0.4], [0.1]])
    assert best_cuts(y, p, 1.0)[0] == pytest.approx(0.25)


def test_ties_are_never_split() -> None:
    # A cut between the two tied 0.7 rows would give F1 = 1; a real cut takes both or neither.
    y = np.array([[1], [0], [0]])
    p = np.array([[0.7], [0.7], [0.2]])
    cut = best_cuts(y, p, 1.0)[0]
    chosen = p[:, 0] >= cut
    assert chosen.tolist() == [True, True, False]
    assert cut == pytest.approx(0.45)


def test_beta_moves_the_cut() -> None:
    # F0.5 favours precision (cut above .6: only the sure positive), F2 favours recall (take all).
    y = np.array([[1], [0], [1], [0], [1]])
    p = np.array([[0.9], [0.6], [0.5], [0.4], [0.3]])
    f05, f1, f2 = (best_cuts(y, p, beta)[0] for beta in (0.5, 1.0, 2.0))
    assert f05 == pytest.approx(0.75)
    assert f2 == pytest.approx(0.3)
    assert f05 > f1 >= f2


def test_vectorised_cuts_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random((200, 7)) < 0.3).astype(int)
    p = np.round(np.clip(y * 0.25 + rng.random((200, 7)) * 0.8, 0, 1), 2)  # rounding makes ties
    for beta in (0.5, 1.0, 2.0):
        cuts = best_cuts(y, p, beta)
        for c in range(7):
            expected = brute_force_cut(y[:, c], p[:, c], beta)
            assert (p[:, c] >= cuts[c]).tolist() == (p[:, c] >= expected).tolist()


def test_label_without_positives_gets_fallback() -> None:
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    p = np.array([[0.9, 0.8], [0.2, 0.1], [0.7, 0.3], [0.4, 0.6]])
    fixed = tune_thresholds(y, p, ThresholdConfig(min_positives=1, fallback=0.35, shrinkage=0.0))
    assert fixed[1] == 0.35
    assert fixed[0] == pytest.approx(0.55)  # between .7 and .4
    pooled = tune_thresholds(y, p, ThresholdConfig(min_positives=1, fallback="global"))
    assert pooled[1] == pytest.approx(best_cuts(y.reshape(-1, 1), p.reshape(-1, 1))[0])


def test_min_positives_sends_rare_labels_to_fallback() -> None:
    y = np.array([[1, 1], [1, 0], [1, 0], [0, 0]])
    p = np.array([[0.9, 0.9], [0.8, 0.2], [0.7, 0.1], [0.1, 0.3]])
    cuts = tune_thresholds(y, p, ThresholdConfig(min_positives=2, fallback=0.5, shrinkage=0.0))
    assert cuts[1] == 0.5
    assert cuts[0] == pytest.approx(0.4)


def test_no_positive_anywhere_selects_nothing() -> None:
    y = np.zeros((3, 2))
    p = np.array([[1.0, 0.5], [0.2, 0.1], [0.3, 0.9]], dtype=np.float32)
    cuts = tune_thresholds(y, p, ThresholdConfig(min_positives=1))
    assert np.all(cuts == NEVER)
    assert not select(p, cuts).any()


def test_global_strategy_gives_one_pooled_cut() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((50, 4)) < 0.4).astype(int)
    p = rng.random((50, 4))
    cuts = tune_thresholds(y, p, ThresholdConfig(strategy="global"))
    assert np.all(cuts == cuts[0])


def test_select_threshold_and_top_k() -> None:
    p = np.array([[0.9, 0.2, 0.8, 0.7], [0.1, 0.3, 0.2, 0.05]])
    assert select(p, np.full(4, 0.5)).astype(int).tolist() == [[1, 0, 1, 1], [0, 0, 0, 0]]
    assert select(p, np.full(4, 0.5), top_k=2).astype(int).tolist() == [[1, 0, 1, 0], [0, 0, 0, 0]]
    per_label = np.array([0.95, 0.1, 0.5, 0.5])
    assert select(p, per_label).astype(int).tolist() == [[0, 1, 1, 1], [0, 1, 0, 0]]


def test_top_k_ties_go_to_lower_label_index() -> None:
    p = np.array([[0.5, 0.6, 0.6, 0.6]])
    assert select(p, 0.0, top_k=2).astype(int).tolist() == [[0, 1, 1, 0]]


def test_min_selected_fills_empty_rows_only() -> None:
    p = np.array([[0.9, 0.2, 0.8], [0.1, 0.3, 0.2]])
    config = ThresholdConfig(min_selected=1)
    assert select_with(p, np.full(3, 0.5), config).astype(int).tolist() == [[1, 0, 1], [0, 1, 0]]


def test_select_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="thresholds must have shape"):
        select(np.zeros((2, 3)), np.zeros(4))
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        select(np.zeros((2, 3)), np.zeros(3), top_k=0)


def test_top_k_cap_keeps_the_most_probable_of_the_passing_cells() -> None:
    proba = np.array([[0.9, 0.8, 0.7, 0.6]])
    thresholds = np.array([0.95, 0.5, 0.5, 0.5])  # the most probable label fails its own cut
    assert select(proba, thresholds, top_k=2).tolist() == [[False, True, True, False]]


def test_shrink_pulls_cuts_with_few_positives_towards_the_pooled_cut() -> None:
    cuts = np.array([0.05, 0.05, 0.6, NEVER])
    positives = np.array([5, 500, 20, 0])
    out = shrink(cuts, positives, pooled=0.3, strength=20)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    # 5 positives: keeps 5/25 of its own log-odds; 500: 500/520 — nearly its own cut
    assert logit(out[0]) == pytest.approx(0.2 * logit(0.05) + 0.8 * logit(0.3))
    assert 0.05 < out[1] < 0.06
    assert out[0] > out[1]  # the rare label moved further towards 0.3
    assert 0.3 < out[2] < 0.6
    assert out[3] == NEVER  # a label without positives still selects nothing
    np.testing.assert_array_equal(shrink(cuts, positives, 0.3, 0.0), cuts)


def test_tuned_cuts_of_rare_labels_are_shrunk(tmp_path) -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((3000, 2)) < [0.3, 0.006]).astype(int)  # label 1: ~18 positives
    p = np.clip(y * 0.3 + rng.random((3000, 2)) * 0.5, 0, 1)
    plain = tune_thresholds(y, p, ThresholdConfig(shrinkage=0.0))
    shrunk = tune_thresholds(y, p, ThresholdConfig(shrinkage=20.0))
    pooled = tune_thresholds(y, p, ThresholdConfig(strategy="global"))[0]
    assert abs(shrunk[1] - pooled) < abs(plain[1] - pooled)
    assert abs(shrunk[0] - plain[0]) < abs(shrunk[1] - plain[1])  # the frequent label barely moves


def test_select_never_picks_what_the_stage_does_not_offer() -> None:
    p = np.array([[0.9, 0.8, 0.1, 0.05], [0.2, 0.1, 0.05, 0.01]])
    offered = np.array([[True, False, True, True], [False, False, True, True]])
    chosen = select(p, np.full(4, 0.5), top_k=2, min_selected=2, offered=offered)
    assert chosen.tolist() == [[True, False, True, False], [False, False, True, True]]
    assert not (chosen & ~offered).any()


def test_the_floor_leaves_a_row_that_has_enough_as_it_is() -> None:
    # the most probable label misses its own cut; two others pass: min_selected=1 adds nothing
    proba = np.array([[0.9, 0.4, 0.3, 0.1], [0.9, 0.4, 0.3, 0.1]])
    thresholds = np.array([0.95, 0.2, 0.2, 0.5])
    assert select(proba, thresholds, top_k=2, min_selected=1).astype(int).tolist() == [[0, 1, 1, 0]] * 2
    # a row below the floor is topped up with its most probable labels, never past the cap
    assert select(proba[:1], np.full(4, 0.99), top_k=2, min_selected=3).astype(int).tolist() == [[1, 1, 0, 0]]


def test_select_row_is_the_rule_of_select_for_one_row() -> None:
    rng = np.random.default_rng(5)
    for case in range(300):
        n = int(rng.integers(1, 15))
        p = np.round(rng.random(n), 1)  # coarse values: many ties
        t = np.round(rng.random(n) * 0.8, 1)
        offered = rng.random(n) < 0.7 if case % 3 else None
        top_k = [None, 1, 2, 4][case % 4]
        floor = int(rng.integers(0, 4))
        picked = select_row(p, t, top_k, floor, offered)
        many = np.vstack([p, p[::-1]])  # two rows: select's array path
        mask = select(many, t, top_k=top_k, min_selected=floor, offered=offered)[0]
        assert sorted(picked) == np.flatnonzero(mask).tolist()
        assert [p[j] for j in picked] == sorted((p[j] for j in picked), reverse=True)  # most probable first
    assert select_row(np.array([0.5, np.nan]), np.zeros(2)) is None  # non-finite: the array path decides
    assert select(np.array([[0.5, np.nan]]), np.zeros(2)).tolist() == [[True, False]]


def test_one_row_and_many_rows_select_alike() -> None:
    # the HTTP answer selects one row at a time, batch and evaluation many: the same cells either way
    rng = np.random.default_rng(3)
    proba = np.round(rng.random((400, 12)), 1)  # coarse values: many ties
    thresholds = np.round(rng.random(12) * 0.8, 1)
    offered = rng.random(12) < 0.8
    for top_k, floor in [(None, 0), (3, 1), (2, 4), (12, 2)]:
        many = select(proba, thresholds, top_k=top_k, min_selected=floor, offered=offered)
        ones = np.vstack([select(row[None], thresholds, top_k=top_k, min_selected=floor, offered=offered)
                          for row in proba])  # fmt: skip
        np.testing.assert_array_equal(many, ones)
        assert (many.sum(axis=1) <= (top_k or 12)).all()
        assert not (many & ~offered).any()
