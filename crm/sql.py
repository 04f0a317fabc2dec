"""A SQL database as a CRM source (contract §5): SQLite or PostgreSQL, tables or views.

Through SQLAlchemy 2 (psycopg 3 for PostgreSQL): which tables and views exist and their columns
(so a firm can map its own schema onto ours with views, in `?schema=NAME` on PostgreSQL), contact
lookups and search (parameterised queries on a small connection pool), and needs_rec's own tables
(`crm.own`).

Whole-table reads for training and batch scoring stream as Arrow record batches through ADBC
(the Arrow project's database drivers: PostgreSQL's binary COPY; SQLite's C API, in a child
process — see `crm.sqlite_reader`), batch by batch turned into the same text columns a CSV gives,
so validation is exactly the file path's. That is
several times faster than row tuples through a Python driver (bench/data_speed.py has the
figures). Only the contract columns are selected: personal-data columns are never read.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Engine

from crm.files import _as_text
from crm.own import OwnTables, OwnTablesWriter, database_errors, tune_sqlite
from crm.records import record_of
from crm.source import ContactRecord, describe_url, search_terms
from crm.sqlite_reader import EXIT_UNAVAILABLE, Reader, ReaderError
from crm.stages import Latest, LatestStages, merge
from needs_rec import schema
from needs_rec.errors import CrmRowError, DataError, SourceUnavailable

#: Seconds to wait for a PostgreSQL connection, and for one statement of a lookup or a write.
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 30_000
#: A SQLite table of this many rows or more is read as SQLITE_READERS rowid ranges at once.
SPLIT_ROWS = 100_000
SQLITE_READERS = max(1, min(2, os.cpu_count() or 1))


class SqlSource(OwnTablesWriter):
    """`crm.CrmSource` over a SQLAlchemy URL (sqlite+pysqlite or postgresql+psycopg), see the module doc."""

    def __init__(self, url: URL, *, schema: str | None = None):
        self.url = url
        self.schema = schema
        self.dialect = "postgresql" if url.drivername.startswith("postgresql") else "sqlite"
        self._engine: Engine | None = None
        self._own: OwnTables | None = None
        self._lock = threading.Lock()
        self._lookup: _Lookup | None = None
        self._reader: Reader | None = None
        self._stages = LatestStages(self._latest_outcome_days)

    # -- where -------------------------------------------------------------------------------

    def describe(self) -> str:
        return describe_url(self.url, self.schema)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (created on first use; a SQLite file must exist)."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._create_engine()
        return self._engine

    def check_exists(self) -> None:
        if self.dialect == "sqlite" and not Path(self.url.database or "").is_file():
            raise DataError(f"SQLite database {self.url.database!r} does not exist; give the CRM's database file")

    def _create_engine(self) -> Engine:
        self.check_exists()
        if self.dialect == "sqlite":
            engine = sa.create_engine(self.url, pool_size=8, max_overflow=8)
            tune_sqlite(engine, own_file=False)  # the firm's file: its journal mode stays
            return engine
        return sa.create_engine(
            self.url,
            pool_size=8,
            max_overflow=8,
            pool_pre_ping=True,
            pool_timeout=CONNECT_TIMEOUT_S,
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT_S,
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            },
        )

    # -- reading whole tables -----------------------------------------------------------------

    def check_tables(self) -> None:
        for table in schema.TABLES:
            relation, columns = self._relation(table.name)
            source = f"table {relation!r}"
            mapping, _, _ = schema.contract_columns(columns, table, source)
            schema.check_required_columns(mapping.values(), table, source)
        self.own().check_own_tables()  # a firm's own `feedback` or `exposures` is refused, never written

    def read_table(self, name: str) -> pd.DataFrame:
        table = schema.TABLES_BY_NAME[name]
        relation, columns = self._relation(name)
        source = f"table {relation!r}"
        mapping, personal, extra = schema.contract_columns(columns, table, source)
        schema.check_required_columns(mapping.values(), table, source)
        arrow = self._read_arrow(relation, list(mapping), columns)
        frame = pd.DataFrame(
            {mapping[c]: pd.Series(arrow.column(c).to_pandas(), dtype="str") for c in mapping},
            index=pd.RangeIndex(arrow.num_rows),
        )
        frame.attrs = {"source": source, "personal_columns_dropped": personal, "extra_columns_ignored": extra}
        return frame

    def read_crm(self) -> dict[str, pd.DataFrame]:
        frames = {table.name: self.read_table(table.name) for table in schema.TABLES}
        if schema.FEEDBACK.name in self._relations():
            self.own().check_own_tables([schema.FEEDBACK.name])  # a firm's own `feedback` is no feedback of ours
            frames[schema.FEEDBACK.name] = self.read_table(schema.FEEDBACK.name)
        return frames

    def _relations(self) -> dict[str, str]:
        """Tables and views of the schema (materialized views too, on PostgreSQL): name as the database
        spells it, by its lower-case name."""
        with database_errors(self.describe(), "list its tables"), self.engine.connect() as conn:
            inspector = sa.inspect(conn)
            names = inspector.get_table_names(schema=self.schema) + inspector.get_view_names(schema=self.schema)
            if self.dialect == "postgresql":
                names += inspector.get_materialized_view_names(schema=self.schema)
        return {name.lower(): name for name in names}

    def _relation(self, name: str) -> tuple[str, dict[str, Any]]:
        """The relation's name as the database spells it and its columns (name → reflected SQL type, in
        the table's order), reflected once per read: the types choose how PostgreSQL columns are read."""
        relations = self._relations()
        if name not in relations:
            where = f" in schema {self.schema!r}" if self.schema else ""
            raise DataError(
                f"missing table {name} in {self.describe()}{where}: the {name} table (or a view of that name) "
                f"is required; found: {', '.join(sorted(relations.values())) or 'no tables'}"
            )
        relation = relations[name]
        with database_errors(self.describe(), f"read the columns of {relation}"), self.engine.connect() as conn:
            columns = {c["name"]: c["type"] for c in sa.inspect(conn).get_columns(relation, schema=self.schema)}
        return relation, columns

    def _read_arrow(self, relation: str, columns: Sequence[str], every_column: Mapping[str, Any]) -> pa.Table:
        """SELECT the columns of `relation`, read as Arrow, each column as text ("" for NULL).

        `every_column` is the relation's reflected columns (name → SQL type), from `_relation`."""
        if not columns:
            return pa.table({})
        if self.dialect == "sqlite":
            batches = self._sqlite_batches(relation, columns, every_column)
        else:
            batches = self._postgresql_batches(relation, columns, every_column)
        if not batches:
            return pa.table({c: pa.array([], pa.string()) for c in columns})
        table = pa.Table.from_batches(batches)
        if self.dialect == "postgresql":  # typed columns: text once per column, not per batch
            table = pa.table({c: _as_text(table.column(c)) for c in columns})
        for name, column in zip(columns, table.columns, strict=True):
            _check_utf8(column, relation, name)
        return table.rename_columns(list(columns))

    def _postgresql_batches(
        self, relation: str, columns: Sequence[str], kinds: Mapping[str, Any]
    ) -> list[pa.RecordBatch]:
        """PostgreSQL through ADBC (binary COPY into Arrow): typed columns (arrays arrive as lists),
        turned into text by `_read_arrow` like a Parquet column."""
        import adbc_driver_manager.dbapi as adbc

        table = sa.table(relation, *(sa.column(c) for c in columns), schema=self.schema)
        query = str(sa.select(*(_as_read(table.c[c], kinds.get(c)) for c in columns)).compile(
            dialect=self.engine.dialect))
        try:
            with adbc_connect(self.url) as conn, conn.cursor() as cursor:
                cursor.execute(query)
                return list(cursor.fetch_record_batch())
        except adbc.OperationalError as exc:
            reason = _first_line(exc)
            raise SourceUnavailable(f"CRM database {self.describe()}: cannot read {relation} ({reason})",
                                    detail=reason) from None
        except (adbc.Error, OSError, pa.ArrowException) as exc:  # an error mid-fetch (a row of a view that
            # fails: division by zero) comes as OSError from ADBC's stream, not as adbc.Error
            raise DataError(f"table {relation!r} of {self.describe()}: cannot be read ({_first_line(exc)})") from None

    def _sqlite_batches(
        self, relation: str, columns: Sequence[str], every_column: Iterable[str]
    ) -> list[pa.RecordBatch]:
        """SQLite through ADBC in this source's reader process (`crm.sqlite_reader`, which says why),
        a large table split over rowid ranges read at once (`_sqlite_queries`). Every value is read as
        text ("" for NULL): SQLite values are dynamically typed, so one odd cell must not change a
        column's type mid-stream."""
        self.engine  # noqa: B018 — a missing file is a DataError here (ADBC would say something obscure)
        queries = self._sqlite_queries(relation, columns, every_column)
        try:
            return self._sqlite_reader().read(queries)
        except ReaderError as exc:
            if exc.code == EXIT_UNAVAILABLE:
                reason = exc.reason
                raise SourceUnavailable(f"CRM database {self.describe()}: cannot read {relation} ({reason})",
                                        detail=reason) from None
            raise DataError(f"table {relation!r} of {self.describe()}: cannot be read ({exc.reason})") from None

    def _sqlite_queries(self, relation: str, columns: Sequence[str], every_column: Iterable[str]) -> list[str]:
        """The SELECT of a table, as SQLITE_READERS rowid ranges when it has SPLIT_ROWS rows or more.

        A table's rows come in rowid order (its storage order: what a plain SELECT gives unless a
        covering index is scanned instead), split or not, so the ranges concatenate into the rows
        of one read. Each range is its own read transaction: a writer committing in between is seen
        by the later ranges only. Views and WITHOUT ROWID tables are read whole, in SQLite's order.
        """
        table = sa.table(relation, *(sa.column(c) for c in columns), schema=self.schema)
        # COALESCE: never NULL, so ADBC (which infers a column's type from its first rows) always sees text
        select = sa.select(*(sa.func.coalesce(sa.cast(table.c[c], sa.Text), "").label(c) for c in columns))
        taken = {c.lower() for c in every_column} | {c.lower() for c in columns}
        alias = next((name for name in ("rowid", "_rowid_", "oid") if name not in taken), None)
        bounds = self._rowid_bounds(relation, alias) if alias else None
        if bounds is not None:
            rowid = sa.literal_column(alias)
            select = select.order_by(rowid)
            low, high = bounds
            if SQLITE_READERS > 1 and high - low + 1 >= SPLIT_ROWS:
                cuts = [low - 1 + (high - low + 1) * k // SQLITE_READERS for k in range(1, SQLITE_READERS)]
                parts = [select.where(rowid <= cuts[0])]
                parts += [select.where(rowid > a, rowid <= b) for a, b in itertools.pairwise(cuts)]
                parts.append(select.where(rowid > cuts[-1]))
                return [self._sqlite_sql(part) for part in parts]
        return [self._sqlite_sql(select)]

    def _rowid_bounds(self, relation: str, alias: str) -> tuple[int, int] | None:
        """(min, max) rowid of a rowid table with rows; None for a view, a WITHOUT ROWID table, no rows."""
        quoted = self.engine.dialect.identifier_preparer.quote(relation)
        with database_errors(self.describe(), f"read {relation}"), self.engine.connect() as conn:
            kind = conn.execute(sa.text("SELECT type FROM sqlite_master WHERE name = :name"), {"name": relation})
            if kind.scalar() != "table":
                return None
            try:
                # two subqueries: SQLite answers a lone min() / max() of the rowid from the b-tree's ends,
                # but `SELECT min(rowid), max(rowid)` scans the whole table
                low, high = conn.execute(
                    sa.text(f"SELECT (SELECT min({alias}) FROM {quoted}), (SELECT max({alias}) FROM {quoted})")
                ).one()
            except sa.exc.OperationalError:  # no such column: a WITHOUT ROWID table
                return None
        if not isinstance(low, int) or not isinstance(high, int):
            return None
        return low, high

    def _sqlite_sql(self, select: Any) -> str:
        return str(select.compile(dialect=self.engine.dialect, compile_kwargs={"literal_binds": True}))

    def _sqlite_reader(self) -> Reader:
        if self._reader is None:
            with self._lock:
                if self._reader is None:
                    self._reader = Reader(str(self.url.database))
        return self._reader

    # -- lookups --------------------------------------------------------------------------------

    def contact(self, contact_id: str) -> ContactRecord | None:
        lookup = self._lookup or self._build_lookup()
        key = lookup.key(contact_id)
        if key is None:
            return None
        with database_errors(self.describe(), "look the contact up"), self.engine.connect() as conn:
            row = conn.execute(lookup.by_id, {"contact_id": key}).first()
        if row is None:
            return None
        return _record(lookup, row._mapping)

    def snapshot(self, limit: int) -> dict[str, ContactRecord] | None:
        lookup = self._lookup or self._build_lookup()
        records: dict[str, ContactRecord] = {}
        with database_errors(self.describe(), "read the contacts"), self.engine.connect() as conn:
            rows = conn.execution_options(yield_per=5_000).execute(lookup.every.limit(limit + 1))
            for row in rows:
                try:
                    record = _record(lookup, row._mapping)
                except CrmRowError:  # a value no request could carry: `contact` reports it when asked
                    continue
                records[record.contact_id] = record
                if len(records) > limit:
                    return None
        return records

    def display(self, contact_id: str) -> dict[str, Any] | None:
        lookup = self._lookup or self._build_lookup()
        key = lookup.key(contact_id)
        if key is None:
            return None
        with database_errors(self.describe(), "look the contact up"), self.engine.connect() as conn:
            row = conn.execute(lookup.display, {"contact_id": key}).first()
        return None if row is None else dict(row._mapping)

    def search(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        lookup = self._lookup or self._build_lookup()
        rows: list[Any] = []
        with database_errors(self.describe(), "search contacts"), self.engine.connect() as conn:
            for terms in search_terms(query):  # the phrase, else every word in some field
                values: dict[str, Any] = {f"w{i}": f"%{_like_escaped(term)}%" for i, term in enumerate(terms)}
                rows = conn.execute(lookup.search_for(len(terms)), {**values, "limit": limit}).all()
                if rows:
                    break
        return [dict(row._mapping) for row in rows]

    def _build_lookup(self) -> _Lookup:
        tables = {}
        types: dict[str, Any] = {}
        for name in ("organizations", "contacts"):
            relation, columns = self._relation(name)
            types.update({f"{name}.{column}": kind for column, kind in columns.items()})
            wanted = {c.name for c in schema.TABLES_BY_NAME[name].columns} | {
                c.name for c in schema.DISPLAY_TABLES[name].columns
            }
            present = {schema.normalize_column_name(c): c for c in columns if schema.normalize_column_name(c) in wanted}
            schema.check_required_columns(present, schema.TABLES_BY_NAME[name], f"table {relation!r}")
            relation_table = sa.table(relation, *(sa.column(c) for c in present.values()), schema=self.schema)
            tables[name] = (relation_table, present)
        (orgs, org_cols), (contacts, contact_cols) = tables["organizations"], tables["contacts"]
        contract = {name: [c.name for c in schema.TABLES_BY_NAME[name].columns] for name in tables}
        org_fields = [c for c in contract["organizations"] if c in org_cols]
        contact_fields = [c for c in contract["contacts"] if c in contact_cols]
        join = contacts.outerjoin(orgs, orgs.c[org_cols["org_id"]] == contacts.c[contact_cols["org_id"]])
        key = contacts.c[contact_cols["contact_id"]]
        id_type = types.get(f"contacts.{contact_cols['contact_id']}")
        integer_ids = isinstance(id_type, sa.Integer)
        # SQLite keeps any value in a column declared INTEGER: text ids ('C-0001') among numbers
        loose_ids = integer_ids and self.dialect == "sqlite"
        uuid_ids = isinstance(id_type, sa.Uuid)
        every = sa.select(
            *(contacts.c[contact_cols[c]].label(f"c_{c}") for c in contact_fields),
            *(orgs.c[org_cols[c]].label(f"o_{c}") for c in org_fields),
        ).select_from(join)
        by_id = every.where(key == sa.bindparam("contact_id")).limit(1)
        if "org_id" not in org_fields:
            raise DataError("table organizations: missing required column 'org_id'")
        def text(table: Any, columns: dict[str, str], name: str) -> Any:
            return sa.cast(table.c[columns[name]], sa.Text) if name in columns else sa.null()

        shown = {
            "contact_id": text(contacts, contact_cols, "contact_id"),
            "org_id": text(contacts, contact_cols, "org_id"),
            "organization": text(orgs, org_cols, "name"),
            "contact": text(contacts, contact_cols, "full_name"),
            "position": text(contacts, contact_cols, "position"),
        }
        display = (
            sa.select(*(expr.label(name) for name, expr in shown.items()))
            .select_from(join)
            .where(key == sa.bindparam("contact_id"))
            .limit(1)
        )
        searchable = [sa.func.replace(sa.func.lower(expr), "ё", "е") for expr in shown.values()
                      if not isinstance(expr, sa.Null)]  # folded as `crm.source.fold` folds the words
        listed = (
            sa.select(*(expr.label(name) for name, expr in shown.items()))
            .select_from(join)
            .order_by(shown["contact_id"])
            .limit(sa.bindparam("limit"))
        )

        def search(n_words: int) -> Any:  # every word in some searchable field
            return listed.where(*(sa.or_(*(expr.like(sa.bindparam(f"w{i}"), escape="\\") for expr in searchable))
                                  for i in range(n_words)))

        self._lookup = _Lookup(
            by_id=by_id,
            every=every,
            search=search,
            display=display,
            contact_columns=contact_fields,
            org_columns=org_fields,
            integer_ids=integer_ids,
            uuid_ids=uuid_ids,
            loose_ids=loose_ids,
        )
        return self._lookup

    # -- needs_rec's own tables -----------------------------------------------------------------

    def own(self) -> OwnTables:
        """feedback and exposures, in this database (and schema)."""
        if self._own is None:
            engine = self.engine
            with self._lock:  # one OwnTables (one table creation) however many threads ask
                if self._own is None:
                    self._own = OwnTables(engine, schema_name=self.schema, describe=self.describe())
        return self._own

    def feedback_since(self, since: dt.datetime) -> list[dict[str, Any]]:
        return self.own().feedback_since(since)

    def latest_stages(self, contact_id: str) -> Latest | None:
        return merge(self._stages.get(contact_id), self.own().latest_feedback_day(contact_id.strip()))

    def _latest_outcome_days(self) -> list[Any]:
        """(contact_id, occurred_on, stage) of every contact's latest outcome day: one window query.

        A per-contact query would scan the whole table in a CRM with no index on contact_id (≈ 25 ms
        on 100k rows in SQLite): this runs once per `crm.stages.REFRESH_S`, in the background.
        """
        relation, columns = self._relation("outcomes")
        names = {schema.normalize_column_name(c): c for c in columns}
        needed = ("contact_id", "occurred_on", "stage")
        missing = [n for n in needed if n not in names]
        if missing:
            raise DataError(f"table {relation!r}: missing required column(s) {', '.join(missing)}")
        table = sa.table(relation, *(sa.column(names[n]) for n in needed), schema=self.schema)
        contact, day, stage = (table.c[names[n]] for n in needed)
        ranked = sa.select(
            contact.label("contact_id"),
            day.label("occurred_on"),
            stage.label("stage"),
            sa.func.rank().over(partition_by=contact, order_by=day.desc()).label("position"),
        ).subquery()
        query = sa.select(ranked.c.contact_id, ranked.c.occurred_on, ranked.c.stage).where(ranked.c.position == 1)
        with database_errors(self.describe(), f"read the latest stages from {relation}"), self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> SqlSource:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def adbc_connect(url: URL) -> Any:
    """An ADBC DB-API connection (Arrow-native) to the PostgreSQL database of a SQLAlchemy URL.

    PostgreSQL only: SQLite goes through Python's own driver (see `SqlSource._sqlite_batches`).
    """
    import adbc_driver_postgresql.dbapi as pg_adbc

    return pg_adbc.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))


