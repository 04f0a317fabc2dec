"""Writing a CRM's tables into a database (`python -m training.sample --output URL`, benchmarks, tests).

All tables go in one transaction (PostgreSQL: ADBC bulk ingest, which is COPY; SQLite: one
prepared insert over all rows through Python's driver), so the database holds all of them or none.
An existing table of the same name is never overwritten: that is a ConfigError naming it, before
anything is written. A `?schema=NAME` that
does not exist yet is created (PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from crm.source import describe_url, parse_url, redact
from crm.sql import adbc_connect
from needs_rec.errors import ConfigError, SourceUnavailable


def write_tables(location: str, frames: Mapping[str, pd.DataFrame], *, flag: str = "--output") -> str:
    """Create one table per frame (columns as in the frame, text or numbers as they are) and fill it.

    Returns the database's description (no password). Raises ConfigError when a table exists
    already, SourceUnavailable when the database cannot be reached.
    """
    url, schema_name = parse_url(location, flag)
    sqlite = url.drivername.startswith("sqlite")
    created_file = sqlite and not Path(str(url.database)).exists()
    if sqlite:
        Path(str(url.database)).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    described = describe_url(url, schema_name)
    try:
        with engine.begin() as conn:
            if schema_name:
                conn.execute(sa.schema.CreateSchema(schema_name, if_not_exists=True))
            existing = set(sa.inspect(conn).get_table_names(schema=schema_name))
            existing |= set(sa.inspect(conn).get_view_names(schema=schema_name))
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip()[:200]
        raise SourceUnavailable(f"{flag} {redact(location)!r}: cannot connect ({reason})") from None
    except sa.exc.DatabaseError as exc:  # SQLite: an existing file that is not a database
        reason = str(exc.orig).strip()[:200]
        raise ConfigError(f"{flag} {redact(location)!r}: cannot be written ({reason}); give a new file") from None
    finally:
        engine.dispose()
    clash = sorted(set(frames) & existing)
    if clash:
        raise ConfigError(
            f"{flag} {described}: table(s) {', '.join(clash)} already exist; nothing is overwritten — "
            "give a new database (or ?schema=)"
        )
    try:
        if sqlite:
            _write_sqlite(url, frames)
        else:
            with adbc_connect(url) as conn:
                with conn.cursor() as cursor:
                    for name, frame in frames.items():
                        table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
                        cursor.adbc_ingest(name, table, mode="create", db_schema_name=schema_name)
                conn.commit()
    except BaseException:
        if created_file:
            Path(str(url.database)).unlink(missing_ok=True)
        raise
    return described


def _write_sqlite(url: sa.engine.URL, frames: Mapping[str, pd.DataFrame]) -> None:
    engine = sa.create_engine(url)
    quote = engine.dialect.identifier_preparer.quote
    try:
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("BEGIN")
            for name, frame in frames.items():
                columns = ", ".join(f"{quote(str(c))} {_sqlite_type(frame[c])}" for c in frame.columns)
                cursor.execute(f"CREATE TABLE {quote(name)} ({columns})")
                marks = ", ".join("?" * len(frame.columns))
                rows = frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None)
                cursor.executemany(f"INSERT INTO {quote(name)} VALUES ({marks})", rows)
            raw.commit()
        finally:
            raw.close()
    finally:
        engine.dispose()


def _sqlite_type(column: pd.Series) -> str:
    """The SQLite column type of a frame column: INTEGER for integers (an integer id stays one, and
    is looked up as one), REAL for other numbers, TEXT for everything else."""
    if pd.api.types.is_integer_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
        return "INTEGER"
    return "REAL" if pd.api.types.is_numeric_dtype(column.dtype) else "TEXT"
