"""needs_rec.versions: numbers, sealed manifests, labels, promotion, locks, stale builds, file modes (no TensorFlow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from version_factory import VOCAB, fake_version

from needs_rec import versions
from needs_rec.errors import ConfigError, ModelError


def test_list_versions_takes_numbers_from_directory_names_only(tmp_path: Path) -> None:
    for name in ("3", "10", "0", "x1", ".building-1-abc"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert versions.list_versions(tmp_path) == [3, 10]
    assert versions.list_versions(tmp_path / "missing") == []


def test_a_copied_version_keeps_its_manifest_and_is_known_by_its_directory(tmp_path: Path) -> None:
    fake_version(tmp_path, 1)
    os.rename(tmp_path / "1", tmp_path / "2")
    manifest = versions.verify_version(tmp_path / "2")
    assert manifest.version == 1 and versions.version_number(tmp_path / "2") == 2
    assert versions.resolve_serving(tmp_path) == tmp_path / "2"


def test_hand_edited_manifest_is_refused_and_names_the_version_not_the_path(tmp_path: Path) -> None:
    version = fake_version(tmp_path, 4)
    path = version / versions.MANIFEST
    data = json.loads(path.read_text())
    data["thresholds"] = [0.1, 0.1]
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"version 4: manifest\.json does not match its checksum") as caught:
        versions.read_manifest(version)
    assert str(tmp_path) not in str(caught.value)
    del data["checksum"]
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="has no 'checksum'"):
        versions.read_manifest(version)


def test_a_changed_savedmodel_file_is_refused(tmp_path: Path) -> None:
    version = fake_version(tmp_path, 1)
    (version / versions.SAVED_MODEL / "saved_model.pb").write_bytes(b"other graph")
    with pytest.raises(ModelError, match=r"files do not match the manifest checksums: saved_model\.pb"):
        versions.verify_version(version)


def test_signing_key_requires_a_matching_hmac(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unsigned = fake_version(tmp_path, 1)
    monkeypatch.setenv(versions.SIGNING_KEY_ENV, "s3cret")
    signed = fake_version(tmp_path, 2)
    assert versions.read_manifest(signed).signed
    with pytest.raises(ModelError, match=r"version 1: manifest\.json is not signed, but NEEDS_REC_SIGNING_KEY is set"):
        versions.read_manifest(unsigned)
    # Someone without the key re-computes the checksum after an edit: the HMAC still refuses it.
    data = json.loads((signed / versions.MANIFEST).read_text())
    data["top_k"] = 1
    resealed = versions.seal(data, key=b"guess")
    (signed / versions.MANIFEST).write_text(json.dumps(resealed))
    with pytest.raises(ModelError, match="signature does not match"):
        versions.read_manifest(signed)
    monkeypatch.setenv(versions.SIGNING_KEY_ENV, "")
    assert versions.read_manifest(signed).top_k == 1  # without a key only the checksum is checked


def test_manifest_typed_fields_are_checked_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="key 'thresholds' must hold one number per characteristic"):
        versions.Manifest.from_dict({"vocabulary": VOCAB, "thresholds": [0.5], "files": {"a": "b"}})
    with pytest.raises(ModelError, match="key 'top_k' must be an integer >= 1 or null"):
        versions.Manifest.from_dict({"vocabulary": VOCAB, "thresholds": [0.5, 1], "files": {"a": "b"}, "top_k": 0})
    manifest = versions.Manifest.from_dict({"vocabulary": VOCAB, "thresholds": [0.5, 1], "files": {"a": "b"},
                                            "metrics": {"x": 1}})
    assert manifest.thresholds == (0.5, 1.0) and manifest.get("metrics") == {"x": 1}


def test_labels_round_trip_and_errors_name_the_key(tmp_path: Path) -> None:
    assert versions.read_labels(tmp_path) is None
    versions.write_labels(tmp_path, versions.Labels(stable=3, previous=2))
    assert json.loads((tmp_path / "labels.json").read_text()) == {"stable": 3, "previous": 2}
    assert versions.read_labels(tmp_path) == versions.Labels(3, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["labels.json"]  # no temporary file left
    for text, message in (('{"stable": "3"}', "label 'stable' must be a version number"),
                          ('{"stable": 3, "can ary": 4}', r"bad label name\(s\) 'can ary'"),
                          ('{"stable": 3, "canary": 0}', "label 'canary' must be a version number >= 1, got 0"),
                          ("{not json", "labels.json is not valid JSON")):
        (tmp_path / "labels.json").write_text(text)
        with pytest.raises(ModelError, match=message):
            versions.read_labels(tmp_path)


def test_other_labels_are_kept_through_promotion_and_rollback(tmp_path: Path) -> None:
    """TF Serving allows any label name (`canary`); a labels.json with one was refused whole, so a running
    service kept its old `stable` and serving.promote could not move the label."""
    for number in (1, 2, 3):
        fake_version(tmp_path, number)
    (tmp_path / "labels.json").write_text('{"stable": 1, "canary": 3}')
    canary = versions.read_labels(tmp_path)
    assert canary is not None and canary.get("canary") == 3 and canary.to_dict() == {"stable": 1, "canary": 3}
    assert versions.serving_order([1, 2, 3], canary) == [1]  # a label other than stable serves nothing
    assert versions.promote(tmp_path, 2).to_dict() == {"stable": 2, "previous": 1, "canary": 3}
    assert versions.rollback(tmp_path).to_dict() == {"stable": 1, "previous": 2, "canary": 3}
    assert json.loads((tmp_path / "labels.json").read_text()) == {"stable": 1, "previous": 2, "canary": 3}


def test_serving_order_never_includes_a_candidate_when_labels_exist() -> None:
    assert versions.serving_order([1, 2, 3], None) == [3, 2, 1]
    assert versions.serving_order([1, 2, 3], versions.Labels(stable=2, previous=1)) == [2, 1]
    assert versions.serving_order([1, 3], versions.Labels(stable=2, previous=1)) == [1]


def test_promote_and_rollback(tmp_path: Path) -> None:
    for n in (1, 2, 3):
        fake_version(tmp_path, n)
    assert versions.resolve_serving(tmp_path) == tmp_path / "3"  # no labels: the newest
    assert versions.promote(tmp_path, 2) == versions.Labels(stable=2, previous=3)
    assert versions.resolve_serving(tmp_path) == tmp_path / "2"
    assert versions.promote(tmp_path, 1) == versions.Labels(stable=1, previous=2)
    assert versions.rollback(tmp_path) == versions.Labels(stable=2, previous=1)
    assert versions.rollback(tmp_path) == versions.Labels(stable=1, previous=2)  # a second rollback undoes it
    assert versions.promote(tmp_path, 1) == versions.Labels(stable=1, previous=2)  # already stable: unchanged
    with pytest.raises(ModelError, match="--version 9: no such version; present: 1, 2, 3"):
        versions.promote(tmp_path, 9)
    (tmp_path / "3" / versions.SAVED_MODEL / "saved_model.pb").write_bytes(b"broken")
    with pytest.raises(ModelError, match="version 3: files do not match"):
        versions.promote(tmp_path, 3)
    assert versions.read_labels(tmp_path) == versions.Labels(stable=1, previous=2)  # nothing changed
    with pytest.raises(ModelError, match="replaced while"):
        versions.promote(tmp_path, 2, replacing=5)


def test_pin_stable_makes_the_serving_version_explicit_verifying_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert versions.serving_stable(tmp_path) is None and versions.pin_stable(tmp_path) is None
    assert versions.read_labels(tmp_path) is None  # nothing to pin: no labels written
    for n in (1, 2):
        fake_version(tmp_path, n)
    (tmp_path / "2" / versions.SAVED_MODEL / "saved_model.pb").write_bytes(b"broken")
    assert versions.serving_stable(tmp_path) == 1  # the newest that verifies
    assert versions.read_labels(tmp_path) is None  # serving_stable writes nothing
    checked: list[Path] = []
    verify = versions.verify_version
    monkeypatch.setattr(versions, "verify_version", lambda path: checked.append(Path(path)) or verify(path))
    fake_version(tmp_path, 3)  # a training.fit beside the retrain exports a newer version meanwhile
    assert versions.pin_stable(tmp_path, verified=1) == 3  # the no-labels rule serves 3 now: pin that one
    assert checked == [tmp_path / "3"]
    assert versions.read_labels(tmp_path) == versions.Labels(stable=3)
    assert versions.pin_stable(tmp_path, verified=1) == 3 and len(checked) == 1  # labelled: read, not changed
    (tmp_path / versions.LABELS).unlink()
    assert versions.pin_stable(tmp_path, verified=3) == 3 and len(checked) == 1  # still the newest: not re-read


def test_rollback_without_previous_is_an_error(tmp_path: Path) -> None:
    fake_version(tmp_path, 1)
    with pytest.raises(ModelError, match="nothing to roll back to"):
        versions.rollback(tmp_path)


def test_clean_stale_builds_removes_only_dead_runs(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".building-{dead_pid}-abc" / "saved_model").mkdir(parents=True)
    (tmp_path / f".building-{os.getpid()}-mine").mkdir()
    (tmp_path / f".labels.json.{dead_pid}.xyz.tmp").write_text("{")
    (tmp_path / "1").mkdir()
    removed = versions.clean_stale_builds(tmp_path)
    assert sorted(removed) == sorted([f".building-{dead_pid}-abc", f".labels.json.{dead_pid}.xyz.tmp"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["1", f".building-{os.getpid()}-mine"])


def test_labels_naming_one_version_twice_are_refused(tmp_path: Path) -> None:
    """A rollback to the version already stable would 'succeed' and change nothing."""
    fake_version(tmp_path, 3)
    (tmp_path / "labels.json").write_text('{"stable": 3, "previous": 3}')
    with pytest.raises(ModelError, match="'previous' names version 3, the stable one; it must name another"):
        versions.rollback(tmp_path)


def test_previous_is_the_version_serving_now_never_a_missing_or_broken_one(tmp_path: Path) -> None:
    for n in (1, 2, 3):
        fake_version(tmp_path, n)
    versions.write_labels(tmp_path, versions.Labels(stable=99, previous=1))  # stable's directory is gone
    assert versions.served_version(tmp_path) == 1  # the service serves previous
    assert versions.promote(tmp_path, 3, replacing=99) == versions.Labels(stable=3, previous=1)
    assert versions.rollback(tmp_path) == versions.Labels(stable=1, previous=3)  # a rollback that loads
    (tmp_path / "1" / versions.SAVED_MODEL / "saved_model.pb").write_bytes(b"broken")  # stable fails its checks
    assert versions.served_version(tmp_path) == 3
    assert versions.promote(tmp_path, 2) == versions.Labels(stable=2, previous=3)
    (tmp_path / "2" / versions.SAVED_MODEL / "saved_model.pb").write_bytes(b"broken")
    (tmp_path / "3" / versions.SAVED_MODEL / "saved_model.pb").write_bytes(b"broken")
    fake_version(tmp_path, 4)
    assert versions.served_version(tmp_path) is None
    assert versions.promote(tmp_path, 4) == versions.Labels(stable=4)  # nothing loadable to fall back to


def test_check_models_dir_refuses_a_version_given_as_the_models_directory(tmp_path: Path) -> None:
    fake_version(tmp_path, 1)
    versions.check_models_dir(tmp_path, "--models")
    versions.check_models_dir(tmp_path / "new", "--models")
    with pytest.raises(ConfigError, match=r"--models '.*/1' is a model version \(it holds manifest.json\); give the "
                                          r"models directory that holds the versions: '.*'"):
        versions.check_models_dir(tmp_path / "1", "--models")
    with pytest.raises(ConfigError, match=r"is a model version inside version '.*/1'"):
        versions.check_models_dir(tmp_path / "1" / "sub", "--models")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "manifest.json").write_text("{}")  # a web app's manifest is not a version
    versions.check_models_dir(tmp_path / "app" / "models", "--models")


def test_check_writable_dir_probes_for_real_and_names_the_given_directory(immutable_dir: Path) -> None:
    """An immutable directory refuses new entries even to root, and the message names the directory
    given (the export had named its own `.building-*` path, after the whole training)."""
    with pytest.raises(ConfigError, match=rf"models directory '{immutable_dir}' is not writable: "):
        versions.check_writable_dir(immutable_dir, "models directory")
    below = immutable_dir / "sub" / "m"
    with pytest.raises(ConfigError, match=rf"--models '{below}' is not writable \(it would be created in "
                                          rf"'{immutable_dir}'"):
        versions.check_writable_dir(below, "--models")
    assert list(immutable_dir.iterdir()) == []


def test_check_writable_dir_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    versions.check_writable_dir(tmp_path / "models", "models directory")
    versions.check_writable_dir(tmp_path / "new" / "models", "models directory")
    assert list((tmp_path / "models").iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["models"]
