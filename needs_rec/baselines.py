"""Baselines: the peers the network must beat on the same time split.

Every baseline is a scikit-learn-style estimator (`__init__` stores parameters, `fit` returns
self, learned state ends in `_`) with one interface:

- `fit(X, frame, y)`: `X` the encoded inputs (n, d) float32, `frame` the raw model-input frame
  (at least `stage` and `position`), `y` the label matrix (n, C) of 0/1;
- `predict_proba(X, frame)` → (n, C) float32 probabilities, one column per characteristic in
  vocabulary order.

Each one ignores what it does not need (pass `None` there). From the simplest to the strongest:

- `PopularityBaseline`: every contact gets each characteristic's positive rate over train;
- `GroupPopularityBaseline`: the rule of thumb "what worked with this position at this stage",
  smoothed towards the stage's rate and the global rate, which also covers unseen groups;
- `LogisticBaseline`: one logistic regression per characteristic on the encoded inputs;
- `PlainMLPBaseline`: the simplest Keras network (2×256 ReLU, plain binary cross-entropy, Adam,
  15 epochs, no early stopping): what any engineer would try first. The tuned network must beat it;
  on firm B of issue 12 the hand-tuned defaults did not;
- `GradientBoostingBaseline`: one histogram gradient-boosting classifier per characteristic (the
  strong peer; slow, so callers run it behind a flag).

A characteristic with a single class in train (never or always positive) gets that constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier

from needs_rec import schema
from needs_rec.errors import ConfigError, DataError, NotFittedError

__all__ = [
    "GradientBoostingBaseline",
    "GroupPopularityBaseline",
    "LogisticBaseline",
    "PlainMLPBaseline",
    "PopularityBaseline",
    "default_baselines",
]


# --------------------------------------------------------------------------------------------
# shared checks


def _labels(y: Any, owner: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[0] == 0 or y.shape[1] == 0:
        raise DataError(f"{owner}.fit: y must be a non-empty (n, C) label matrix; received shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"{owner}.fit: y must hold only 0 and 1; received values {np.unique(y)[:5].tolist()}")
    return y.astype(np.float64)


def _matrix(X: Any, owner: str, method: str) -> np.ndarray:
    if X is None:
        raise DataError(f"{owner}.{method}: needs the encoded input matrix X; received None")
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise DataError(f"{owner}.{method}: X must be a 2-D (n, d) matrix; received shape {X.shape}")
    return X


def _n_rows(X: Any, frame: pd.DataFrame | None, owner: str) -> int:
    if X is not None:
        return len(X)
    if frame is not None:
        return len(frame)
    raise DataError(f"{owner}.predict_proba: needs X or frame to know the number of rows; received neither")


def _same_rows(n: int, owner: str, **parts: Any) -> None:
    for name, value in parts.items():
        if value is not None and len(value) != n:
            raise DataError(f"{owner}.fit: {name} has {len(value)} rows but y has {n}")


class _Baseline(BaseEstimator):
    """Common plumbing: the fitted check and the label count."""

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_labels_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. "
                "Call 'fit' with training data before 'predict_proba'."
            )

    def _finish(self, proba: np.ndarray) -> np.ndarray:
        return np.clip(proba, 0.0, 1.0).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# popularity


class PopularityBaseline(_Baseline):
    """Each characteristic's positive rate over the train episodes, the same for every contact."""

    def fit(self, X: Any, frame: pd.DataFrame | None, y: Any) -> PopularityBaseline:
        y = _labels(y, type(self).__name__)
        _same_rows(len(y), type(self).__name__, X=X, frame=frame)
        self.rate_ = y.mean(axis=0)
        self.n_labels_ = y.shape[1]
        return self

    def predict_proba(self, X: Any, frame: pd.DataFrame | None = None) -> np.ndarray:
        self._check_fitted()
        n = _n_rows(X, frame, type(self).__name__)
        return self._finish(np.tile(self.rate_, (n, 1)))


