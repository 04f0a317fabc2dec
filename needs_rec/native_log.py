"""TensorFlow's native (C++) log lines, kept away from users: filtered for the CLIs, wrapped as JSON for the service.

TensorFlow 2.21 writes to file descriptor 2 from C++ (absl logging) — «WARNING: All log messages
before absl::InitializeLog() is called…», `I0000 … oneDNN custom operations are on`, CPU-feature
hints, and at export or load an `E0000 … NodeDef mentions attribute use_unbounded_threadpool`
line — some of it before `TF_CPP_MIN_LOG_LEVEL` is even read. Python-level settings cannot reach
those writes, so `capture_native_stderr` moves file descriptor 2 onto a pipe read by one daemon
thread, and points Python's own `sys.stderr` at the original stream: Python's messages (the CLIs'
one-line errors, tracebacks, the service's JSON log) go straight out, unchanged and in order,
while every line written natively goes through `on_line` — dropped when it is TensorFlow's
chatter (`is_tensorflow_noise`), passed on otherwise (the CLIs), or wrapped as a JSON log record
(the service, see `serving.observability`). It costs nothing per request: only native writes
pass through the thread.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from typing import TextIO

#: Environment that quiets TensorFlow before it is imported (an explicit setting wins).
QUIET_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2", "GRPC_VERBOSITY": "ERROR", "GLOG_minloglevel": "2"}

# absl/glog line prefix: severity letter, MMDD, time, thread id, file:line]
_NATIVE_PREFIX = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+\s+[^\]\s]+:\d+\]\s?")
_NOISE = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called"),
    re.compile(r"^To enable the following instructions: .*rebuild TensorFlow"),
    re.compile(r"oneDNN custom operations are on|This TensorFlow binary is optimized to use|cpu_feature_guard"),
    re.compile(r"NodeDef mentions attribute use_unbounded_threadpool"),
    re.compile(r"Unable to register cu(DNN|FFT|BLAS) factory|TF-TRT Warning|could not find cuda drivers"),
)
LEVELS = {"I": "info", "W": "warning", "E": "error", "F": "critical"}

_installed: threading.Thread | None = None
_handler: list[Callable[[str], None]] = []  # the current `on_line` (replaceable: the service wraps, CLIs filter)


def quiet_tensorflow_environment() -> None:
    """Set `QUIET_ENVIRONMENT` (unless already set); call before anything imports TensorFlow."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def parse_native(line: str) -> tuple[str, str]:
    """(level, message) of one native log line: the absl prefix's severity, else `warning`."""
    match = _NATIVE_PREFIX.match(line)
    if match is None:
        return "warning", line
    return LEVELS[match.group(1)], line[match.end():]


def is_tensorflow_noise(line: str) -> bool:
    """True for TensorFlow's start-up chatter and known-harmless native messages."""
    text = parse_native(line)[1]
    return any(pattern.search(text) for pattern in _NOISE)


def capture_native_stderr(on_line: Callable[[str], None]) -> TextIO:
    """Route native writes to file descriptor 2 through `on_line`; returns the stream Python now writes to.

    The pipe is set up once per process; a later call only replaces `on_line` (the service swaps the
    CLI filter for its JSON wrapper). `sys.stderr` becomes a line-buffered stream on a duplicate of
    the original descriptor, so Python output bypasses the pipe.
    """
    global _installed
    _handler[:] = [on_line]
    if _installed is not None:
        return sys.stderr
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    stream = os.fdopen(original, "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    sys.stderr = stream
    _repoint_log_handlers(stream)  # a handler still writing to descriptor 2 would feed the pipe its own lines

    def pump() -> None:
        with os.fdopen(read_end, "r", encoding="utf-8", errors="replace") as pipe:
            for raw in pipe:
                line = raw.rstrip("\n")
                if line.strip():
                    try:
                        _handler[0](line)
                    except Exception:  # never lose the thread: a broken handler writes the line as is
                        stream.write(line + "\n")

    _installed = threading.Thread(target=pump, name="native-stderr", daemon=True)
    _installed.start()
    return stream


def release_native_stderr() -> None:
    """Undo `capture_native_stderr`: file descriptor 2 is the original stream again (the pipe's thread ends).

    For a process that will not load TensorFlow but starts processes that will (the service's worker
    supervisor): children inherit descriptor 2, and each must capture its own native log rather than
    write every line of its log through the parent's pipe.
    """
    global _installed
    if _installed is None:
        return
    sys.stderr.flush()
    os.dup2(sys.stderr.fileno(), 2)  # the pipe loses its only writer: the pump reads to the end and stops
    _installed.join(timeout=5)
    _installed = None


def quiet_command_line() -> None:
    """What a command line does first so its user sees no TensorFlow chatter: the quiet environment
    (`quiet_tensorflow_environment`) and descriptor 2 filtered (`filter_for_users`); any other native
    message still shows. Takes over the process's stderr, so never call it from a library or a test."""
    quiet_tensorflow_environment()
    capture_native_stderr(filter_for_users())


def _repoint_log_handlers(stream: TextIO) -> None:
    """Point every logging StreamHandler that writes to file descriptor 2 at `stream` instead."""
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                try:
                    writes_to_2 = handler.stream.fileno() == 2
                except (AttributeError, OSError, ValueError):  # StringIO and the like: not descriptor 2
                    writes_to_2 = False
                if writes_to_2:
                    handler.setStream(stream)


def filter_for_users(stream: TextIO | None = None) -> Callable[[str], None]:
    """An `on_line` for the CLIs: TensorFlow's chatter dropped, anything else shown as it came."""

    def on_line(line: str) -> None:
        if not is_tensorflow_noise(line):
            (stream or sys.stderr).write(line + "\n")

    return on_line
