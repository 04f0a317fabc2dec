"""Real model versions for tests and benches, exported exactly the way `training.fit` does.

Usage (tests/conftest.py puts this directory on sys.path):

    from model_factory import build_version

    version_dir = build_version(tmp_path / "models", dictionaries_dir)                 # random small network
    version_dir = build_version(models, dicts, probabilities=[0.9, 0.2, 0.7, 0.4])    # constant outputs
    version_dir = build_version(models, dicts, thresholds=0.5, top_k=2, hidden=(256, 128))
    version_dir = build_version(models, dicts, top_k=None, min_selected=8)            # the card's floor too

Each call loads the dictionaries, adapts a `features.FeatureEncoder` on a synthetic model-input
frame, builds an untrained Keras Dense network (input width `encoder.width`, one sigmoid per
characteristic) and writes a new version with `needs_rec.artifact.export`: SavedModel, a manifest
following docs/ARCHITECTURE.md (vocabulary, stages, thresholds, top_k, dictionary checksums,
resonance statistics, metrics, ...) and a copy of the dictionaries under `dictionaries/`.
`probabilities` pins the network's output to constants (zero last-layer kernel, bias = logit), so
selection and ordering tests know the answer in advance.
"""

from __future__ import annotations

import json
import platform
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import sklearn
import tensorflow as tf

from needs_rec import artifact, dictionaries, drift, features, schema, versions
from needs_rec.talking_points import resonance_stats

DICTIONARY_DIR = "dictionaries"


def sample_frame(dicts: dictionaries.Dictionaries, n: int = 200, seed: int = 0) -> pd.DataFrame:
    """A synthetic model-input frame (`schema.MODEL_INPUT_NAMES`) with codes drawn from `dicts`."""
    rng = np.random.default_rng(seed)

    def pick(vocabulary: str) -> list[str]:
        codes = dicts.codes(vocabulary)
        return [codes[i] for i in rng.integers(0, len(codes), n)]

    need_codes = [need.code for need in dicts.needs]
    product_codes = dicts.codes("products")

    def multi(codes: list[str], p: float) -> list[str]:
        return [";".join(c for c in codes if rng.random() < p) for _ in range(n)]

    frame = pd.DataFrame(
        {
            "stage": pick("funnel_stages"),
            "industry": pick("industries"),
            "region": pick("regions"),
            "employees": rng.integers(1, 5000, n).astype(float),
            "revenue_mln": rng.gamma(2.0, 50.0, n),
            "legal_form": pick("legal_forms"),
            "founded_year": rng.integers(1990, 2023, n).astype(float),
            "client_since": [f"{y}-0{m}-01" if rng.random() < 0.5 else "" for y, m in
                             zip(rng.integers(2015, 2024, n), rng.integers(1, 10, n), strict=True)],
            "products_owned": multi(product_codes, 0.3),
            "position": pick("positions"),
            "department": pick("departments"),
            "decision_role": pick("decision_roles"),
            "interests": multi(need_codes, 0.3),
            "occurred_on": [f"2024-{m:02d}-15" for m in rng.integers(1, 13, n)],
        }
    )
    return frame[list(schema.MODEL_INPUT_NAMES)]


