"""needs_rec.model: architecture, loss, determinism, weighting, early stopping, SavedModel export."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from needs_rec.config import Config, NetworkConfig, TrainingConfig
from needs_rec.model import (
    WeightedBinaryCrossentropy,
    build_network,
    label_log_odds,
    positive_weights,
    predict_proba,
    train_network,
)

SMALL = NetworkConfig(hidden_units=(16, 8), dropout=0.1, batch_norm=True, l2=1e-4)


def synthetic(n: int = 400, n_inputs: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three labels: two depend on the inputs, the last one is rare (about 5 %)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_inputs)).astype(np.float32)
    logits = np.stack([2 * x[:, 0], x[:, 1] - x[:, 2], x[:, 3] - 3.0], axis=1)
    y = (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    return x, y


def config(**training: object) -> Config:
    base = TrainingConfig(batch_size=64, max_epochs=30, patience=5, positive_weighting="none")
    return Config(network=SMALL, training=dataclasses.replace(base, **training))


def test_output_shape_and_probability_range() -> None:
    model = build_network(5, 3, SMALL, seed=0)
    out = np.asarray(model(np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32) * 100))
    assert out.shape == (7, 3)
    assert np.all((out >= 0) & (out <= 1))


def test_output_bias_is_initialised_to_given_log_odds() -> None:
    y = np.array([[1, 0], [0, 0], [1, 0], [1, 1]])
    bias = label_log_odds(y)
    # add-one smoothing: (3 + 1) / (4 + 2) and (1 + 1) / (4 + 2)
    np.testing.assert_allclose(bias, [math.log(4 / 2), math.log(2 / 4)])
    model = build_network(4, 2, SMALL, seed=0, output_bias=bias)
    np.testing.assert_allclose(model.get_layer("logits").bias.numpy(), bias, rtol=1e-6)


def test_output_bias_of_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"output_bias must have shape \(3,\)"):
        build_network(4, 3, SMALL, seed=0, output_bias=np.zeros(2))


def test_ensemble_averages_members_with_builtin_layers_only() -> None:
    model = build_network(4, 2, dataclasses.replace(SMALL, ensemble_size=3), seed=1)
    assert isinstance(model.get_layer("probabilities"), keras.layers.Average)
    builtin = (keras.layers.InputLayer, keras.layers.Dense, keras.layers.BatchNormalization,
               keras.layers.Activation, keras.layers.Dropout, keras.layers.Average,
               keras.layers.Add)  # fmt: skip
    assert all(isinstance(layer, builtin) for layer in model.layers)
    x = np.ones((2, 4), dtype=np.float32)
    members = [model.get_layer(f"m{i}_probabilities").output for i in range(3)]
    member_model = keras.Model(model.input, members)
    expected = np.mean([np.asarray(m) for m in member_model(x)], axis=0)
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-6)


LINKS = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)  # labels 0 and 1 share group 0, label 2 is group 1


def test_catalogue_wide_path_goes_through_the_fixed_links() -> None:
    model = build_network(4, 3, SMALL, seed=0, links=LINKS)
    groups, fixed = model.get_layer("wide_groups"), model.get_layer("wide_links")
    assert groups.kernel.shape == (4, 2) and groups.trainable
    assert not fixed.trainable
    np.testing.assert_array_equal(fixed.kernel.numpy(), LINKS.T)
    # one group's term reaches exactly the labels linked to it
    groups.set_weights([np.array([[2.0, 0.0], [0, 0], [0, 0], [0, 0]], dtype=np.float32)])
    x = np.zeros((1, 4), dtype=np.float32)
    base = np.asarray(model(x))
    x[0, 0] = 1.0
    lifted = np.asarray(model(x))
    deep = keras.Model(model.input, model.get_layer("logits").output)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    np.testing.assert_allclose(logit(lifted) - logit(base) - (np.asarray(deep(x)) - np.asarray(deep(x * 0))),
                               [[2.0, 2.0, 0.0]], atol=1e-4)  # fmt: skip


def test_per_label_wide_path_without_links_or_when_configured() -> None:
    assert "wide" in {layer.name for layer in build_network(4, 3, SMALL, seed=0).layers}
    per_label = dataclasses.replace(SMALL, wide_path="per_label")
    names = {layer.name for layer in build_network(4, 3, per_label, seed=0, links=LINKS).layers}
    assert "wide" in names and "wide_links" not in names
    with pytest.raises(ValueError, match=r"links must have shape \(3, groups >= 1\)"):
        build_network(4, 3, SMALL, seed=0, links=LINKS[:2])


@pytest.mark.slow
def test_training_keeps_the_links_fixed_and_shares_a_groups_effect() -> None:
    x, y = synthetic(600)
    y[:, 1] = y[:, 0] * (np.random.default_rng(5).random(600) < 0.1)  # label 1: rare, driven like label 0
    trained = train_network(x[:450], y[:450], x[450:], y[450:], config(max_epochs=20), seed=0, links=LINKS)
    np.testing.assert_array_equal(trained.model.get_layer("wide_links").kernel.numpy(), LINKS.T)
    learned = trained.model.get_layer("wide_groups").kernel.numpy()
    # input 0 (which drives labels 0 and 1) is what raises their group most, and raises it more
    # than label 2's group
    assert learned[0, 0] == np.abs(learned[:, 0]).max() > learned[0, 1]


def test_weighted_loss_hand_computed_and_serialisable() -> None:
    loss = WeightedBinaryCrossentropy([3.0, 1.0])
    y = np.array([[1.0, 0.0]], dtype=np.float32)
    p = np.array([[0.8, 0.4]], dtype=np.float32)
    expected = -(3.0 * math.log(0.8) + math.log(0.6)) / 2
    assert float(loss(y, p)) == pytest.approx(expected, rel=1e-5)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert float(again(y, p)) == pytest.approx(expected, rel=1e-5)


def test_positive_weights_modes_and_cap() -> None:
    y = np.zeros((100, 3))
    y[:50, 0] = 1  # ratio 1
    y[:4, 1] = 1  # ratio 24
    y[:1, 2] = 1  # ratio 99
    base = TrainingConfig(max_positive_weight=10.0)
    def weights(mode: str) -> np.ndarray:
        return positive_weights(y, dataclasses.replace(base, positive_weighting=mode))

    np.testing.assert_allclose(weights("none"), [1, 1, 1])
    np.testing.assert_allclose(weights("balanced"), [1, 10, 10])
    np.testing.assert_allclose(weights("sqrt"), [1, math.sqrt(24), math.sqrt(99)])


@pytest.mark.slow
def test_training_is_deterministic_for_a_seed() -> None:
    x, y = synthetic()
    first = train_network(x[:300], y[:300], x[300:], y[300:], config(), seed=3)
    second = train_network(x[:300], y[:300], x[300:], y[300:], config(), seed=3)
    other = train_network(x[:300], y[:300], x[300:], y[300:], config(), seed=4)
    p1, p2, p3 = (predict_proba(t.model, x) for t in (first, second, other))
    np.testing.assert_array_equal(p1, p2)
    assert not np.array_equal(p1, p3)
    assert first.history == second.history


@pytest.mark.slow
def test_training_learns_and_restores_the_best_epoch() -> None:
    x, y = synthetic(600)
    trained = train_network(x[:450], y[:450], x[450:], y[450:], config(max_epochs=60), seed=0)
    history = trained.history
    assert len(history["loss"]) == len(history["val_loss"]) == len(history["learning_rate"])
    assert 1 <= trained.best_epoch <= len(history["val_loss"])
    assert history["val_loss"][trained.best_epoch - 1] == pytest.approx(min(history["val_loss"]), abs=1e-4)
    # The returned weights are the best epoch's: their validation loss is the recorded minimum.
    p = np.clip(predict_proba(trained.model, x[450:]).astype(np.float64), 1e-7, 1 - 1e-7)
    bce = -np.mean(y[450:] * np.log(p) + (1 - y[450:]) * np.log(1 - p))
    assert bce == pytest.approx(history["val_loss"][trained.best_epoch - 1], rel=1e-3)
    auc = tf.keras.metrics.AUC()
    auc.update_state(y[450:, 0], predict_proba(trained.model, x[450:])[:, 0])
    assert float(auc.result()) > 0.8  # label 0 = sigmoid(2·x0) is learnable


@pytest.mark.slow
def test_positive_weighting_lifts_rare_labels_in_training_but_probabilities_stay_calibrated() -> None:
    x, y = synthetic(600)
    lifted = train_network(x[:450], y[:450], x[450:], y[450:], config(positive_weighting="balanced"), seed=0)
    assert lifted.positive_weights[2] > 5  # the rare label's positives weigh more in the loss
    rare_rate = float(y[:, 2].mean())
    rare_mean = float(predict_proba(lifted.model, x)[:, 2].mean())
    # prior correction undoes the weighting's odds inflation: no 5x inflated probabilities
    assert rare_mean < 2 * rare_rate
    assert rare_mean > 0.3 * rare_rate


@pytest.mark.slow
def test_presented_mask_ignores_unpresented_cells() -> None:
    x, y = synthetic(600)
    rng = np.random.default_rng(1)
    presented = rng.random(y.shape) < 0.5
    presented |= y > 0
    observed = y * presented  # positives only where presented
    trained = train_network(
        x[:450], observed[:450], x[450:], observed[450:], config(), seed=0,
        presented_train=presented[:450], presented_val=presented[450:],
    )
    p = predict_proba(trained.model, x)
    # P(resonates | presented) of label 0 is the full sigmoid(2·x0), not halved by unpresented cells
    assert float(p[:, 0].mean()) > 0.8 * float(y[:, 0].mean())
    with pytest.raises(ValueError, match="presented_val"):
        train_network(x[:450], observed[:450], x[450:], observed[450:], config(), seed=0,
                      presented_train=presented[:450])


@pytest.mark.slow
def test_progress_display_with_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    x, y = synthetic(200)
    train_network(x[:150], y[:150], x[150:], y[150:], config(max_epochs=3), seed=0, verbose=2)
    out = capsys.readouterr().out
    assert "epoch 1/3 - loss:" in out
    assert "val_loss" in out


@pytest.mark.slow
def test_trains_without_validation_for_max_epochs() -> None:
    x, y = synthetic(200)
    trained = train_network(x, y, None, None, config(max_epochs=4), seed=0)
    assert trained.best_epoch == 4
    assert "val_loss" not in trained.history


@pytest.mark.slow
def test_trained_model_exports_as_saved_model(tmp_path: Path) -> None:
    x, y = synthetic(200)
    net = dataclasses.replace(SMALL, ensemble_size=2)
    setup = Config(network=net, training=config(max_epochs=3).training)
    trained = train_network(x[:150], y[:150], x[150:], y[150:], setup, seed=0)
    trained.model.export(str(tmp_path / "saved"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    served = np.asarray(loaded.serve(tf.constant(x[:5])))
    np.testing.assert_allclose(served, predict_proba(trained.model, x[:5]), rtol=1e-5)


def test_bad_inputs_are_refused() -> None:
    x, y = synthetic(50)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        train_network(bad, y, None, None, config(), seed=0)
    with pytest.raises(ValueError, match="same number of rows"):
        train_network(x, y[:10], None, None, config(), seed=0)
