"""Each contact's latest known funnel stage(s): where the manager's page opens a contact.

A contact's latest stages are the stages of its most recent day in the CRM's `outcomes` or in
needs_rec's own `feedback` (several when more than one stage was recorded that day; the page takes
the one furthest along the funnel). Looking one contact up in `outcomes` costs a scan of the whole
table in a CRM without an index on `contact_id` (≈ 25 ms per contact on 100k rows in SQLite), so
`LatestStages` keeps every contact's latest outcome day in memory, from one pass over the table
(a window query in SQL, a group-by on files), and rebuilds it in the background once it is older
than `refresh_s`: a lookup is then a dictionary read, at most `refresh_s` (plus one rebuild)
behind the CRM. Feedback is read per contact from needs_rec's own table, which is small and
indexed, so a manager's own report counts at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

#: Seconds an index of latest outcome days is served before a rebuild starts (in the background).
REFRESH_S = 60.0

Latest = tuple[str, tuple[str, ...]]  # (ISO date, stage codes recorded that day)


def _day(value: Any) -> str:
    text = value.isoformat() if hasattr(value, "isoformat") else str(value or "")
    return text.strip()[:10]


def latest_days(rows: Iterable[tuple[Any, Any, Any]]) -> dict[str, Latest]:
    """contact_id → (latest ISO day, its stage codes, lower-cased) from (contact_id, occurred_on, stage) rows."""
    best: dict[str, tuple[str, set[str]]] = {}
    for contact_id, occurred_on, stage in rows:
        key, day, code = str(contact_id or "").strip(), _day(occurred_on), str(stage or "").strip().lower()
        if not key or not day or not code:
            continue
        current = best.get(key)
        if current is None or day > current[0]:
            best[key] = (day, {code})
        elif day == current[0]:
            current[1].add(code)
    return {key: (day, tuple(sorted(codes))) for key, (day, codes) in best.items()}


def merge(*found: Latest | None) -> Latest | None:
    """The latest of several (day, stages) answers; stages of equal days are pooled."""
    days = [f for f in found if f is not None]
    if not days:
        return None
    last = max(day for day, _ in days)
    return last, tuple(sorted({s for day, stages in days if day == last for s in stages}))


class LatestStages:
    """contact_id → latest outcome day and stages, loaded by `load()` and rebuilt in the background.

    `load` returns (contact_id, occurred_on, stage) rows — every outcome row, or just each
    contact's latest day's. The first lookup loads synchronously (it raises what `load` raises);
    a rebuild that fails later keeps the old index and is retried after another `refresh_s`.
    """

    def __init__(self, load: Callable[[], Iterable[tuple[Any, Any, Any]]], *, refresh_s: float = REFRESH_S):
        self._load = load
        self.refresh_s = refresh_s
        self._index: dict[str, Latest] | None = None
        self._built = 0.0
        self._lock = threading.Lock()
        self._rebuilding = False
        self.last_error: str | None = None

    def get(self, contact_id: str) -> Latest | None:
        """The contact's latest outcome day and its stages, or None when it has no outcome."""
        index = self._index
        if index is None:
            with self._lock:
                if self._index is None:
                    self._index, self._built = latest_days(self._load()), time.monotonic()
                index = self._index
        elif time.monotonic() - self._built > self.refresh_s and not self._rebuilding:
            self._rebuild_in_background()
        return index.get(contact_id.strip())

    def _rebuild_in_background(self) -> None:
        with self._lock:
            if self._rebuilding:
                return
            self._rebuilding = True

        def rebuild() -> None:
            try:
                self._index = latest_days(self._load())
                self.last_error = None
            except Exception as exc:  # a database gone for a moment: keep answering from the old index
                self.last_error = type(exc).__name__
            finally:
                self._built = time.monotonic()
                self._rebuilding = False

        threading.Thread(target=rebuild, name="latest-stages", daemon=True).start()
