"""The CRM source seam: what every reader of the firm's CRM and writer of needs_rec's own tables gets.

`open_source(location)` takes what a user passes as `--data D` or `--crm D` (contract §5):

- a directory of CSV or Parquet files (`crm.files.FileSource`); needs_rec's own tables then live
  in a SQLite file `needs_rec.db` inside it;
- a SQLAlchemy database URL (`crm.sql.SqlSource`): `sqlite:///path/crm.db` or
  `postgresql+psycopg://user:password@host:5432/dbname[?schema=NAME]` (`postgresql://` and
  `postgres://` are read as psycopg 3). The tables — or views — `organizations`, `contacts`,
  `outcomes` hold the §2 columns; needs_rec's own `feedback` and `exposures` are created there on
  first use (never anything else is written).

Every source answers `CrmSource`. Errors: `DataError` for what the data or the location gets wrong
(a missing table, column or file; naming the table or file), `SourceUnavailable` for a database
that cannot be reached, read or written right now (the service answers 503; retrying may work).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from needs_rec.errors import ConfigError, DataError, SourceUnavailable

#: URL schemes accepted, and the SQLAlchemy driver each one means.
DRIVERS = {
    "sqlite": "sqlite+pysqlite",
    "sqlite+pysqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}
ALLOWED_URLS = "sqlite:///path/crm.db or postgresql+psycopg://user:password@host:5432/dbname[?schema=NAME]"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: needs_rec's own SQLite file inside a directory source (contract §5).
OWN_DATABASE = "needs_rec.db"


class FeedbackResult(StrEnum):
    """What adding one feedback event did (contract §6)."""

    STORED = "stored"  # a new row, committed
    DUPLICATE = "duplicate"  # this feedback_id is already stored with the same content: nothing written
    CONFLICT = "conflict"  # this feedback_id is already stored with different content: nothing written


@dataclass(frozen=True)
class FeedbackEvent:
    """One manager's report (the body of POST /v1/feedback, validated), as stored in `feedback`.

    `occurred_on` is ISO; `occurred_on_given` says whether the caller sent it (a retry that leaves
    it out on another day is the same event, so then it is not compared).
    """

    feedback_id: str
    contact_id: str
    stage: str
    characteristic: str
    outcome: str
    occurred_on: str
    request_id: str | None = None
    manager_id: str | None = None
    model_version: int | None = None
    occurred_on_given: bool = True

    def same_content(self, stored: Mapping[str, Any]) -> bool:
        """Whether `stored` (a row of `feedback`) is this event (model_version and received_at aside)."""
        names = ["contact_id", "stage", "characteristic", "outcome", "request_id", "manager_id"]
        if self.occurred_on_given:
            names.append("occurred_on")
        return all(_plain(stored.get(name)) == _plain(getattr(self, name)) for name in names)


#: At most this many words of a search are used (each must appear in some searchable field).
MAX_SEARCH_WORDS = 4


def fold(text: str) -> str:
    """Text as search compares it: lower case, 'ё' as 'е' (Russian writes them interchangeably)."""
    return text.lower().replace("ё", "е")


#: Punctuation a word may carry that the CRM's text need not: quotes of every kind, commas, periods,
#: brackets — stripped from a word's ends when its bare form is tried.
WORD_PUNCTUATION = "\"'«»„“”‘’‚`,.;:!?()[]{}"


def search_terms(query: str) -> list[list[str]]:
    """What a contact search looks for, in turn, until something is found: the folded query as one
    phrase (spaces collapsed), then, for several words, each of its distinct words (at most
    MAX_SEARCH_WORDS) anywhere, then those words bare (their quotes, commas and periods stripped,
    when that changes them): «Петров 3» is the phrase, «Тимур  Степанов» finds «Степанов Тимур»,
    «Киселева» finds «Киселёва», «ООО "Ромашка"» finds «ООО «Ромашка»», «Петров, И.» finds «Петров
    Иван». An empty query is one empty phrase (every contact)."""
    words = fold(query).split()
    distinct = list(dict.fromkeys(words))[:MAX_SEARCH_WORDS]
    steps = [[" ".join(words)], distinct] if len(distinct) > 1 else [[" ".join(words)]]
    bare = list(dict.fromkeys(b for w in words if (b := w.strip(WORD_PUNCTUATION))))[:MAX_SEARCH_WORDS]
    if bare and bare not in steps:
        steps.append(bare)
    return steps


def _plain(value: Any) -> str | None:
    if value is None:
        return None
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return text[:10] if re.match(r"^\d{4}-\d{2}-\d{2}", text) else text


class CrmSource(Protocol):
    """A CRM: the firm's three tables to read, contacts to look up, needs_rec's own tables to write."""

    def describe(self) -> str:
        """Where the data is, for messages and logs: a path, or the URL without its password."""
        ...

    def check_exists(self) -> None:
        """DataError when the CRM is plainly not there: a directory or SQLite file that does not
        exist. Every read checks it first; a database server is not contacted."""
        ...

    def check_tables(self) -> None:
        """DataError when a table of the contract (organizations, contacts, outcomes) or one of its
        required columns is missing, and when a `feedback` or `exposures` table there is not
        needs_rec's own (a firm's table of that name, lacking needs_rec's columns); reads names only,
        no rows. SourceUnavailable when the database cannot be reached now. For a service at start-up:
        a wrong database or export is one line then, not a ready service whose queries fail."""
        ...

    def read_table(self, name: str) -> pd.DataFrame:
        """One contract table (organizations, contacts, outcomes, or `feedback`): contract columns
        only, every value as text ("" when empty), personal-data columns never read; attrs hold
        `source` (the file or table, for messages), `personal_columns_dropped`, `extra_columns_ignored`."""
        ...

    def read_crm(self) -> dict[str, pd.DataFrame]:
        """organizations, contacts, outcomes — and `feedback` when needs_rec's own table exists."""
        ...

    def contact(self, contact_id: str) -> ContactRecord | None:
        """The §2 organization and contact fields of one contact (None: no such contact)."""
        ...

    def snapshot(self, limit: int) -> dict[str, ContactRecord] | None:
        """Every contact's record by contact_id, read in one pass (the service's contact cache is
        warmed and refreshed with it); None when there are more than `limit` contacts, or when the
        source's own lookups are in memory already (files). A row whose value cannot be read is
        left out, so one wrong row never costs every other contact its cached lookup: `contact`
        reports that row's error when it is asked for."""
        ...

    def search(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        """Contacts whose id, name, position, organization id or name hold `query` (`search_terms`: any
        case, ё as е; the phrase, else every word of it in any order),
        for the manager's page: contact_id, org_id, organization (its name), contact (the person's
        name), position. The CRM's own names: for pages behind access control, never logged."""
        ...

    def add_feedback(self, event: FeedbackEvent) -> FeedbackResult:
        """Store one feedback event, committed before returning; idempotent by feedback_id."""
        ...

    def stored_feedback(self, feedback_id: str) -> dict[str, Any] | None:
        """The feedback row stored under `feedback_id`, or None (a retry's check, writing nothing)."""
        ...

    def add_exposures(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Append exposure rows (§6 columns) in one transaction; returns how many were written."""
        ...

    def recent_feedback(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest feedback rows, newest first (received_at), as stored."""
        ...

    def feedback_since(self, since: dt.datetime) -> list[dict[str, Any]]:
        """Feedback rows received at or after `since` (UTC), oldest first (the analyst's page)."""
        ...

    def latest_stages(self, contact_id: str) -> tuple[str, tuple[str, ...]] | None:
        """The contact's latest day in outcomes or feedback and the stages recorded that day (None:
        neither has a row for it): where the manager's card opens (the page takes the stage
        furthest along the funnel). Outcome days come from an index kept in memory (`crm.stages`),
        so this is cheap enough for every page view."""
        ...

    def feedback_on(self, contact_id: str, day: dt.date) -> list[dict[str, Any]]:
        """The contact's feedback rows of `day` (stage, characteristic, outcome), oldest first: which
        talking points the manager's card shows as answered already (pages only)."""
        ...

    def display(self, contact_id: str) -> dict[str, Any] | None:
        """The search row of one contact (contact_id, org_id, organization, contact, position: the
        CRM's own names, for the pages only), or None."""
        ...

    def answer_of(self, request_id: str) -> tuple[int, str | None, str] | None:
        """The model version that answered `request_id`, the contact it was asked for (None: asked
        with the full fields) and its stage, from the exposures written so far; None when none was written."""
        ...

    def close(self) -> None:
        """Release connections (also at the end of a `with` block: sources are context managers)."""
        ...

    def __enter__(self) -> CrmSource: ...

    def __exit__(self, *exc: object) -> None: ...


@dataclass(frozen=True)
class ContactRecord:
    """One contact and its organization: the §2 fields as JSON values (numbers, ISO dates, codes,
    lists of codes; None when empty), exactly what a full-fields recommendation request carries."""

    contact_id: str
    org_id: str
    organization: dict[str, Any] | None  # None: the contact's org_id is not in organizations
    contact: dict[str, Any]


def is_url(location: str | Path) -> bool:
    """True for a database URL (`scheme://...`), False for a directory path."""
    return isinstance(location, str) and bool(_SCHEME.match(location))


def parse_url(text: str, flag: str = "--data") -> tuple[URL, str | None]:
    """A location string → (SQLAlchemy URL with the psycopg 3 / pysqlite driver, the `?schema=` name).

    ConfigError for a URL that does not parse or names another database.
    """
    try:
        url = make_url(text)
        url.port  # noqa: B018 — a port that is not a number ('host:notaport') raises here, not at connect
    except ArgumentError:
        raise ConfigError(f"{flag} {redact(text)!r}: not a database URL; allowed: {ALLOWED_URLS}") from None
    except ValueError as exc:  # SQLAlchemy parses the port with int(), an IPv6 host with ipaddress
        raise ConfigError(f"{flag} {redact(text)!r}: not a database URL ({_plain_reason(exc)}); allowed: "
                          f"{ALLOWED_URLS}") from None
    driver = DRIVERS.get(url.drivername)
    if driver is None:
        raise ConfigError(f"{flag} {redact(text)!r}: unsupported database {url.drivername!r}; allowed: {ALLOWED_URLS}")
    schema = url.query.get("schema")
    if isinstance(schema, tuple):
        schema = schema[-1]
    if schema is not None and not driver.startswith("postgresql"):
        raise ConfigError(f"{flag} {redact(text)!r}: ?schema= is for PostgreSQL; SQLite has one schema")
    url = url.set(drivername=driver).difference_update_query(["schema"])
    if driver.startswith("sqlite") and url.query:  # pysqlite would warn about them and ignore them
        raise ConfigError(f"{flag} {redact(text)!r}: unknown option(s) {', '.join(sorted(url.query))} for a SQLite "
                          "file; a SQLite URL takes none: give sqlite:///path/crm.db")
    if driver.startswith("sqlite") and (not url.database or url.database == ":memory:"):
        raise ConfigError(f"{flag} {redact(text)!r}: give the SQLite file, as in sqlite:///path/crm.db (an "
                          "in-memory database is gone when the command ends)")
    return url, schema or None


def _plain_reason(exc: ValueError) -> str:
    text = str(exc)
    return "the port must be a number" if "int()" in text else text[:100]


def describe_url(url: URL, schema: str | None = None) -> str:
    """A database URL for messages and logs: its password hidden, the scheme as users write it."""
    shown = url.set(drivername=url.drivername.split("+")[0]).render_as_string(hide_password=True)
    return shown + (f"?schema={schema}" if schema else "")


def redact(text: str) -> str:
    """A URL with its password replaced by ***, for messages."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", text)


def check_location(location: str | Path, *, flag: str = "--data") -> None:
    """Refuse, before anything is read, a location that cannot be a CRM: a URL that does not parse
    (ConfigError), a directory or SQLite file that does not exist (DataError naming `flag`).

    For a long-running process (the service), which would otherwise start and fail every CRM
    request. The source's own `check_exists` decides; a database server is not contacted: it may
    come up after the service does.
    """
    source = open_source(location, flag=flag)
    try:
        source.check_exists()
    except DataError as exc:
        raise DataError(f"{flag}: {exc}") from None
    finally:
        source.close()


def check_tables(location: str | Path, *, flag: str = "--data") -> None:
    """`CrmSource.check_tables` of the CRM at `location`, its DataError naming `flag`; a database that
    cannot be reached now is not an error here (SourceUnavailable passes: it may come up later),
    one that answers and refuses what the URL names is (`SourceUnavailable.lasting`)."""
    source = open_source(location, flag=flag)
    try:
        source.check_tables()
    except SourceUnavailable as exc:
        if exc.lasting:
            raise DataError(f"{flag}: {exc}") from None
    except DataError as exc:
        raise DataError(f"{flag}: {exc}") from None
    finally:
        source.close()


def open_source(location: str | Path, *, flag: str = "--data") -> CrmSource:
    """The CRM at `location`: a directory (CSV/Parquet) or a database URL (contract §5).

    Nothing is read yet: a missing directory, file or table is reported by the first read.
    """
    if is_url(location):
        from crm.sql import SqlSource

        url, schema = parse_url(str(location), flag)
        return SqlSource(url, schema=schema)
    from crm.files import FileSource

    return FileSource(Path(location))
