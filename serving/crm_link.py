"""The service's side of the CRM source (`--crm D`, contract §4 v2, §5, §6).

`CrmLink` owns the `crm.CrmSource`, a small thread pool for its blocking calls (a slow or
unreachable database never stalls the event loop), the contact cache, the exposure writer and the
memory of which model version gave which answer (`request_id`).

Contact cache — what it is safe to cache, and how fresh it is: a contact's §2 fields (and its
organization's) change rarely and an answer computed from fields up to `crm_cache_s` seconds old
is still the right answer for that contact, so found contacts are cached for at most
`crm_cache_s` seconds (default 60), the oldest evicted beyond `crm_cache_size` entries. An
unknown contact is never cached (a contact added to the CRM is found at once), and nothing written
(feedback) goes through the cache. A cache hit costs a dictionary lookup in the event loop; a miss
is one indexed query in a pool thread.

Snapshot — so that lookups cost nothing even for contacts not asked for lately: a background
thread reads every contact of a database CRM in one pass (`CrmSource.snapshot`, when there are at
most `crm_cache_size`) at start and again every `crm_cache_s / 2` seconds. A snapshot answers for
`crm_cache_s` seconds after its read began, the same freshness bound as the cache; past that (the
database unreachable, say) it is ignored and lookups read the CRM again, as without it. A contact
missing from the snapshot is always looked up in the CRM, so a new contact is found at once.
`/metrics` shows the snapshot's size and age (`needs_rec_crm_snapshot_contacts`,
`needs_rec_crm_snapshot_age_seconds`).

Which answer a feedback's `request_id` names (`answer_of`): the answers this process gave are
remembered; others are read from `exposures`. With `--workers N` the answer may be another
worker's and not written yet (its writer flushes every 0.25 s), so an id the service minted carries
the version it was answered with (`v<version>-<32 hex digits>`: any worker reads it without
memory), and an id the caller chose is looked for in `exposures` again after one and two flush
intervals before it is called unknown. One process alone looks once: nobody else answers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import crm
from crm.exposures import ExposureWriter
from needs_rec.errors import CrmRowError, DataError, SourceUnavailable
from serving.observability import Metrics, log_event

T = TypeVar("T")
#: How many request_id → model_version pairs are remembered for feedback (older ones are read from exposures).
REMEMBERED_ANSWERS = 100_000
#: An answer: the model version that gave it, the contact it was asked for (None: asked with the full fields)
#: and its stage (None: not known, as for a minted id read without memory or exposures).
Answer = tuple[int, str | None, str | None]
#: Looks for a caller's request_id in `exposures` before it is called unknown, with sibling workers (module doc).
SIBLING_LOOKS = 2


class TtlCache:
    """A bounded mapping whose entries expire `ttl_s` seconds after they were put (event-loop use only)."""

    def __init__(self, ttl_s: float, size: int):
        self.ttl_s, self.size = ttl_s, size
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str) -> Any:
        """The value, or None when absent or older than `ttl_s`."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if time.monotonic() - entry[0] > self.ttl_s:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: str, value: Any) -> None:
        if self.ttl_s <= 0:
            return
        self._entries[key] = (time.monotonic(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class CrmLink:
    """The CRM source of a running service: lookups, feedback, exposures (see the module doc)."""

    def __init__(
        self,
        source: crm.CrmSource,
        *,
        cache_s: float = 60.0,
        cache_size: int = 100_000,
        workers: int = 4,
        exposure_buffer: int = 10_000,
        metrics: Metrics | None = None,
        logger: logging.Logger | None = None,
        stop_budget: Callable[[], float | None] = lambda: 5.0,
        siblings: bool = False,
    ):
        self.source = source
        #: Seconds `stop` may wait for the buffered exposures to be written (None: no limit).
        self.stop_budget = stop_budget
        self.cache = TtlCache(cache_s, cache_size)
        self.metrics = metrics
        self.logger = logger or logging.getLogger("needs_rec.serving")
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="crm")
        self._snapshot: tuple[float, dict[str, crm.ContactRecord]] | None = None  # (monotonic read start, records)
        self._stopped = threading.Event()
        self._snapshotter: threading.Thread | None = None
        self._answers: OrderedDict[str, Answer] = OrderedDict()
        #: Other worker processes answer too (`--workers N`): an answer may be in their memory only for now.
        self.siblings = siblings
        self.exposures = ExposureWriter(
            source.add_exposures,
            capacity=exposure_buffer,
            on_written=self._exposures_written,
            on_dropped=self._exposures_dropped,
        )

    def start(self) -> None:
        self.exposures.start()
        if self.cache.ttl_s > 0:
            self._snapshotter = threading.Thread(target=self._keep_snapshot, name="crm-snapshot", daemon=True)
            self._snapshotter.start()
        if self.metrics is not None:
            self.metrics.watch_snapshot_age(self.snapshot_age)

    def stop(self) -> None:
        """Write the buffered exposures (within `stop_budget()`; rows still unwritten then are counted and
        logged as dropped), release the threads and the connections."""
        self._stopped.set()
        if self._snapshotter is not None:
            self._snapshotter.join(timeout=10)
        self.exposures.close(self.stop_budget())
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.source.close()

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run a blocking source call in the pool. A CRM that lost its shape while serving (a table or
        file gone, a column renamed: DataError) is SourceUnavailable here, a 503 like a database that is
        down, never the caller's 400; CrmRowError (one row's value) propagates as it is."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        except CrmRowError:
            raise
        except DataError as exc:
            raise SourceUnavailable(f"the CRM source cannot be read: {' '.join(str(exc).split())}") from exc

    def snapshot_age(self) -> float:
        """Seconds since the snapshot in use was read (-1: none yet)."""
        snapshot = self._snapshot
        return -1.0 if snapshot is None else round(time.monotonic() - snapshot[0], 3)

    def _keep_snapshot(self) -> None:
        """Read every contact now and every `crm_cache_s / 2` s after (the snapshot thread's loop)."""
        while not self._stopped.is_set():
            started = time.monotonic()
            try:
                records = self.source.snapshot(self.cache.size)
            except Exception as exc:  # the database is down: the old snapshot expires, lookups read the CRM
                log_event(self.logger, "crm_snapshot_failed", logging.WARNING, error=" ".join(str(exc).split()))
            else:
                if records is None:
                    return  # too many contacts, or the source looks up in memory itself: the cache alone
                self._snapshot = (started, records)  # one reference assignment: the event loop sees old or new
                if self.metrics is not None:
                    self.metrics.crm_snapshot_contacts.set(len(records))
            self._stopped.wait(max(1.0, self.cache.ttl_s / 2))

    async def contact(self, contact_id: str) -> crm.ContactRecord | None:
        """The contact's record, from the snapshot or the cache when read in the last `crm_cache_s` seconds."""
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - snapshot[0] <= self.cache.ttl_s:
            record = snapshot[1].get(contact_id)
            if record is not None:
                if self.metrics is not None:
                    self.metrics.crm_cache_hits.inc()
                return record
        record = self.cache.get(contact_id)
        if record is not None:
            if self.metrics is not None:
                self.metrics.crm_cache_hits.inc()
            return record
        record = await self.call(self.source.contact, contact_id)
        if self.metrics is not None:
            self.metrics.crm_lookups.inc()
        if record is not None:
            self.cache.put(contact_id, record)
        return record

    async def has_contact(self, contact_id: str) -> bool:
        """Whether the CRM has the contact, even one whose row holds a value no request could carry
        (feedback about a contact needs only that it exists)."""
        try:
            return await self.contact(contact_id) is not None
        except CrmRowError:  # the row is there; one of its values is wrong
            return True

    def record_answer(
        self, version: int, contact_id: str | None, stage: str, points: Sequence[dict[str, Any]], request_id: str
    ) -> None:
        """Remember which version answered `request_id` (for which contact and stage) and queue one exposure
        row per point shown."""
        self._answers[request_id] = (version, contact_id, stage)
        if len(self._answers) > REMEMBERED_ANSWERS:
            self._answers.popitem(last=False)
        if not points:
            return
        served_at = dt.datetime.now(dt.UTC)
        self.exposures.offer(
            [
                {
                    "request_id": request_id,
                    "served_at": served_at,
                    "model_version": version,
                    "contact_id": contact_id,
                    "stage": stage,
                    "characteristic": point["characteristic"],
                    "rank": rank,
                    "probability": float(point["probability"]),
                    "selected": bool(point.get("selected", True)),
                }
                for rank, point in enumerate(points, start=1)
            ]
        )

    async def answer_of(self, request_id: str) -> Answer | None:
        """The version that gave answer `request_id`, its contact and stage (see the module doc): remembered,
        else from the exposures written, else the version a minted id carries (contact and stage unknown), else —
        with sibling workers, for an id the caller chose — from the exposures after one and two flush
        intervals; None when none of them knows it."""
        answer = self._answers.get(request_id)
        if answer is not None:
            return answer
        answer = await self.call(self.source.answer_of, request_id)
        if answer is not None:
            return answer
        version = minted_version(request_id)
        if version is not None:
            return version, None, None
        for _ in range(SIBLING_LOOKS if self.siblings else 0):
            await asyncio.sleep(self.exposures.interval_s)
            answer = await self.call(self.source.answer_of, request_id)
            if answer is not None:
                return answer
        return None

    def _exposures_written(self, n: int) -> None:
        if self.metrics is not None:
            self.metrics.exposures.labels("written").inc(n)

    def _exposures_dropped(self, n: int, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.exposures.labels(f"dropped_{reason}").inc(n)
        if reason == "write_failed":
            log_event(self.logger, "exposures_dropped", logging.WARNING, rows=n, reason=reason,
                      error=self.exposures.last_error)
        elif reason == "shutdown":  # once, at exit: the database did not take them within the shutdown budget
            log_event(self.logger, "exposures_dropped", logging.WARNING, rows=n, reason=reason,
                      error="not written within --shutdown-timeout-s (the database was locked or slow)")


#: Random bytes for request ids, read from the OS in blocks of this many ids (one system call per block).
_IDS_PER_READ = 256
_random_ids: list[str] = []


_MINTED = re.compile(r"v([0-9]{1,9})-[0-9a-f]{32}")


def new_request_id(version: int) -> str:
    """A fresh opaque answer id: `v<version>-` and 32 hex digits of the OS's randomness (`os.urandom`,
    as `secrets` uses). The version lets any worker of several tell feedback which version answered,
    before the answer's exposures are written (module doc).

    The bytes are read for `_IDS_PER_READ` ids at once; `list.pop` is atomic, so threads never
    share an id.
    """
    while True:  # another thread may empty a block just read: read again
        try:
            return f"v{version}-{_random_ids.pop()}"
        except IndexError:
            block = os.urandom(16 * _IDS_PER_READ).hex()
            _random_ids.extend(block[i : i + 32] for i in range(0, len(block), 32))


def minted_version(request_id: str) -> int | None:
    """The version a `new_request_id` carries, or None for an id of another form (a caller's)."""
    match = _MINTED.fullmatch(request_id)
    return None if match is None else int(match.group(1))


os.register_at_fork(after_in_child=_random_ids.clear)  # a forked child never reuses its parent's unread ids