def build_network(
    width: int,
    n_outputs: int,
    *,
    hidden: Sequence[int] = (16,),
    seed: int = 0,
    probabilities: Sequence[float] | None = None,
) -> keras.Model:
    """An untrained Dense network: `width` floats in, one sigmoid per characteristic out.

    With `probabilities` the last layer's kernel is zero and its bias the logit of each value, so the
    output is that constant vector for every input.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(width,), name="features")
    x = inputs
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
    outputs = keras.layers.Dense(n_outputs, activation="sigmoid", name="probabilities")(x)
    network = keras.Model(inputs, outputs, name="network")
    if probabilities is not None:
        p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-6, 1 - 1e-6)
        if p.shape != (n_outputs,):
            raise ValueError(f"probabilities: {p.size} values for {n_outputs} characteristics")
        layer = network.get_layer("probabilities")
        kernel, _ = layer.get_weights()
        layer.set_weights([np.zeros_like(kernel), np.log(p / (1 - p)).astype(np.float32)])
    return network


def synthetic_resonance(
    dicts: dictionaries.Dictionaries, frame: pd.DataFrame, *, seed: int = 0, min_support: int = 5,
    explicit_negatives: bool = True,
) -> dict[str, Any]:
    """Resonance statistics over random outcomes for `frame`'s episodes (what training.fit stores);
    `explicit_negatives=False`: as from a positive-only CRM (rates over conversations)."""
    rng = np.random.default_rng(seed + 1)
    n, c = len(frame), len(dicts.characteristics)
    presented = rng.random((n, c)) < 0.6
    positives = (rng.random((n, c)) < 0.4) & presented
    if not explicit_negatives:
        presented = positives
    return resonance_stats(frame, positives.astype(np.uint8), presented, dicts.characteristic_codes, min_support,
                           explicit_negatives=explicit_negatives)


def manifest_for(
    dicts: dictionaries.Dictionaries,
    encoder: features.FeatureEncoder,
    *,
    thresholds: Sequence[float],
    top_k: int | None,
    resonance: dict[str, Any],
    seed: int,
    n_rows: int,
) -> dict[str, Any]:
    """A manifest with the keys docs/ARCHITECTURE.md lists (`format` and `files` are added by export)."""
    return {
        "version": 0,  # replaced by the version number export seals it under
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "vocabulary": dicts.characteristic_codes,
        "stages": dicts.stage_codes,
        "thresholds": [float(t) for t in thresholds],
        "top_k": top_k,
        "dictionaries": {"checksums": dict(dicts.checksums), "sizes": dicts.summary()},
        "resonance": resonance,
        "metrics": {"test": {"micro_f1": 0.0, "note": "untrained test model"}},
        "data": {"episodes": {"train": n_rows}},
        "config": {"network": "test factory"},
        "features": encoder.stats_dict(),
        "libraries": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "scikit-learn": sklearn.__version__,
        },
    }


@dataclass
class Parts:
    """What `build_parts` made: the adapted encoder, the network and the training-like frame."""

    dictionaries: dictionaries.Dictionaries
    encoder: features.FeatureEncoder
    network: keras.Model
    frame: pd.DataFrame


def build_parts(
    dictionaries_dir: str | Path,
    *,
    seed: int = 0,
    n_rows: int = 200,
    hidden: Sequence[int] = (16,),
    probabilities: Sequence[float] | None = None,
) -> Parts:
    """Load the dictionaries, adapt an encoder on a synthetic frame and build an untrained network."""
    dicts = dictionaries.load(dictionaries_dir)
    frame = sample_frame(dicts, n_rows, seed)
    encoder = features.FeatureEncoder(dicts).adapt(frame)
    encoded = encoder.encode_frame(frame)  # as training does; also builds the encoder's layers eagerly
    network = build_network(
        encoder.width, len(dicts.characteristics), hidden=hidden, seed=seed, probabilities=probabilities
    )
    network(encoded[:2])
    return Parts(dicts, encoder, network, frame)


def export_parts(
    models_dir: str | Path,
    dictionaries_dir: str | Path,
    parts: Parts,
    *,
    seed: int = 0,
    thresholds: float | Sequence[float] = 0.5,
    top_k: int | None = None,
    min_support: int = 5,
    min_selected: int | None = None,
    explicit_negatives: bool = True,
) -> Path:
    """Export `parts` as a new version under `models_dir`, with the dictionaries copied into it."""
    n_chars = len(parts.dictionaries.characteristics)
    cuts = [float(thresholds)] * n_chars if isinstance(thresholds, (int, float)) else list(thresholds)
    resonance = synthetic_resonance(parts.dictionaries, parts.frame, seed=seed, min_support=min_support,
                                    explicit_negatives=explicit_negatives)
    manifest = manifest_for(
        parts.dictionaries,
        parts.encoder,
        thresholds=cuts,
        top_k=top_k,
        resonance=resonance,
        seed=seed,
        n_rows=len(parts.frame),
    )
    if min_selected is not None:
        manifest["min_selected"] = min_selected
    stats = parts.encoder.number_stats or {}
    manifest["drift"] = drift.training_profile(parts.frame, parts.dictionaries,
                                               {n: s.bin_edges for n, s in stats.items()})
    source = Path(dictionaries_dir)

    def write_extras(tmp: Path) -> None:
        target = tmp / DICTIONARY_DIR
        target.mkdir()
        for name in parts.dictionaries.checksums:
            shutil.copy2(source / name, target / name)

    return artifact.export(
        models_dir, encoder=parts.encoder, network=parts.network, manifest=manifest, write_extras=write_extras
    )


def build_version(
    models_dir: str | Path,
    dictionaries_dir: str | Path,
    *,
    seed: int = 0,
    n_rows: int = 200,
    hidden: Sequence[int] = (16,),
    probabilities: Sequence[float] | None = None,
    thresholds: float | Sequence[float] = 0.5,
    top_k: int | None = None,
    min_support: int = 5,
    min_selected: int | None = None,
    explicit_negatives: bool = True,
) -> Path:
    """Build and export one version under `models_dir`; returns its directory (`models_dir/<n>`).
    `min_selected` (the selection rule's floor) is written to the manifest when given;
    `explicit_negatives=False` gives it a positive-only CRM's resonance statistics."""
    parts = build_parts(dictionaries_dir, seed=seed, n_rows=n_rows, hidden=hidden, probabilities=probabilities)
    return export_parts(
        models_dir, dictionaries_dir, parts, seed=seed, thresholds=thresholds, top_k=top_k, min_support=min_support,
        min_selected=min_selected, explicit_negatives=explicit_negatives,
    )


def copy_version(version_dir: str | Path, models_dir: str | Path, version: int) -> Path:
    """Copy an exported version to `models_dir/<version>` atomically, as an operator's `cp -r` would.

    The manifest is left as it is (its seal covers it): a version's number is its directory's name.
    Cheaper than exporting again when a test needs a second version (hot reload).
    """
    models_dir = Path(models_dir)
    tmp = models_dir / f".copy-{version}"
    shutil.copytree(version_dir, tmp)
    target = models_dir / str(version)
    tmp.rename(target)
    return target


def corrupt_copy(source: Path, models: Path, number: int) -> Path:
    """Copy `source` in as version `number` with one byte of its SavedModel flipped (atomically)."""
    tmp = models / f".corrupt-{number}"
    shutil.copytree(source, tmp)
    target = tmp / "saved_model" / "saved_model.pb"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    tmp.rename(models / str(number))
    return models / str(number)


def reseal_manifest(version_dir: str | Path, **changes: Any) -> Path:
    """Change manifest keys and seal it again, as a re-export would (a plain hand edit is refused on load)."""
    path = Path(version_dir) / artifact.MANIFEST
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    versions.write_manifest(version_dir, data)
    return path
