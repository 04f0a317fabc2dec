"""A NumPy twin of an exported recommender, for small calls, trusted only after it matches the SavedModel.

Why it exists: a served request is one row, and on the 2-core serving machine one TensorFlow
function call costs ≈ 0.3 ms when the process is busy but 1–1.5 ms after a few idle
milliseconds (even an identity function; the cost is TensorFlow's call path going cold), which
alone would break a 2 ms p50 at a steady 200 requests/s. The same row through NumPy costs ≈ 0.1 ms.

How it stays honest: the SavedModel remains the single source of truth. `export_tensors`
collects the encoder's tables (lookup keys, link matrix, number statistics) and the network's
layer graph and weights; `write_twin` stores them as one NumPy `.npz` file of the version
(`saved_model/assets.extra/twin.npz`, where TensorFlow and TF Serving keep files they never load
or serve; checksummed in the manifest's `files` like every SavedModel file, read back with
`allow_pickle=False`). It is not a signature of the SavedModel, so no TF Serving client can fetch
the weights. `Twin.from_version` builds the twin from that file, and `Twin.verify` runs probe
rows (every code, unknown and missing values, odd numbers and dates) through both and refuses the
twin unless every probability agrees within `TOLERANCE`. The serving side then uses the twin for
calls of a few rows and the SavedModel for everything else. The encoding mirrors
`needs_rec.features.FeatureEncoder.call` step by step (ASCII-only strip/lower, byte-wise date
parsing, float32 arithmetic); a change there that the twin does not follow fails verification,
so the service falls back to TensorFlow instead of answering differently.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np

from needs_rec import schema
from needs_rec.features import MISSING_TOKEN, NUMBER_BINS, FeatureEncoder

#: The twin's file, relative to the version's SavedModel directory (TensorFlow ignores `assets.extra/`).
TWIN_FILE = "assets.extra/twin.npz"
#: The HTTP answer rounds probabilities to 4 decimals; float32 sums in another order differ by ~2e-5
#: on networks without batch norm (the plain-MLP shape the search may choose).
TOLERANCE = 1e-4
#: Passes over at most this many rows multiply only the input's nonzero columns (`NetworkTwin.forward`).
SPARSE_ROWS = 8
_KEY_SEPARATOR = "\x1f"
_ASCII_SPACE = " \t\n\v\f\r"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_DIGITS = re.compile(rb"[0-9]+")
_CODE_POS = tuple(schema.MODEL_INPUT_NAMES.index(name) for name in FeatureEncoder.CODE_FIELDS)
_MULTI_POS = tuple(schema.MODEL_INPUT_NAMES.index(name) for name in FeatureEncoder.MULTI_FIELDS)
_LOG_POS = tuple(schema.MODEL_INPUT_NAMES.index(name) for name in FeatureEncoder.LOG_NUMBERS)
_FOUNDED_POS = schema.MODEL_INPUT_NAMES.index("founded_year")
_LOGGED = (True, True, False, True)  # log1p on employees, revenue and tenure, not the founding year
_DATE_POS = (schema.MODEL_INPUT_NAMES.index(schema.OCCURRED_ON), schema.MODEL_INPUT_NAMES.index("client_since"))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function in its tanh form: no overflow (and no warning) for large |x|."""
    return (0.5 + 0.5 * np.tanh(0.5 * x)).astype(np.float32)


def _gelu(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(np.float32)


def _selu(x: np.ndarray) -> np.ndarray:
    alpha, scale = 1.6732632423543772, 1.0507009873554805
    return (scale * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))).astype(np.float32)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))).astype(np.float32),
    "selu": _selu,
    "gelu": _gelu,
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x).astype(np.float32),
}
_LAYER_KINDS = {
    keras.layers.Dense: "dense",
    keras.layers.BatchNormalization: "batch_norm",
    keras.layers.Activation: "activation",
    keras.layers.Dropout: "identity",
    keras.layers.Add: "add",
    keras.layers.Average: "average",
}


# -- export side ------------------------------------------------------------------------------


def network_graph(network: keras.Model) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(layer graph as JSON-able dict, weights keyed "layer/weight") of a functional network, or None.

    None when the network holds a layer the twin cannot compute, or Keras no longer exposes its
    graph the way this reads it; the version is then served by the SavedModel alone.
    """
    try:
        return _walk(network)
    except Exception:  # Keras internals moved, an activation that cannot be serialised, …: no twin, export goes on
        return None


def _walk(network: keras.Model) -> tuple[dict[str, Any], dict[str, Any]] | None:
    if len(network.inputs) != 1 or len(network.outputs) != 1:
        return None
    layers: list[dict[str, Any]] = []
    weights: dict[str, Any] = {}
    for layer in network.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        kind = _LAYER_KINDS.get(type(layer))
        nodes = layer._inbound_nodes
        if kind is None or len(nodes) != 1:
            return None
        spec: dict[str, Any] = {
            "name": layer.name,
            "kind": kind,
            "inputs": [t._keras_history.operation.name for t in nodes[0].input_tensors],
        }
        if kind in ("dense", "activation"):
            spec["activation"] = keras.activations.serialize(layer.activation)
            if not isinstance(spec["activation"], str) or spec["activation"] not in ACTIVATIONS:
                return None
        if kind == "batch_norm":
            if layer.axis not in (-1, 1):
                return None
            spec["epsilon"] = float(layer.epsilon)
        for w in layer.weights:
            weights[f"{layer.name}/{w.name}"] = w
        layers.append(spec)
    graph = {
        "input": network.inputs[0]._keras_history.operation.name,
        "output": network.outputs[0]._keras_history.operation.name,
        "layers": layers,
    }
    return graph, weights


def export_tensors(encoder: FeatureEncoder, network: keras.Model) -> dict[str, Any] | None:
    """What the twin file holds: the encoder's tables, the layer graph (JSON) and the weights."""
    found = network_graph(network)
    if found is None:
        return None
    graph, weights = found
    out: dict[str, Any] = {f"encoder/{k}": v for k, v in encoder.tables().items()}
    out["network/graph"] = np.array(json.dumps(graph), dtype=object)
    out.update({f"network/{k}": v for k, v in weights.items()})
    return out


