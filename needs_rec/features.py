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
_LOGGED = np.array([True, True, False, True])  # log1p on employees, revenue and tenure (DERIVED_NUMBERS order)


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


def _key(field: str, code: str) -> str:
    """`code` of `field` as one key of the exported tables (the unit separator never occurs in a code)."""
    return f"{field}\x1f{code}"


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

    mean: float  # of the transformed value (log1p for counts and tenure)
    variance: float
    bin_edges: tuple[float, ...]  # quantiles of the value before the log (employees, years, …), so bins are
    # decided by exact float comparisons, never by how a library rounds a logarithm


class FeatureEncoder(keras.layers.Layer):
    """Keras layer: dict of raw field tensors → float32 matrix (n, `width`).

    Build it from the dictionaries, call `adapt(train_frame)` once, then call it on tensors (or
    use `encode_frame`). Unknown codes go to an unknown bucket and missing values to their own
    token/indicator, so nothing the CRM sends can break it.

    The graph is written field-parallel where it can be (the code fields normalised together, every
    hot cell set by one scatter, all numbers in one matrix) rather than one block per field, so
    both a one-row call (where TensorFlow's per-op cost dominates) and a 65k-row batch are cheap.
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
        # One block of columns per code field ([unknown, vocabulary…, missing]) and per multi-valued
        # field ([unknown, vocabulary…]), in CODE_FIELDS then MULTI_FIELDS order. Each field's lookup
        # returns 0 for an unknown code and i + 1 for its i-th token, so block offset + index is the column.
        self._offsets: dict[str, int] = {}
        self._tokens: dict[str, list[str]] = {}
        width = 0
        for name in (*self.CODE_FIELDS, *self.MULTI_FIELDS):
            self._offsets[name] = width
            tokens = [*self.vocabularies[name], MISSING_TOKEN] if name in self.CODE_FIELDS else self.vocabularies[name]
            self._tokens[name] = tokens
            width += len(tokens) + 1
        self._category_width = width
        self.lookups = {
            name: keras.layers.StringLookup(vocabulary=tokens, num_oov_indices=1, name=f"lookup_{name}")
            for name, tokens in self._tokens.items()
        }
        self._code_offsets = np.array([self._offsets[name] for name in self.CODE_FIELDS], dtype=np.int64)

        need_codes = self.vocabularies["interests"]
        categories = [c.code for c in dictionaries.need_categories]
        chars = dictionaries.characteristics
        interests = self._offsets["interests"] + 1  # column of the first need (after the unknown bucket)
        need_col = {code: interests + i for i, code in enumerate(need_codes)}
        products = self._offsets["products_owned"] + 1
        product_col = {code: products + i for i, code in enumerate(self.vocabularies["products_owned"])}
        # Fixed link matrix from the dictionaries: category columns → [interest categories | need
        # match per characteristic | owned product per characteristic]; unknown codes link to nothing.
        n_cat, n_char = len(categories), len(chars)
        links = np.zeros((width, n_cat + 2 * n_char), dtype=np.float32)
        category_pos = {code: i for i, code in enumerate(categories)}
        for need in dictionaries.needs:
            links[need_col[need.code], category_pos[need.category]] = 1.0
        for j, ch in enumerate(chars):
            for need in ch.needs:
                links[need_col[need], n_cat + j] = 1.0
            links[product_col[ch.product], n_cat + n_char + j] = 1.0
        self._links = links
        # Interest counts saturate at 3 and are scaled to [0, 1]; ownership is 0/1.
        self._link_cap = np.array([3.0] * (n_cat + n_char) + [1.0] * n_char, dtype=np.float32)
        self._link_scale = np.array([1 / 3] * (n_cat + n_char) + [1.0] * n_char, dtype=np.float32)
        self._n_links = (n_cat, n_char)
        # Stage → which characteristics can be offered, row-aligned with the stage's column block
        # (unknown, stages…, missing); unknown and missing stages allow everything.
        offered = dictionaries.offered().astype(np.float32)
        ones = np.ones((1, offered.shape[1]), dtype=np.float32)
        self._stage_offer = np.concatenate([ones, offered, ones], axis=0)
        self.number_stats: dict[str, NumberStats] | None = None
        self.feature_names: list[str] = []

    # -- fitting -------------------------------------------------------------------------------

    def adapt(self, frame: pd.DataFrame) -> FeatureEncoder:
        """Learn the numeric statistics (mean, variance, quantile bin edges) from the training frame."""
        raw = frame_to_inputs(frame)
        plain, transformed = (t.numpy() for t in self._numbers({k: tf.constant(v) for k, v in raw.items()}))
        stats: dict[str, NumberStats] = {}
        for i, name in enumerate(self.DERIVED_NUMBERS):
            finite = np.isfinite(transformed[:, i])
            values = transformed[finite, i]
            if values.size == 0:
                stats[name] = NumberStats(0.0, 1.0, ())
                continue
            variance = float(values.var())
            quantiles = np.quantile(plain[finite, i], np.linspace(0, 1, NUMBER_BINS + 1)[1:-1])
            edges = tuple(float(e) for e in np.unique(quantiles.astype(np.float32)))  # float32 values, exactly
            stats[name] = NumberStats(float(values.mean()), variance if variance > 1e-12 else 1.0, edges)
        self.set_number_stats(stats)
        return self

    def set_number_stats(self, stats: Mapping[str, NumberStats]) -> None:
        """Install learned statistics (from `adapt`) as the constants the encoding uses."""
        missing = [name for name in self.DERIVED_NUMBERS if name not in stats]
        if missing:
            raise ValueError(f"number statistics: missing {missing}; expected {list(self.DERIVED_NUMBERS)}")
        self.number_stats = {name: stats[name] for name in self.DERIVED_NUMBERS}
        s = list(self.number_stats.values())
        self._mean = np.array([x.mean for x in s], dtype=np.float32)
        self._std = np.maximum(np.sqrt(np.array([x.variance for x in s], dtype=np.float32)), 1e-7)
        self._edges = np.full((len(s), NUMBER_BINS - 1), np.nan, dtype=np.float32)  # NaN pads: x >= NaN is false
        # Columns of [z ×4 | missing ×4 | bins 4×NUMBER_BINS] in feature order: per number z, missing, its bins.
        order: list[int] = []
        n = len(s)
        for i, x in enumerate(s):
            self._edges[i, : len(x.bin_edges)] = x.bin_edges
            order += [i, n + i]
            if x.bin_edges:
                order += [2 * n + i * NUMBER_BINS + b for b in range(len(x.bin_edges) + 1)]
        self._number_order = np.array(order, dtype=np.int64)
        self.feature_names = self._names()

    def build(self, input_shape: object = None) -> None:
        """Nothing to create: the lookup has a fixed vocabulary and the rest are constants."""
        self.built = True

    # -- encoding ------------------------------------------------------------------------------

    def _numbers(self, inputs: Mapping[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """(plain, transformed), each (n, 4) in DERIVED_NUMBERS order, NaN = missing.

        plain: employees and revenue floored at 0, the founding year, client tenure in years floored
        at 0 (what the bins cut); transformed: the same with log1p on all but the year (what is normalised).
        """
        years = _years(tf.stack([inputs[schema.OCCURRED_ON], inputs["client_since"]], axis=1))
        tenure = tf.maximum(years[:, 0] - years[:, 1], 0.0)
        counts = tf.maximum(tf.cast(tf.stack([inputs[name] for name in self.LOG_NUMBERS], axis=1), tf.float32), 0.0)
        founded = tf.cast(inputs["founded_year"], tf.float32)
        plain = tf.concat([counts, tf.stack([founded, tenure], axis=1)], axis=1)
        return plain, tf.where(_LOGGED, tf.math.log1p(plain), plain)

    def _category_cells(self, inputs: Mapping[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """(row, column) of every hot cell of the code and multi-valued blocks."""
        codes = _normalize(tf.stack([inputs[name] for name in self.CODE_FIELDS], axis=1))
        codes = tf.unstack(tf.where(codes == "", MISSING_TOKEN, codes), num=len(self.CODE_FIELDS), axis=1)
        ids = tf.stack([self.lookups[name](x) for name, x in zip(self.CODE_FIELDS, codes, strict=True)], axis=1)
        n = tf.shape(ids, out_type=tf.int64)[0]
        rows = [tf.repeat(tf.range(n), len(self.CODE_FIELDS))]
        cols = [tf.reshape(ids + self._code_offsets, [-1])]
        for name in self.MULTI_FIELDS:
            parts = tf.strings.split(tf.strings.lower(inputs[name]), schema.MULTI_SEPARATOR)
            items = tf.strings.strip(parts.flat_values)
            keep = items != ""
            rows.append(parts.value_rowids()[keep])
            cols.append(self.lookups[name](items[keep]) + self._offsets[name])
        return tf.concat(rows, axis=0), tf.concat(cols, axis=0)

    def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        if self.number_stats is None:
            raise NotFittedError("FeatureEncoder is not fitted yet: call 'adapt' with the training frame first")
        rows, cols = self._category_cells(inputs)
        n = tf.shape(inputs[schema.STAGE], out_type=tf.int64)[0]
        hot = tf.scatter_nd(tf.stack([rows, cols], axis=1), tf.ones_like(rows, dtype=tf.float32),
                            tf.stack([n, self._category_width]))
        categories = tf.minimum(hot, 1.0)  # a code listed twice is still one
        links = tf.minimum(tf.matmul(categories, self._links), self._link_cap) * self._link_scale

        plain, x = self._numbers(inputs)
        missing = tf.math.is_nan(x)
        filled = tf.where(missing, 0.0, x)
        z = tf.where(missing, 0.0, (filled - self._mean) / self._std)
        bins = tf.reduce_sum(tf.cast(tf.where(missing, 0.0, plain)[:, :, None] >= self._edges, tf.int32), axis=2)
        present = tf.cast(~missing, tf.float32)
        onehot = tf.one_hot(bins, NUMBER_BINS, dtype=tf.float32) * present[:, :, None]
        numbers = tf.concat([z, 1.0 - present, tf.reshape(onehot, [-1, len(self.DERIVED_NUMBERS) * NUMBER_BINS])],
                            axis=1)
        return tf.concat([categories, links, tf.gather(numbers, self._number_order, axis=1)], axis=1)

    def offer_mask(self, stage: tf.Tensor) -> tf.Tensor:
        """(n, C) float mask: 1 where the characteristic has a talking point at the row's stage, else 0."""
        x = _normalize(stage)
        return tf.gather(self._stage_offer, self.lookups[schema.STAGE](tf.where(x == "", MISSING_TOKEN, x)))

    def stage_offer_mask(self, encoded: tf.Tensor) -> tf.Tensor:
        """The same mask read from already encoded rows (their stage block), without a second lookup."""
        start = self._offsets[schema.STAGE]
        block = encoded[:, start : start + self._stage_offer.shape[0]]
        return tf.matmul(block, self._stage_offer)

    def tables(self) -> dict[str, np.ndarray]:
        """Every constant `call` uses, as arrays (exported so `needs_rec.fast_path` can mirror the encoding)."""
        if self.number_stats is None:
            raise NotFittedError("FeatureEncoder is not fitted yet: call 'adapt' with the training frame first")
        keys, columns = [], [-1]  # "field<US>token" → column; column -1 stands for the unknown bucket
        for name, tokens in self._tokens.items():
            keys += [_key(name, token) for token in tokens]
            columns += range(self._offsets[name] + 1, self._offsets[name] + 1 + len(tokens))
        return {
            "keys": np.array(keys, dtype=object),
            "key_columns": np.array(columns, dtype=np.int64),
            "code_prefix": np.array([_key(name, "") for name in self.CODE_FIELDS], dtype=object),
            "code_unknown": self._code_offsets,
            "multi_prefix": np.array([_key(name, "") for name in self.MULTI_FIELDS], dtype=object),
            "multi_unknown": np.array([self._offsets[name] for name in self.MULTI_FIELDS], dtype=np.int64),
            "category_width": np.array(self._category_width, dtype=np.int64),
            "links": self._links,
            "link_cap": self._link_cap,
            "link_scale": self._link_scale,
            "mean": self._mean,
            "std": self._std,
            "edges": self._edges,
            "number_order": self._number_order,
            "stage_offset": np.array(self._offsets[schema.STAGE], dtype=np.int64),
            "stage_offer": self._stage_offer,
        }

    def _names(self) -> list[str]:
        names: list[str] = []
        for name in self.CODE_FIELDS:
            names += [f"{name}=<unknown>", *(f"{name}={c}" for c in self.vocabularies[name]), f"{name}=<missing>"]
        for name in self.MULTI_FIELDS:
            names += [f"{name}=<unknown>", *(f"{name}={c}" for c in self.vocabularies[name])]
        n_cat, n_char = self._n_links
        names += [f"interest_category#{i}" for i in range(n_cat)]
        names += [f"need_match#{i}" for i in range(n_char)]
        names += [f"owned_product#{i}" for i in range(n_char)]
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
