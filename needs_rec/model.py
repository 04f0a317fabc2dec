"""The dense multi-label network: float features in, one sigmoid probability per label out.

`build_network` makes the architecture from `NetworkConfig`; `train_network` fits it on plain float
matrices (any numeric data: the CRM encoding of `needs_rec.features` or a public benchmark) with
a per-label positive weighting, early stopping on validation loss and bit-for-bit determinism on
CPU. The returned `.model` is a plain Keras functional model of built-in layers only (Dense,
BatchNormalization, Activation, Dropout, Average), so it exports inside a SavedModel with no custom
Python code needed at inference; the custom loss is only used while training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from needs_rec.config import Config, NetworkConfig, TrainingConfig

#: Probabilities are clipped to [EPS, 1 - EPS] inside the loss.
EPS = 1e-7
#: Rows per batch for validation and prediction (no gradients, so bigger is cheaper).
EVAL_BATCH = 8192


@keras.saving.register_keras_serializable(package="needs_rec")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy on probabilities with a weight per label on the positive term.

    loss = −mean_c [ w_c · y_c · log p_c + (1 − y_c) · log(1 − p_c) ], with optional label smoothing
    of y towards 0.5. With w_c > 1 a rare label's positives count more, so it is not learned as
    "never". Registered, so a compiled model can be saved and reloaded as .keras too.
    """

    def __init__(
        self,
        positive_weights: list[float] | np.ndarray,
        label_smoothing: float = 0.0,
        name: str = "weighted_binary_crossentropy",
        **kwargs,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.positive_weights = [float(w) for w in np.asarray(positive_weights, dtype=np.float64).ravel()]
        self.label_smoothing = float(label_smoothing)
        self._weights = tf.constant(self.positive_weights, dtype=tf.float32)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, y_pred.dtype)
        if self.label_smoothing:
            y_true = y_true * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        p = tf.clip_by_value(y_pred, EPS, 1.0 - EPS)
        w = tf.cast(self._weights, p.dtype)
        cells = w * y_true * tf.math.log(p) + (1.0 - y_true) * tf.math.log(1.0 - p)
        return -tf.reduce_mean(cells, axis=-1)

    def get_config(self) -> dict:
        return {
            "positive_weights": self.positive_weights,
            "label_smoothing": self.label_smoothing,
            "name": self.name,
            "reduction": self.reduction,
        }


@keras.saving.register_keras_serializable(package="needs_rec")
class PresentedOutcomeLoss(WeightedBinaryCrossentropy):
    """Weighted binary cross-entropy counted only on cells whose characteristic was presented.

    y_true is (n, 2C): the first C columns say whether the characteristic was presented in the
    episode (an outcome was recorded), the last C whether that outcome was positive; y_pred is
    (n, C). An unpresented characteristic says nothing about whether it would have resonated, so
    it adds no loss: the network learns P(resonates | presented), the contract's probability.
    """

    def __init__(
        self,
        positive_weights: list[float] | np.ndarray,
        label_smoothing: float = 0.0,
        name: str = "presented_outcome_loss",
        **kwargs,
    ) -> None:
        super().__init__(positive_weights, label_smoothing=label_smoothing, name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, y_pred.dtype)
        n_labels = len(self.positive_weights)
        presented, positive = y_true[:, :n_labels], y_true[:, n_labels:]
        if self.label_smoothing:
            positive = positive * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        p = tf.clip_by_value(y_pred, EPS, 1.0 - EPS)
        w = tf.cast(self._weights, p.dtype)
        cells = w * positive * tf.math.log(p) + (1.0 - positive) * tf.math.log(1.0 - p)
        return -tf.reduce_mean(presented * cells, axis=-1)


@dataclass
class TrainedNetwork:
    """A fitted network and how training went."""

    #: float (n, n_inputs) → probabilities (n, n_outputs); built-in layers only.
    model: keras.Model
    #: Per-epoch values: "loss", "val_loss" (when validation data was given), "learning_rate".
    history: dict[str, list[float]]
    #: 1-based epoch whose weights were kept (lowest validation loss).
    best_epoch: int
    #: The positive weight of each label used in the loss.
    positive_weights: np.ndarray = field(repr=False)


def label_log_odds(y: np.ndarray, smoothing: float = 1.0) -> np.ndarray:
    """log(q / (1 − q)) of each label's positive rate q, with add-`smoothing` counts so 0 and 1 stay finite."""
    y = np.asarray(y, dtype=np.float64)
    positives = y.sum(axis=0)
    q = (positives + smoothing) / (y.shape[0] + 2.0 * smoothing)
    return np.log(q / (1.0 - q))