def write_twin(saved_model_dir: str | Path, tensors: Mapping[str, Any]) -> Path:
    """Store `export_tensors`' output as `TWIN_FILE` under `saved_model_dir`: plain arrays, strings as unicode."""
    arrays: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        if array.dtype == object or array.dtype.kind == "S":  # no pickled objects in the file
            array = np.array([_text(v) for v in array.reshape(-1)], dtype=str).reshape(array.shape)
        arrays[name] = array
    path = Path(saved_model_dir) / TWIN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        np.savez(handle, **arrays)
    return path


# -- the twin ---------------------------------------------------------------------------------


def _strip_lower(text: str) -> str:
    """TensorFlow's `strings.lower(strings.strip(x))`: ASCII whitespace and ASCII letters only."""
    return text.strip(_ASCII_SPACE).translate(_ASCII_LOWER)


def _number(part: bytes) -> float:
    return float(part) if _DIGITS.fullmatch(part) else math.nan


def _years(text: str) -> float:
    """`features._years` on one string: the year plus (month − 1) / 12, NaN when the year is not digits.

    Remembered per text (a request's date is mostly today's, a contact's client-since one of a few):
    the float32 steps cost more than a dict lookup, and the table is emptied when it grows large.
    """
    known = _YEARS.get(text)
    if known is None:
        if len(_YEARS) >= _YEARS_KEPT:
            _YEARS.clear()
        known = _YEARS[text] = _years_of(text)
    return known


_YEARS: dict[str, float] = {}
_YEARS_KEPT = 4096


def _years_of(text: str) -> float:
    data = text.strip(_ASCII_SPACE).encode("utf-8") + b"##########"
    year = np.float32(_number(data[0:4]))
    month = _number(data[5:7])
    return float(year + np.float32(0.0 if math.isnan(month) else month - 1.0) / np.float32(12.0))


def _lookup(pos: int, codes: dict[str, int], unknown: Any) -> tuple[int, dict[str, int], int, dict[str, int]]:
    """One field's lookup for `RowEncoder`: its row position, codes, unknown column and normal-form codes."""
    return pos, codes, int(unknown), {k: v for k, v in codes.items() if k and _strip_lower(k) == k}


