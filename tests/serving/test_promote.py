"""python -m serving.promote: --version N and --rollback move labels.json, record promotions.jsonl, errors exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from version_factory import fake_version

REPO = Path(__file__).resolve().parents[2]


def promote(models: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving.promote", "--models", str(models), *flags],
                          cwd=REPO, capture_output=True, text=True)


def test_promote_then_rollback_and_the_history(tmp_path: Path) -> None:
    for n in (1, 2):
        fake_version(tmp_path, n)
    done = promote(tmp_path, "--version", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "version 1 is now stable (previous: 2)"
    assert json.loads((tmp_path / "labels.json").read_text()) == {"stable": 1, "previous": 2}
    done = promote(tmp_path, "--rollback")
    assert done.returncode == 0 and done.stdout.strip() == "rolled back: version 2 is stable again (previous: 1)"
    history = [json.loads(line) for line in (tmp_path / "promotions.jsonl").read_text().splitlines()]
    assert [(h["action"], h["stable"], h["previous"]) for h in history] == [("promote", 1, 2), ("rollback", 2, 1)]
    assert history[1]["rolled_back"] == 1


def test_promoting_the_stable_version_again_changes_and_logs_nothing(tmp_path: Path) -> None:
    """It printed 'version 1 is now stable' again and appended another promotion line."""
    for n in (1, 2):
        fake_version(tmp_path, n)
    assert promote(tmp_path, "--version", "1").returncode == 0
    again = promote(tmp_path, "--version", "1")
    assert again.returncode == 0
    assert again.stdout.strip() == "version 1 is already stable (previous: 2); nothing changed"
    assert len((tmp_path / "promotions.jsonl").read_text().splitlines()) == 1
    assert json.loads((tmp_path / "labels.json").read_text()) == {"stable": 1, "previous": 2}


def test_errors_exit_2_with_one_line_and_change_nothing(tmp_path: Path) -> None:
    fake_version(tmp_path, 1)
    for flags, message in ((("--version", "7"), "--version 7: no such version; present: 1"),
                           (("--rollback",), "nothing to roll back to"),
                           ((), "one of the arguments --version --rollback is required")):
        done = promote(tmp_path, *flags)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr
        assert "Traceback" not in done.stderr
    (tmp_path / "1" / "saved_model" / "saved_model.pb").write_bytes(b"tampered")
    done = promote(tmp_path, "--version", "1")
    assert done.returncode == 2 and "version 1: files do not match the manifest checksums" in done.stderr
    assert str(tmp_path) not in done.stderr
    assert not (tmp_path / "labels.json").exists() and not (tmp_path / "promotions.jsonl").exists()


def test_a_version_given_as_the_models_directory_is_refused(tmp_path: Path) -> None:
    """It answered 'version 1 is already stable' and wrote labels.json into the version."""
    fake_version(tmp_path, 1)
    done = promote(tmp_path / "1", "--version", "1")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "is a model version (it holds manifest.json); give the models directory" in lines[0]
    assert not (tmp_path / "1" / "labels.json").exists() and not (tmp_path / "1" / "promotions.jsonl").exists()


def test_a_torn_promotion_log_keeps_the_new_record(tmp_path: Path) -> None:
    for n in (1, 2):
        fake_version(tmp_path, n)
    (tmp_path / "promotions.jsonl").write_text('{"at": "x", "action": "retr')
    assert promote(tmp_path, "--version", "1").returncode == 0
    last = (tmp_path / "promotions.jsonl").read_text().splitlines()[-1]
    assert json.loads(last)["action"] == "promote"


def test_a_models_directory_that_refuses_writes_is_one_line_naming_it(tmp_path: Path) -> None:
    """A read-only mount gave Python's traceback at `.labels.lock` (exit 1); an immutable directory (what a
    read-only mount is to root, who passes every mode check) now fails the same probe as retrain, first."""
    chattr = shutil.which("chattr")
    fake_version(tmp_path, 1)
    fake_version(tmp_path, 2)
    if chattr is None or subprocess.run([chattr, "+i", str(tmp_path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        done = promote(tmp_path, "--version", "1")
    finally:
        subprocess.run([chattr, "-i", str(tmp_path)], check=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: --models '{tmp_path}' is not writable"), done.stderr
    assert not (tmp_path / "labels.json").exists()