def positive_weights(y: np.ndarray, config: TrainingConfig) -> np.ndarray:
    """Loss weight of each label's positives: 1, or negatives/positives (balanced) or its sqrt, in [1, cap].

    Weights are never below 1: frequent labels are left as they are, only rare ones are lifted.
    """
    y = np.asarray(y, dtype=np.float64)
    n_labels = y.shape[1]
    if config.positive_weighting == "none":
        return np.ones(n_labels)
    positives = y.sum(axis=0)
    ratio = (y.shape[0] - positives) / np.maximum(positives, 1.0)
    if config.positive_weighting == "sqrt":
        ratio = np.sqrt(ratio)
    return np.clip(ratio, 1.0, config.max_positive_weight)


def _log_odds(positives: np.ndarray, total: np.ndarray | int, smoothing: float = 1.0) -> np.ndarray:
    q = (np.asarray(positives, dtype=np.float64) + smoothing) / (np.asarray(total, dtype=np.float64) + 2 * smoothing)
    return np.log(q / (1.0 - q))


def _presented(presented: np.ndarray | None, y: np.ndarray | None, split: str) -> np.ndarray:
    if presented is None or y is None:
        raise ValueError(f"{split}: presented mask and labels are required together")
    shown = np.asarray(presented, dtype=np.float32)
    if shown.shape != y.shape:
        raise ValueError(f"{split}: presented mask has shape {shown.shape}, labels {y.shape}")
    if (y > shown).any():
        raise ValueError(f"{split}: a positive label on a cell marked as not presented")
    return shown


def positive_weights_among(y: np.ndarray, presented: np.ndarray, config: TrainingConfig) -> np.ndarray:
    """Like `positive_weights`, counting negatives only among presented cells (explicit negatives)."""
    if config.positive_weighting == "none":
        return np.ones(y.shape[1])
    positives = np.asarray(y, dtype=np.float64).sum(axis=0)
    negatives = np.asarray(presented, dtype=np.float64).sum(axis=0) - positives
    ratio = negatives / np.maximum(positives, 1.0)
    if config.positive_weighting == "sqrt":
        ratio = np.sqrt(ratio)
    return np.clip(ratio, 1.0, config.max_positive_weight)


def build_network(
    n_inputs: int,
    n_outputs: int,
    config: NetworkConfig,
    *,
    seed: int,
    output_bias: np.ndarray | None = None,
    links: np.ndarray | None = None,
) -> keras.Model:
    """Float input (n_inputs) → Dense blocks → n_outputs sigmoid probabilities.

    Each block: Dense(units, L2) → [BatchNormalization] → activation → Dropout. With
    `config.ensemble_size` k > 1 the model holds k independent towers whose probabilities are
    averaged (keras `Average`). `output_bias` (one value per label, e.g. `label_log_odds`) sets the
    initial output bias so that rare labels start at their base rate instead of 0.5. `links`
    (labels × groups, e.g. `Dictionaries.catalogue_links`) routes the wide path through those
    groups when `config.wide_path` is "catalogue" (see `_catalogue_path`); None: per label.
    """
    inputs, members = _build_members(n_inputs, n_outputs, config, seed=seed, output_bias=output_bias, links=links)
    return _inference_model(inputs, members)