class GroupPopularityBaseline(_Baseline):
    """Positive rates per group of raw fields, smoothed along the key prefixes.

    With `keys=("stage", "position")` the rate for (stage s, position p) is

        rate(s, p) = (positives(s, p) + a · rate(s)) / (episodes(s, p) + a)
        rate(s)    = (positives(s)    + a · global)  / (episodes(s)    + a)

    where `a` is `prior_strength` (pseudo-episodes). A group never seen in train backs off to the
    longest seen prefix: an unseen position at a seen stage gets rate(s); an unseen stage gets the
    global rate. Missing codes (NaN or empty) form their own group ("").
    """

    def __init__(self, keys: Sequence[str] = (schema.STAGE, "position"), prior_strength: float = 10.0):
        self.keys = keys
        self.prior_strength = prior_strength

    def _check_params(self) -> tuple[str, ...]:
        keys = (self.keys,) if isinstance(self.keys, str) else tuple(self.keys)
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise ConfigError(
                f"{type(self).__name__}: keys must be a non-empty list of column names; received {self.keys!r}"
            )
        strength = self.prior_strength
        if isinstance(strength, bool) or not isinstance(strength, int | float) or not strength >= 0:
            raise ConfigError(
                f"{type(self).__name__}: prior_strength must be a number ≥ 0; received {self.prior_strength!r}"
            )
        return keys

    def _key_frame(self, frame: pd.DataFrame | None, keys: tuple[str, ...], method: str) -> pd.DataFrame:
        owner = type(self).__name__
        if frame is None:
            raise DataError(f"{owner}.{method}: needs the raw input frame with columns {list(keys)}; received None")
        missing = [k for k in keys if k not in frame.columns]
        if missing:
            raise DataError(
                f"{owner}.{method}: the input frame lacks column(s) {missing}; "
                f"keys are {list(keys)}; received columns {list(frame.columns)[:10]}"
            )
        return pd.DataFrame({k: frame[k].astype(object).where(frame[k].notna(), "").astype(str) for k in keys})

    @staticmethod
    def _index(keys_frame: pd.DataFrame, level: int) -> pd.Index:
        cols = list(keys_frame.columns[:level])
        if level == 1:
            return pd.Index(keys_frame[cols[0]].to_numpy(dtype=object))
        return pd.MultiIndex.from_frame(keys_frame[cols])

    def fit(self, X: Any, frame: pd.DataFrame | None, y: Any) -> GroupPopularityBaseline:
        owner = type(self).__name__
        keys = self._check_params()
        y = _labels(y, owner)
        _same_rows(len(y), owner, X=X, frame=frame)
        key_frame = self._key_frame(frame, keys, "fit")
        strength = float(self.prior_strength)

        self.global_rate_ = y.mean(axis=0)
        self.levels_: list[tuple[pd.Index, np.ndarray]] = []
        parent_index: pd.Index | None = None
        parent_rates = self.global_rate_[None, :]
        for level in range(1, len(keys) + 1):
            row_index = self._index(key_frame, level)
            codes, groups = pd.factorize(row_index, sort=True)
            counts = np.bincount(codes, minlength=len(groups)).astype(np.float64)
            sums = np.zeros((len(groups), y.shape[1]))
            np.add.at(sums, codes, y)
            if parent_index is None:
                prior = np.repeat(parent_rates, len(groups), axis=0)
            else:
                # each group's parent is its prefix one level up, which was seen (same rows)
                parent_keys = groups.droplevel(-1)
                prior = parent_rates[parent_index.get_indexer(parent_keys)]
            # every group here was seen at least once, so the denominator is > 0
            rates = (sums + strength * prior) / (counts + strength)[:, None]
            self.levels_.append((groups, rates))
            parent_index, parent_rates = groups, rates
        self.keys_ = keys
        self.n_labels_ = y.shape[1]
        return self

    def predict_proba(self, X: Any, frame: pd.DataFrame | None = None) -> np.ndarray:
        self._check_fitted()
        key_frame = self._key_frame(frame, self.keys_, "predict_proba")
        proba = np.tile(self.global_rate_, (len(key_frame), 1))
        for level, (groups, rates) in enumerate(self.levels_, start=1):
            position = groups.get_indexer(self._index(key_frame, level))
            seen = position >= 0
            proba[seen] = rates[position[seen]]
        return self._finish(proba)