class _Lookup:
    """The prepared lookup and search statements (built once from the reflected columns)."""

    def __init__(
        self,
        *,
        by_id: Any,
        every: Any,
        search: Any,
        display: Any,
        contact_columns: list[str],
        org_columns: list[str],
        integer_ids: bool,
        uuid_ids: bool = False,
        loose_ids: bool = False,
    ):
        self.by_id, self.every, self.display = by_id, every, display
        self._search, self._searches = search, {}
        self.contact_columns, self.org_columns = contact_columns, org_columns
        self.integer_ids = integer_ids
        self.uuid_ids = uuid_ids
        self.loose_ids = loose_ids

    def search_for(self, n_words: int) -> Any:
        """The search statement for `n_words` words, built once per count (its compiled form is cached)."""
        found = self._searches.get(n_words)
        if found is None:
            found = self._searches[n_words] = self._search(n_words)
        return found

    def key(self, contact_id: str) -> Any:
        """`contact_id` as the contacts table compares it; None when no row can have it. An integer
        column is compared as an integer (so its index is used): text that is no 64-bit integer
        ('³', '--5', twenty digits) names no contact, rather than failing in int() or the database."""
        key = contact_id.strip()
        if self.uuid_ids:  # PostgreSQL refuses to compare a uuid with text that is none (a 503, not a 404)
            try:
                return str(uuid.UUID(key))
            except ValueError:
                return None
        if not self.integer_ids:
            return key
        number = schema.ascii_int(key, signed=True)
        if number is not None and -(2**63) <= number < 2**63:
            return number
        if self.loose_ids and not _number_like(key):  # SQLite: a text id in an INTEGER column
            return key  # (text SQLite would read as a number, '+3' or '3.0', would find contact 3)
        return None


