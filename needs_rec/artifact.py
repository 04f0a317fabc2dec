"""Model versions on disk: atomic export, discovery, verification and loading.

A version is `M/<n>/` (n a positive integer that only grows) holding `saved_model/` — a
TensorFlow SavedModel whose `serve` function takes the raw contract fields (strings and numbers,
before any encoding) and returns one probability per characteristic — and `manifest.json` with
everything the serving side needs (vocabulary, thresholds, checksums, metrics, library versions)
and no personal data. A version is built in a hidden temporary directory beside the others and
renamed into place, so a reader never sees a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from needs_rec import fast_path
from needs_rec.errors import ModelError
from needs_rec.features import FeatureEncoder, input_signature

MANIFEST = "manifest.json"
SAVED_MODEL = "saved_model"
MANIFEST_FORMAT = 1


def list_versions(models_dir: str | Path) -> list[int]:
    """Version numbers present under `models_dir`, ascending (hidden temporary builds excluded)."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    return sorted(int(p.name) for p in models_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)


def resolve(model: str | Path) -> Path:
    """`--model M`: a models directory (→ its newest version) or one version directory inside it."""
    path = Path(model)
    if (path / MANIFEST).is_file():
        return path
    versions = list_versions(path)
    if not versions:
        if not path.exists():
            raise ModelError(
                f"model path {str(path)!r} does not exist; expected a models directory or a version in it"
            )
        raise ModelError(
            f"no model version under {str(path)!r}; train one with `python -m training.fit --output {path}`"
        )
    return path / str(versions[-1])


