"""needs_rec's own tables, `feedback` and `exposures` (contract §6), in the CRM's database.

The only writer to a database in needs_rec, and it writes only these two tables (created on first
use, with `CREATE TABLE IF NOT EXISTS` semantics; never a firm's table). Every write is one
transaction, committed before the method returns, so "returned" means "stored" and a killed
process leaves whole rows or none.

- `add_feedback`: `INSERT … ON CONFLICT (feedback_id) DO NOTHING RETURNING`, then, when nothing was
  inserted, the stored row is compared: the same event is a duplicate (nothing written), another
  one under the same id a conflict. Concurrent posts of one id store it once (the primary key
  decides, not a read before the write). When the write fails (a read-only database), the id is
  looked up with a read: a stored event is still a duplicate or a conflict, only a new one fails.
- `add_exposures`: one multi-row insert per call (the service batches them off the request path).

SQLite commits with `synchronous=FULL`: each commit fsyncs, so a 2xx'd event survives a power cut or an OS crash
too, not only a killed process. needs_rec's own file (`needs_rec.db` beside a directory CRM) runs in WAL mode
(readers never wait for a writer; ~0.3 ms a commit here). A firm's own SQLite database keeps the journal mode the
firm gave it: the journal mode is a persistent setting of the file, and contract §5 lets needs_rec add its two
tables there, nothing more (a firm that wants WAL sets it once, `PRAGMA journal_mode = WAL`; bench/README.md has
the figures of both). Writers of one process take turns on a lock (see `OwnTables`); writers in other processes
are waited for up to `busy_timeout`. PostgreSQL commits are durable by default (`synchronous_commit=on`); its
connections come from the source's pool (checked with a ping on checkout, so a restarted server costs no failed
write). Statements are built once. Connection problems become `SourceUnavailable` (the service's 503).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from crm.source import FeedbackEvent, FeedbackResult
from crm.stages import latest_days
from needs_rec import schema
from needs_rec.errors import DataError, SourceUnavailable

SQLITE_BUSY_TIMEOUT_MS = 30_000
_TYPES = {
    schema.Kind.ID: sa.Text,
    schema.Kind.CODE: sa.Text,
    schema.Kind.OUTCOME: sa.Text,
    schema.Kind.DATE: sa.Date,
    schema.Kind.TIMESTAMP: lambda: sa.DateTime(timezone=True),
    schema.Kind.INTEGER: sa.Integer,
    schema.Kind.NUMBER: sa.Float,
    schema.Kind.FLAG: sa.Boolean,
}


def own_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """The SQLAlchemy tables of `schema.FEEDBACK` and `schema.EXPOSURES` in `metadata`."""

    def columns(table: schema.Table, key: str | None) -> list[sa.Column[Any]]:
        return [
            sa.Column(c.name, _TYPES[c.kind](), primary_key=c.name == key, nullable=not c.required and c.name != key)
            for c in table.columns
        ]

    feedback = sa.Table(schema.FEEDBACK.name, metadata, *columns(schema.FEEDBACK, "feedback_id"))
    exposures = sa.Table(schema.EXPOSURES.name, metadata, *columns(schema.EXPOSURES, None))
    sa.Index("feedback_received_at", feedback.c.received_at)
    sa.Index("feedback_contact_id", feedback.c.contact_id)
    sa.Index("exposures_request_id", exposures.c.request_id)
    return feedback, exposures


def sqlite_engine(path: Path | str, **kwargs: Any) -> Engine:
    """A SQLAlchemy engine on needs_rec's own SQLite file: WAL, synchronous=FULL, busy timeout (module doc)."""
    engine = sa.create_engine(f"sqlite+pysqlite:///{path}", **kwargs)
    tune_sqlite(engine, own_file=True)
    return engine


def tune_sqlite(engine: Engine, *, own_file: bool) -> None:
    """Set the pragmas of the module doc on every new connection of a SQLite engine.

    Only settings of the connection, except for needs_rec's `own_file`, which is switched to WAL
    (persistent): a firm's database is left in its own journal mode (see the module doc).
    """

    @sa_event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if own_file:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()
        # SQLite's own lower() folds ASCII only; contact search must fold Cyrillic names too.
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)
        # SQLite stores whatever bytes a TEXT value was given: one bad byte in one name must not make
        # every lookup or search that reads it fail (Python's default decoding raises).
        dbapi_connection.text_factory = _decoded


