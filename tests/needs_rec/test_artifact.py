"""needs_rec.artifact: a sealed version readable by another account, numbered by its directory, no leftovers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from crm_factory import write_dictionaries
from model_factory import build_version

from needs_rec import artifact, versions


@pytest.mark.parametrize(("mask", "directory", "file"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_export_follows_the_umask_so_a_serving_account_can_read_it(
    tmp_path: Path, mask: int, directory: int, file: int
) -> None:
    dicts = write_dictionaries(tmp_path / "dictionaries")
    old = os.umask(mask)
    try:
        version = build_version(tmp_path / "models", dicts)
    finally:
        os.umask(old)
    modes = {p.relative_to(version).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [version, *version.rglob("*")]}
    assert modes["."] == directory and modes["saved_model"] == directory
    assert modes["manifest.json"] == file and modes["saved_model/saved_model.pb"] == file
    assert {m for name, m in modes.items() if (version / name).is_dir()} == {directory}
    assert {m for name, m in modes.items() if (version / name).is_file()} == {file}
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["1"]  # no .building-* beside it
    manifest = versions.verify_version(version)
    assert manifest.format == versions.MANIFEST_FORMAT and manifest.version == 1
    assert artifact.load(version).version == 1


def test_a_full_disk_at_export_is_an_os_error_naming_the_models_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """retrain and fit on a full disk died at the SavedModel's variables with TensorFlow's
    ResourceExhaustedError traceback (exit 1, which the nightly cron line took for success)."""
    import errno

    import tensorflow as tf

    def full(*args: object, **kwargs: object) -> None:
        raise tf.errors.ResourceExhaustedError(None, None, "/m/.building-1-x/saved_model/variables/variables_temp/"
                                               "part-00000-of-00001.data; No space left on device [Op:SaveV2]")

    dicts = write_dictionaries(tmp_path / "dictionaries")
    monkeypatch.setattr(tf.saved_model, "save", full)  # what Keras's ExportArchive.write_out calls
    with pytest.raises(OSError) as caught:
        build_version(tmp_path / "models", dicts)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []  # the build was removed
