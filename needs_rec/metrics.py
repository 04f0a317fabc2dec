"""Evaluation metrics for multi-label predictions, vectorised over rows and labels.

Two families:
- recommendation metrics (`evaluate`): how well the probability ranking puts resonating
  characteristics first (nDCG@k, precision@k, recall@k, MRR), how good the selected set is
  (micro/macro F1), and how good the probabilities are (log loss, macro ROC AUC);
- the classic multi-label benchmark metrics (`evaluate_multilabel`) used by the Mulan literature.

Inputs: `y_true` (n, C) 0/1, `proba` (n, C) floats, `selected` (n, C) bool. Rankings sort by
descending probability; ties are broken by label index (stable), so results are deterministic.
Where scikit-learn has the metric it is used, so the figures match what others report.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

#: Probabilities are clipped to [EPS, 1 - EPS] in `log_loss`.
EPS = 1e-7


def _as_arrays(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = (np.asarray(y_true) > 0).astype(np.int8)
    p = np.asarray(proba, dtype=np.float64)
    if y.ndim != 2 or y.shape != p.shape:
        raise ValueError(f"y_true and proba/selected must be 2-D of equal shape, got {y.shape} and {p.shape}")
    return y, p


def _ranked_relevance(y_true: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Relevance (0/1) of each row's labels in ranking order, rows without positives dropped."""
    y, p = _as_arrays(y_true, proba)
    keep = y.sum(axis=1) > 0
    order = np.argsort(-p[keep], axis=1, kind="stable")
    return np.take_along_axis(y[keep], order, axis=1)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def ndcg_at_k(y_true: np.ndarray, proba: np.ndarray, k: int = 5) -> float:
    """Mean nDCG@k with binary relevance (gain 1, discount log2(rank + 1)).

    Rows with no positive label are excluded (their nDCG is undefined); NaN if none is left.
    """
    rel = _ranked_relevance(y_true, proba)[:, :k]
    discounts = 1.0 / np.log2(np.arange(2, rel.shape[1] + 2))
    dcg = rel @ discounts
    n_pos = np.minimum(_positives_per_kept_row(y_true), k)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[n_pos]
    return _mean(dcg / ideal)


def _positives_per_kept_row(y_true: np.ndarray) -> np.ndarray:
    counts = (np.asarray(y_true) > 0).sum(axis=1)
    return counts[counts > 0]


def precision_at_k(y_true: np.ndarray, proba: np.ndarray, k: int = 5) -> float:
    """Mean share of the k most probable labels that are positive (always divided by k).

    Rows with no positive label are excluded; NaN if none is left.
    """
    rel = _ranked_relevance(y_true, proba)[:, :k]
    return _mean(rel.sum(axis=1) / k)


def recall_at_k(y_true: np.ndarray, proba: np.ndarray, k: int = 5) -> float:
    """Mean share of a row's positive labels found among its k most probable.

    Rows with no positive label are excluded; NaN if none is left.
    """
    rel = _ranked_relevance(y_true, proba)
    return _mean(rel[:, :k].sum(axis=1) / rel.sum(axis=1))


