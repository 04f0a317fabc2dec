"""Whole-table SQLite reads as Arrow, in a long-lived process of their own (used by `crm.sql`).

ADBC's SQLite driver reads straight into Arrow (C, no Python object per value): several times
faster than Python's sqlite3 module. But it links its own copy of SQLite, and two SQLite libraries
in one process release each other's POSIX file locks (SQLite's documented "multiple copies"
hazard), while the service writes feedback through Python's sqlite3. So the reads run in a child
process that only reads (the database opened read-only, `mode=ro`) and holds no SQLite but ADBC's.

`Reader` is the parent's handle on one such child: started on the first read, reused for every
later one (the interpreter and pyarrow/ADBC imports, ≈ 0.2 s, are paid once per source, not per
table), stopped by `close()` — or when the parent goes away: the child exits when its stdin ends,
which the kernel does for it when the parent dies. A read is a list of queries (the rowid ranges of
one table, see `crm.sql`) that the child runs at once, one thread and one connection each (ADBC
reads without holding the GIL), and sends back in the order given: Arrow record batches, every
column text. An error comes back as `ReaderError` with the exit-code convention of a one-shot
reader: 1 bad query or table, 3 the file cannot be opened or read.

The child side (`python crm/sqlite_reader.py PATH`, run as a file so the `crm` package and its
pandas/SQLAlchemy imports stay out of it): one JSON list of queries per line on stdin; per request
on stdout, frames of a kind byte and a little-endian 8-byte length: `S` the schema, `B` a record
batch (Arrow IPC), then `E` (done) or `X` (a code byte and one line of reason).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import struct
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Sequence
from typing import IO, Any

import pyarrow as pa

EXIT_DATA, EXIT_UNAVAILABLE = 1, 3
#: Rows per Arrow batch the child reads (ADBC's default, 1024, costs a Python round per tiny batch).
BATCH_ROWS = 65_536
#: How long a SQLite connection of the child waits for a writer's lock before it gives up.
BUSY_TIMEOUT_MS = 10_000
#: Pages read through a memory map, not copied into SQLite's cache (≈ 8% faster on a 1M-row table). Should
#: another process truncate the file meanwhile, the map's SIGBUS ends this child only: the read fails.
MMAP_BYTES = 1 << 30
_HEADER = struct.Struct("<cQ")


class ReaderError(Exception):
    """A read that failed: `code` (EXIT_DATA or EXIT_UNAVAILABLE) and one line of `reason`."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


# -- the parent's side ---------------------------------------------------------------------------


