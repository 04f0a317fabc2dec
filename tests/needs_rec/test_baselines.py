"""Baselines: shapes, hand-computed rates, group backoff, constant labels, fitted checks, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from needs_rec import baselines
from needs_rec.baselines import (
    GradientBoostingBaseline,
    GroupPopularityBaseline,
    LogisticBaseline,
    PopularityBaseline,
    default_baselines,
)
from needs_rec.errors import ConfigError, DataError, NotFittedError

ALL_CLASSES = [PopularityBaseline, GroupPopularityBaseline, LogisticBaseline, GradientBoostingBaseline]


def _small(n: int = 120, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Encoded X, raw frame and labels: label 0 follows feature 0, label 2 never, label 3 always."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    frame = pd.DataFrame({"stage": rng.choice(["lead", "meet"], n), "position": rng.choice(["ceo", "cfo", "cto"], n)})
    y = np.zeros((n, 4), dtype=np.uint8)
    y[:, 0] = X[:, 0] + 0.3 * rng.normal(size=n) > 0
    y[:, 1] = rng.random(n) < 0.3
    y[:, 3] = 1
    return X, frame, y


def _fast(cls):
    if cls is GradientBoostingBaseline:
        return cls(max_iter=20, n_threads=1)
    return cls()


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_shapes_dtype_and_range(cls):
    X, frame, y = _small()
    model = _fast(cls)
    assert model.fit(X, frame, y) is model
    proba = model.predict_proba(X[:7], frame.iloc[:7])
    assert proba.shape == (7, 4)
    assert proba.dtype == np.float32
    assert np.all((proba >= 0) & (proba <= 1))


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_single_class_labels_are_constant(cls):
    X, frame, y = _small()
    proba = _fast(cls).fit(X, frame, y).predict_proba(X, frame)
    np.testing.assert_array_equal(proba[:, 2], 0.0)
    np.testing.assert_array_equal(proba[:, 3], 1.0)


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_predict_before_fit_names_the_class_and_the_fix(cls):
    X, frame, _ = _small()
    with pytest.raises(NotFittedError, match=rf"This {cls.__name__} instance is not fitted yet\. Call 'fit'"):
        cls().predict_proba(X, frame)


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_deterministic_and_clonable(cls):
    X, frame, y = _small()
    first = _fast(cls)
    a = first.fit(X, frame, y).predict_proba(X, frame)
    b = clone(first).fit(X, frame, y).predict_proba(X, frame)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_rejects_labels_that_are_not_0_1(cls):
    X, frame, y = _small()
    bad = y.astype(np.int64)
    bad[0, 0] = 2
    with pytest.raises(DataError, match="only 0 and 1"):
        _fast(cls).fit(X, frame, bad)


def test_popularity_equals_train_rates_and_ignores_inputs():
    y = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1], [1, 1, 0]], dtype=np.uint8)
    model = PopularityBaseline().fit(None, None, y)
    proba = model.predict_proba(np.zeros((2, 9)), None)
    np.testing.assert_allclose(proba, [[0.75, 0.25, 0.5]] * 2)
    np.testing.assert_allclose(model.predict_proba(None, pd.DataFrame({"stage": ["x"]})), [[0.75, 0.25, 0.5]])


def test_popularity_needs_rows_to_predict():
    model = PopularityBaseline().fit(None, None, np.array([[1], [0]], dtype=np.uint8))
    with pytest.raises(DataError, match="needs X or frame"):
        model.predict_proba(None, None)


# Hand-made: 6 rows, 2 labels, prior strength a = 2.
#   global:        positives [3, 4] / 6                                = [1/2, 2/3]
#   stage a:       rows 0-2, positives [2, 1]:  ([2, 1] + 2·global) / 5 = [3/5, 7/15]
#   stage b:       rows 3-5, positives [1, 3]:  ([1, 3] + 2·global) / 5 = [2/5, 13/15]
#   (a, x):        rows 0-1, positives [2, 1]:  ([2, 1] + 2·stage a) / 4 = [4/5, 29/60]
#   (a, y):        row 2,    positives [0, 0]:  (2·stage a) / 3           = [2/5, 14/45]
GROUP_FRAME = pd.DataFrame({"stage": ["a", "a", "a", "b", "b", "b"], "position": ["x", "x", "y", "x", "x", "x"]})
GROUP_Y = np.array([[1, 0], [1, 1], [0, 0], [0, 1], [0, 1], [1, 1]], dtype=np.uint8)


def test_group_popularity_hand_computed_rates_and_backoff():
    model = GroupPopularityBaseline(prior_strength=2).fit(None, GROUP_FRAME, GROUP_Y)
    queries = pd.DataFrame(
        {
            "stage": ["a", "a", "a", "b", "zz"],
            "position": ["x", "y", "unseen", "y", "x"],
        }
    )
    proba = model.predict_proba(None, queries)
    expected = [
        [4 / 5, 29 / 60],  # seen group (a, x)
        [2 / 5, 14 / 45],  # seen group (a, y)
        [3 / 5, 7 / 15],  # unseen position at stage a → stage a's smoothed rate
        [2 / 5, 13 / 15],  # (b, y) unseen → stage b's smoothed rate
        [1 / 2, 2 / 3],  # unseen stage → global rate
    ]
    np.testing.assert_allclose(proba, expected, rtol=1e-6)


def test_group_popularity_zero_strength_is_the_raw_group_rate():
    proba = GroupPopularityBaseline(prior_strength=0.0).fit(None, GROUP_FRAME, GROUP_Y).predict_proba(None, GROUP_FRAME)
    np.testing.assert_allclose(proba[0], [1.0, 0.5])
    np.testing.assert_allclose(proba[3], [1 / 3, 1.0], rtol=1e-6)


def test_group_popularity_missing_codes_form_their_own_group():
    frame = pd.DataFrame({"stage": ["a", "a", "a"], "position": [None, "", "x"]})
    y = np.array([[1], [1], [0]], dtype=np.uint8)
    model = GroupPopularityBaseline(prior_strength=0).fit(None, frame, y)
    proba = model.predict_proba(None, pd.DataFrame({"stage": ["a", "a"], "position": [np.nan, "x"]}))
    np.testing.assert_allclose(proba[:, 0], [1.0, 0.0])


def test_group_popularity_single_key_and_errors():
    model = GroupPopularityBaseline(keys=("stage",), prior_strength=2).fit(None, GROUP_FRAME, GROUP_Y)
    np.testing.assert_allclose(model.predict_proba(None, GROUP_FRAME.iloc[[0]]), [[3 / 5, 7 / 15]], rtol=1e-6)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['position'\]"):
        GroupPopularityBaseline().fit(None, GROUP_FRAME[["stage"]], GROUP_Y)
    with pytest.raises(ConfigError, match="prior_strength must be a number ≥ 0; received -1"):
        GroupPopularityBaseline(prior_strength=-1).fit(None, GROUP_FRAME, GROUP_Y)
    with pytest.raises(ConfigError, match="keys must be a non-empty list"):
        GroupPopularityBaseline(keys=()).fit(None, GROUP_FRAME, GROUP_Y)


def test_logistic_learns_the_signal():
    X, _frame, y = _small()
    proba = LogisticBaseline().fit(X, None, y).predict_proba(X, None)
    assert proba[y[:, 0] == 1, 0].mean() > proba[y[:, 0] == 0, 0].mean() + 0.4


def test_logistic_stronger_regularisation_shrinks_towards_the_base_rate():
    X, _frame, y = _small()
    loose = LogisticBaseline(C=10.0).fit(X, None, y).predict_proba(X, None)[:, 0]
    tight = LogisticBaseline(C=1e-4).fit(X, None, y).predict_proba(X, None)[:, 0]
    assert tight.std() < loose.std() / 10


def test_logistic_rejects_bad_inputs():
    X, frame, y = _small()
    with pytest.raises(ConfigError, match="C must be a number > 0; received 0"):
        LogisticBaseline(C=0).fit(X, None, y)
    X_nan = X.copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN or infinite"):
        LogisticBaseline().fit(X_nan, None, y)
    with pytest.raises(DataError, match="X has 10 rows but y has 120"):
        LogisticBaseline().fit(X[:10], None, y)
    with pytest.raises(DataError, match="needs the encoded input matrix X"):
        LogisticBaseline().fit(None, frame, y)


def test_gradient_boosting_learns_and_handles_a_label_with_one_positive():
    X, frame, y = _small()
    y = y.copy()
    y[:, 1] = 0
    y[5, 1] = 1  # too rare for a stratified early-stopping slice
    model = GradientBoostingBaseline(max_iter=30, n_threads=1).fit(X, frame, y)
    proba = model.predict_proba(X, frame)
    assert proba[y[:, 0] == 1, 0].mean() > proba[y[:, 0] == 0, 0].mean() + 0.4
    assert model.estimators_[0].n_iter_ <= 30
    assert not model.estimators_[1].early_stopping
    assert model.estimators_[2] is None


def test_gradient_boosting_rejects_bad_params():
    X, frame, y = _small()
    with pytest.raises(ConfigError, match="validation_fraction must be a number strictly between 0 and 1"):
        GradientBoostingBaseline(validation_fraction=1.5).fit(X, frame, y)


def test_default_baselines_names():
    assert list(default_baselines()) == ["popularity", "group_popularity", "logistic", "plain_mlp"]
    assert list(default_baselines(plain_mlp=False)) == ["popularity", "group_popularity", "logistic"]
    peers = default_baselines(gradient_boosting=True, random_state=3)
    assert peers["gradient_boosting"].random_state == 3
    assert peers["logistic"].random_state == 3


@pytest.mark.parametrize("cls", [baselines.LogisticBaseline, baselines.GradientBoostingBaseline])
def test_per_label_learners_fit_only_on_presented_rows(cls) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3)).astype(np.float32)
    y = np.zeros((80, 2), dtype=np.uint8)
    y[:20, 0] = 1  # label 0: positive on the 20 rows where it was presented, never presented elsewhere
    y[:, 1] = (X[:, 0] > 0).astype(np.uint8)
    presented = np.ones_like(y, dtype=bool)
    presented[20:, 0] = False
    model = cls().fit(X, None, y, presented=presented)
    proba = model.predict_proba(X, None)
    # among presented rows label 0 always resonated, so it is a constant 1, not a 25 % base rate
    assert model.constant_[0] and np.allclose(proba[:, 0], 1.0)
    assert not model.constant_[1]
    with pytest.raises(DataError, match="presented"):
        cls().fit(X, None, y, presented=presented[:, :1])


def test_plain_mlp_is_two_by_256_relu_with_plain_bce() -> None:
    peer = baselines.PlainMLPBaseline(random_state=1)
    cfg = peer.config()
    assert cfg.network.hidden_units == (256, 256) and cfg.network.activation == "relu"
    assert not cfg.network.batch_norm and not cfg.network.wide and cfg.network.dropout == 0.0
    assert cfg.network.input_dropout == 0.0
    assert cfg.training.positive_weighting == "none" and cfg.training.max_epochs == 15
    assert cfg.training.label_smoothing == 0.0


def test_plain_mlp_learns_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = np.stack([(x[:, 0] > 0), (x[:, 1] * x[:, 2] > 0), np.zeros(400, bool)], axis=1).astype(np.float32)
    small = {"hidden_units": (16, 16), "epochs": 30, "batch_size": 32}
    first = baselines.PlainMLPBaseline(random_state=3, **small).fit(x, None, y).predict_proba(x)
    again = baselines.PlainMLPBaseline(random_state=3, **small).fit(x, None, y).predict_proba(x)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (400, 3) and first.dtype == np.float32
    auc = ((first[y[:, 0] == 1, 0][:, None] > first[y[:, 0] == 0, 0][None, :]).mean())
    assert auc > 0.9  # it really learns the first label
    assert first[:, 2].max() < 0.1  # a never-positive label stays near 0


def test_logistic_joint_fit_equals_scikit_learn_per_label() -> None:
    """All labels in one L-BFGS run reach the per-label optimum scikit-learn finds."""
    from sklearn.linear_model import LogisticRegression

    X, _frame, y = _small(n=200, seed=4)
    presented = np.random.default_rng(1).random(y.shape) < 0.8
    model = LogisticBaseline(C=0.7).fit(X, None, y, presented=presented)
    for j in np.flatnonzero(~model.constant_):
        rows = presented[:, j]
        reference = LogisticRegression(C=0.7, max_iter=1000, tol=1e-8).fit(X[rows], y[rows, j])
        np.testing.assert_allclose(model.coef_[j], reference.coef_[0], atol=2e-3)
        assert model.intercept_[j] == pytest.approx(reference.intercept_[0], abs=2e-3)
    assert model.n_not_converged_ == 0