_PG_DIALECT = postgresql.dialect()


def _as_read(column: Any, kind: Any) -> Any:
    """How a PostgreSQL column is SELECTed for the bulk read, so that it gives the text its CSV export
    (`\\copy`) would: a timestamp with time zone as its date in the database's time zone (Arrow would
    give it in UTC: 01:00 in Moscow became the day before, splitting one day's episode in two), and
    a uuid or JSON value as its text (Arrow's uuid is 16 raw bytes, which no text cast reads)."""
    if isinstance(kind, sa.DateTime) and getattr(kind, "timezone", False):
        return sa.cast(column, sa.Date).label(column.name)
    if isinstance(kind, sa.JSON):
        return _json_as_text(column, binary=kind.__class__.__name__ == "JSONB").label(column.name)
    if isinstance(kind, sa.Uuid):
        return sa.cast(column, sa.Text).label(column.name)
    return column


def _json_as_text(column: Any, *, binary: bool) -> Any:
    """A JSON array as its elements `;`-joined (the multi-valued columns: how psycopg's lookup reads it,
    as a list), any other JSON value as its text."""
    prefix = "jsonb" if binary else "json"
    name = sa.column(column.name).compile(dialect=_PG_DIALECT).string
    return sa.literal_column(
        f"CASE {prefix}_typeof({name}) WHEN 'array' THEN (SELECT string_agg(e, '{schema.MULTI_SEPARATOR}') FROM "
        f"{prefix}_array_elements_text({name}) AS t(e)) ELSE {name} #>> '{{}}' END"
    )