class RowEncoder:
    """`FeatureEncoder.call` in plain Python and NumPy over rows of raw values (`schema.MODEL_INPUT_NAMES` order).

    Written for a handful of rows: each row's hot cells and number features are set directly in
    a zero matrix (per-field dicts, `bisect` for the bins), then one matmul adds the link features.
    """

    def __init__(self, tables: Mapping[str, np.ndarray]):
        keys = [_text(k) for k in tables["keys"]]
        columns = np.asarray(tables["key_columns"]).astype(np.int64)
        by_key = {key: int(columns[i + 1]) for i, key in enumerate(keys)}

        def field_map(prefix: str) -> dict[str, int]:
            return {key[len(prefix):]: col for key, col in by_key.items() if key.startswith(prefix)}

        code_prefix = [_text(p) for p in tables["code_prefix"]]
        multi_prefix = [_text(p) for p in tables["multi_prefix"]]
        if len(code_prefix) != len(_CODE_POS) or len(multi_prefix) != len(_MULTI_POS):
            raise ValueError("fast path: the exported encoder has other fields than this library's schema")
        # Per code and list field: (position in the row, code → column, unknown column, the codes that are
        # their own normal form). A value that is exactly one of the last (what the service's parser hands
        # over) maps straight to its column; any other value is stripped and lower-cased first, as the
        # graph does. Same column either way.
        self._codes = [_lookup(pos, field_map(prefix), unknown)
                       for pos, prefix, unknown in zip(_CODE_POS, code_prefix, tables["code_unknown"], strict=True)]
        # What each category column stands for, for explanations: (field, code); unknown buckets left out.
        self.column_meaning: dict[int, tuple[str, str]] = {}
        for names, prefixes in ((FeatureEncoder.CODE_FIELDS, code_prefix), (FeatureEncoder.MULTI_FIELDS, multi_prefix)):
            for name, prefix in zip(names, prefixes, strict=True):
                for code, col in field_map(prefix).items():
                    if code != MISSING_TOKEN:
                        self.column_meaning[col] = (name, code)
        self._multi = [_lookup(pos, field_map(prefix), unknown)
                       for pos, prefix, unknown in zip(_MULTI_POS, multi_prefix, tables["multi_unknown"], strict=True)]
        self._category_width = int(tables["category_width"])
        self._links = np.asarray(tables["links"], dtype=np.float32)
        self._link_cap = np.asarray(tables["link_cap"], dtype=np.float32)
        self._link_scale = np.asarray(tables["link_scale"], dtype=np.float32)
        self.scaled_links = self._links * self._link_scale  # what one more code adds to each link input (explanations)
        self._n_links = self._links.shape[1]
        # Where each number's z, missing flag and bins land in the output (inverse of `number_order`).
        mean = np.asarray(tables["mean"], dtype=np.float32)
        std = np.asarray(tables["std"], dtype=np.float32)
        edges = np.asarray(tables["edges"], dtype=np.float32)
        order = [int(i) for i in tables["number_order"]]
        start = self._category_width + self._n_links
        place = {source: start + i for i, source in enumerate(order)}
        n_numbers = len(mean)
        self._numbers = []
        for i in range(n_numbers):
            finite = [float(e) for e in edges[i] if np.isfinite(e)]
            bins = [place.get(2 * n_numbers + i * NUMBER_BINS + b) for b in range(NUMBER_BINS)]
            self._numbers.append((place[i], place[n_numbers + i], mean[i], std[i], finite, bins))
        self.width = start + len(order)
        # For explanations: number i (its z-score and bin columns) is one factor, named number_names[i].
        number_names = (*FeatureEncoder.LOG_NUMBERS, "founded_year", "client_years")
        if n_numbers != len(number_names):
            raise ValueError("fast path: the exported encoder has other numbers than this library's schema")
        self.number_names: list[str] = list(number_names)
        self.number_meanings: list[tuple[str, str]] = [(name, "") for name in number_names]  # (field, code "")
        self.group_onehot = np.eye(n_numbers, dtype=np.float32)  # row i: what a column of number i adds to
        self.stage_offset = int(tables["stage_offset"])
        self.stage_offer = np.asarray(tables["stage_offer"], dtype=np.float32)
        # For explanations: the category columns that can be a factor (a known code, not the stage).
        self.explainable: dict[int, tuple[str, str]] = {
            col: meaning for col, meaning in self.column_meaning.items()
            if meaning[0] != schema.STAGE and col < self._category_width
        }  # fmt: skip

    def __call__(self, rows: Sequence[Sequence[Any]]) -> np.ndarray:
        return self.encode(rows).matrix

    def encode(self, rows: Sequence[Sequence[Any]]) -> Encoded:
        """The rows' input matrix, plus, for a small call, where each row's nonzero inputs are (`Encoded`)."""
        out = np.zeros((len(rows), self.width), dtype=np.float32)
        small = len(rows) <= SPARSE_ROWS
        hot: list[list[int]] = []  # per row of a small call: its category columns set to 1
        numbers: list[list[tuple[int, int, int | None]]] = []  # per row of a small call: (number, z column, bin)
        for r, row in enumerate(rows):
            line = out[r]
            on = []
            for pos, codes, unknown, exact in self._codes:
                value = row[pos]
                column = exact.get(value) if type(value) is str else None
                on.append(codes.get(_strip_lower(str(value)) or MISSING_TOKEN, unknown) if column is None else column)
            for pos, codes, unknown, exact in self._multi:
                for item in str(row[pos]).split(schema.MULTI_SEPARATOR):
                    column = exact.get(item)
                    if column is None:
                        item = _strip_lower(item)
                        if not item:
                            continue
                        column = codes.get(item, unknown)
                    on.append(column)
            line[on] = 1.0
            present: list[tuple[int, int, int | None]] = []
            tenure = np.float32(_years(str(row[_DATE_POS[0]]))) - np.float32(_years(str(row[_DATE_POS[1]])))
            values = (row[_LOG_POS[0]], row[_LOG_POS[1]], row[_FOUNDED_POS], tenure)
            for i, (logged, value, (z_at, missing_at, mean, std, edges, bins)) in enumerate(
                zip(_LOGGED, values, self._numbers, strict=True)
            ):
                plain = float(np.float32(value))  # the model's inputs are float32
                if plain != plain:  # NaN: missing
                    line[missing_at] = 1.0
                    continue
                if logged:
                    plain = max(plain, 0.0)
                value = np.float32(math.log1p(plain)) if logged else np.float32(plain)
                line[z_at] = (value - mean) / std  # float32 throughout, as in the graph
                at = bins[bisect.bisect_right(edges, plain)]  # exact: float32 values against float32 edges
                if at is not None:
                    line[at] = 1.0
                if small:
                    present.append((i, z_at, at))
            if small:
                hot.append(sorted(set(on)))
                numbers.append(present)
        if small:  # the links of the few codes each row has, not a product over every category column
            links_of = self._links.take  # `take` on rows: a third of fancy indexing's cost here
            if len(hot) == 1:  # an HTTP answer's one row: no `np.stack` (a Python-level concatenate)
                counts = np.add.reduce(links_of(hot[0], axis=0), axis=0, keepdims=True)
            else:
                counts = np.stack([np.add.reduce(links_of(columns, axis=0), axis=0) for columns in hot]) if hot \
                    else self._links[:0]
        else:
            counts = out[:, : self._category_width] @ self._links
        links = np.minimum(counts, self._link_cap) * self._link_scale
        out[:, self._category_width : self._category_width + self._n_links] = links
        if not small:
            return Encoded(out)
        return Encoded(out, hot, numbers, counts)


