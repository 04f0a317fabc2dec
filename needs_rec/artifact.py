"""Model versions on disk: atomic export, discovery, verification and loading.

A version is `M/<n>/` (n a positive integer that only grows) holding `saved_model/` — a
TensorFlow SavedModel whose `serve` function takes the raw contract fields (strings and numbers,
before any encoding) and returns one probability per characteristic — and `manifest.json` with
everything the serving side needs (vocabulary, thresholds, checksums, metrics, library versions)
and no personal data. A version is built in a hidden temporary directory beside the others and
renamed into place, so a reader never sees a half-written one.
"""

from __future__ import annotations

import errno
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

from needs_rec import durable, fast_path, versions
from needs_rec.errors import ModelError
from needs_rec.features import FeatureEncoder, input_signature

MANIFEST = versions.MANIFEST
SAVED_MODEL = versions.SAVED_MODEL
MANIFEST_FORMAT = versions.MANIFEST_FORMAT

# Version numbers, resolution and checksums belong to the TensorFlow-free `needs_rec.versions`;
# these names stay for callers that import them from here.
list_versions = versions.list_versions
file_checksums = versions.file_checksums


def resolve(model: str | Path) -> Path:
    """`--model M`: a version directory, or the version a models directory serves (`stable`, else the newest)."""
    return versions.resolve_serving(model)


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
    versions.clean_stale_builds(models_dir)  # what killed runs left behind
    tmp = Path(tempfile.mkdtemp(prefix=versions.building_prefix(), dir=models_dir))
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
        _write_saved_model(archive, tmp / SAVED_MODEL, models_dir)
        try:
            twin = fast_path.export_tensors(encoder, network)
        except Exception:  # the twin is an optimisation: a version without one is served by TensorFlow alone
            twin = None
        if twin is not None:  # the NumPy twin's tables and weights: a checksummed file, never a signature
            fast_path.write_twin(tmp / SAVED_MODEL, twin)
        if write_extras is not None:
            write_extras(tmp)
        full = dict(manifest)
        full["format"] = MANIFEST_FORMAT
        full["files"] = file_checksums(tmp / SAVED_MODEL)
        full["side_files"] = versions.side_checksums(tmp)
        (tmp / MANIFEST).write_text(json.dumps(full, ensure_ascii=False, indent=2, sort_keys=False), encoding="utf-8")
        durable.shared_modes(tmp)  # readable by a serving account of the same group (umask), not tempfile's 0700
        return _seal(models_dir, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_saved_model(archive: Any, target: Path, models_dir: Path) -> None:
    """Write the SavedModel; TensorFlow's error for a full disk becomes the OSError Python's own writes give.

    TensorFlow reports ENOSPC (and a read-only or over-quota file system) as its own `ResourceExhaustedError`
    / `OpError` naming a hidden variables temp file; as an OSError naming the models directory, the
    command line says it in one line (free disk space there) instead of a traceback, and a retrain records
    the night as an error like any other write that failed.
    """
    try:
        archive.write_out(str(target), verbose=False)
    except tf.errors.OpError as exc:
        for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            if os.strerror(code) in str(exc.message):
                raise OSError(code, os.strerror(code), str(models_dir)) from exc
        raise


def _empty_inputs() -> dict[str, tf.Tensor]:
    """One row with every field missing: enough to trace and build the composite model."""
    return {name: tf.constant([np.nan] if spec.dtype == tf.float32 else [""], dtype=spec.dtype)
            for name, spec in input_signature().items()}


def _seal(models_dir: Path, tmp: Path) -> Path:
    """Rename the finished build to the next free version number, sealing its manifest with that number first.

    The manifest is sealed (`versions.write_manifest`: checksum, HMAC when a key is set) inside the
    still-hidden build, so a numbered version is never edited. Its files are flushed to disk before
    the rename, so a crash never leaves a numbered version with missing bytes. If another writer
    takes the number between the check and the rename, try the next one.
    """
    manifest_path = tmp / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for _ in range(100):
        version = (list_versions(models_dir) or [0])[-1] + 1
        manifest["version"] = version
        versions.write_manifest(tmp, manifest)
        os.chmod(manifest_path, 0o666 & ~durable.process_umask())
        _fsync_tree(tmp)
        target = models_dir / str(version)
        try:
            os.rename(tmp, target)  # atomic on one file system; fails when the target already exists
        except OSError:
            if target.exists():
                continue
            raise
        durable.fsync_dir(models_dir)
        return target
    raise ModelError(f"could not find a free version number under {str(models_dir)!r}")


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under `root` to disk (before the rename that publishes it)."""
    for path in [*root.rglob("*"), root]:
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            durable.fsync_dir(path)


def read_manifest(version_dir: str | Path) -> dict[str, Any]:
    """The manifest of one version, checked against its checksum (and HMAC when a signing key is set)."""
    return dict(versions.read_manifest(version_dir).data)


def verify(version_dir: str | Path) -> dict[str, Any]:
    """Check the manifest's seal and every SavedModel file against its checksums; return the manifest."""
    return dict(versions.verify_version(version_dir).data)


@dataclass
class LoadedModel:
    """One verified version in memory: the SavedModel's `serve` function plus its manifest."""

    path: Path
    version: int  # the directory's name (the manifest never overrides it)
    manifest: dict[str, Any]
    thresholds: np.ndarray
    vocabulary: list[str]
    _module: Any  # the loaded SavedModel; kept alive because `serve` references its variables
    info: versions.Manifest | None = None  # the typed manifest (`manifest` is its plain JSON)

    def predict(self, inputs: Mapping[str, Any]) -> np.ndarray:
        """Raw field arrays (see `features.frame_to_inputs`) → probabilities (n, len(vocabulary))."""
        tensors = {name: tf.convert_to_tensor(inputs[name], dtype=spec.dtype) for name, spec in _SIGNATURE.items()}
        return self._module.serve(tensors).numpy()


_SIGNATURE = input_signature()


def load(model: str | Path) -> LoadedModel:
    """Resolve, verify and load a version with `tf.saved_model.load` (no pickle, no Keras deserialisation)."""
    version_dir = resolve(model)
    info = versions.verify_version(version_dir)
    try:
        loaded = tf.saved_model.load(str(version_dir / SAVED_MODEL))
    except Exception as exc:  # TensorFlow raises many types for a broken SavedModel
        raise ModelError(f"version {version_dir.name}: SavedModel cannot be loaded ({type(exc).__name__}: {exc})") \
            from exc
    name = version_dir.resolve().name
    return LoadedModel(
        path=version_dir,
        version=int(name) if name.isdigit() else info.version,
        manifest=dict(info.data),
        thresholds=np.asarray(info.thresholds, dtype=np.float32),
        vocabulary=list(info.vocabulary),
        _module=loaded,
        info=info,
    )