def _build_members(
    n_inputs: int,
    n_outputs: int,
    config: NetworkConfig,
    *,
    seed: int,
    output_bias: np.ndarray | None,
    links: np.ndarray | None = None,
) -> tuple[keras.KerasTensor, list[keras.KerasTensor]]:
    """Input and one output (probabilities) per ensemble member."""
    if n_inputs < 1 or n_outputs < 1:
        raise ValueError(f"n_inputs and n_outputs must be >= 1, got {n_inputs} and {n_outputs}")
    if output_bias is not None:
        output_bias = np.asarray(output_bias, dtype=np.float32).ravel()
        if output_bias.shape != (n_outputs,):
            raise ValueError(f"output_bias must have shape ({n_outputs},), got {output_bias.shape}")
    links = _checked_links(links, n_outputs)
    inputs = keras.Input(shape=(n_inputs,), dtype="float32", name="features")
    regularizer = keras.regularizers.L2(config.l2) if config.l2 > 0 else None
    members = []
    for m in range(config.ensemble_size):
        base = seed * 1009 + m * 101
        tag = f"m{m}_" if config.ensemble_size > 1 else ""
        h = inputs
        if config.input_dropout > 0:
            h = keras.layers.Dropout(config.input_dropout, seed=base, name=f"{tag}input_dropout")(h)
        for i, units in enumerate(config.hidden_units):
            h = keras.layers.Dense(
                units,
                use_bias=not config.batch_norm,
                kernel_initializer=keras.initializers.HeUniform(seed=base + 2 * i + 1),
                kernel_regularizer=regularizer,
                name=f"{tag}dense_{i}",
            )(h)
            if config.batch_norm:
                h = keras.layers.BatchNormalization(name=f"{tag}batch_norm_{i}")(h)
            h = keras.layers.Activation(config.activation, name=f"{tag}{config.activation}_{i}")(h)
            if config.dropout > 0:
                h = keras.layers.Dropout(config.dropout, seed=base + 2 * i + 2, name=f"{tag}dropout_{i}")(h)
        bias = keras.initializers.Constant(output_bias) if output_bias is not None else "zeros"
        logits = keras.layers.Dense(
            n_outputs,
            kernel_initializer=keras.initializers.GlorotUniform(seed=base + 99),
            bias_initializer=bias,
            kernel_regularizer=regularizer,
            name=f"{tag}logits",
        )(h)
        if config.wide:
            if links is not None and config.wide_path == "catalogue":
                linear = _catalogue_path(inputs, links, regularizer, tag)
            else:
                linear = keras.layers.Dense(
                    n_outputs, use_bias=False, kernel_initializer="zeros", kernel_regularizer=regularizer,
                    name=f"{tag}wide",
                )(inputs)
            logits = keras.layers.Add(name=f"{tag}wide_and_deep")([logits, linear])
        members.append(keras.layers.Activation("sigmoid", name=f"{tag}probabilities")(logits))
    return inputs, members


def _catalogue_path(
    inputs: keras.KerasTensor, links: np.ndarray, regularizer: keras.regularizers.Regularizer | None, tag: str
) -> keras.KerasTensor:
    """The wide path through the catalogue: inputs → one term per group (product, need, …) → labels.

    Two plain Dense layers, so the exported graph and its NumPy twin need nothing new: a trainable
    one from the inputs to the groups (no bias; zeros at the start, like the per-label path) and a
    fixed one holding `links.T`, which adds each group's term to every label linked to it.
    """
    groups = keras.layers.Dense(
        links.shape[1], use_bias=False, kernel_initializer="zeros", kernel_regularizer=regularizer,
        name=f"{tag}wide_groups",
    )(inputs)  # fmt: skip
    return keras.layers.Dense(
        links.shape[0], use_bias=False, trainable=False, kernel_initializer=keras.initializers.Constant(links.T),
        name=f"{tag}wide_links",
    )(groups)  # fmt: skip


def _checked_links(links: np.ndarray | None, n_outputs: int) -> np.ndarray | None:
    if links is None:
        return None
    links = np.asarray(links, dtype=np.float32)
    if links.ndim != 2 or links.shape[0] != n_outputs or links.shape[1] < 1:
        raise ValueError(f"links must have shape ({n_outputs}, groups >= 1), got {links.shape}")
    return links


def _inference_model(inputs: keras.KerasTensor, members: list[keras.KerasTensor]) -> keras.Model:
    output = members[0] if len(members) == 1 else keras.layers.Average(name="probabilities")(members)
    return keras.Model(inputs, output, name="needs_rec_network")


