"""The NumPy twin: equal to the exported SavedModel on every kind of input, refused when it is not."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from model_factory import build_parts, export_parts, sample_frame

from needs_rec import artifact, fast_path, features, schema
from needs_rec.config import NetworkConfig
from needs_rec.errors import ModelError
from needs_rec.model import build_network

REPO_DICTIONARIES = Path(__file__).resolve().parents[2] / "dictionaries"


def _codes(dicts) -> dict[str, list[str]]:
    return {c.name: dicts.codes(c.vocabulary) for c in schema.MODEL_INPUTS if c.vocabulary}


def _frame_rows(frame) -> list[list]:
    raw = features.frame_to_inputs(frame)
    return [list(values) for values in zip(*(raw[name] for name in schema.MODEL_INPUT_NAMES), strict=True)]


def _randomise_statistics(network: keras.Model, seed: int) -> None:
    """Non-trivial batch-norm statistics and wide weights, so folding and the wide path are really tested."""
    rng = np.random.default_rng(seed)
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2, gamma.shape), rng.normal(0, 0.5, beta.shape),
                               rng.normal(0, 1, mean.shape), rng.uniform(0.5, 3, var.shape)])
        elif layer.name.endswith("wide"):
            layer.set_weights([rng.normal(0, 0.2, w.shape) for w in layer.get_weights()])


def _export(tmp_path: Path, dictionaries_dir: Path, network_config: NetworkConfig | None, seed: int = 0):
    parts = build_parts(dictionaries_dir, seed=seed, n_rows=300, hidden=(24, 12))
    if network_config is not None:
        parts.network = build_network(parts.encoder.width, len(parts.dictionaries.characteristics), network_config,
                                      seed=seed)
        _randomise_statistics(parts.network, seed)
    version = export_parts(tmp_path / "models", dictionaries_dir, parts, seed=seed)
    return parts, artifact.load(version)


def _reference(loaded: artifact.LoadedModel):
    names = schema.MODEL_INPUT_NAMES

    def predict(rows):
        columns = list(zip(*rows, strict=True))
        return loaded.predict({n: np.asarray(c, dtype=np.float32 if n in schema.NUMERIC_INPUTS else object)
                               for n, c in zip(names, columns, strict=True)})

    return predict


NETWORKS = {
    "factory relu network": None,
    "default wide & deep with batch norm": NetworkConfig(hidden_units=(32, 16)),
    "ensemble of 2, gelu, no batch norm": NetworkConfig(hidden_units=(16,), ensemble_size=2, activation="gelu",
                                                        batch_norm=False),
    "selu, no wide path": NetworkConfig(hidden_units=(16, 8), activation="selu", wide=False),
    "swish": NetworkConfig(hidden_units=(16,), activation="swish"),
    "elu": NetworkConfig(hidden_units=(16,), activation="elu"),
    "tanh": NetworkConfig(hidden_units=(16,), activation="tanh"),
    "leaky_relu": NetworkConfig(hidden_units=(16,), activation="leaky_relu"),
}


@pytest.mark.parametrize("label", list(NETWORKS))
def test_twin_equals_the_saved_model(tmp_path: Path, label: str) -> None:
    parts, loaded = _export(tmp_path, REPO_DICTIONARIES, NETWORKS[label])
    twin = fast_path.Twin.from_version(loaded.path / artifact.SAVED_MODEL)
    assert twin is not None
    rows = fast_path.probe_rows(_codes(parts.dictionaries), n=120)
    rows += _frame_rows(sample_frame(parts.dictionaries, 80, 9))
    expected = _reference(loaded)(rows)
    got = twin.predict_rows(rows)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=fast_path.TOLERANCE, rtol=0)
    assert twin.verify(_reference(loaded), rows) <= fast_path.TOLERANCE
    assert float(np.abs(expected).max()) > 0  # not a trivially zero comparison
    # a small call (the HTTP answer's, sparse over the input's nonzero columns) answers the same
    alone = np.concatenate([twin.predict_rows(rows[i : i + 1]) for i in range(0, len(rows), 7)])
    pairs = np.concatenate([twin.predict_rows(rows[i : i + 3]) for i in range(0, len(rows) - 2, 50)])
    assert len(rows) > fast_path.SPARSE_ROWS
    np.testing.assert_allclose(alone, expected[::7], atol=fast_path.TOLERANCE, rtol=0)
    np.testing.assert_allclose(pairs, np.concatenate([expected[i : i + 3] for i in range(0, len(rows) - 2, 50)]),
                               atol=fast_path.TOLERANCE, rtol=0)


def test_the_twin_is_a_checksummed_file_not_a_signature(tmp_path: Path) -> None:
    _, loaded = _export(tmp_path, REPO_DICTIONARIES, NetworkConfig(hidden_units=(16,)))
    assert set(loaded._module.signatures) == {"serve", "serving_default"}  # no TF Serving client gets the weights
    assert not hasattr(loaded._module, "fast_path")
    assert fast_path.TWIN_FILE in loaded.manifest["files"]
    path = loaded.path / artifact.SAVED_MODEL / fast_path.TWIN_FILE
    with np.load(path, allow_pickle=False) as stored:  # numbers and strings only: no pickle needed
        assert "network/graph" in stored.files
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelError, match=r"assets\.extra/twin\.npz"):
        artifact.load(loaded.path)


def test_twin_encoding_equals_the_keras_encoder_column_by_column(tiny_dictionaries_dir: Path, tmp_path: Path) -> None:
    parts, loaded = _export(tmp_path, tiny_dictionaries_dir, None)
    twin = fast_path.Twin.from_version(loaded.path / artifact.SAVED_MODEL)
    rows = fast_path.probe_rows(_codes(parts.dictionaries), n=60)
    frame = parts.frame.iloc[:0].reindex(range(len(rows)))
    for i, name in enumerate(schema.MODEL_INPUT_NAMES):
        frame[name] = [row[i] for row in rows]
    expected = parts.encoder.encode_frame(frame)
    got = twin.encoder(rows)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-6)
    # every kind of cell is exercised: unknown and missing slots, bins, the missing-number flags
    names = parts.encoder.feature_names
    for name in ("stage=<unknown>", "stage=<missing>", "interests=<unknown>", "employees:missing",
                 "client_years:missing"):
        assert expected[:, names.index(name)].any(), name


def test_probe_rows_cover_every_code(tiny_dictionaries) -> None:
    codes = _codes(tiny_dictionaries)
    rows = fast_path.probe_rows(codes, n=10)
    for name in features.FeatureEncoder.CODE_FIELDS:
        column = {row[schema.MODEL_INPUT_NAMES.index(name)] for row in rows}
        assert set(codes[name]) <= column, name
        assert "" in column or len(rows) < 20  # missing values appear once rows run past the vocabulary


def test_a_twin_that_disagrees_is_refused(tmp_path: Path) -> None:
    parts, loaded = _export(tmp_path, REPO_DICTIONARIES, NetworkConfig(hidden_units=(16,)))
    with np.load(loaded.path / artifact.SAVED_MODEL / fast_path.TWIN_FILE, allow_pickle=False) as stored:
        tensors = {name: stored[name] for name in stored.files}
    tampered = dict(tensors)
    kernel = next(k for k in tensors if k.endswith("/kernel"))
    tampered[kernel] = tensors[kernel] + 0.01
    twin = fast_path.Twin.from_tensors(tampered)
    rows = fast_path.probe_rows(_codes(parts.dictionaries))
    with pytest.raises(ValueError, match="differs from the SavedModel"):
        twin.verify(_reference(loaded), rows)


def test_a_twin_whose_one_row_path_has_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    parts, loaded = _export(tmp_path, REPO_DICTIONARIES, NetworkConfig(hidden_units=(16,)))
    twin = fast_path.Twin.from_version(loaded.path / artifact.SAVED_MODEL)
    assert twin is not None
    rows = fast_path.probe_rows(_codes(parts.dictionaries))
    assert len(rows) > fast_path.SPARSE_ROWS
    batch = twin.predict_rows

    def one_row_broken(given: list) -> np.ndarray:  # small calls answer (1, 1): it broadcasts against (n, C)
        out = batch(given)
        return out[:, :1] if len(given) <= fast_path.SPARSE_ROWS else out

    twin.predict_rows = one_row_broken
    with pytest.raises(ValueError, match="fast path: shape"):
        twin.verify(_reference(loaded), rows)


def test_networks_with_unsupported_layers_export_without_a_twin(tmp_path: Path) -> None:
    parts = build_parts(REPO_DICTIONARIES, n_rows=100)
    inputs = keras.Input(shape=(parts.encoder.width,), name="features")
    x = keras.layers.Dense(8, activation="relu")(inputs)
    x = keras.layers.LayerNormalization()(x)  # the twin does not know this layer
    outputs = keras.layers.Dense(len(parts.dictionaries.characteristics), activation="sigmoid")(x)
    parts.network = keras.Model(inputs, outputs)
    assert fast_path.network_graph(parts.network) is None
    loaded = artifact.load(export_parts(tmp_path / "models", REPO_DICTIONARIES, parts))
    assert fast_path.Twin.from_version(loaded.path / artifact.SAVED_MODEL) is None
    assert loaded.predict(features.frame_to_inputs(parts.frame.iloc[:3])).shape == (3, parts.network.output_shape[-1])


def test_batch_norm_is_folded_into_the_dense_layer_before_it() -> None:
    network = build_network(10, 3, NetworkConfig(hidden_units=(6,), wide=False), seed=1)
    _randomise_statistics(network, 1)
    graph, weights = fast_path.network_graph(network)
    twin = fast_path.NetworkTwin(graph, {k: np.asarray(v) for k, v in weights.items()})
    kinds = [layer.kind for layer in twin._layers]
    assert "batch_norm" not in kinds and "identity" not in kinds
    x = np.random.default_rng(0).normal(size=(50, 10)).astype(np.float32)
    np.testing.assert_allclose(twin(x), network(x, training=False).numpy(), atol=1e-5)


def test_an_activation_keras_cannot_describe_means_no_twin_not_a_failed_export(tmp_path: Path) -> None:
    parts = build_parts(REPO_DICTIONARIES, n_rows=100)
    inputs = keras.Input(shape=(parts.encoder.width,), name="features")
    anonymous = eval("lambda x: x * 0.5")  # no source file: keras.activations.serialize cannot describe it
    hidden = keras.layers.Dense(8, activation=anonymous)(inputs)
    outputs = keras.layers.Dense(len(parts.dictionaries.characteristics), activation="sigmoid")(hidden)
    parts.network = keras.Model(inputs, outputs)
    assert fast_path.network_graph(parts.network) is None
    loaded = artifact.load(export_parts(tmp_path / "models", REPO_DICTIONARIES, parts))
    assert fast_path.Twin.from_version(loaded.path / artifact.SAVED_MODEL) is None


@pytest.mark.parametrize("label", ["default wide & deep with batch norm", "ensemble of 2, gelu, no batch norm",
                                   "tanh", "factory relu network"])
def test_twin_gradients_equal_tensorflow_gradients(tmp_path: Path, label: str) -> None:
    """The model-based reasons differentiate the served function: the twin's gradient is TensorFlow's."""
    import tensorflow as tf

    parts, loaded = _export(tmp_path, REPO_DICTIONARIES, NETWORKS[label])
    twin = fast_path.Twin.from_version(loaded.path / artifact.SAVED_MODEL)
    rows = _frame_rows(sample_frame(parts.dictionaries, 5, 3))
    outputs = [0, 3, 7]
    for row in rows:
        x = twin.encoder([row])
        got = twin.network.gradients(x[0], outputs)
        tensor = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            chosen = tf.gather(parts.network(tensor, training=False), outputs, axis=1)
        expected = tape.jacobian(chosen, tensor).numpy()[0, :, 0, :]
        np.testing.assert_allclose(got, expected, atol=2e-4 if "gelu" in label else 1e-5, rtol=1e-3)
        assert np.abs(expected).max() > 0
        columns = [*(int(c) for c in np.flatnonzero(x[0])[:7]), x.shape[1] - 1]  # a few, as explanations ask
        np.testing.assert_allclose(twin.network.gradients(x[0], outputs, columns), got[:, columns], rtol=1e-5,
                                   atol=1e-7)


def test_explain_names_the_inputs_that_raised_the_probability(tmp_path: Path) -> None:
    parts, loaded = _export(tmp_path, REPO_DICTIONARIES, NetworkConfig(hidden_units=(32, 16)))
    twin = fast_path.Twin.from_version(loaded.path / artifact.SAVED_MODEL)
    row = _frame_rows(sample_frame(parts.dictionaries, 3, 5))[0]
    found = twin.explain(row, [0, 1, 2], top=3)
    assert set(found) == {0, 1, 2}
    fields = set(schema.MODEL_INPUT_NAMES) | {"client_years"}
    for factors in found.values():
        assert len(factors) <= 3
        assert all(f.contribution > 0 and f.field in fields and f.field != schema.STAGE for f in factors)
        assert [f.contribution for f in factors] == sorted((f.contribution for f in factors), reverse=True)
    # gradient × input: removing the top code of characteristic 0 lowers its probability
    top = next((f for f in found[0] if f.code and f.field in features.FeatureEncoder.CODE_FIELDS), None)
    if top is not None:
        at = schema.MODEL_INPUT_NAMES.index(top.field)
        changed = list(row)
        changed[at] = ""
        assert twin.predict_rows([changed])[0, 0] < twin.predict_rows([row])[0, 0]


@pytest.mark.parametrize("label", ["default wide & deep with batch norm", "factory relu network"])
def test_explain_after_scoring_reuses_the_forward_pass(
    tmp_path: Path, label: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service scores a row, then explains it: the explanation runs no second encoding or forward
    pass, and reads exactly what a fresh pass gives."""
    parts, loaded = _export(tmp_path, REPO_DICTIONARIES, NETWORKS[label])
    twin = fast_path.Twin.from_version(loaded.path / artifact.SAVED_MODEL)
    rows = _frame_rows(sample_frame(parts.dictionaries, 4, 9))
    fresh = [twin.explain(list(row), [0, 2, 5]) for row in rows]  # copies: never the scored row objects
    encode, calls = fast_path.RowEncoder.encode, []

    def counted(self: fast_path.RowEncoder, batch: list[list[object]]) -> fast_path.Encoded:
        calls.append(len(batch))
        return encode(self, batch)

    monkeypatch.setattr(fast_path.RowEncoder, "encode", counted)
    twin.predict_rows(rows[:3])
    reused = [twin.explain(row, [0, 2, 5]) for row in rows[:3]]
    assert calls == [3]  # one encoding for the scoring call; the three explanations reused it
    twin.explain(rows[3], [0, 2, 5])
    assert calls == [3, 1]  # a row that was not in the last scored call gets a pass of its own
    for got, expected in zip(reused, fresh[:3], strict=True):
        assert {j: [(f.field, f.code) for f in fs] for j, fs in got.items()} == {
            j: [(f.field, f.code) for f in fs] for j, fs in expected.items()}
        for j in got:
            np.testing.assert_allclose([f.contribution for f in got[j]], [f.contribution for f in expected[j]],
                                       rtol=1e-5, atol=1e-8)