# --------------------------------------------------------------------------------------------
# per-label models


def _check_positive(owner: str, name: str, value: Any, *, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        what = "an integer > 0" if integer else "a number > 0"
        raise ConfigError(f"{owner}: {name} must be {what}; received {value!r}")


def _constant_columns(y: np.ndarray) -> np.ndarray:
    """True for labels with a single class in train (never or always positive)."""
    positives = y.sum(axis=0)
    return (positives == 0) | (positives == len(y))


def _label_rows(y: np.ndarray, presented: Any, owner: str) -> np.ndarray:
    """(C, n) boolean: the training rows of each label — all rows, or those where it was presented."""
    if presented is None:
        return np.ones((y.shape[1], y.shape[0]), dtype=bool)
    mask = np.asarray(presented, dtype=bool)
    if mask.shape != y.shape:
        raise DataError(f"{owner}.fit: presented has shape {mask.shape}, y has {y.shape}; they must match")
    return mask.T


def _constants(y: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per label: whether its training rows hold one class only, and its positive rate on them."""
    n = rows.sum(axis=1)
    positives = (y.T * rows).sum(axis=1)
    rate = np.where(n > 0, positives / np.maximum(n, 1), 0.0)
    return (positives == 0) | (positives == n), rate


def _joint_logistic(
    X: np.ndarray, Y: np.ndarray, mask: np.ndarray, C: float, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Every label's L2 logistic regression (scikit-learn's objective) in one L-BFGS run.

    Minimises Σ_labels [ C · Σ_rows mask · logloss + ½‖w‖² ] with unpenalised intercepts. The
    objective is a sum of independent per-label terms, so its optimum is exactly the per-label
    fits; solving them together turns each step into one matrix product (fast with BLAS) instead
    of hundreds of matrix-vector products. Returns (coef (L, d), intercept (L,), converged).
    """
    from scipy.optimize import minimize

    n, d = X.shape
    n_labels = Y.shape[1]
    scale = 1.0 / n  # a better-conditioned, equivalent objective (same optimum)
    X32 = X.astype(np.float32)  # the products in float32 (twice the BLAS speed), the sums in float64

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W = theta[: d * n_labels].reshape(d, n_labels)
        b = theta[d * n_labels :]
        z = (X32 @ W.astype(np.float32)).astype(np.float64) + b
        loss = np.logaddexp(0.0, z) - Y * z
        residual = mask * (expit(z) - Y)
        value = scale * (C * float((mask * loss).sum()) + 0.5 * float((W * W).sum()))
        grad_w = scale * (C * (X32.T @ residual.astype(np.float32)).astype(np.float64) + W)
        grad_b = scale * C * residual.sum(axis=0)
        return value, np.concatenate([grad_w.ravel(), grad_b])

    result = minimize(
        objective, np.zeros(d * n_labels + n_labels), jac=True, method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": tol * scale, "ftol": 1e-12},
    )  # fmt: skip
    W = result.x[: d * n_labels].reshape(d, n_labels)
    return W.T.copy(), result.x[d * n_labels :].copy(), bool(result.success)


class LogisticBaseline(_Baseline):
    """One-vs-rest logistic regression (L2) on the encoded inputs, one model per label.

    `C` is the inverse regularisation strength, as in scikit-learn. The per-label models are
    solved together in one L-BFGS run (`_joint_logistic`: the same optimum, one matrix product
    per step — on 240 labels minutes faster than 240 scikit-learn fits); `n_not_converged_`
    counts the labels when that run stopped at `max_iter` (× 2, the joint run needs a few more steps).
    Deterministic; `random_state` is kept for interface symmetry with the other per-label baseline.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 200, tol: float = 1e-4, random_state: int = 0):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, X: Any, frame: pd.DataFrame | None, y: Any, presented: Any = None) -> LogisticBaseline:
        """Fit one model per label; with `presented` (bool (n, C)) only on rows where it was presented."""
        owner = type(self).__name__
        _check_positive(owner, "C", self.C)
        _check_positive(owner, "max_iter", self.max_iter, integer=True)
        _check_positive(owner, "tol", self.tol)
        y = _labels(y, owner)
        X = _matrix(X, owner, "fit")
        _same_rows(len(y), owner, X=X, frame=frame)
        if not np.isfinite(X).all():
            raise DataError(f"{owner}.fit: X holds NaN or infinite values; the encoded inputs must be finite")

        n_labels = y.shape[1]
        rows = _label_rows(y, presented, owner)
        self.constant_, self.constant_value_ = _constants(y, rows)
        self.coef_ = np.zeros((n_labels, X.shape[1]))
        self.intercept_ = np.zeros(n_labels)
        fitted = np.flatnonzero(~self.constant_)
        self.n_not_converged_ = 0
        if fitted.size:
            coef, intercept, converged = _joint_logistic(
                X, y[:, fitted], rows[fitted].T.astype(np.float64), self.C, self.max_iter * 2, self.tol
            )
            self.coef_[fitted], self.intercept_[fitted] = coef, intercept
            self.n_not_converged_ = 0 if converged else int(fitted.size)
        self.n_labels_ = n_labels
        return self

    def predict_proba(self, X: Any, frame: pd.DataFrame | None = None) -> np.ndarray:
        self._check_fitted()
        X = _matrix(X, type(self).__name__, "predict_proba")
        proba = expit(X @ self.coef_.T + self.intercept_)
        proba[:, self.constant_] = self.constant_value_[self.constant_]
        return self._finish(proba)


class GradientBoostingBaseline(_Baseline):
    """One `HistGradientBoostingClassifier` per label, early-stopped on an internal validation slice.

    Early stopping needs a stratified validation slice, so a label with fewer than two examples
    of its rarer class (or too few rows) is fitted without it, for `max_iter` rounds.
    `n_threads` caps the OpenMP threads for fit and predict (None = library default, all cores).
    The default is 1: measured here on 2 shared cores, OpenMP's spinning threads made a busy
    machine 15× slower (5k rows × 100 inputs: 0.66 s per label on 1 thread, 10 s on 2).
    """

    def __init__(
        self,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        random_state: int = 0,
        n_threads: int | None = 1,
    ):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.n_threads = n_threads

    def _threads(self):
        if self.n_threads is None:
            return nullcontext()
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=self.n_threads)

    def _check_params(self) -> None:
        owner = type(self).__name__
        for name in ("max_iter", "max_leaf_nodes", "min_samples_leaf", "n_iter_no_change"):
            _check_positive(owner, name, getattr(self, name), integer=True)
        _check_positive(owner, "learning_rate", self.learning_rate)
        if not isinstance(self.validation_fraction, float) or not 0 < self.validation_fraction < 1:
            raise ConfigError(
                f"{owner}: validation_fraction must be a number strictly between 0 and 1; "
                f"received {self.validation_fraction!r}"
            )
        if self.n_threads is not None:
            _check_positive(owner, "n_threads", self.n_threads, integer=True)

    def _can_stop_early(self, n: int, minority: int) -> bool:
        n_val = int(np.ceil(n * self.validation_fraction))
        return minority >= 2 and n_val >= 2 and n - n_val >= 2

    def fit(self, X: Any, frame: pd.DataFrame | None, y: Any, presented: Any = None) -> GradientBoostingBaseline:
        """Fit one model per label; with `presented` (bool (n, C)) only on rows where it was presented."""
        owner = type(self).__name__
        self._check_params()
        y = _labels(y, owner)
        X = _matrix(X, owner, "fit")
        _same_rows(len(y), owner, X=X, frame=frame)

        rows = _label_rows(y, presented, owner)
        self.constant_, self.constant_value_ = _constants(y, rows)
        self.estimators_: list[HistGradientBoostingClassifier | None] = [None] * y.shape[1]
        with self._threads():
            for j in np.flatnonzero(~self.constant_):
                n = int(rows[j].sum())
                positives = int(y[rows[j], j].sum())
                early = self._can_stop_early(n, min(positives, n - positives))
                model = HistGradientBoostingClassifier(
                    learning_rate=self.learning_rate,
                    max_iter=self.max_iter,
                    max_leaf_nodes=self.max_leaf_nodes,
                    min_samples_leaf=self.min_samples_leaf,
                    early_stopping=early,
                    validation_fraction=self.validation_fraction,
                    n_iter_no_change=self.n_iter_no_change,
                    random_state=self.random_state,
                )
                self.estimators_[j] = model.fit(X[rows[j]], y[rows[j], j].astype(np.int64))
        self.n_labels_ = y.shape[1]
        return self

    def predict_proba(self, X: Any, frame: pd.DataFrame | None = None) -> np.ndarray:
        self._check_fitted()
        X = _matrix(X, type(self).__name__, "predict_proba")
        proba = np.tile(self.constant_value_, (len(X), 1))
        with self._threads():
            for j, model in enumerate(self.estimators_):
                if model is not None and len(X):
                    proba[:, j] = model.predict_proba(X)[:, 1]
        return self._finish(proba)


class PlainMLPBaseline(_Baseline):
    """A plain multi-label MLP on the encoded inputs: `hidden_units` ReLU layers, sigmoid outputs,
    unweighted binary cross-entropy over every cell, Adam, a fixed number of `epochs`.

    No batch norm, dropout, positive weighting, wide path or early stopping: the peer shows what
    the network's extras are worth. Trained with `needs_rec.model.train_network` (so it is as
    deterministic as the network for a given `random_state`); TensorFlow is imported on `fit`.
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = (256, 256),
        epochs: int = 15,
        batch_size: int = 512,
        learning_rate: float = 1e-3,
        random_state: int = 0,
    ):
        self.hidden_units = hidden_units
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state

    def config(self) -> Any:
        """The `needs_rec.config.Config` this peer trains with."""
        from needs_rec.config import Config, NetworkConfig, TrainingConfig

        owner = type(self).__name__
        _check_positive(owner, "epochs", self.epochs, integer=True)
        _check_positive(owner, "batch_size", self.batch_size, integer=True)
        _check_positive(owner, "learning_rate", self.learning_rate)
        network = NetworkConfig(
            hidden_units=tuple(int(u) for u in self.hidden_units),
            dropout=0.0,
            input_dropout=0.0,
            batch_norm=False,
            wide=False,
        )
        training = TrainingConfig(
            batch_size=self.batch_size,
            max_epochs=self.epochs,
            learning_rate=float(self.learning_rate),
            positive_weighting="none",
            reduce_lr_patience=0,
        )
        return Config(network=network, training=training)

    def fit(self, X: Any, frame: pd.DataFrame | None, y: Any) -> PlainMLPBaseline:
        from needs_rec.model import train_network

        owner = type(self).__name__
        y = _labels(y, owner)
        X = _matrix(X, owner, "fit")
        _same_rows(len(y), owner, X=X, frame=frame)
        trained = train_network(X.astype(np.float32), y.astype(np.float32), None, None, self.config(),
                                seed=self.random_state)  # fmt: skip
        self.model_ = trained.model
        self.n_labels_ = y.shape[1]
        return self

    def predict_proba(self, X: Any, frame: pd.DataFrame | None = None) -> np.ndarray:
        self._check_fitted()
        X = _matrix(X, type(self).__name__, "predict_proba").astype(np.float32)
        from needs_rec.model import predict

        return self._finish(predict(self.model_, X))


def default_baselines(
    *, gradient_boosting: bool = False, random_state: int = 0, plain_mlp: bool = True
) -> dict[str, _Baseline]:
    """The standard peers by method name, in the order they are reported; the slow one on request."""
    peers: dict[str, _Baseline] = {
        "popularity": PopularityBaseline(),
        "group_popularity": GroupPopularityBaseline(),
        "logistic": LogisticBaseline(random_state=random_state),
    }
    if plain_mlp:
        peers["plain_mlp"] = PlainMLPBaseline(random_state=random_state)
    if gradient_boosting:
        peers["gradient_boosting"] = GradientBoostingBaseline(random_state=random_state)
    return peers
