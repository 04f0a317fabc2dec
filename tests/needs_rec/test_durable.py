"""needs_rec.durable: atomic writes, appended lines, the one-writer lock, modes from the umask, a full disk's name."""

from __future__ import annotations

import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from needs_rec import durable, versions
from needs_rec.errors import ConfigError


def _hold_lock(path: str, ready: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event) -> None:
    with durable.exclusive_lock(path, "retrain"):
        ready.set()
        release.wait(30)


def test_lock_is_exclusive_and_a_dead_holders_lock_is_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / ".retrain.lock"
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(lock), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(durable.LockBusy, match=rf"another retrain is running \(pid {holder.pid} since"), \
                durable.exclusive_lock(lock, "retrain"):
            pass
    finally:
        release.set()
        holder.join(30)
    # A holder killed with SIGKILL leaves its file behind; the kernel has dropped its flock.
    code = ("import sys, os, signal\nfrom needs_rec import durable\n"
            "with durable.exclusive_lock(sys.argv[1], 'retrain'):\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code, str(lock)], check=False)
    assert "pid" in lock.read_text()
    with durable.exclusive_lock(lock, "retrain") as note:
        assert note is not None and "stale lock" in note


@pytest.mark.parametrize(("mask", "directory", "file"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_shared_modes_follow_the_umask(tmp_path: Path, mask: int, directory: int, file: int) -> None:
    import tempfile

    root = Path(tempfile.mkdtemp(dir=tmp_path))  # 0700, as export's build directory starts
    (root / "sub").mkdir(mode=0o700)
    handle, name = tempfile.mkstemp(dir=root / "sub")  # 0600
    os.close(handle)
    old = os.umask(mask)
    try:
        durable.shared_modes(root)
        versions.write_labels(tmp_path, versions.Labels(stable=1))
    finally:
        os.umask(old)
    assert stat.S_IMODE(root.stat().st_mode) == directory
    assert stat.S_IMODE((root / "sub").stat().st_mode) == directory
    assert stat.S_IMODE(Path(name).stat().st_mode) == file
    assert stat.S_IMODE((tmp_path / "labels.json").stat().st_mode) == file


def test_check_directory_path_refuses_a_file_or_a_file_above(tmp_path):
    """fit --output FILE trained for half a minute, then failed with 'File exists'."""
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    durable.check_directory_path(tmp_path / "new" / "models", "models directory")  # may be created
    durable.check_directory_path(tmp_path, "models directory")
    with pytest.raises(ConfigError, match=r"models directory '.*afile' is not a directory; give a directory"):
        durable.check_directory_path(tmp_path / "afile", "models directory")
    with pytest.raises(ConfigError, match=r"'.*afile/sub' is not a directory \('.*afile' is a file\)"):
        durable.check_directory_path(tmp_path / "afile" / "sub", "--output")


def test_a_torn_last_line_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    log = tmp_path / "promotions.jsonl"
    log.write_text('{"action": "promote"}\n{"at": "x", "action": "retr')  # a hand edit or a crash mid-line
    durable.append_line(log, '{"action": "rollback"}')
    lines = log.read_text().splitlines()
    assert lines == ['{"action": "promote"}', '{"at": "x", "action": "retr', '{"action": "rollback"}']
    durable.append_line(log, '{"action": "promote", "n": 2}')
    assert len(log.read_text().splitlines()) == 4  # a whole last line gets no blank line before the next
    new = tmp_path / "new.jsonl"
    durable.append_line(new, "{}")
    assert new.read_text() == "{}\n"


@pytest.mark.parametrize("write", ["labels", "promotions", "lock"])
def test_a_full_disk_names_the_file_it_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: str) -> None:
    """A write or fsync on a descriptor fails without a file name: `serving.promote` on a full disk said only
    'No space left on device', not which models directory's file system to free."""
    import errno

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(durable.os, "fsync", full)
    monkeypatch.setattr(durable.os, "pwrite", full)
    target = {"labels": tmp_path / "labels.json", "promotions": tmp_path / "promotions.jsonl",
              "lock": tmp_path / ".labels.lock"}[write]
    with pytest.raises(OSError) as caught:
        if write == "labels":
            durable.atomic_write(target, "{}")
        elif write == "promotions":
            durable.append_line(target, "{}")
        else:
            with durable.exclusive_lock(target, "label change"):
                pass
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