class Encoded(NamedTuple):
    """`RowEncoder.encode`'s answer: the input matrix and, for a call of at most `SPARSE_ROWS` rows, per row
    its category columns set to 1 (`hot`, sorted), its present numbers as (number, z-score column, bin
    column or None), and its dictionary-link counts before the cap (`counts`, one row per row). The
    explanation of a scored row reads these instead of searching the matrix again."""

    matrix: np.ndarray
    hot: list[list[int]] | None = None
    numbers: list[list[tuple[int, int, int | None]]] | None = None
    counts: np.ndarray | None = None


def _nonzero_columns(x: np.ndarray) -> np.ndarray:
    """Indices of the columns of `x` (n, width) where some row is not zero."""
    return np.flatnonzero(x[0] if len(x) == 1 else x.any(axis=0))


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@dataclass
class _Layer:
    name: str
    kind: str
    inputs: list[str]
    fn: Callable[[list[np.ndarray]], np.ndarray]
    params: tuple[Any, ...] = ()  # dense: (kernel, bias, activation); activation: (.., .., name); batch norm: (scale,)


def _derivative(name: str, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d act(z) / dz at `z` (y = act(z) already computed), shape of z."""
    if name == "linear":
        return np.ones_like(z)
    if name == "relu":
        return (z > 0).astype(np.float32)
    if name == "sigmoid":
        return y * (1.0 - y)
    if name == "tanh":
        return 1.0 - y * y
    if name == "leaky_relu":
        return np.where(z > 0, 1.0, 0.2).astype(np.float32)
    h = 1e-3  # central differences in float64 (float32 would lose the small step)
    act = ACTIVATIONS[name]
    z64 = np.asarray(z, dtype=np.float64)
    return ((act(z64 + h).astype(np.float64) - act(z64 - h).astype(np.float64)) / (2 * h)).astype(np.float32)


class NetworkTwin:
    """The exported layer graph evaluated with NumPy (inference mode: dropout off, batch norm folded)."""

    def __init__(self, graph: Mapping[str, Any], weights: Mapping[str, np.ndarray]):
        self._input = graph["input"]
        self._output = graph["output"]
        specs, weights = _simplify(graph["layers"], {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()},
                                   self._output)
        self._layers = [self._layer(spec, weights) for spec in specs]
        self._seeds = np.zeros((0, 0), dtype=np.float32)  # backward's identity rows, sized on first use
        self._chain = self._as_chain()

    def _as_chain(self) -> list[tuple[str, np.ndarray, np.ndarray | None, str, np.ndarray]] | None:
        """The layers as (name, kernel, bias, activation, transposed kernel) when the graph is a plain stack of
        Dense layers from the input to the output (an MLP, the shape most searches choose), else None.

        A stack is run and differentiated by a loop without the graph's bookkeeping: the same products
        in the same order, in fewer NumPy calls (a small call's cost is mostly per call).
        """
        chain, previous = [], self._input
        for layer in self._layers:
            if layer.kind != "dense" or layer.inputs != [previous]:
                return None
            chain.append((layer.name, *layer.params))
            previous = layer.name
        return chain if chain and previous == self._output else None

    @property
    def output(self) -> str:
        """The name of the output layer (its entry in `forward`'s values)."""
        return self._output

    @staticmethod
    def _layer(spec: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> _Layer:
        name, kind = spec["name"], spec["kind"]

        def w(weight: str) -> np.ndarray | None:
            value = weights.get(f"{name}/{weight}")
            return None if value is None else np.asarray(value, dtype=np.float32)

        fn: Callable[[list[np.ndarray]], np.ndarray]
        if kind == "dense":
            kernel, bias, act = w("kernel"), w("bias"), ACTIVATIONS[spec["activation"]]
            if kernel is None:
                raise ValueError(f"fast path: layer {name!r} has no kernel")
            fn = (lambda x: act(x[0] @ kernel)) if bias is None else (lambda x: act(x[0] @ kernel + bias))
            # the transposed kernel, contiguous, for the backward pass (a strided `kernel.T` is ~4× slower)
            params: tuple[Any, ...] = (kernel, bias, spec["activation"], np.ascontiguousarray(kernel.T))
        elif kind == "batch_norm":
            scale, shift = _batch_norm_affine(spec, weights)
            fn = lambda x: x[0] * scale + shift  # noqa: E731
            params = (scale,)
        elif kind == "activation":
            act = ACTIVATIONS[spec["activation"]]
            fn = lambda x: act(x[0])  # noqa: E731
            params = (None, None, spec["activation"])
        elif kind == "identity":
            fn = lambda x: x[0]  # noqa: E731
        elif kind == "add":
            fn = lambda x: np.sum(x, axis=0)  # noqa: E731
        elif kind == "average":
            fn = lambda x: np.mean(x, axis=0)  # noqa: E731
        else:
            raise ValueError(f"fast path: layer {name!r} of unsupported kind {kind!r}")
        kept = params if kind in ("dense", "batch_norm", "activation") else ()
        return _Layer(name, kind, list(spec["inputs"]), fn, kept)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[0][self._output]

    def forward(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Every layer's output and every Dense's / Activation's pre-activation, for rows `x` (n, width).

        The same arithmetic as the served function; what `backward` needs is kept as it goes, so an
        explanation never runs the forward pass a second time.
        """
        x = np.asarray(x, dtype=np.float32)
        values: dict[str, np.ndarray] = {self._input: x}
        pre: dict[str, np.ndarray] = {}
        # A few rows of one-hot codes are mostly zeros: a Dense over the input multiplies only the
        # columns some row has (a gather of a few kernel rows instead of reading the whole kernel).
        nonzero = _nonzero_columns(x) if len(x) <= SPARSE_ROWS else None
        x_nonzero = None if nonzero is None else x.take(nonzero, axis=1)  # `take`: cheaper than fancy indexing
        if self._chain is not None:
            h = x if x_nonzero is None else x_nonzero
            for i, (name, kernel, bias, act_name, _kernel_t) in enumerate(self._chain):
                z = h @ (kernel.take(nonzero, axis=0) if i == 0 and nonzero is not None else kernel)
                if bias is not None:
                    z += bias  # z is this product's own array
                pre[name] = z
                h = values[name] = ACTIVATIONS[act_name](z)  # float32 in, float32 out
            return values, pre
        for layer in self._layers:
            inputs = [values[i] for i in layer.inputs]
            if layer.kind == "dense":
                kernel, bias, act_name, _kernel_t = layer.params
                if nonzero is not None and layer.inputs[0] == self._input:
                    z = x_nonzero @ kernel[nonzero]
                else:
                    z = inputs[0] @ kernel
                if bias is not None:
                    z = z + bias
                pre[layer.name] = z
                values[layer.name] = np.asarray(ACTIVATIONS[act_name](z), dtype=np.float32)
                continue
            if layer.kind == "activation":
                pre[layer.name] = inputs[0]
            values[layer.name] = np.asarray(layer.fn(inputs), dtype=np.float32)
        return values, pre

    def gradients(
        self, x: np.ndarray, outputs: Sequence[int], columns: Sequence[int] | None = None
    ) -> np.ndarray:
        """d output[j] / d x for one input row `x` (width,) and each j in `outputs`: (len(outputs), width),
        or only the input `columns` asked for: (len(outputs), len(columns))."""
        values, pre = self.forward(np.asarray(x, dtype=np.float32).reshape(1, -1))
        return self.backward(values, pre, 0, outputs, columns)

    def backward(
        self,
        values: Mapping[str, np.ndarray],
        pre: Mapping[str, np.ndarray],
        r: int,
        outputs: Sequence[int],
        columns: Sequence[int] | None = None,
    ) -> np.ndarray:
        """`gradients` for row `r` of a `forward` pass already run (its `values` and `pre`).

        Reverse mode over the same simplified graph the forward pass runs (Dense with its folded
        batch norm and merged activation, Add, Average), so the gradient is that of the served
        function. Activation derivatives are exact for relu, linear, sigmoid, tanh and leaky relu,
        central differences for the others. Asking for a few `columns` (an explanation needs the
        contact's active inputs only) saves most of the widest product, the one into the input.
        """
        picked = None if columns is None else np.asarray(columns, dtype=np.intp)
        if self._chain is not None:
            return self._chain_backward(values, pre, r, list(outputs), picked)
        width = values[self._output].shape[1]
        if self._seeds.shape[0] != width:
            self._seeds = np.eye(width, dtype=np.float32)
        seed = self._seeds[list(outputs)]  # row j: d output[j] / d output
        grads: dict[str, np.ndarray] = {self._output: seed}
        for layer in reversed(self._layers):
            g = grads.pop(layer.name, None)
            if g is None:
                continue
            if layer.kind == "dense":
                kernel, _bias, act_name, kernel_t = layer.params
                dz = g * _derivative(act_name, pre[layer.name][r : r + 1], values[layer.name][r : r + 1])
                if picked is not None and layer.inputs[0] == self._input:
                    g_in = [dz @ kernel[picked].T]  # the kernel's rows of those inputs: a small contiguous gather
                else:
                    g_in = [dz @ kernel_t]
            elif layer.kind == "activation":
                g_in = [g * _derivative(layer.params[2], pre[layer.name][r : r + 1], values[layer.name][r : r + 1])]
            elif layer.kind == "batch_norm":
                g_in = [g * layer.params[0]]
            elif layer.kind == "average":
                g_in = [g / len(layer.inputs)] * len(layer.inputs)
            else:  # add, identity
                g_in = [g] * len(layer.inputs)
            for name, part in zip(layer.inputs, g_in, strict=True):
                if name == self._input and picked is not None and part.shape[1] != len(picked):
                    part = part[:, picked]  # reached the input through a non-dense layer: keep the columns asked for
                grads[name] = grads[name] + part if name in grads else part
        n_columns = values[self._input].shape[1] if picked is None else len(picked)
        return grads.get(self._input, np.zeros((len(outputs), n_columns), dtype=np.float32))

    def _chain_backward(
        self,
        values: Mapping[str, np.ndarray],
        pre: Mapping[str, np.ndarray],
        r: int,
        outputs: list[int],
        picked: np.ndarray | None,
    ) -> np.ndarray:
        """`backward` for a plain stack of Dense layers (`_as_chain`).

        The output's seed rows are unit vectors, so the first product is a gather of the last kernel's
        rows (of the transposed kernel) scaled by the outputs' derivatives; each hidden layer then
        multiplies by its activation's derivative (a mask for relu) and its transposed kernel.
        """
        chain = self._chain
        assert chain is not None
        name, kernel, _bias, act_name, kernel_t = chain[-1]
        dz = _derivative(act_name, pre[name][r, outputs], values[name][r, outputs])  # (J,)
        if len(chain) == 1:  # the input's own kernel: its columns of the outputs, scaled
            return (kernel if picked is None else kernel[picked])[:, outputs].T * dz[:, None]
        g = kernel_t.take(outputs, axis=0) * dz[:, None]  # (J, units of the layer below)
        for k in range(len(chain) - 2, -1, -1):
            name, kernel, _bias, act_name, kernel_t = chain[k]
            z = pre[name][r]
            g = g * (z > 0) if act_name == "relu" else g * _derivative(act_name, z, values[name][r])
            g = g @ (kernel_t if k or picked is None else kernel.take(picked, axis=0).T)
        return g


def _simplify(
    specs: Sequence[Mapping[str, Any]], weights: dict[str, np.ndarray], output: str
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Fewer NumPy calls for the same function: drop dropout, fold batch norm into the Dense before it,
    and merge an activation into the Dense it follows (when nothing else reads that Dense)."""
    layers = [dict(spec, inputs=list(spec["inputs"])) for spec in specs]
    weights = dict(weights)
    alias: dict[str, str] = {}
    for spec in layers:
        spec["inputs"] = [alias.get(i, i) for i in spec["inputs"]]
        if spec["kind"] == "identity" and spec["name"] != output:
            alias[spec["name"]] = spec["inputs"][0]
    layers = [spec for spec in layers if spec["name"] not in alias]
    readers: dict[str, int] = {}
    for spec in layers:
        for i in spec["inputs"]:
            readers[i] = readers.get(i, 0) + 1
    by_name = {spec["name"]: spec for spec in layers}
    merged: dict[str, str] = {}  # follower → the Dense that absorbed it
    for spec in layers:
        source = by_name.get(spec["inputs"][0]) if len(spec["inputs"]) == 1 else None
        if (source is None or source["kind"] != "dense" or source["activation"] != "linear"
                or readers.get(source["name"], 0) != 1 or source["name"] == output):
            continue
        if spec["kind"] == "batch_norm":
            dense = source["name"]
            scale, shift = _batch_norm_affine(spec, weights)
            bias = weights.get(f"{dense}/bias", np.float32(0.0))
            weights[f"{dense}/kernel"] = (weights[f"{dense}/kernel"] * scale).astype(np.float32)
            weights[f"{dense}/bias"] = (bias * scale + shift).astype(np.float32)
        elif spec["kind"] == "activation":
            source["activation"] = spec["activation"]
        else:
            continue
        merged[spec["name"]] = source["name"]
        by_name[spec["name"]] = source
        readers[source["name"]] = readers.pop(spec["name"], 0)
    out = []
    for spec in layers:
        if spec["name"] in merged:
            continue
        spec["inputs"] = [_resolve(merged, i) for i in spec["inputs"]]
        out.append(spec)
    if output in merged:  # the output layer was absorbed: rename its Dense so the output name still resolves
        absorber = by_name[_resolve(merged, output)]
        for key in [k for k in weights if k.startswith(absorber["name"] + "/")]:
            weights[output + key[len(absorber["name"]):]] = weights.pop(key)
        for spec in out:
            spec["inputs"] = [output if i == absorber["name"] else i for i in spec["inputs"]]
        absorber["name"] = output
    return out, weights


def _batch_norm_affine(spec: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Inference-mode batch norm as `x * scale + shift` (gamma and beta absent when not learned)."""
    name = spec["name"]
    mean, variance = weights.get(f"{name}/moving_mean"), weights.get(f"{name}/moving_variance")
    if mean is None or variance is None:
        raise ValueError(f"fast path: layer {name!r} has no moving statistics")
    gamma = weights.get(f"{name}/gamma", np.float32(1.0))
    scale = np.float32(gamma / np.sqrt(variance + np.float32(spec["epsilon"])))
    shift = np.float32(weights.get(f"{name}/beta", np.float32(0.0)) - mean * scale)
    return scale, shift


def _resolve(merged: Mapping[str, str], name: str) -> str:
    while name in merged:
        name = merged[name]
    return name


class Factor(NamedTuple):
    """One input that raised a characteristic's probability for a contact (see `Twin.explain`).

    A named tuple (immutable, fields by name): an answer builds a few of them per characteristic.
    """

    field: str  # a `schema.MODEL_INPUT_NAMES` field, or "client_years"
    code: str  # the dictionary code for a code / list field, "" for a number
    contribution: float  # gradient × input on the probability (> 0)


#: `Twin.predict_rows` calls of at most this many rows keep their forward pass for `Twin.explain`.
TRACED_ROWS = 8


@dataclass(frozen=True)
class _Trace:
    """One small forward pass: the rows (kept, so identity means the same row), their encoding, the layers."""

    rows: list[Sequence[Any]]
    encoded: Encoded
    values: dict[str, np.ndarray]
    pre: dict[str, np.ndarray]


class Twin:
    """Raw rows → probabilities (n, C), like the SavedModel's `serve`, without TensorFlow."""

    def __init__(self, encoder: RowEncoder, network: NetworkTwin):
        self.encoder = encoder
        self.network = network
        self._trace: _Trace | None = None

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Any]) -> Twin:
        """Build from `export_tensors`' output or the twin file's arrays (tensors or arrays)."""
        arrays = {k: v.numpy() if hasattr(v, "numpy") else np.asarray(v) for k, v in tensors.items()}
        tables = {k.removeprefix("encoder/"): v for k, v in arrays.items() if k.startswith("encoder/")}
        graph = json.loads(_text(np.asarray(arrays["network/graph"]).item()))
        weights = {k.removeprefix("network/"): v for k, v in arrays.items()
                   if k.startswith("network/") and k != "network/graph"}
        return cls(RowEncoder(tables), NetworkTwin(graph, weights))

    @classmethod
    def from_version(cls, saved_model_dir: str | Path) -> Twin | None:
        """The twin stored beside a SavedModel (`TWIN_FILE`), or None when the version was exported without one.

        Read with `allow_pickle=False`: the file holds numbers and strings only. Verify the file's
        checksum first (`needs_rec.artifact.load` does, for every file of the SavedModel directory).
        """
        path = Path(saved_model_dir) / TWIN_FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as stored:
            return cls.from_tensors({name: stored[name] for name in stored.files})

    def predict_rows(self, rows: Sequence[Sequence[Any]]) -> np.ndarray:
        parts = self.encoder.encode(rows)
        encoded = parts.matrix
        values, pre = self.network.forward(encoded)
        probabilities = values[self.network.output]
        stage = encoded[:, self.encoder.stage_offset : self.encoder.stage_offset + self.encoder.stage_offer.shape[0]]
        if len(rows) <= TRACED_ROWS:  # an explanation of these rows (asked right after) reuses this pass
            self._trace = _Trace(list(rows), parts, values, pre)
        return probabilities * (stage @ self.encoder.stage_offer)

    def _traced(self, row: Sequence[Any]) -> tuple[Encoded, dict[str, np.ndarray], dict[str, np.ndarray], int]:
        """(encoded rows with their parts, layer values, pre-activations, index of `row`) of a pass over `row`.

        The last small `predict_rows` call's pass when it held this very row object (identity, not
        equality: the trace holds the rows, so no other row can take its place), else a new pass.
        """
        trace = self._trace  # one read: another thread may replace it meanwhile, never change it
        if trace is not None and trace.encoded.hot is not None:  # a small pass: it kept the rows' parts
            for r, kept in enumerate(trace.rows):
                if kept is row:
                    return trace.encoded, trace.values, trace.pre, r
        parts = self.encoder.encode([row])
        values, pre = self.network.forward(parts.matrix)
        return parts, values, pre, 0

    def explain(self, row: Sequence[Any], outputs: Sequence[int], top: int = 3) -> dict[int, list[Factor]]:
        """Per output j: the (at most `top`) raw inputs that raised its probability most for this row.

        Gradient × input on the served function, from raw fields: an active code or list item
        gets x · ∂p/∂x of its one-hot column plus what flows through the dictionary-link features
        it feeds (how many of the contact's interests a characteristic answers, owned product);
        a number gets the sum over its z-score and bin columns. Only positive contributions are
        kept, largest first; the stage (the context, not a property of the contact) and unknown
        or missing values are never factors. Scoring the row first (`predict_rows`) makes this a
        backward pass only.
        """
        if not outputs:
            return {}
        enc = self.encoder
        parts, values, pre, r = self._traced(row)
        assert parts.hot is not None and parts.numbers is not None and parts.counts is not None  # one row: small
        x = parts.matrix[r]
        explainable = enc.explainable
        active = [c for c in parts.hot[r] if c in explainable]  # active codes with a meaning, the stage left out
        number_cols: list[int] = []  # the numbers' z-score and bin columns this row has, and their numbers
        groups: list[int] = []
        for number, z_at, bin_at in parts.numbers[r]:
            number_cols.append(z_at)
            groups.append(number)
            if bin_at is not None:
                number_cols.append(bin_at)
                groups.append(number)
        if not active and not number_cols:
            return {int(j): [] for j in outputs}
        counts = parts.counts[r]  # each link feature's count, as encoded (before the cap)
        fed = np.flatnonzero(counts)  # the link features the row's codes feed (the others get nothing)
        n_active, n_fed = len(active), len(fed)
        columns = [*active, *(enc._category_width + fed).tolist(), *number_cols]
        grad = self.network.backward(values, pre, r, outputs, columns)  # (J, len(columns))
        # a code's share (its one-hot value is 1): its own column plus what flows through the dictionary
        # links it feeds; a number's: the sum over its z-score and bin columns (every number gets a
        # column here, 0 when the row has none of its columns, and only positive shares are kept)
        code_scores = grad[:, :n_active]
        if n_fed:
            link_grad = grad[:, n_active : n_active + n_fed]
            shut = counts.take(fed) >= enc._link_cap.take(fed)  # a capped count has no slope
            if shut.any():
                link_grad = link_grad * ~shut
            code_scores = code_scores + link_grad @ enc.scaled_links.take(active, axis=0).take(fed, axis=1).T
        numbers = enc.group_onehot.take(groups, axis=0)  # (its columns, numbers)
        number_scores = (grad[:, n_active + n_fed :] * x.take(number_cols)) @ numbers
        scores = np.concatenate([code_scores, number_scores], axis=1)
        meanings = [explainable[c] for c in active] + enc.number_meanings
        best = np.argsort(-scores, axis=1, kind="stable")[:, :top].tolist()
        found: dict[int, list[Factor]] = {}
        for j, order, row_scores in zip(outputs, best, scores.tolist(), strict=True):
            found[int(j)] = [Factor(*meanings[b], row_scores[b]) for b in order if row_scores[b] > 0]
        return found

    def verify(self, reference: Callable[[Sequence[Sequence[Any]]], np.ndarray],
               rows: Sequence[Sequence[Any]]) -> float:
        """Largest |twin − reference| over `rows`; ValueError when it is over `TOLERANCE`.

        The twin is run on all `rows` at once and on each of them alone, so both of its paths are
        checked: the dense one of large batches and the sparse one of small calls (`SPARSE_ROWS`),
        which an HTTP answer takes.
        """
        expected = reference(rows)
        outputs = [self.predict_rows(rows)]
        if len(rows) > SPARSE_ROWS:  # each row alone too: the path of small calls
            outputs.append(np.concatenate([self.predict_rows([row]) for row in rows]))
        gap = 0.0
        for got in outputs:  # each path's own shape check, so a wrong one can never broadcast
            if got.shape != expected.shape:
                raise ValueError(f"fast path: shape {got.shape} differs from the SavedModel's {expected.shape}")
            if got.size:
                gap = max(gap, float(np.max(np.abs(got - expected))))
        if not gap <= TOLERANCE:
            raise ValueError(f"fast path: differs from the SavedModel by {gap:.2e} (tolerance {TOLERANCE:g})")
        return gap


def row_numbers(row: Sequence[Any]) -> dict[str, float]:
    """The raw numbers of one row, by factor field, to phrase number factors with (NaN when missing)."""
    def number(name: str) -> float:
        try:
            return float(row[schema.MODEL_INPUT_NAMES.index(name)])
        except (TypeError, ValueError):
            return math.nan

    since = str(row[_DATE_POS[1]]).strip()
    return {
        "employees": number("employees"),
        "revenue_mln": number("revenue_mln"),
        "founded_year": number("founded_year"),
        "client_years": float(since[:4]) if since[:4].isdigit() else math.nan,
    }


def probe_rows(codes: Mapping[str, Sequence[str]], n: int = 64, seed: int = 0) -> list[list[Any]]:
    """Rows that exercise every path of the encoding: each code, unknown and missing values, odd numbers and dates.

    `codes` maps each code / multi-valued field of `schema.MODEL_INPUT_NAMES` to its dictionary codes.
    """
    rng = np.random.default_rng(seed)
    numbers = [math.nan, 0.0, -3.0, 1.0, 12.0, 250.0, 4000.0, 1e7, 2.5, 3e38]
    years = [math.nan, 1900.0, 1995.0, 2010.0, 2023.0, -30000.0, 3e38]
    dates = ["", "2020-01-15", "2024-06-30", "1999-12-31", " 2021-07-01 ", "garbage", "2030-01-01"]
    longest = max((len(v) for v in codes.values()), default=1)
    rows = []
    for i in range(max(n, longest)):
        row: list[Any] = []
        for name in schema.MODEL_INPUT_NAMES:
            vocab = list(codes.get(name, ()))
            if name in FeatureEncoder.CODE_FIELDS:
                choice = [*vocab, "", "no-such-code", f" {vocab[0].upper()} " if vocab else "x"]
                row.append(vocab[i % len(vocab)] if vocab and i < len(vocab) else choice[rng.integers(len(choice))])
            elif name in FeatureEncoder.MULTI_FIELDS:
                k = int(rng.integers(0, 4))
                items = [vocab[j] for j in rng.integers(0, len(vocab), k)] if vocab else []
                if i % 5 == 1:
                    items += ["bogus", ""]
                if i % 7 == 2 and items:
                    items.append(items[0])  # a duplicate is still one
                row.append(schema.MULTI_SEPARATOR.join(items))
            elif name == "founded_year":
                row.append(years[i % len(years)])
            elif name in schema.NUMERIC_INPUTS:
                row.append(numbers[int(rng.integers(len(numbers)))])
            else:
                fixed = name == schema.OCCURRED_ON and i % 3 == 0
                row.append("2025-03-10" if fixed else dates[int(rng.integers(len(dates)))])
        rows.append(row)
    return rows
