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