class Reader:
    """One long-lived reader child for the SQLite file at `path` (see the module doc). Thread-safe:
    reads from several threads take turns."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._errors: IO[bytes] | None = None
        self._owner = 0  # the pid that started the child: a forked copy of the parent starts its own
        self._finalizer: weakref.finalize | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs (tests: reuse, and that close() ends it)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def read(self, queries: Sequence[str]) -> list[pa.RecordBatch]:
        """Run `queries` at once in the child; their batches in the order of `queries`, each one's in
        its own order. Raises ReaderError. A child that had served earlier reads and died meanwhile
        (killed while idle) is replaced and the read tried once more: reads change nothing."""
        request = json.dumps(list(queries)).encode() + b"\n"
        with self._lock:
            reused = self._process is not None
            for attempt in (1, 2):
                process = self._ensure()
                assert process.stdin is not None and process.stdout is not None
                try:
                    process.stdin.write(request)
                    process.stdin.flush()
                    return _receive(process.stdout)
                except ReaderError:
                    raise
                except (OSError, EOFError, ValueError, pa.ArrowException):
                    died = self._died()
                    if not reused or attempt == 2:
                        raise died from None
            raise AssertionError("unreachable")

    def close(self) -> None:
        """Stop the child and wait for it (no zombie); the next read starts a new one."""
        with self._lock:
            self._close_locked()

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._owner == os.getpid() and self._process.poll() is None:
            return self._process
        if self._process is not None and self._owner == os.getpid():
            self._close_locked()  # it died: start a fresh one
        errors = tempfile.TemporaryFile()  # noqa: SIM115 — lives as long as the child, closed by _stop
        process = subprocess.Popen(
            # -P: the script's own folder (crm/) stays off sys.path; nothing of `crm` is imported
            [sys.executable, "-P", os.path.abspath(__file__), self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        self._process, self._errors, self._owner = process, errors, os.getpid()
        self._finalizer = weakref.finalize(self, _stop, process, errors)
        return process

    def _close_locked(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._process = self._errors = self._finalizer = None

    def _died(self) -> ReaderError:
        """The child ended mid-request: its exit status and what it said on stderr."""
        process, errors = self._process, self._errors
        assert process is not None and errors is not None
        try:
            code = process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        errors.seek(0)
        reason = errors.read().decode(errors="replace").strip().splitlines()
        self._close_locked()
        line = reason[-1][:300] if reason else f"the reader process ended (exit code {code})"
        return ReaderError(EXIT_DATA, line)


def _stop(process: subprocess.Popen[bytes], errors: IO[bytes]) -> None:
    """End a child: its stdin closed (it exits), killed if it does not within 5 s; always waited for."""
    for stream in (process.stdin, process.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    errors.close()


def _receive(stream: IO[bytes]) -> list[pa.RecordBatch]:
    """The frames of one request (module doc) → its record batches, or ReaderError."""
    batches: list[pa.RecordBatch] = []
    schema = None
    failure: ReaderError | None = None
    while True:
        header = stream.read(_HEADER.size)
        if len(header) < _HEADER.size:
            raise EOFError
        kind, size = _HEADER.unpack(header)
        payload = stream.read(size)
        if len(payload) < size:
            raise EOFError
        if kind == b"S":
            schema = pa.ipc.read_schema(pa.py_buffer(payload))
        elif kind == b"B":
            batches.append(pa.ipc.read_record_batch(pa.py_buffer(payload), schema))
        elif kind == b"E":  # the request's last frame, after an X too: the stream is ready for the next
            if failure is not None:
                raise failure
            return batches
        elif kind == b"X":
            failure = ReaderError(payload[0], payload[1:].decode(errors="replace"))
        else:
            raise ValueError(f"unknown frame {kind!r}")


# -- the child's side ----------------------------------------------------------------------------


def serve(path: str, requests: IO[bytes], out: IO[bytes]) -> None:
    """Answer requests (one JSON list of queries per line) until stdin ends."""
    from urllib.parse import quote

    uri = f"file:{quote(path)}?mode=ro"
    for line in requests:
        queries = json.loads(line)
        try:
            _answer(uri, queries, out)
        except _Failed as failed:
            reason = failed.reason.encode()
            out.write(_HEADER.pack(b"X", len(reason) + 1) + bytes([failed.code]) + reason)
        out.write(_HEADER.pack(b"E", 0))
        out.flush()
        pa.default_memory_pool().release_unused()  # an idle child (a service's, between refreshes) holds little


class _Failed(Exception):
    def __init__(self, code: int, reason: str):
        self.code, self.reason = code, reason


def _answer(uri: str, queries: list[str], out: IO[bytes]) -> None:
    """Run the queries in threads; write their batches in order, the first query's as they come."""
    parts: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in queries]
    threads = [
        threading.Thread(target=_run, args=(uri, query, part), daemon=True)
        for query, part in zip(queries, parts, strict=True)
    ]
    for thread in threads:
        thread.start()
    schema = None
    failure: _Failed | None = None
    for part in parts:
        while (item := part.get()) is not None:
            if failure is not None:
                continue  # drain the rest so every thread ends; report the first failure
            if isinstance(item, _Failed):
                failure = item
                continue
            batch = pa.RecordBatch.from_arrays(
                [column if column.type == pa.string() else column.cast(pa.string()) for column in item.columns],
                names=item.schema.names,
            )
            if schema is None:
                schema = batch.schema
                payload = schema.serialize()
                out.write(_HEADER.pack(b"S", payload.size) + payload.to_pybytes())
            payload = batch.serialize()
            out.write(_HEADER.pack(b"B", payload.size))
            out.write(payload)
    for thread in threads:
        thread.join()
    if failure is not None:
        raise failure


def _run(uri: str, query: str, part: queue.SimpleQueue[Any]) -> None:
    """One query on a connection of its own: its batches into `part`, then None (or a _Failed)."""
    import adbc_driver_manager as adbc
    import adbc_driver_sqlite

    try:
        with (
            adbc_driver_sqlite.connect(uri) as database,
            adbc.AdbcConnection(database) as connection,
        ):
            with adbc.AdbcStatement(connection) as pragma:
                for setting in (f"busy_timeout = {BUSY_TIMEOUT_MS}", f"mmap_size = {MMAP_BYTES}"):
                    pragma.set_sql_query(f"PRAGMA {setting}")
                    handle, _ = pragma.execute_query()
                    pa.RecordBatchReader._import_from_c(handle.address).read_all()
            with adbc.AdbcStatement(connection) as statement:
                statement.set_options(**{"adbc.sqlite.query.batch_rows": str(BATCH_ROWS)})
                statement.set_sql_query(query)
                handle, _ = statement.execute_query()
                with pa.RecordBatchReader._import_from_c(handle.address) as reader:
                    for batch in reader:
                        part.put(batch)
    except adbc.OperationalError as exc:
        part.put(_Failed(EXIT_UNAVAILABLE, _first_line(exc)))
    except (adbc.Error, pa.ArrowException) as exc:
        part.put(_Failed(EXIT_DATA, _first_line(exc)))
    except BaseException as exc:  # never leave the writer waiting
        part.put(_Failed(EXIT_DATA, _first_line(exc)))
    part.put(None)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):  # the parent went away
        serve(sys.argv[1], sys.stdin.buffer, sys.stdout.buffer)
