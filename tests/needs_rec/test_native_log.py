"""needs_rec.native_log: TensorFlow's C++ lines on descriptor 2 are filtered (CLIs) or wrapped as JSON (service)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from needs_rec import native_log

REPO = Path(__file__).resolve().parents[2]
BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
ONEDNN = "I0000 00:00:1796157695.463434    9464 port.cc:153] oneDNN custom operations are on. You may see …"
NODEDEF = ("E0000 00:00:1796157697.1    9464 node_def_util.cc:680] NodeDef mentions attribute "
           "use_unbounded_threadpool which is not in the op definition")
REAL = "E0000 00:00:1796157697.2    9464 saver.cc:12] Data loss: checksum mismatch"


def test_native_lines_are_parsed_and_noise_recognised() -> None:
    assert native_log.parse_native(REAL) == ("error", "Data loss: checksum mismatch")
    assert native_log.parse_native("plain text") == ("warning", "plain text")
    assert all(native_log.is_tensorflow_noise(line) for line in (BANNER, ONEDNN, NODEDEF))
    assert not native_log.is_tensorflow_noise(REAL)


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})


def _native_writes() -> str:
    lines = "\n".join((BANNER, ONEDNN, NODEDEF, REAL)) + "\n"
    return f"import os, time\nos.write(2, {lines!r}.encode())\ntime.sleep(0.3)\n"


def test_the_cli_filter_drops_tensorflow_chatter_and_keeps_the_rest() -> None:
    script = ("import sys\nfrom needs_rec import native_log\n"
              "native_log.capture_native_stderr(native_log.filter_for_users())\n"
              "print('error: python line', file=sys.stderr)\n" + _native_writes())
    result = _run(script)
    assert result.returncode == 0
    assert result.stderr.splitlines() == ["error: python line", REAL]


def test_the_service_wraps_every_native_line_as_json() -> None:
    script = ("import logging\nfrom serving.observability import configure_logging, wrap_native_log\n"
              "logger = configure_logging('info')\nwrap_native_log(logger)\n"
              "logger.info('first', extra={'fields': {}})\n" + _native_writes())
    result = _run(script)
    assert result.returncode == 0
    entries = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    assert [e["event"] for e in entries] == ["first", "native_log"]  # the chatter is debug-level: not shown
    assert entries[1]["level"] == "error" and entries[1]["text"] == "Data loss: checksum mismatch"


def test_released_stderr_goes_straight_out_again_for_children() -> None:
    """After `release_native_stderr` descriptor 2 is the original stream: a child writes there itself, no
    thread of this process in between (the service's worker supervisor relies on it)."""
    script = ("import os, subprocess, sys, threading\nfrom needs_rec import native_log\n"
              "native_log.capture_native_stderr(native_log.filter_for_users())\n"
              "native_log.release_native_stderr()\n"
              "assert not any(t.name == 'native-stderr' for t in threading.enumerate())\n"
              "assert os.fstat(2).st_ino == os.fstat(sys.stderr.fileno()).st_ino\n"
              f"subprocess.run([sys.executable, '-c', {_native_writes()!r}], check=True)\n")
    result = _run(script)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [BANNER, ONEDNN, NODEDEF, REAL]  # unfiltered: not through the pipe
