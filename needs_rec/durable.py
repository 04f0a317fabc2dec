"""Files that are never half-written, and the one-writer lock: what every writer of needs_rec uses.

* `atomic_write` writes a whole file or leaves the old one (temporary file beside it, fsync,
  rename, fsync of the directory); `temporary_beside` is that temporary file for writers that
  stream (batch scores, audience lists), and removes the ones a killed run left.
* `append_line` appends one whole line to a log (promotions.jsonl), repairing a torn last line.
* `exclusive_lock` is the one-writer lock (`fcntl.flock`) of retraining and label changes: the
  kernel drops it when its holder dies, so a lock left by a killed process is taken over at once.
* `shared_modes` and `process_umask`: files get the modes a plain open would (the umask's), not
  the 0600 of `tempfile`, so a service running as another user in the group can read them.
* `naming` gives a descriptor's OSError (a full disk) the file's name, for the one line a user reads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from needs_rec.errors import ConfigError


def check_directory_path(path: str | Path, what: str) -> None:
    """ConfigError when `path` cannot become a directory: it is a file, or one of its parents is.

    Checked before any work, so training does not run for minutes to fail with "File exists"."""
    path = Path(path)
    for place in (path, *path.parents):
        if place.exists():
            if not place.is_dir():
                where = "" if place == path else f" ({str(place)!r} is a file)"
                raise ConfigError(f"{what} {str(path)!r} is not a directory{where}; give a directory")
            return


def process_umask() -> int:
    """The process umask, read without changing it (Linux /proc), else by the set-and-restore idiom."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shared_modes(root: str | Path) -> None:
    """Give `root` and everything under it the modes a plain mkdir/open would (0777/0666 less the umask).

    `tempfile` makes 0700 directories and 0600 files; a version built that way is unreadable by a
    service running as another user. With umask 022 versions become world-readable; with 027 and a
    shared group (setgid models directory) readable by the group only.
    """
    mask = process_umask()
    root = Path(root)
    os.chmod(root, 0o777 & ~mask)
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def temporary_beside(path: Path) -> Path:
    """A new, empty temporary file for `path` in its directory (a rename into place is then atomic),
    named `.{name}.{pid}.*.tmp`; first the ones a killed run left there are removed (those whose
    process is gone: a SIGKILL leaves its partial file, and a run still writing keeps its own)."""
    for old in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = old.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            with contextlib.suppress(OSError):
                old.unlink()
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(tmp_name)


def process_alive(pid: int) -> bool:
    """True while process `pid` exists (another user's included): a lock or temporary file's owner."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Give an OSError raised without a file name (a write or fsync on a descriptor: a full disk) `path`'s
    name, so the one line an operator reads says which file system refused."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or not exc.strerror:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def publish(tmp: str | Path, target: str | Path) -> None:
    """Rename the finished temporary file `tmp` onto `target`, first giving it the modes a plain open
    would (0666 less the umask), not mkstemp's 0600, which would hide it from a reader in the group."""
    os.chmod(tmp, 0o666 & ~process_umask())
    os.replace(tmp, target)


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same directory, fsync, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = str(temporary_beside(path))
    handle = os.open(tmp_name, os.O_WRONLY)
    try:
        with naming(path), os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        publish(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def append_line(path: Path, line: str) -> None:
    """Append one line (a JSON object) and fsync: promotions.jsonl never holds half a line from a crash we survive.

    A file that does not end in a newline (a torn line, a hand edit) gets one first, so the new line
    is whole and parses on its own; only the torn line is lost, never the record appended after it."""
    with naming(path), path.open("a+b") as out:
        size = out.seek(0, os.SEEK_END)
        torn = False
        if size:
            out.seek(size - 1)
            torn = out.read(1) != b"\n"
        out.write((b"\n" if torn else b"") + line.rstrip("\n").encode("utf-8") + b"\n")
        out.flush()
        os.fsync(out.fileno())


class LockBusy(ConfigError):
    """Another process holds the lock (retrain maps it to exit 2: 'another retrain is running')."""


@contextlib.contextmanager
def exclusive_lock(path: str | Path, what: str) -> Iterator[str | None]:
    """Hold an exclusive `flock` on `path` for the block; LockBusy ("another <what> is running") when it is held.

    The lock file records the holder's pid and start time. The kernel releases a flock when its
    process dies, so a file left by a killed holder is simply taken over; the context value is then
    a note naming the dead holder (None when the file was free or new).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown holder"
            raise LockBusy(f"another {what} is running ({holder}); try again when it has finished") from None
        before = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
        stale = f"took over a stale lock left by a process that is gone ({before})" if before else None
        os.ftruncate(fd, 0)
        started = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        with naming(path):
            os.pwrite(fd, f"pid {os.getpid()} since {started}".encode(), 0)
        try:
            yield stale
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