def test_twin_computes_the_catalogue_wide_path_and_its_gradients(tmp_path: Path) -> None:
    """The wide path through the dictionary links is two plain Dense layers: the twin serves and differentiates it."""
    import tensorflow as tf

    parts = build_parts(REPO_DICTIONARIES, seed=2, n_rows=300, hidden=(24, 12))
    links = parts.dictionaries.catalogue_links()
    parts.network = build_network(parts.encoder.width, links.shape[0], NetworkConfig(hidden_units=(16,)), seed=2,
                                  links=links)  # fmt: skip
    groups = parts.network.get_layer("wide_groups")
    groups.set_weights([np.random.default_rng(2).normal(0, 0.3, groups.kernel.shape).astype(np.float32)])
    loaded = artifact.load(export_parts(tmp_path / "models", REPO_DICTIONARIES, parts, seed=2))
    twin = fast_path.Twin.from_version(loaded.path / artifact.SAVED_MODEL)
    assert twin is not None
    rows = _frame_rows(sample_frame(parts.dictionaries, 60, 4))
    expected = _reference(loaded)(rows)
    np.testing.assert_allclose(twin.predict_rows(rows), expected, atol=fast_path.TOLERANCE, rtol=0)
    x = twin.encoder(rows[:1])
    tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        chosen = tf.gather(parts.network(tensor, training=False), [0, 5], axis=1)
    expected_gradients = tape.jacobian(chosen, tensor).numpy()[0, :, 0, :]
    np.testing.assert_allclose(twin.network.gradients(x[0], [0, 5]), expected_gradients, atol=1e-5, rtol=1e-3)
    columns = [int(c) for c in np.flatnonzero(x[0])[:7]]  # the contact's active inputs, as explanations ask
    np.testing.assert_allclose(twin.network.gradients(x[0], [0, 5], columns), expected_gradients[:, columns],
                               atol=1e-5, rtol=1e-3)  # fmt: skip
    assert np.abs(expected_gradients[:, columns]).max() > 0


