"""Raw contract fields → one float vector per episode, as Keras preprocessing built from the dictionaries.

Every vocabulary comes from the dictionaries (fixed lookups with an unknown bucket and a missing
token), never from the codes that happen to be in the data; only numeric statistics (means,
variances, quantile bin edges) are learned, from the training split. The same encoder runs once
over the training frame (so the network trains on a plain float matrix) and again inside the
exported SavedModel, so training and serving cannot drift apart.

Beyond one-hot / multi-hot codes the encoder derives two families of features straight from the
dictionaries' links: for every characteristic, how many of the contact's interests it answers,
and whether the organization already owns its product. They let the network generalise along the
firm's own need catalogue instead of rediscovering it from data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from needs_rec import schema
from needs_rec.dictionaries import Dictionaries
from needs_rec.errors import NotFittedError

MISSING_TOKEN = "__missing__"
NUMBER_BINS = 8


def input_signature() -> dict[str, tf.TensorSpec]:
    """The SavedModel's inputs: one 1-D tensor per raw field (strings, or float32 with NaN = missing)."""
    return {
        name: tf.TensorSpec([None], tf.float32 if name in schema.NUMERIC_INPUTS else tf.string, name=name)
        for name in schema.MODEL_INPUT_NAMES
    }


def frame_to_inputs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Turn a model-input frame (`schema.MODEL_INPUT_NAMES` columns) into the arrays the model takes.

    Absent columns are treated as missing for every row, so callers may send only what they know.
    """
    n = len(frame)
    out: dict[str, np.ndarray] = {}
    for name in schema.MODEL_INPUT_NAMES:
        if name in schema.NUMERIC_INPUTS:
            if name in frame:
                out[name] = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
            else:
                out[name] = np.full(n, np.nan, dtype=np.float32)
        elif name in frame:
            out[name] = frame[name].fillna("").astype(str).to_numpy(dtype=object)
        else:
            out[name] = np.full(n, "", dtype=object)
    return out


def _normalize(x: tf.Tensor) -> tf.Tensor:
    return tf.strings.lower(tf.strings.strip(x))


def _safe_number(text: tf.Tensor) -> tf.Tensor:
    """Parse digits to float; anything else becomes NaN (dates are validated before they get here)."""
    ok = tf.strings.regex_full_match(text, r"[0-9]+")
    parsed = tf.strings.to_number(tf.where(ok, text, "0"), out_type=tf.float32)
    return tf.where(ok, parsed, tf.fill(tf.shape(parsed), np.float32(np.nan)))


def _years(date: tf.Tensor) -> tf.Tensor:
    """ISO date string → fractional year (NaN when empty or malformed)."""
    date = tf.strings.join([tf.strings.strip(date), "##########"])  # pad so substr never runs past the end
    year = _safe_number(tf.strings.substr(date, 0, 4))
    month = _safe_number(tf.strings.substr(date, 5, 2))
    month = tf.where(tf.math.is_nan(month), tf.zeros_like(month), month - 1.0)
    return year + month / 12.0


@dataclass(frozen=True)
class NumberStats:
    """What the encoder learned about one numeric feature on the training split."""

    mean: float
    variance: float
    bin_edges: tuple[float, ...]


class FeatureEncoder(keras.layers.Layer):
    """Keras layer: dict of raw field tensors → float32 matrix (n, `width`).

    Build it from the dictionaries, call `adapt(train_frame)` once, then call it on tensors (or
    use `encode_frame`). Unknown codes go to an unknown bucket and missing values to their own
    token/indicator, so nothing the CRM sends can break it.
    """

    CODE_FIELDS: tuple[str, ...] = tuple(c.name for c in schema.MODEL_INPUTS if c.kind is schema.Kind.CODE)
    MULTI_FIELDS: tuple[str, ...] = tuple(c.name for c in schema.MODEL_INPUTS if c.kind is schema.Kind.MULTI)
    LOG_NUMBERS: tuple[str, ...] = ("employees", "revenue_mln")
    DERIVED_NUMBERS: tuple[str, ...] = ("employees", "revenue_mln", "founded_year", "client_years")

    def __init__(self, dictionaries: Dictionaries, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.vocabularies: dict[str, list[str]] = {
            c.name: [item.code for item in getattr(dictionaries, c.vocabulary)]
            for c in schema.MODEL_INPUTS
            if c.vocabulary is not None
        }
        self.lookups = {
            name: keras.layers.StringLookup(
                vocabulary=[*vocab, MISSING_TOKEN] if name in self.CODE_FIELDS else vocab,
                num_oov_indices=1,
                name=f"lookup_{name}",
            )
            for name, vocab in self.vocabularies.items()
        }
        # Lookup output width: the unknown bucket, the vocabulary and, for single codes, the missing token.
        self._sizes = {
            name: len(vocab) + (2 if name in self.CODE_FIELDS else 1) for name, vocab in self.vocabularies.items()
        }
        need_codes = self.vocabularies["interests"]
        need_pos = {code: i + 1 for i, code in enumerate(need_codes)}  # +1: index 0 is the unknown bucket
        product_pos = {code: i + 1 for i, code in enumerate(self.vocabularies["products_owned"])}
        categories = [c.code for c in dictionaries.need_categories]
        chars = dictionaries.characteristics
        # Fixed link matrices from the dictionaries (row 0 = unknown code links to nothing).
        need_to_char = np.zeros((len(need_codes) + 1, len(chars)), dtype=np.float32)
        product_to_char = np.zeros((len(product_pos) + 1, len(chars)), dtype=np.float32)
        for j, ch in enumerate(chars):
            for need in ch.needs:
                need_to_char[need_pos[need], j] = 1.0
            product_to_char[product_pos[ch.product], j] = 1.0
        need_to_category = np.zeros((len(need_codes) + 1, len(categories)), dtype=np.float32)
        category_pos = {code: i for i, code in enumerate(categories)}
        for need in dictionaries.needs:
            need_to_category[need_pos[need.code], category_pos[need.category]] = 1.0
        # Stage → which characteristics can be offered (rows: unknown, stages…, missing; unknown and
        # missing stages allow everything, since the stage then says nothing).
        offered = dictionaries.offered().astype(np.float32)
        ones = np.ones((1, offered.shape[1]), dtype=np.float32)
        self._stage_offer = np.concatenate([ones, offered, ones], axis=0)
        self._need_to_char = need_to_char
        self._product_to_char = product_to_char
        self._need_to_category = need_to_category
        self.number_stats: dict[str, NumberStats] | None = None
        self._normalizers: dict[str, keras.layers.Normalization] = {}
        self._discretizers: dict[str, keras.layers.Discretization] = {}
        self.feature_names: list[str] = []

    # -- fitting -------------------------------------------------------------------------------

    def adapt(self, frame: pd.DataFrame) -> FeatureEncoder:
        """Learn the numeric statistics (mean, variance, quantile bin edges) from the training frame."""
        raw = frame_to_inputs(frame)
        numbers = self._raw_numbers({k: tf.constant(v) for k, v in raw.items()})
        stats: dict[str, NumberStats] = {}
        for name, tensor in numbers.items():
            values = tensor.numpy()
            values = values[np.isfinite(values)]
            if values.size == 0:
                stats[name] = NumberStats(0.0, 1.0, ())
                continue
            variance = float(values.var())
            edges = np.unique(np.quantile(values, np.linspace(0, 1, NUMBER_BINS + 1)[1:-1]))
            stats[name] = NumberStats(float(values.mean()), variance if variance > 1e-12 else 1.0, tuple(edges))
        self.set_number_stats(stats)
        return self

    def set_number_stats(self, stats: Mapping[str, NumberStats]) -> None:
        """Install learned statistics (from `adapt`) and build the layers that use them."""
        self.number_stats = dict(stats)
        self._normalizers = {
            name: keras.layers.Normalization(mean=s.mean, variance=s.variance, name=f"norm_{name}")
            for name, s in self.number_stats.items()
        }
        self._discretizers = {
            name: keras.layers.Discretization(bin_boundaries=list(s.bin_edges), name=f"bins_{name}")
            for name, s in self.number_stats.items()
            if s.bin_edges
        }
        self.feature_names = self._names()

    def build(self, input_shape: object = None) -> None:
        """Nothing to create: every sub-layer is built with fixed vocabularies or given statistics."""
        self.built = True

    # -- encoding ------------------------------------------------------------------------------

    def _raw_numbers(self, inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        numbers = {}
        for name in self.LOG_NUMBERS:
            x = tf.cast(inputs[name], tf.float32)
            numbers[name] = tf.math.log1p(tf.maximum(x, 0.0))
        numbers["founded_year"] = tf.cast(inputs["founded_year"], tf.float32)
        tenure = _years(inputs[schema.OCCURRED_ON]) - _years(inputs["client_since"])
        numbers["client_years"] = tf.math.log1p(tf.maximum(tenure, 0.0))
        return numbers

    def _codes(self, name: str, x: tf.Tensor) -> tf.Tensor:
        x = _normalize(x)
        x = tf.where(x == "", MISSING_TOKEN, x)
        ids = self.lookups[name](x)
        return tf.one_hot(ids, self._sizes[name], dtype=tf.float32)

    def _multi(self, name: str, x: tf.Tensor) -> tf.Tensor:
        parts = tf.strings.split(x, schema.MULTI_SEPARATOR)
        parts = tf.ragged.boolean_mask(parts, tf.strings.strip(parts) != "")
        ids = parts.with_flat_values(self.lookups[name](_normalize(parts.flat_values)))
        size = self._sizes[name]
        return tf.cast(
            tf.math.bincount(ids, minlength=size, maxlength=size, binary_output=True, axis=-1, dtype=tf.int32),
            tf.float32,
        )

    def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        if self.number_stats is None:
            raise NotFittedError("FeatureEncoder is not fitted yet: call 'adapt' with the training frame first")
        blocks = [self._codes(name, inputs[name]) for name in self.CODE_FIELDS]
        multi = {name: self._multi(name, inputs[name]) for name in self.MULTI_FIELDS}
        blocks.extend(multi.values())
        interests, owned = multi["interests"], multi["products_owned"]
        blocks.append(tf.minimum(tf.matmul(interests, self._need_to_category), 3.0) / 3.0)
        blocks.append(tf.minimum(tf.matmul(interests, self._need_to_char), 3.0) / 3.0)
        blocks.append(tf.minimum(tf.matmul(owned, self._product_to_char), 1.0))
        numbers = self._raw_numbers(inputs)
        for name, x in numbers.items():
            missing = tf.math.is_nan(x)
            filled = tf.where(missing, tf.zeros_like(x), x)
            z = tf.where(missing, tf.zeros_like(x), tf.reshape(self._normalizers[name](filled[:, None]), [-1]))
            blocks.append(tf.stack([z, tf.cast(missing, tf.float32)], axis=1))
            if name in self._discretizers:
                bins = self._discretizers[name](filled)
                width = len(self.number_stats[name].bin_edges) + 1
                onehot = tf.one_hot(tf.cast(bins, tf.int32), width, dtype=tf.float32)
                blocks.append(onehot * tf.cast(~missing, tf.float32)[:, None])
        return tf.concat(blocks, axis=1)

    def offer_mask(self, stage: tf.Tensor) -> tf.Tensor:
        """(n, C) float mask: 1 where the characteristic has a talking point at the row's stage, else 0."""
        x = _normalize(stage)
        ids = self.lookups[schema.STAGE](tf.where(x == "", MISSING_TOKEN, x))
        return tf.gather(self._stage_offer, ids)

    def _names(self) -> list[str]:
        names: list[str] = []
        for name in self.CODE_FIELDS:
            names += [f"{name}=<unknown>", *(f"{name}={c}" for c in self.vocabularies[name]), f"{name}=<missing>"]
        for name in self.MULTI_FIELDS:
            names += [f"{name}=<unknown>", *(f"{name}={c}" for c in self.vocabularies[name])]
        names += [f"interest_category#{i}" for i in range(self._need_to_category.shape[1])]
        names += [f"need_match#{i}" for i in range(self._need_to_char.shape[1])]
        names += [f"owned_product#{i}" for i in range(self._product_to_char.shape[1])]
        for name, s in (self.number_stats or {}).items():
            names += [f"{name}:z", f"{name}:missing"]
            if s.bin_edges:
                names += [f"{name}:bin{i}" for i in range(len(s.bin_edges) + 1)]
        return names

    @property
    def width(self) -> int:
        """Number of encoded features."""
        if self.number_stats is None:
            raise NotFittedError("FeatureEncoder is not fitted yet: call 'adapt' with the training frame first")
        return len(self.feature_names)

    def encode_frame(self, frame: pd.DataFrame, batch_size: int = 65536) -> np.ndarray:
        """Encode a model-input frame into a float32 matrix, in batches to bound memory."""
        raw = frame_to_inputs(frame)
        parts = []
        for start in range(0, len(frame), batch_size):
            chunk = {k: tf.constant(v[start : start + batch_size]) for k, v in raw.items()}
            parts.append(self(chunk).numpy())
        if not parts:
            return np.zeros((0, self.width), dtype=np.float32)
        return np.concatenate(parts, axis=0)

    def stats_dict(self) -> dict[str, dict[str, object]]:
        """The learned numeric statistics, JSON-able (stored in the manifest for inspection)."""
        return {
            name: {"mean": s.mean, "variance": s.variance, "bin_edges": list(s.bin_edges)}
            for name, s in (self.number_stats or {}).items()
        }
