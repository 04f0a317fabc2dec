"""Exposures written off the request path (contract §6): a bounded buffer and one writer thread.

`ExposureWriter.offer(rows)` is what a request pays: a lock, a length check and a list append
(about a microsecond). When the buffer already holds `capacity` rows the new rows are dropped and
counted — never a slower or failed request. A daemon thread takes whatever has accumulated every
`interval_s` (or sooner, once `batch_rows` are waiting) and writes it with one
`CrmSource.add_exposures` call, i.e. one transaction. A write that fails (the database is down) is
counted as dropped too and logged by the caller's `on_dropped`; the thread keeps going. `close()`
writes what is left within `timeout_s` (the service gives it what is left of its shutdown budget);
whatever is still buffered or being written when that runs out is counted as dropped (`shutdown`):
the process is about to exit, and contract §6 allows lost rows only when they are counted.

Exposure rows hold codes, ids, numbers and a timestamp only: no personal data.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from needs_rec.errors import NeedsRecError

Row = Mapping[str, Any]


class ExposureWriter:
    """Bounded buffer of exposure rows, drained into `write` (e.g. `CrmSource.add_exposures`) by a thread."""

    def __init__(
        self,
        write: Callable[[Sequence[Row]], int],
        *,
        capacity: int = 10_000,
        batch_rows: int = 1_000,
        interval_s: float = 0.25,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int, str], None] | None = None,
    ):
        self._write = write
        self.capacity = capacity
        self.batch_rows = batch_rows
        self.interval_s = interval_s
        self._on_written = on_written or (lambda n: None)
        self._on_dropped = on_dropped or (lambda n, reason: None)
        self._rows: list[Row] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._abandoned = False  # close() gave up waiting: the thread stops after its current write
        self._writing = 0  # rows of the write in progress
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0
        #: Why the last write failed (the error's text: codes, ids and the database's words, no personal data).
        self.last_error = ""

    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="exposure-writer", daemon=True)
            self._thread.start()

    def offer(self, rows: Sequence[Row]) -> bool:
        """Queue `rows` for writing; False (and counted as dropped) when the buffer is full."""
        with self._lock:
            if self._closing or len(self._rows) + len(rows) > self.capacity:
                accepted = False
            else:
                self._rows.extend(rows)
                accepted = True
                full_batch = len(self._rows) >= self.batch_rows
        if not accepted:
            self.dropped += len(rows)
            self._on_dropped(len(rows), "buffer_full")
            return False
        if full_batch:
            self._wake.set()
        return True

    @property
    def pending(self) -> int:
        """Rows waiting to be written."""
        return len(self._rows)

    def flush(self) -> int:
        """Write everything buffered now (in the caller's thread); returns the rows written."""
        with self._lock:
            rows, self._rows = self._rows, []
            self._writing = len(rows)
        if not rows:
            return 0
        try:
            written = self._write(rows)
        except NeedsRecError as exc:  # the database is unreachable or refuses: these rows are lost, counted
            written = -1
            self.last_error = " ".join(str(exc).split())
        with self._lock:
            self._writing = 0
            if self._abandoned:  # close() counted these rows as dropped already
                return max(written, 0)
        if written < 0:
            self.dropped += len(rows)
            self._on_dropped(len(rows), "write_failed")
            return 0
        self.written += written
        self._on_written(written)
        return written

    def close(self, timeout_s: float | None = 5.0) -> int:
        """Stop accepting rows, write what is buffered within `timeout_s` seconds (None: until written or
        failed), stop the thread. Returns the rows given up: those still buffered or being written when
        the time ran out (a database locked or slow past it), counted as dropped with reason `shutdown`."""
        with self._lock:
            self._closing = True
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is None:
            self.flush()
            return 0
        thread.join(timeout_s)
        if not thread.is_alive():
            return 0
        with self._lock:  # the thread is still in a write: what it holds and what waits are not written
            lost = len(self._rows) + self._writing
            self._rows = []
            self._abandoned = True
        if lost:
            self.dropped += lost
            self._on_dropped(lost, "shutdown")
        return lost

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self.flush()
            if self._closing:
                if not self._abandoned:
                    self.flush()
                return
            time.sleep(0)  # let request threads take the lock between batches