@pytest.mark.parametrize("activation", ["relu", "tanh", "selu"])
def test_a_plain_stack_of_dense_layers_takes_the_short_path_with_the_graphs_results(activation: str) -> None:
    """An MLP is run and differentiated by `NetworkTwin`'s loop over its Dense layers: it must give what
    the general graph walk gives, for the forward pass and for gradients of a few outputs and columns."""
    network = build_network(12, 4, NetworkConfig(hidden_units=(6, 5), wide=False, activation=activation), seed=1)
    graph, weights = fast_path.network_graph(network)
    weights = {k: np.asarray(v) for k, v in weights.items()}
    short = fast_path.NetworkTwin(graph, weights)
    general = fast_path.NetworkTwin(graph, weights)
    general._chain = None  # the graph walk every other network takes
    assert short._chain is not None and [name for name, *_ in short._chain][-1] == short.output
    rng = np.random.default_rng(3)
    dense = rng.normal(size=(20, 12)).astype(np.float32)
    sparse = (rng.random((1, 12)) < 0.3).astype(np.float32)  # one row: the sparse first product
    for x in (dense, sparse):
        np.testing.assert_allclose(short(x), general(x), atol=1e-6)
        np.testing.assert_allclose(short(x), network(x, training=False).numpy(), atol=1e-5)
    values, pre = short.forward(sparse)
    for outputs, columns in (([0, 2], [1, 4, 7]), ([3], None), ([1, 0, 3], [11])):
        got = short.backward(values, pre, 0, outputs, columns)
        expected = general.backward(values, pre, 0, outputs, columns)
        assert got.shape == expected.shape == (len(outputs), 12 if columns is None else len(columns))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert np.abs(short.gradients(sparse[0], [0, 1, 2, 3])).max() > 0


