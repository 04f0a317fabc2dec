"""Version directories without TensorFlow, for tests of needs_rec.versions and serving.promote.

    from version_factory import fake_version

    fake_version(models, 3)   # models/3 with a one-file 'SavedModel' and a sealed manifest

Enough for everything TF-free (listing, labels, promotion, manifest seal and file checks); not loadable
by TensorFlow — tests that serve a version use tests/model_factory.py.
"""

from __future__ import annotations

from pathlib import Path

from needs_rec import versions

VOCAB = ["ch_a", "ch_b"]


def fake_version(models: Path, number: int, **extra: object) -> Path:
    """`models/<number>/` with `saved_model/saved_model.pb` and a sealed manifest listing its checksum."""
    target = models / str(number)
    (target / versions.SAVED_MODEL).mkdir(parents=True)
    (target / versions.SAVED_MODEL / "saved_model.pb").write_bytes(b"graph %d" % number)
    manifest = {"version": number, "vocabulary": VOCAB, "thresholds": [0.5, 0.5], "top_k": None,
                "files": versions.file_checksums(target / versions.SAVED_MODEL), **extra}
    versions.write_manifest(target, manifest)
    return target
