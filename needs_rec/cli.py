"""Shared plumbing for the command-line programs: user errors become one line and exit code 2.

Every CLI module ends with `run_cli(main)`. Errors caused by input (`NeedsRecError`), by user
paths (a missing file, no permission) and by the disk (full, read-only) are printed as ONE line,
`error: <message>`, on stderr, and the process exits with code 2 and no traceback; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from needs_rec import native_log
from needs_rec.errors import NeedsRecError

EXIT_USAGE = 2

#: OS errors that mean "the path you gave is wrong", not "the program is broken".
_PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)

#: OS errors that mean "the machine's disk refuses the write" (full, over quota, mounted read-only): an
#: operator's problem, not the program's, so one line saying what to do instead of a traceback.
_DISK_ERRORS = {
    errno.ENOSPC: "free disk space on its file system, then run it again",
    errno.EDQUOT: "free space or raise the quota on its file system, then run it again",
    errno.EROFS: "mount it read-write or give a directory on a writable file system",
}


#: The seeds every generator we use accepts (NumPy's legacy seeding and TensorFlow's: 32 bits).
MAX_SEED = 2**32 - 1


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high`, checked before any work."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, got {value}")
        return value

    return parse


#: `--seed` (NumPy refused -1 and 2**64 only once training had started, with a traceback).
seed_value = whole_number(0, MAX_SEED)


def one_line(message: object) -> str:
    """`message` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(message).split())


def describe(exc: BaseException) -> str:
    """A one-line, human-readable account of a user error."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename!s}" if exc.filename is not None else ""
        hint = f"; {_DISK_ERRORS[exc.errno]}" if exc.errno in _DISK_ERRORS else ""
        return one_line(f"{exc.strerror}{where}{hint}")
    return one_line(exc) or type(exc).__name__


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: what `finally` and `except BaseException` clean up for Ctrl-C
    (a partial output's temporary file, a half-exported version) they clean up for it too."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated


def _reader_gone() -> NoReturn:
    """The reader of stdout left (`| head`, a pager quit): not an error to report. Exit as a shell
    reports a command that SIGPIPE ended (141), and point stdout at /dev/null first, so the
    interpreter's final flush does not raise again with its own traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    sys.exit(128 + signal.SIGPIPE)


def fail(message: object, code: int = EXIT_USAGE) -> NoReturn:
    """Print `error: <message>` as one line on stderr and exit with `code`."""
    print(f"error: {one_line(message)}", file=sys.stderr)
    sys.exit(code)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, `error: <message> (see <prog> --help)`, exit 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} --help)")


def run_cli(
    main: Callable[[Sequence[str] | None], int | None],
    argv: Sequence[str] | None = None,
    *,
    sigterm_cleans_up: bool = True,
) -> NoReturn:
    """Run `main(argv)` and exit with its return code (None = 0); user errors exit 2 with one line.

    TensorFlow's native start-up chatter never reaches the user (`needs_rec.native_log`); any other
    native message still shows. That takes over the process's stderr, so it is done only for a real
    command line (`argv` None), not when a host such as a test calls `run_cli(main, argv)` in-process.
    There SIGTERM (kill, timeout, systemd) also ends the run as Ctrl-C does — through the cleanup
    of whatever it was writing, then `error: terminated`, exit 143 — unless `sigterm_cleans_up` is
    False (the service, whose server handles SIGTERM itself: readiness first, then a drain).
    """
    if argv is None:
        native_log.quiet_command_line()
        if sigterm_cleans_up:
            signal.signal(signal.SIGTERM, _terminated)
    else:
        native_log.quiet_tensorflow_environment()
    try:
        code = main(argv)
        if sys.stdout is not None:  # None when started with stdout closed (`>&-`): print() then writes nothing
            sys.stdout.flush()  # a short output meets a closed pipe only here, not at interpreter exit
    except BrokenPipeError:
        _reader_gone()
    except NeedsRecError as exc:
        fail(describe(exc))
    except _PATH_ERRORS as exc:
        fail(describe(exc))
    except OSError as exc:
        if exc.errno not in _DISK_ERRORS:
            raise  # anything else is a bug: keep its traceback
        fail(describe(exc))
    except Terminated:
        fail("terminated", code=128 + signal.SIGTERM)
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    sys.exit(code or 0)