def train_network(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    config: Config,
    *,
    seed: int,
    verbose: int = 0,
    presented_train: np.ndarray | None = None,
    presented_val: np.ndarray | None = None,
    links: np.ndarray | None = None,
) -> TrainedNetwork:
    """Fit a network on float matrices; early-stop on validation loss and keep the best weights.

    `presented_train` / `presented_val` (boolean (n, C), optional): which cells had an outcome
    recorded. With them the loss counts only presented cells (`PresentedOutcomeLoss`), so the
    network learns P(resonates | presented) and an unpresented characteristic no longer teaches
    "does not resonate" — what a CRM's explicit negatives are for. Without them every cell counts.

    `links` (labels × groups, optional): the catalogue the wide path goes through (`build_network`).

    After training the output biases are shifted by −log(positive weight), undoing the odds
    inflation the weighting causes (prior correction): rare labels still got a strong gradient,
    and the probabilities stay calibrated and comparable across characteristics for ranking.

    Loss: `WeightedBinaryCrossentropy` with `positive_weights(y_train, config.training)` (plus the
    L2 penalties); the output bias starts at the weighted log-odds of each label (the optimum of
    that loss for a constant prediction). Adam; the learning rate is halved after
    `reduce_lr_patience` epochs without improvement; training stops after `patience` such epochs
    and the weights of the epoch with the lowest validation loss are restored. Ensemble members
    each learn on their own loss; validation loss is that of `.model` (averaged probabilities).

    Each epoch runs as one TensorFlow graph call (shuffled batches gathered in-graph; a final
    partial batch is dropped when at least one full batch exists, the next shuffle reuses its
    rows), which avoids per-step Python overhead: small data sets train in seconds. Same data,
    config and seed give bit-identical probabilities on CPU. `verbose`: 0 silent, 1 Keras progress
    bar over epochs, 2 one line per epoch. Without validation data it trains `max_epochs` epochs.
    """
    x_train, y_train = _as_matrices(x_train, y_train, "train")
    has_val = x_val is not None and y_val is not None
    if has_val:
        x_val, y_val = _as_matrices(x_val, y_val, "validation")
        if x_val.shape[1] != x_train.shape[1] or y_val.shape[1] != y_train.shape[1]:
            raise ValueError(
                f"validation shapes {x_val.shape}, {y_val.shape} do not match train {x_train.shape}, {y_train.shape}"
            )
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    tcfg = config.training
    masked = presented_train is not None
    if masked:
        shown = _presented(presented_train, y_train, "train")
        weights = positive_weights_among(y_train, shown, tcfg)
        bias = _log_odds(y_train.sum(axis=0), shown.sum(axis=0)) + np.log(weights)
        y_train = np.concatenate([shown, y_train], axis=1)
        if has_val:
            if presented_val is None:
                raise ValueError("presented_val is required with presented_train")
            y_val = np.concatenate([_presented(presented_val, y_val, "validation"), y_val], axis=1)
    else:
        weights = positive_weights(y_train, tcfg)
        bias = label_log_odds(y_train) + np.log(weights)
    inputs, members = _build_members(
        x_train.shape[1], len(weights), config.network, seed=seed, output_bias=bias, links=links
    )
    trainer = keras.Model(inputs, members, name="needs_rec_trainer")
    model = _inference_model(inputs, members)
    loss_fn: keras.losses.Loss = (
        PresentedOutcomeLoss(weights, label_smoothing=tcfg.label_smoothing)
        if masked
        else WeightedBinaryCrossentropy(weights, label_smoothing=tcfg.label_smoothing)
    )
    optimizer = keras.optimizers.Adam(learning_rate=tcfg.learning_rate)
    optimizer.build(trainer.trainable_variables)

    train_epoch = _epoch_function(trainer, loss_fn, optimizer, x_train, y_train, tcfg.batch_size)
    val_loss = _loss_function(model, loss_fn, x_train.shape[1], y_train.shape[1], len(weights))
    shuffler = np.random.default_rng(seed)
    history: dict[str, list[float]] = {"loss": [], "learning_rate": []}
    if has_val:
        history["val_loss"] = []
    progress = (
        keras.utils.Progbar(tcfg.max_epochs, unit_name="epoch", stateful_metrics=["loss", "val_loss"])
        if verbose == 1
        else None
    )
    best, best_epoch, best_weights, wait, flat, stop = math.inf, 0, None, 0, 0, False
    for epoch in range(1, tcfg.max_epochs + 1):
        learning_rate = float(np.asarray(optimizer.learning_rate))
        loss = float(train_epoch(tf.constant(shuffler.permutation(x_train.shape[0]), dtype=tf.int32)))
        history["loss"].append(loss)
        history["learning_rate"].append(learning_rate)
        logs = [("loss", loss)]
        if has_val:
            current = _batched_loss(val_loss, x_val, y_val)
            history["val_loss"].append(current)
            logs.append(("val_loss", current))
            if current < best - tcfg.min_delta:
                best, best_epoch, best_weights, wait, flat = current, epoch, model.get_weights(), 0, 0
            else:
                wait += 1
                flat += 1
                stop = wait >= tcfg.patience
                if tcfg.reduce_lr_patience and flat >= tcfg.reduce_lr_patience:
                    optimizer.learning_rate.assign(max(learning_rate / 2, tcfg.learning_rate / 64))
                    flat = 0
        if progress is not None:
            progress.update(epoch, values=logs, finalize=epoch == tcfg.max_epochs)
        elif verbose >= 2:
            print(f"epoch {epoch}/{tcfg.max_epochs} - " + " - ".join(f"{k}: {v:.4f}" for k, v in logs), flush=True)
        if stop:
            break
    if progress is not None and epoch < tcfg.max_epochs:
        progress.update(epoch, finalize=True)
    if best_weights is not None:
        model.set_weights(best_weights)
    else:
        best_epoch = len(history["loss"])
    _undo_weighting(model, weights)
    if verbose and has_val:
        print(f"stopped after epoch {epoch}; kept epoch {best_epoch} (val_loss {best:.4f})", flush=True)
    return TrainedNetwork(model, history, best_epoch, weights)