def file_checksums(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under `directory`, keyed by its POSIX path relative to it."""
    result = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        result[path.relative_to(directory).as_posix()] = digest.hexdigest()
    return result


class _Recommender(keras.Model):
    """Raw fields → probabilities: the encoder, the trained network, then the stage's offer mask."""

    def __init__(self, encoder: FeatureEncoder, network: keras.Model, **kwargs: Any):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.network = network

    def call(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        encoded = self.encoder(inputs)
        probabilities = self.network(encoded, training=training)
        # A characteristic with no talking point at the stage is never offered there: probability 0.
        return probabilities * self.encoder.stage_offer_mask(encoded)


def export(
    models_dir: str | Path,
    *,
    encoder: FeatureEncoder,
    network: keras.Model,
    manifest: Mapping[str, Any],
    write_extras: Callable[[Path], None] | None = None,
) -> Path:
    """Write a new numbered version under `models_dir` atomically and return its path.

    `write_extras(tmp_dir)` may add files (the report, charts) before the version is sealed; any
    failure removes the temporary build, so no version directory appears.
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=models_dir))
    try:
        recommender = _Recommender(encoder, network, name="recommender")
        recommender(_empty_inputs())  # builds the composite model, as Keras requires before export
        archive = keras.export.ExportArchive()
        archive.track(recommender)
        for lookup in encoder.lookups.values():  # lookup tables are resources Keras cannot find through a dict
            archive.track(lookup)
        archive.add_endpoint(
            name="serve",
            fn=lambda inputs: recommender(inputs, training=False),
            input_signature=[input_signature()],
        )
        try:
            twin = fast_path.export_tensors(encoder, network)
        except Exception:  # the twin is an optimisation: a version without one is served by TensorFlow alone
            twin = None
        if twin is not None:  # the encoder's tables and the network's weights, for the verified NumPy twin
            archive.add_endpoint(name=fast_path.ENDPOINT, fn=_constant_endpoint(twin))
        archive.write_out(str(tmp / SAVED_MODEL), verbose=False)
        if write_extras is not None:
            write_extras(tmp)
        full = dict(manifest)
        full["format"] = MANIFEST_FORMAT
        full["files"] = file_checksums(tmp / SAVED_MODEL)
        (tmp / MANIFEST).write_text(json.dumps(full, ensure_ascii=False, indent=2, sort_keys=False), encoding="utf-8")
        return _seal(models_dir, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _constant_endpoint(values: Mapping[str, Any]) -> Any:
    """A traced no-argument tf.function returning `values` (arrays become constants, variables are read)."""

    @tf.function(input_signature=[])
    def endpoint() -> dict[str, tf.Tensor]:
        return {name: tf.convert_to_tensor(value) for name, value in values.items()}

    endpoint()  # the archive needs a traced function
    return endpoint


def _empty_inputs() -> dict[str, tf.Tensor]:
    """One row with every field missing: enough to trace and build the composite model."""
    return {name: tf.constant([np.nan] if spec.dtype == tf.float32 else [""], dtype=spec.dtype)
            for name, spec in input_signature().items()}


def _seal(models_dir: Path, tmp: Path) -> Path:
    """Rename the finished build to the next free version number, writing that number into its manifest first.

    The manifest is rewritten inside the still-hidden build, so a sealed version is never edited.
    If another writer takes the number between the check and the rename, try the next one.
    """
    manifest_path = tmp / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for _ in range(100):
        version = (list_versions(models_dir) or [0])[-1] + 1
        manifest["version"] = version
        manifest_path.write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
        target = models_dir / str(version)
        try:
            os.rename(tmp, target)  # atomic on one file system; fails when the target already exists
        except OSError:
            if target.exists():
                continue
            raise
        return target
    raise ModelError(f"could not find a free version number under {str(models_dir)!r}")


def read_manifest(version_dir: str | Path) -> dict[str, Any]:
    """The manifest of one version, with a clear error when it is missing or unreadable."""
    path = Path(version_dir) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: missing manifest; {str(version_dir)!r} is not a model version") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: manifest is not valid JSON ({exc})") from exc


def verify(version_dir: str | Path) -> dict[str, Any]:
    """Check every SavedModel file against the manifest's checksums; return the manifest."""
    version_dir = Path(version_dir)
    manifest = read_manifest(version_dir)
    expected = manifest.get("files")
    if not isinstance(expected, dict) or not expected:
        raise ModelError(f"{version_dir / MANIFEST}: field 'files' (checksums) is missing")
    actual = file_checksums(version_dir / SAVED_MODEL)
    bad = sorted(k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k))
    if bad:
        raise ModelError(f"{version_dir}: files do not match the manifest checksums: {', '.join(bad[:5])}")
    return manifest


@dataclass
class LoadedModel:
    """One verified version in memory: the SavedModel's `serve` function plus its manifest."""

    path: Path
    version: int
    manifest: dict[str, Any]
    thresholds: np.ndarray
    vocabulary: list[str]
    _module: Any  # the loaded SavedModel; kept alive because `serve` references its variables

    def predict(self, inputs: Mapping[str, Any]) -> np.ndarray:
        """Raw field arrays (see `features.frame_to_inputs`) → probabilities (n, len(vocabulary))."""
        tensors = {name: tf.convert_to_tensor(inputs[name], dtype=spec.dtype) for name, spec in _SIGNATURE.items()}
        return self._module.serve(tensors).numpy()


_SIGNATURE = input_signature()


def load(model: str | Path) -> LoadedModel:
    """Resolve, verify and load a version with `tf.saved_model.load` (no pickle, no Keras deserialisation)."""
    version_dir = resolve(model)
    manifest = verify(version_dir)
    try:
        loaded = tf.saved_model.load(str(version_dir / SAVED_MODEL))
    except Exception as exc:  # TensorFlow raises many types for a broken SavedModel
        raise ModelError(f"{version_dir}: SavedModel cannot be loaded ({type(exc).__name__}: {exc})") from exc
    vocabulary = list(manifest["vocabulary"])
    thresholds = np.asarray(manifest["thresholds"], dtype=np.float32)
    if thresholds.shape != (len(vocabulary),):
        raise ModelError(f"{version_dir / MANIFEST}: 'thresholds' has {thresholds.size} values for "
                         f"{len(vocabulary)} characteristics")
    return LoadedModel(
        path=version_dir,
        version=int(manifest.get("version", version_dir.name)),
        manifest=manifest,
        thresholds=thresholds,
        vocabulary=vocabulary,
        _module=loaded,
    )
