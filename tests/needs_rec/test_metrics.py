"""needs_rec.metrics: hand-computed cases and agreement with scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from needs_rec import metrics as M

# Three rows, four labels. Rankings (most probable first): row 0: 0,2,1,3; row 1: 3,1,0,2; row 2: 0,1,2,3.
Y = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]])
P = np.array([[0.9, 0.2, 0.5, 0.1], [0.3, 0.6, 0.2, 0.8], [0.4, 0.3, 0.2, 0.1]])
S = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 0, 0]], dtype=bool)


def test_ranking_metrics_hand_computed_and_skip_rows_without_positives() -> None:
    # Row 0: positives at ranks 1 and 4; row 1: positive at rank 2; row 2 has none (excluded).
    assert M.precision_at_k(Y, P, k=2) == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert M.recall_at_k(Y, P, k=2) == pytest.approx((1 / 2 + 1) / 2)
    assert M.mean_reciprocal_rank(Y, P) == pytest.approx((1 + 1 / 2) / 2)
    ndcg_row0 = (1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    ndcg_row1 = (1 / math.log2(3)) / 1
    assert M.ndcg_at_k(Y, P, k=4) == pytest.approx((ndcg_row0 + ndcg_row1) / 2)


def test_ndcg_matches_sklearn_on_rows_with_positives() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((40, 8)) < 0.3).astype(int)
    y[y.sum(axis=1) == 0, 0] = 1
    p = rng.random((40, 8))
    for k in (1, 3, 5):
        assert M.ndcg_at_k(y, p, k) == pytest.approx(skm.ndcg_score(y, p, k=k))


def test_no_positive_rows_give_nan() -> None:
    assert math.isnan(M.ndcg_at_k(np.zeros((2, 3)), np.ones((2, 3))))
    assert math.isnan(M.mean_reciprocal_rank(np.zeros((2, 3)), np.ones((2, 3))))


def test_f1_and_log_loss_hand_computed() -> None:
    # Cells: TP = 2 (r0 l0, r1 l1), FP = 2 (r0 l2, r1 l3), FN = 1 (r0 l3).
    assert M.micro_f1(Y, S) == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    # Per label F1: l0 = 1, l1 = 1, l2 = 0 (FP only), l3 = 0.
    assert M.macro_f1(Y, S) == pytest.approx(0.5)
    y = np.array([[1, 0]])
    p = np.array([[0.8, 0.4]])
    assert M.log_loss(y, p) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert np.isfinite(M.log_loss(np.array([[1, 0]]), np.array([[0.0, 1.0]])))  # clipped


def test_macro_auc_skips_single_class_labels() -> None:
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
    p = np.array([[0.9, 0.1, 0.3], [0.2, 0.5, 0.4], [0.6, 0.2, 0.5], [0.7, 0.3, 0.1]])
    assert M.macro_roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y[:, 0], p[:, 0]))
    assert math.isnan(M.macro_roc_auc(np.ones((3, 2)), np.ones((3, 2))))


def test_evaluate_keys_follow_k() -> None:
    result = M.evaluate(Y, P, S, k=3)
    assert list(result) == [
        "ndcg@3", "precision@3", "recall@3", "mrr", "micro_f1", "macro_f1", "log_loss", "macro_roc_auc", "n"
    ]  # fmt: skip
    assert result["n"] == 3
    assert list(M.evaluate(Y, P, S)).count("ndcg@5") == 1


def test_multilabel_metrics_hand_computed() -> None:
    # Hamming: wrong cells r0 l2, r0 l3, r1 l3 → 3 / 12.
    assert M.hamming_loss(Y, S) == pytest.approx(3 / 12)
    # Example F1: row 0 → 2·1/(2+2) = 0.5; row 1 → 2·1/(1+2) = 2/3; row 2 empty vs empty → 1.
    assert M.example_f1(Y, S) == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert M.subset_accuracy(Y, S) == pytest.approx(1 / 3)
    # One-error: row 0 top label 0 is positive, row 1 top label 3 is not; row 2 excluded.
    assert M.one_error(Y, P) == pytest.approx(0.5)


def test_multilabel_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((60, 6)) < 0.35).astype(int)
    y[y.sum(axis=1) == 0, 2] = 1
    p = rng.random((60, 6))
    s = p > 0.5
    assert M.hamming_loss(y, s) == pytest.approx(skm.hamming_loss(y, s.astype(int)))
    assert M.example_f1(y, s) == pytest.approx(skm.f1_score(y, s, average="samples", zero_division=1.0))
    assert M.ranking_loss(y, p) == pytest.approx(skm.label_ranking_loss(y, p))
    assert M.coverage(y, p) == pytest.approx(skm.coverage_error(y, p) - 1)
    assert M.average_precision(y, p) == pytest.approx(skm.label_ranking_average_precision_score(y, p))
    assert M.micro_f1(y, s) == pytest.approx(skm.f1_score(y, s, average="micro"))


def test_coverage_is_mulan_convention() -> None:
    # The only positive is ranked first: Mulan coverage 0 (scikit-learn's coverage_error is 1).
    assert M.coverage(np.array([[1, 0, 0]]), np.array([[0.9, 0.5, 0.1]])) == 0.0


def test_evaluate_multilabel_keys() -> None:
    result = M.evaluate_multilabel(Y, P, S)
    assert tuple(result) == M.MULTILABEL_KEYS
    assert all(np.isfinite(v) for v in result.values())


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="equal shape"):
        M.micro_f1(np.zeros((2, 3)), np.zeros((2, 4)))