def _number_like(text: str) -> bool:
    """True for text SQLite compares as a number with an INTEGER column ('+3', '3.0', '1e3')."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _like_escaped(word: str) -> str:
    """`word` matched literally by LIKE … ESCAPE '\\' ('%' and '_' in a search are characters)."""
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _record(lookup: _Lookup, values: Mapping[str, Any]) -> ContactRecord:
    """The ContactRecord of one row of the contacts ⟕ organizations join (`_Lookup.every`)."""
    contact = {c: values[f"c_{c}"] for c in lookup.contact_columns}
    organization = None
    if values["o_org_id"] is not None:
        organization = {c: values[f"o_{c}"] for c in lookup.org_columns}
    return record_of(contact, organization)


def _check_utf8(column: pa.ChunkedArray, relation: str, name: str) -> None:
    """DataError naming the first row whose text is not UTF-8 (a legacy cp1251 CRM, a BLOB in a text
    column: SQLite stores whatever bytes it is given), instead of a string kernel's traceback later.
    Arrow's full validation checks UTF-8 at memory speed; the rows are looked at only on failure."""
    try:
        column.validate(full=True)
    except pa.ArrowInvalid:
        for row, value in enumerate(column.cast(pa.binary()).to_pylist()):
            try:
                (value or b"").decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"table {relation!r} column {name!r}: not UTF-8 text (row {row + 1}); the CRM's "
                                "text must be UTF-8 (convert the column, e.g. from cp1251)") from None
        raise


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]

