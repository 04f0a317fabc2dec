"""Cutting probabilities into a selected set: per-label thresholds tuned on validation data.

A single global 0.5 cut predicts rare characteristics "never" and common ones "always"; a cut per
label, chosen to maximise F-beta on the validation split, adapts to each label's base rate. Labels
with too few validation positives to tune on get a fallback (a cut tuned on all labels pooled, or
a fixed value); the others are shrunk towards the pooled cut in proportion to how few positives
their own cut rests on (`ThresholdConfig.shrinkage`), so a rare characteristic's cut is not noise.

`select` is THE selection rule (cut, `top_k` cap, `min_selected` floor, stage offer): HTTP
(`needs_rec.talking_points.TalkingPoints.select`), batch (`serving.batch`) and evaluation
(`needs_rec.evaluation`) all call it, so what a manager sees, what a batch file marks as selected
and what the report measures are the same thing.

Cut placement: among the candidate cuts (each distinct validation probability), the best one
selects the rows with probability >= p_k; the returned threshold lies halfway between p_k and the
next lower distinct probability, so a new probability between the two goes to the nearer side.
"""

from __future__ import annotations

import numpy as np

from needs_rec.config import FALLBACK_GLOBAL, ThresholdConfig

#: Beta of each F-beta metric name accepted by `ThresholdConfig.metric`.
BETAS: dict[str, float] = {"f1": 1.0, "f0.5": 0.5, "f2": 2.0}
#: The cut that selects nothing: the smallest float32 above 1 (finite, so it survives JSON).
NEVER = float(np.nextafter(np.float32(1.0), np.float32(2.0)))


def tune_thresholds(y_true: np.ndarray, proba: np.ndarray, config: ThresholdConfig) -> np.ndarray:
    """Per-label cuts (C,) maximising F-beta of `proba >= cut` against `y_true` (n, C).

    strategy "global" gives every label the pooled cut; "per_label" tunes each label alone, and
    labels with fewer than `config.min_positives` positives get `config.fallback`.
    """
    y, p = _check(y_true, proba)
    beta = BETAS[config.metric]
    pooled = best_cuts(y.reshape(-1, 1), p.reshape(-1, 1), beta)[0]
    if config.strategy == "global":
        return np.full(y.shape[1], pooled, dtype=np.float64)
    cuts = shrink(best_cuts(y, p, beta), y.sum(axis=0), pooled, config.shrinkage)
    fallback = pooled if config.fallback == FALLBACK_GLOBAL else float(config.fallback)
    too_few = y.sum(axis=0) < config.min_positives
    cuts[too_few] = fallback
    return cuts


def shrink(cuts: np.ndarray, positives: np.ndarray, pooled: float, strength: float) -> np.ndarray:
    """Each cut moved towards `pooled` on the logit scale with weight strength / (positives + strength).

    A label whose own cut rests on n validation positives keeps n / (n + strength) of its own
    log-odds; `strength` 0 leaves the cuts as they are. Cuts that select nothing (`NEVER`, a label
    with no positive) stay as they are.
    """
    cuts = np.asarray(cuts, dtype=np.float64).copy()
    if strength <= 0 or not 0.0 < pooled < 1.0:
        return cuts
    n = np.asarray(positives, dtype=np.float64)
    own = (cuts > 0.0) & (cuts < 1.0)
    weight = n / (n + strength)
    clipped = np.clip(cuts, 1e-7, 1 - 1e-7)
    logit = weight * np.log(clipped / (1 - clipped)) + (1 - weight) * np.log(pooled / (1 - pooled))
    cuts[own] = (1.0 / (1.0 + np.exp(-logit)))[own]
    return cuts