def mean_reciprocal_rank(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean of 1 / rank of the first positive label (rank 1 = most probable).

    Rows with no positive label are excluded; NaN if none is left.
    """
    rel = _ranked_relevance(y_true, proba)
    first = np.argmax(rel, axis=1) + 1
    return _mean(1.0 / first)


def micro_f1(y_true: np.ndarray, selected: np.ndarray) -> float:
    """F1 over all (row, label) cells pooled; 0 when nothing is positive or selected."""
    y, s = _as_arrays(y_true, selected)
    return float(skm.f1_score(y, s > 0, average="micro", zero_division=0))


def macro_f1(y_true: np.ndarray, selected: np.ndarray) -> float:
    """Unweighted mean of per-label F1 (a label never positive nor selected scores 0)."""
    y, s = _as_arrays(y_true, selected)
    return float(skm.f1_score(y, s > 0, average="macro", zero_division=0))


def log_loss(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean binary cross-entropy over all cells, probabilities clipped to [EPS, 1 - EPS]."""
    y, p = _as_arrays(y_true, proba)
    p = np.clip(p, EPS, 1.0 - EPS)
    return _mean(-(y * np.log(p) + (1 - y) * np.log1p(-p)))


def macro_roc_auc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean ROC AUC over the labels that have both classes; NaN if no label has."""
    y, p = _as_arrays(y_true, proba)
    positives = y.sum(axis=0)
    both = (positives > 0) & (positives < y.shape[0])
    if not both.any():
        return float("nan")
    return float(skm.roc_auc_score(y[:, both], p[:, both], average="macro"))


def evaluate(y_true: np.ndarray, proba: np.ndarray, selected: np.ndarray, k: int = 5) -> dict[str, float]:
    """Recommendation metrics of one split; keys follow `k` ("ndcg@5", ...), "n" is the row count."""
    _as_arrays(y_true, proba)
    _as_arrays(y_true, selected)
    return {
        f"ndcg@{k}": ndcg_at_k(y_true, proba, k),
        f"precision@{k}": precision_at_k(y_true, proba, k),
        f"recall@{k}": recall_at_k(y_true, proba, k),
        "mrr": mean_reciprocal_rank(y_true, proba),
        "micro_f1": micro_f1(y_true, selected),
        "macro_f1": macro_f1(y_true, selected),
        "log_loss": log_loss(y_true, proba),
        "macro_roc_auc": macro_roc_auc(y_true, proba),
        "n": float(np.asarray(y_true).shape[0]),
    }


# --- classic multi-label benchmark metrics (Mulan literature) ---------------------------------


def hamming_loss(y_true: np.ndarray, selected: np.ndarray) -> float:
    """Share of (row, label) cells predicted wrongly."""
    y, s = _as_arrays(y_true, selected)
    return float(skm.hamming_loss(y, (s > 0).astype(np.int8)))


def example_f1(y_true: np.ndarray, selected: np.ndarray) -> float:
    """Example-based F1: F1 of each row's selected set against its true set, averaged over rows.

    A row with no true and no selected label counts as 1 (a perfect empty answer).
    """
    y, s = _as_arrays(y_true, selected)
    return float(skm.f1_score(y, s > 0, average="samples", zero_division=1.0))


def subset_accuracy(y_true: np.ndarray, selected: np.ndarray) -> float:
    """Share of rows whose selected set equals the true set exactly."""
    y, s = _as_arrays(y_true, selected)
    return float(skm.accuracy_score(y, (s > 0).astype(np.int8)))


def ranking_loss(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean share of (positive, negative) label pairs ranked the wrong way (ties count as wrong)."""
    y, p = _as_arrays(y_true, proba)
    return float(skm.label_ranking_loss(y, p))


def one_error(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Share of rows whose most probable label is not a positive one.

    Rows with no positive label are excluded; NaN if none is left.
    """
    rel = _ranked_relevance(y_true, proba)
    return _mean(1.0 - rel[:, 0]) if rel.shape[1] else float("nan")


def coverage(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mulan's coverage: how far down the ranking one must go to cover all positives, minus one.

    This is scikit-learn's `coverage_error` − 1 (Mulan counts steps from the top, so a row whose
    only positive is ranked first has coverage 0); ties count pessimistically as in scikit-learn.
    """
    y, p = _as_arrays(y_true, proba)
    return float(skm.coverage_error(y, p)) - 1.0


def average_precision(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Label-ranking average precision (scikit-learn's LRAP; a row with no positive scores 1)."""
    y, p = _as_arrays(y_true, proba)
    return float(skm.label_ranking_average_precision_score(y, p))


MULTILABEL_KEYS: tuple[str, ...] = (
    "hamming_loss",
    "micro_f1",
    "macro_f1",
    "example_f1",
    "subset_accuracy",
    "ranking_loss",
    "one_error",
    "coverage",
    "average_precision",
)
#: Metrics where lower is better; for the others higher is better.
LOWER_IS_BETTER: frozenset[str] = frozenset({"hamming_loss", "ranking_loss", "one_error", "coverage", "log_loss"})


def evaluate_multilabel(y_true: np.ndarray, proba: np.ndarray, selected: np.ndarray) -> dict[str, float]:
    """The Mulan benchmark metrics, keyed as in `MULTILABEL_KEYS` (coverage in Mulan's convention)."""
    _as_arrays(y_true, proba)
    _as_arrays(y_true, selected)
    return {
        "hamming_loss": hamming_loss(y_true, selected),
        "micro_f1": micro_f1(y_true, selected),
        "macro_f1": macro_f1(y_true, selected),
        "example_f1": example_f1(y_true, selected),
        "subset_accuracy": subset_accuracy(y_true, selected),
        "ranking_loss": ranking_loss(y_true, proba),
        "one_error": one_error(y_true, proba),
        "coverage": coverage(y_true, proba),
        "average_precision": average_precision(y_true, proba),
    }


def calibration_error(y_true: np.ndarray, proba: np.ndarray, mask: np.ndarray | None = None, bins: int = 10) -> float:
    """Expected calibration error: |mean probability − positive rate| per equal-width bin, weighted by its cells.

    Over the cells where `mask` is true (e.g. the characteristics presented, when outcomes have
    explicit negatives), else over all cells. NaN when there is no cell.
    """
    y = (np.asarray(y_true) > 0).astype(np.float64)
    p = np.asarray(proba, dtype=np.float64)
    if mask is not None:
        keep = np.asarray(mask, dtype=bool)
        y, p = y[keep], p[keep]
    y, p = y.ravel(), p.ravel()
    if p.size == 0:
        return float("nan")
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    counts = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, weights=p, minlength=bins) - np.bincount(which, weights=y, minlength=bins))
    return float(gap.sum() / counts.sum())