@contextlib.contextmanager
def database_errors(where: str, action: str) -> Iterator[None]:
    """SQLAlchemy errors → `SourceUnavailable` naming `where` (no password) and what was being done."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        reason = _reason(exc)
        lasting = _names_nothing(reason)
        raise SourceUnavailable(f"CRM database {where}: cannot {action} ({reason}); "
                                f"{_CHECK_URL if lasting else 'retry later'}", detail=reason, lasting=lasting) from None
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise SourceUnavailable(f"CRM database {where}: connection lost while trying to {action}") from None
        reason = _reason(exc)  # the database answered and refused (SQLite: a file that is no database)
        raise SourceUnavailable(f"CRM database {where}: cannot {action} ({reason})", detail=reason,
                                lasting=True) from None


#: Connection refusals that come back on every retry: the URL names a database, role, password or
#: host that is not there (libpq's and psycopg's wording). A server that is down or busy is not one.
_REFUSED_FOR_GOOD = ("does not exist", "password authentication failed", "no pg_hba.conf entry",
                     "failed to resolve host", "could not translate host name")
_CHECK_URL = "check the URL (host, user, password, database name): retrying will not help"


def _names_nothing(reason: str) -> bool:
    """True when a connection failed because of what the URL names, not because the server is away."""
    connecting = reason.startswith(("connection failed", "failed to resolve host", "could not translate"))
    return connecting and any(marker in reason for marker in _REFUSED_FOR_GOOD)


def _reason(exc: SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None) or exc
    first = str(original).strip().splitlines()
    return (first[0] if first else type(original).__name__)[:200]


class OwnTables:
    """`feedback` and `exposures` on one engine (and PostgreSQL schema); see the module doc."""

    def __init__(self, engine: Engine, *, schema_name: str | None = None, describe: str = ""):
        self.engine = engine
        self.describe = describe or engine.url.render_as_string(hide_password=True)
        self.metadata = sa.MetaData(schema=schema_name)
        self.feedback, self.exposures = own_tables(self.metadata)
        self._ready = False
        self._lock = threading.Lock()
        if engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        # Built once: executing the same statement object reuses its compiled form (SQLAlchemy's
        # cache key is memoised on it), where building it per event cost ~0.4 ms.
        self._store_feedback = (
            insert(self.feedback)
            .on_conflict_do_nothing(index_elements=["feedback_id"])
            .returning(self.feedback.c.feedback_id)
        )
        self._stored_feedback = sa.select(self.feedback).where(self.feedback.c.feedback_id == sa.bindparam("id"))
        self._store_exposures = sa.insert(self.exposures)
        # SQLite has one writer at a time per database. Threads of this process queue on a lock for
        # it (woken at once) instead of each meeting SQLITE_BUSY and sleeping in SQLite's busy
        # handler (1, 2, 5, 10 … ms); `busy_timeout` still covers writers in other processes.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    @classmethod
    def for_sqlite(cls, path: Path, *, describe: str = "") -> OwnTables:
        """Own tables in a SQLite file of their own (a directory source's `needs_rec.db`)."""
        return cls(sqlite_engine(path), describe=describe or str(path))

    def ensure(self) -> None:
        """Create the two tables (and their indexes) when they are not there yet."""
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                self.check_own_tables()  # never a write into a firm's table of the same name
                with database_errors(self.describe, "create needs_rec's tables feedback and exposures"):
                    try:
                        self.metadata.create_all(self.engine, checkfirst=True)
                    except DBAPIError:  # another process created them between the check and the CREATE
                        if not all(self._exists(t, check_only=True) for t in (self.feedback, self.exposures)):
                            raise
                self._ready = True

    def check_own_tables(self, names: Sequence[str] = (schema.FEEDBACK.name, schema.EXPOSURES.name)) -> None:
        """DataError when a table of `names` exists but is not needs_rec's: it lacks some of needs_rec's
        columns, so it is a firm's own table of that name (contract §5: needs_rec never writes a firm's
        table). Taken as needs_rec's, every feedback would be a 503 forever and every exposure dropped
        with no reason given; the message names the table, the missing columns and what to do.
        SourceUnavailable when the database cannot be reached (it may come up later)."""
        tables = [t for t in (self.feedback, self.exposures) if t.name in names]
        with database_errors(self.describe, "read the columns of its own tables"), self.engine.connect() as conn:
            inspector = sa.inspect(conn)
            for table in tables:
                if inspector.has_table(table.name, schema=self.metadata.schema):
                    found = {c["name"].lower() for c in inspector.get_columns(table.name, schema=self.metadata.schema)}
                    missing = [c.name for c in table.columns if c.name not in found]
                    if missing:
                        raise DataError(self._foreign_table_message(table.name, missing))

    def _foreign_table_message(self, name: str, missing: Sequence[str]) -> str:
        where = f" in schema {self.metadata.schema!r}" if self.metadata.schema else ""
        fix = ("rename the firm's table, or point the URL at another schema with ?schema=NAME (the CRM's tables or "
               "views of them there)" if self.engine.dialect.name == "postgresql" else "rename the firm's table")
        return (f"CRM database {self.describe}: table {name!r}{where} is not needs_rec's own {name} table (it lacks "
                f"column(s) {', '.join(missing)}): needs_rec keeps its {name} there and never writes into a table of "
                f"the firm's; {fix}")

    def add_feedback(self, event: FeedbackEvent) -> FeedbackResult:
        """Insert one event unless its feedback_id is stored; committed before returning."""
        self.ensure()
        values = {
            "feedback_id": event.feedback_id,
            "contact_id": event.contact_id,
            "occurred_on": dt.date.fromisoformat(event.occurred_on),
            "stage": event.stage,
            "characteristic": event.characteristic,
            "outcome": event.outcome,
            "request_id": event.request_id,
            "manager_id": event.manager_id,
            "model_version": event.model_version,
            "received_at": dt.datetime.now(dt.UTC),
        }
        try:
            with database_errors(self.describe, "store the feedback"), self._write_lock, self.engine.begin() as conn:
                if conn.execute(self._store_feedback, values).first() is not None:  # RETURNING: only when inserted
                    return FeedbackResult.STORED
                stored = conn.execute(self._stored_feedback, {"id": event.feedback_id}).one()
        except SourceUnavailable as failure:
            return self._known_after_failed_write(event, failure)
        return FeedbackResult.DUPLICATE if event.same_content(stored._mapping) else FeedbackResult.CONFLICT

    def _known_after_failed_write(self, event: FeedbackEvent, failure: SourceUnavailable) -> FeedbackResult:
        """DUPLICATE or CONFLICT for an event whose write failed but whose feedback_id is stored already.

        A retry of a stored event needs only a read (contract §6: 200 duplicate, 409 other content),
        so a database that is read-only now (a SQLite file made immutable, PostgreSQL with
        `default_transaction_read_only`) still answers it; otherwise — not stored, or the read fails
        too — the write's own SourceUnavailable (503, retry later) stands.
        """
        try:
            stored = self.stored_feedback(event.feedback_id)
        except SourceUnavailable:
            stored = None
        if stored is None:
            raise failure
        return FeedbackResult.DUPLICATE if event.same_content(stored) else FeedbackResult.CONFLICT

    def stored_feedback(self, feedback_id: str) -> dict[str, Any] | None:
        """The row stored under `feedback_id`, or None (also when the table does not exist yet)."""
        if not self._exists(self.feedback):
            return None
        with database_errors(self.describe, "read feedback"), self.engine.connect() as conn:
            row = conn.execute(self._stored_feedback, {"id": feedback_id}).first()
        return None if row is None else dict(row._mapping)

    def add_exposures(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Append exposure rows in one transaction."""
        if not rows:
            return 0
        self.ensure()
        with database_errors(self.describe, "store exposures"), self._write_lock, self.engine.begin() as conn:
            conn.execute(self._store_exposures, list(rows))
        return len(rows)

    def recent_feedback(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest feedback rows, newest first."""
        if not self._exists(self.feedback):
            return []
        table = self.feedback
        query = sa.select(table).order_by(table.c.received_at.desc(), table.c.feedback_id).limit(limit)
        with database_errors(self.describe, "read feedback"), self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def feedback_since(self, since: dt.datetime) -> list[dict[str, Any]]:
        """Feedback rows received at or after `since` (UTC), oldest first."""
        if not self._exists(self.feedback):
            return []
        table = self.feedback
        query = sa.select(table).where(table.c.received_at >= since).order_by(table.c.received_at)
        with database_errors(self.describe, "read feedback"), self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def latest_feedback_day(self, contact_id: str) -> tuple[str, tuple[str, ...]] | None:
        """The contact's latest feedback day and the stages reported that day (None: no feedback)."""
        if not self._exists(self.feedback):
            return None
        table = self.feedback
        query = (
            sa.select(table.c.contact_id, table.c.occurred_on, table.c.stage)
            .where(table.c.contact_id == contact_id)
            .order_by(table.c.occurred_on.desc())
            .limit(50)
        )
        with database_errors(self.describe, "read feedback"), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return latest_days(rows).get(contact_id)

    def feedback_on(self, contact_id: str, day: dt.date) -> list[dict[str, Any]]:
        """The contact's feedback rows of `day` (stage, characteristic, outcome), oldest first: one
        query on the contact_id index, for the manager's card (never the JSON endpoints)."""
        if not self._exists(self.feedback):
            return []
        table = self.feedback
        query = (
            sa.select(table.c.stage, table.c.characteristic, table.c.outcome)
            .where(table.c.contact_id == contact_id, table.c.occurred_on == day)
            .order_by(table.c.received_at)
            .limit(1000)
        )
        with database_errors(self.describe, "read feedback"), self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def answer_of(self, request_id: str) -> tuple[int, str | None, str] | None:
        """(model version, contact_id or None, stage) of an answer, from its exposures (None when none was written)."""
        if not self._exists(self.exposures):
            return None
        table = self.exposures
        query = (
            sa.select(table.c.model_version, table.c.contact_id, table.c.stage)
            .where(table.c.request_id == request_id)
            .limit(1)
        )
        with database_errors(self.describe, "read exposures"), self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (row[0], row[1], row[2])

    def read_feedback(self) -> pd.DataFrame | None:
        """The whole feedback table as text (like a CSV export of it), or None when there is none yet."""
        if not self._exists(self.feedback):
            return None
        with database_errors(self.describe, "read feedback"), self.engine.connect() as conn:
            result = conn.execute(sa.select(self.feedback).order_by(self.feedback.c.received_at))
            names = list(result.keys())
            rows = result.all()
        frame = pd.DataFrame(
            {name: pd.array([_text(row[i]) for row in rows], dtype="str") for i, name in enumerate(names)}
        )
        frame.attrs = {"source": f"table {schema.FEEDBACK.name!r} of {self.describe}"}
        return frame

    def close(self) -> None:
        self.engine.dispose()

    def _exists(self, table: sa.Table, *, check_only: bool = False) -> bool:
        if self._ready and not check_only:
            return True
        with database_errors(self.describe, f"look for the {table.name} table"), self.engine.connect() as conn:
            return sa.inspect(conn).has_table(table.name, schema=self.metadata.schema)


class OwnTablesWriter:
    """The `CrmSource` methods that write or read needs_rec's own tables, for a source with `own()`."""

    def own(self) -> OwnTables:
        raise NotImplementedError

    def add_feedback(self, event: FeedbackEvent) -> FeedbackResult:
        return self.own().add_feedback(event)

    def stored_feedback(self, feedback_id: str) -> dict[str, Any] | None:
        return self.own().stored_feedback(feedback_id)

    def add_exposures(self, rows: Sequence[Mapping[str, Any]]) -> int:
        return self.own().add_exposures(rows)

    def recent_feedback(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.own().recent_feedback(limit)

    def answer_of(self, request_id: str) -> tuple[int, str | None, str] | None:
        return self.own().answer_of(request_id)

    def feedback_on(self, contact_id: str, day: dt.date) -> list[dict[str, Any]]:
        return self.own().feedback_on(contact_id, day)


def _decoded(value: bytes) -> str:
    """A SQLite TEXT value as str, a byte that is not UTF-8 shown as U+FFFD."""
    return value.decode("utf-8", errors="replace")


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)