def predict(model: keras.Model, x: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Probabilities of `model` on `x` in inference mode, chunk by chunk (no `predict` retracing per model)."""
    x = np.asarray(x, dtype=np.float32)
    parts = [np.asarray(model(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, model.outputs[0].shape[-1]), dtype=np.float32)


def _undo_weighting(model: keras.Model, weights: np.ndarray) -> None:
    """Shift every output layer's bias by −log(w): sigmoid(z − log w) is the unweighted probability."""
    shift = np.log(np.asarray(weights, dtype=np.float32))
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense) and layer.name.endswith("logits"):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, bias - shift])


def _epoch_function(
    trainer: keras.Model,
    loss_fn: keras.losses.Loss,
    optimizer: keras.optimizers.Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
):
    """A graph function running one epoch (all batches of a given row permutation); returns mean loss."""
    x_all = tf.constant(x)
    y_all = tf.constant(y)
    n = x.shape[0]
    size = min(batch_size, n)
    n_batches = max(1, n // size)
    variables = trainer.trainable_variables

    @tf.function(reduce_retracing=True)
    def run(order: tf.Tensor) -> tf.Tensor:
        total = tf.constant(0.0)
        for i in tf.range(n_batches):
            rows = order[i * size : (i + 1) * size]
            x_batch = tf.gather(x_all, rows)
            y_batch = tf.gather(y_all, rows)
            with tf.GradientTape() as tape:
                outputs = trainer(x_batch, training=True)
                if not isinstance(outputs, list | tuple):  # one member: Keras returns a bare tensor
                    outputs = [outputs]
                data_loss = tf.add_n([loss_fn(y_batch, out) for out in outputs]) / len(outputs)
                penalty = tf.add_n(trainer.losses) if trainer.losses else 0.0
                loss = data_loss + penalty
            gradients = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(gradients, variables, strict=True))
            total += data_loss
        return total / n_batches

    return run


def _loss_function(model: keras.Model, loss_fn: keras.losses.Loss, n_inputs: int, n_targets: int, n_labels: int):
    """Graph function: summed per-row loss of `model` (inference mode) on one chunk.

    `n_targets` is the width of y (2 × n_labels for `PresentedOutcomeLoss`, else n_labels).
    """
    del n_labels  # the loss knows how to read its targets

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, n_inputs], tf.float32),
            tf.TensorSpec([None, n_targets], tf.float32),
        ]
    )
    def run(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(loss_fn.call(y, model(x, training=False)))

    return run


def _batched_loss(loss_sum, x: np.ndarray | None, y: np.ndarray | None, chunk: int = 65536) -> float:
    assert x is not None and y is not None  # callers check has_val; Optional only for mypy's sake
    total = sum(float(loss_sum(x[i : i + chunk], y[i : i + chunk])) for i in range(0, x.shape[0], chunk))
    return total / x.shape[0]


def predict_proba(model: keras.Model, x: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Probabilities (n, C) as float32, calling the model eagerly in large batches (no `predict` overhead)."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[0] == 0:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    parts = [np.asarray(model(x[i : i + batch_size], training=False)) for i in range(0, x.shape[0], batch_size)]
    return np.concatenate(parts, axis=0).astype(np.float32)


def _as_matrices(x: np.ndarray | None, y: np.ndarray | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    if x is None or y is None:
        raise ValueError(f"{split}: x and y must both be given")
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{split}: x and y must be 2-D with the same number of rows, got {x.shape} and {y.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{split}: no rows")
    if not np.isfinite(x).all():
        raise ValueError(f"{split}: x holds NaN or infinite values; encode missing values before training")
    return x, y


def describe(model: keras.Model) -> str:
    """One line: layer count and trainable parameter count, for logs."""
    n_params = sum(math.prod(w.shape) for w in model.trainable_weights)
    return f"{len(model.layers)} layers, {n_params} trainable parameters"