def best_cuts(y_true: np.ndarray, proba: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """For each column, the cut maximising F-beta; columns with no positive get `NEVER` (select nothing).

    Vectorised: each column is sorted once (descending); cumulative true positives at the last row
    of each run of tied probabilities give F-beta of every candidate cut. On equal F-beta the
    highest cut (fewest selected) wins.
    """
    y, p = _check(y_true, proba)
    n, n_labels = p.shape
    if n == 0:
        return np.full(n_labels, NEVER)
    order = np.argsort(-p, axis=0, kind="stable")
    p_sorted = np.take_along_axis(p, order, axis=0)
    tp = np.cumsum(np.take_along_axis(y, order, axis=0), axis=0, dtype=np.float64)
    selected = np.arange(1, n + 1, dtype=np.float64)[:, None]
    positives = tp[-1]
    b2 = beta * beta
    with np.errstate(invalid="ignore", divide="ignore"):
        f = (1.0 + b2) * tp / (b2 * positives + selected)
    # A cut is only possible after the last of a run of equal probabilities.
    run_end = np.ones_like(p_sorted, dtype=bool)
    run_end[:-1] = p_sorted[:-1] != p_sorted[1:]
    f = np.where(run_end & np.isfinite(f), f, -1.0)
    best = np.argmax(f, axis=0)
    cols = np.arange(n_labels)
    chosen = p_sorted[best, cols]
    below = np.where(best + 1 < n, p_sorted[np.minimum(best + 1, n - 1), cols], chosen)
    cuts = (chosen + below) / 2.0
    cuts[positives == 0] = NEVER
    return cuts


def select(
    proba: np.ndarray,
    thresholds: np.ndarray,
    top_k: int | None = None,
    min_selected: int = 0,
    offered: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean (n, C): proba >= threshold, capped to the `top_k` most probable per row.

    `min_selected` tops up the rows that would get fewer (e.g. 1: never an empty answer) with their
    most probable other labels, never past the cap; a row that has that many keeps exactly its own.
    `offered` (bool (n, C) or (C,), optional): labels that may be chosen at all (the stage's
    talking points); the others are never selected, not even by the floor. Ties in
    probability go to the lower label index (stable order).
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"proba must be 2-D (rows, labels), got shape {p.shape}")
    t = np.asarray(thresholds, dtype=np.float64)
    if t.shape not in {(p.shape[1],), ()}:
        raise ValueError(f"thresholds must have shape ({p.shape[1]},), got {t.shape}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if min_selected < 0:
        raise ValueError(f"min_selected must be >= 0, got {min_selected}")
    if p.shape[0] == 1 and (offered is None or np.ndim(offered) == 1):
        picked = select_row(p[0], t, top_k, min_selected, offered)
        if picked is not None:
            one = np.zeros(p.shape, dtype=bool)
            one[0, picked] = True
            return one
    chosen = p >= t
    allowed = None if offered is None else np.asarray(offered, dtype=bool)  # (C,) broadcasts over the rows
    if allowed is not None:
        chosen &= allowed
    cap = p.shape[1] if top_k is None else min(top_k, p.shape[1])
    # Each step touches only the rows it changes, and is skipped when none does: one row (the
    # HTTP answer) mostly passes fewer cells than the cap and at least the floor, so neither sorts.
    over = chosen.sum(axis=1) > cap
    if over.any():  # the cap keeps the `top_k` most probable of the cells that pass, not of all cells
        chosen[over] &= _ranks(np.where(chosen[over], p[over], -np.inf)) < cap
    few = chosen.sum(axis=1) < min_selected if min_selected > 0 else None
    if few is not None and few.any():
        # topped up to the floor (never past the cap): what they have first, then the most probable they may show
        kept = chosen[few]
        may = None if allowed is None else (allowed if allowed.ndim == 1 else np.broadcast_to(allowed, p.shape)[few])
        key = np.where(kept, np.inf, p[few] if may is None else np.where(may, p[few], -np.inf))
        topped = _ranks(key) < min(min_selected, cap)
        chosen[few] = topped if may is None else topped & may
    return chosen


def select_row(
    proba: np.ndarray,
    thresholds: np.ndarray,
    top_k: int | None = None,
    min_selected: int = 0,
    offered: np.ndarray | None = None,
) -> list[int] | None:
    """`select` of one row (C,) as the chosen label indices, most probable first (ties: lower index).

    The same rule for an HTTP answer's one row: three NumPy calls find the labels that pass, and the
    few of them are ordered as a list (cheaper than NumPy's sort of a few dozen). `select` hands its
    one-row calls here, so both paths are this function; a test pins it against the many-row path.
    None for a row with a non-finite probability (its order is NumPy's to decide: `select` then uses
    its array path).
    """
    p_row = np.asarray(proba, dtype=np.float64)
    if not np.isfinite(p_row).all():
        return None
    n = len(p_row)
    passing = p_row >= thresholds  # a scalar cut or one per label
    if offered is not None:
        passing &= np.asarray(offered, dtype=bool)
    p = p_row.tolist()
    cap = n if top_k is None else min(top_k, n)
    chosen = sorted(np.flatnonzero(passing).tolist(), key=lambda j: -p[j])[:cap]  # stable: ties by index
    floor = min(min_selected, cap)
    if len(chosen) < floor:  # topped up with the most probable of the others it may show
        labels = range(n) if offered is None else np.flatnonzero(offered).tolist()
        kept = set(chosen)
        chosen += sorted((j for j in labels if j not in kept), key=lambda j: -p[j])[: floor - len(chosen)]
        chosen.sort(key=lambda j: -p[j])
    return chosen


def select_with(
    proba: np.ndarray, thresholds: np.ndarray, config: ThresholdConfig, offered: np.ndarray | None = None
) -> np.ndarray:
    """`select` with the `top_k` and `min_selected` of a `ThresholdConfig`."""
    return select(proba, thresholds, top_k=config.top_k, min_selected=config.min_selected, offered=offered)


def _ranks(p: np.ndarray) -> np.ndarray:
    """0-based rank of each cell within its row, most probable first, ties by label index."""
    order = np.argsort(-p, axis=1, kind="stable")
    rank = np.empty_like(order)
    rank[np.arange(p.shape[0])[:, None], order] = np.arange(p.shape[1])  # the inverse permutation, per row
    return rank


def _check(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or y.shape != p.shape:
        raise ValueError(f"y_true and proba must be 2-D of equal shape, got {y.shape} and {p.shape}")
    return (y > 0).astype(np.float64), p