def test_a_network_with_a_wide_path_is_no_plain_stack() -> None:
    network = build_network(12, 4, NetworkConfig(hidden_units=(6,), wide=True), seed=1)
    graph, weights = fast_path.network_graph(network)
    twin = fast_path.NetworkTwin(graph, {k: np.asarray(v) for k, v in weights.items()})
    assert twin._chain is None
    x = np.random.default_rng(0).normal(size=(5, 12)).astype(np.float32)
    np.testing.assert_allclose(twin(x), network(x, training=False).numpy(), atol=1e-5)


def test_a_single_dense_layer_is_a_stack_of_one() -> None:
    inputs = keras.Input(shape=(7,), name="features")
    network = keras.Model(inputs, keras.layers.Dense(3, activation="sigmoid", name="probabilities")(inputs))
    graph, weights = fast_path.network_graph(network)
    weights = {k: np.asarray(v) for k, v in weights.items()}
    short, general = fast_path.NetworkTwin(graph, weights), fast_path.NetworkTwin(graph, weights)
    general._chain = None
    assert short._chain is not None and len(short._chain) == 1
    x = np.random.default_rng(1).normal(size=(1, 7)).astype(np.float32)
    values, pre = short.forward(x)
    for columns in ([0, 5], None):
        np.testing.assert_allclose(short.backward(values, pre, 0, [2, 0], columns),
                                   general.backward(values, pre, 0, [2, 0], columns), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("label", ["factory relu network", "default wide & deep with batch norm"])
def test_a_code_factors_contribution_is_the_slope_of_the_served_function(tmp_path: Path, label: str) -> None:
    """Gradient × input from raw codes, checked against a finite difference of the network itself: adding ε
    of a code moves its one-hot column and, through the dictionary links, every link input it feeds
    that is still under its cap (a capped count does not move). Rows with capped links are included."""
    parts, loaded = _export(tmp_path, REPO_DICTIONARIES, NETWORKS[label])
    twin = fast_path.Twin.from_version(loaded.path / artifact.SAVED_MODEL)
    enc, network = twin.encoder, twin.network
    column_of = {meaning: col for col, meaning in enc.explainable.items()}
    start, eps, checked, capped_rows = enc._category_width, 1e-3, 0, 0
    for row in _frame_rows(sample_frame(parts.dictionaries, 40, 7)):
        parts_of_row = enc.encode([row])
        x, counts = parts_of_row.matrix[0], parts_of_row.counts[0]
        fed = np.flatnonzero(counts)
        capped_rows += bool((counts[fed] >= enc._link_cap[fed]).any())
        outputs = [0, 3, 7]
        for j, factors in twin.explain(row, outputs).items():
            for factor in factors:
                if not factor.code:
                    continue
                a = column_of[(factor.field, factor.code)]
                moved = x.copy()
                moved[a] += eps
                raised = np.minimum(counts + eps * enc._links[a], enc._link_cap)  # a capped count stays capped
                moved[start : start + enc._links.shape[1]] = raised * enc._link_scale
                slope = (network(moved[None].astype(np.float32))[0, j] - network(x[None])[0, j]) / eps
                np.testing.assert_allclose(factor.contribution, slope, rtol=0.05, atol=2e-4)
                checked += 1
    assert checked >= 20 and capped_rows >= 5


def test_a_code_in_its_normal_form_and_any_other_spelling_encode_alike() -> None:
    """The encoder maps a value that is exactly a code straight to its column; any other spelling goes
    through strip and lower-case as the graph does. Both must land on the same columns."""
    parts = build_parts(REPO_DICTIONARIES, n_rows=60)
    tensors = fast_path.export_tensors(parts.encoder, parts.network)
    encoder = fast_path.Twin.from_tensors(tensors).encoder
    rows = _frame_rows(sample_frame(parts.dictionaries, 20, 5))
    code_at = [schema.MODEL_INPUT_NAMES.index(n) for n in features.FeatureEncoder.CODE_FIELDS]
    multi_at = [schema.MODEL_INPUT_NAMES.index(n) for n in features.FeatureEncoder.MULTI_FIELDS]
    spelled = []
    for row in rows:
        other = list(row)
        for i in code_at:
            other[i] = f"  {str(row[i]).upper()}\t"
        for i in multi_at:
            items = str(row[i]).split(schema.MULTI_SEPARATOR)
            other[i] = schema.MULTI_SEPARATOR.join(f" {item.upper()} " for item in items)
        spelled.append(other)
    np.testing.assert_array_equal(encoder(spelled), encoder(rows))
    assert encoder(rows).sum() > 0
    odd = list(rows[0])
    odd[code_at[0]] = ["not", "a", "code"]  # not a string: the unknown bucket, never a crash
    assert encoder([odd]).shape == (1, encoder.width)
