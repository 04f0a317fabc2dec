"""A directory of CSV or Parquet files as a CRM source (contract §2), and the file readers themselves.

The only place that touches the firm's CRM files. Every table comes back with its contract
columns only (renamed to their contract names), every value as text (`str` dtype, "" when empty),
and `df.attrs["source"]` = the file name; personal-data and extra columns are never loaded, so
personal data goes no further than the file. Parsing, normalising and checking the values is
`needs_rec.schema`'s job.

CSV: UTF-8 (a BOM is tolerated), comma-separated, first row = header, quoted fields may span
lines. Parquet: any column types; a list column is accepted for multi-valued fields (joined with
`;`), numbers and dates are turned into the same text a CSV would hold.

`FileSource` is the `crm.CrmSource` of a directory: needs_rec's own tables (feedback, exposures)
live in a SQLite file `needs_rec.db` inside it (contract §5), never in the firm's files.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from crm.own import OwnTables, OwnTablesWriter
from crm.records import record_of
from crm.source import OWN_DATABASE, ContactRecord, search_terms
from crm.stages import Latest, latest_days, merge
from needs_rec import schema
from needs_rec.errors import DataError

SUFFIXES: tuple[str, ...] = (".csv", ".parquet")


def read_crm(directory: str | Path) -> dict[str, pd.DataFrame]:
    """Read organizations, contacts and outcomes from `directory` (`<name>.csv` or `<name>.parquet`).

    Raises DataError for a missing directory, a table with neither file or with both.
    """
    directory = Path(directory)
    check_directory(directory)
    return {table.name: read_table(find_table_file(directory, table.name), table) for table in schema.TABLES}


def check_directory(directory: Path) -> None:
    """DataError unless `directory` is an existing directory (the CRM export's)."""
    if not directory.is_dir():
        raise DataError(f"CRM data directory {str(directory)!r} does not exist or is not a directory")


def find_table_file(directory: str | Path, name: str) -> Path:
    """The one `<name>.csv` / `<name>.parquet` file of `directory`."""
    directory = Path(directory)
    found = [directory / f"{name}{suffix}" for suffix in SUFFIXES if (directory / f"{name}{suffix}").is_file()]
    if not found:
        raise DataError(
            f"missing file {name}.csv (or {name}.parquet) in {str(directory)!r}: the {name} table is required"
        )
    if len(found) > 1:
        raise DataError(
            f"both {name}.csv and {name}.parquet are in {str(directory)!r}; keep exactly one file per table"
        )
    return found[0]


def read_table(path: str | Path, table: schema.Table | str, *, replace_bad_text: bool = False) -> pd.DataFrame:
    """Read one table (a contract table or `requests`) from a `.csv` or `.parquet` file.

    Keeps the table's contract columns only (header names matched after stripping spaces and
    lower-casing), checks that its required columns are there, and records the file name in
    `attrs["source"]` and the names of the dropped personal-data columns in
    `attrs["personal_columns_dropped"]`. A CSV byte that is not UTF-8 is a DataError, or, with
    `replace_bad_text` (the pages' names: one bad byte in one name must not hide every contact),
    U+FFFD.
    """
    path = Path(path)
    table = _table(table)
    if not path.is_file():
        raise DataError(f"missing file {path.name} ({str(path)!r}): the {table.name} table is required")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df, personal, extra = _read_csv(path, table, replace_bad_text=replace_bad_text)
    elif suffix in (".parquet", ".pq"):
        df, personal, extra = _read_parquet(path, table)
    else:
        raise DataError(f"{path.name}: unsupported file type {suffix or '(none)'!r}; allowed: .csv, .parquet")
    schema.check_required_columns(df.columns, table, path.name)
    df.attrs = {"source": path.name, "personal_columns_dropped": personal, "extra_columns_ignored": extra}
    return df


def read_requests(path: str | Path) -> pd.DataFrame:
    """Batch-scoring requests (contract §3): `contact_id*`, `stage*`, optional `request_id`, as text."""
    return read_table(path, schema.REQUESTS)


def _table(table: schema.Table | str) -> schema.Table:
    if isinstance(table, schema.Table):
        return table
    if table not in schema.TABLES_BY_NAME:
        raise ValueError(f"unknown table {table!r}")
    return schema.TABLES_BY_NAME[table]


# --- CSV -------------------------------------------------------------------------------------


def _read_csv(
    path: Path, table: schema.Table, *, replace_bad_text: bool = False
) -> tuple[pd.DataFrame, list[str], list[str]]:
    header = _csv_header(path)
    mapping, personal, extra = schema.contract_columns(header, table, path.name)
    wanted = list(mapping)
    if not wanted:
        _refuse_foreign_header(path, header, table)
        return pd.DataFrame({}), personal, extra
    options = {
        "parse_options": pacsv.ParseOptions(newlines_in_values=True),
        "convert_options": pacsv.ConvertOptions(
            include_columns=wanted,
            column_types=dict.fromkeys(wanted, pa.binary() if replace_bad_text else pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    }
    try:
        arrow = pacsv.read_csv(path, **options)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        trimmed = _without_blank_tail(path)  # the rare failure path only: the usual read never copies the file
        if trimmed is None:
            raise DataError(_csv_problem(path, len(header), exc)) from None
        try:
            arrow = pacsv.read_csv(pa.BufferReader(trimmed), **options)
        except (pa.ArrowInvalid, UnicodeDecodeError) as again:
            raise DataError(_csv_problem(path, len(header), again, trimmed)) from None
    df = arrow.combine_chunks().to_pandas()  # one chunk per column: later string kernels run faster
    df.columns = [mapping[c] for c in df.columns]
    if replace_bad_text:
        for column in df.columns:
            df[column] = [value.decode("utf-8", errors="replace") for value in df[column]]
    return df.astype("str"), personal, extra


_SEPARATORS = {";": "semicolon", "\t": "tab", "|": "vertical bar"}
_SHOWN_HEADER = 8  # header names a foreign-header error shows


_NAME_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")  # what a column name looks like (ASCII identifier)


def _looks_like_a_name(cell: str) -> bool:
    """A header cell shown in a message: an identifier, or `;`/tab/`|`-joined identifiers (a file
    read with the wrong separator). Anything else may be a value of a data row — a person's name,
    an email, a phone of a file exported without its header — and is never echoed."""
    parts = re.split(r"[;\t|]", cell.replace("\ufeff", "").strip())
    return all(_NAME_LIKE.fullmatch(part.strip()) for part in parts)


def _refuse_foreign_header(path: Path, header: Sequence[str], table: schema.Table) -> None:
    """A header with none of the table's columns: name what it holds, and the separator it seems to
    use (Excel's CSV export in a Russian locale separates with ';'), instead of 'found: no columns'.
    Only cells that look like column names are quoted (`_looks_like_a_name`)."""
    names = [cell for cell in header if _looks_like_a_name(cell)]
    found = ", ".join(repr(name[:40]) for name in names[:_SHOWN_HEADER])
    found += " …" if len(names) > _SHOWN_HEADER else ""
    hidden = len(header) - len(names)
    if hidden:
        found = (f"{found} and " if found else "") + (
            f"{hidden} cell(s) that are not column names, not shown: the first row looks like data, not a header")
    hint = ""
    if len(header) == 1:
        for mark, name in _SEPARATORS.items():
            if mark in header[0]:
                hint = f"; the file looks {name}-separated: save it as comma-separated CSV (UTF-8)"
                break
    raise DataError(f"{path.name}: none of the {table.name} columns in its header (found {found}); required: "
                    f"{', '.join(table.required)}{hint}")


def _csv_header(path: Path) -> list[str]:
    with path.open("rb") as handle:
        start = handle.read(1 << 16)
    body = start.removeprefix(codecs.BOM_UTF8)  # the error's offset then counts from the first byte decoded
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:  # a bad byte, or a character cut at the buffer's end
        text = body[: exc.start].decode("utf-8")
        if "\n" not in text and len(start) < 1 << 16:
            raise DataError(f"{path.name}: not UTF-8 text (bad byte on line 1); save it as UTF-8") from None
    try:  # newline="": the csv module's own line handling, so old Mac CR-only endings are lines too
        row = next(csv.reader(io.StringIO(text, newline="")), None)
    except csv.Error as exc:
        raise DataError(f"{path.name}: not a readable CSV header ({exc})") from None
    if not row or not any(cell.strip() for cell in row):
        raise DataError(f"{path.name}: empty file, no header row; the first row must name the columns")
    return row


def _without_blank_tail(path: Path) -> bytes | None:
    """The file's bytes without the lines at its end that hold only spaces or tabs (an editor's or a
    spreadsheet's leftover, which Arrow reads as a row of one field), or None when it has none.
    Arrow already skips truly empty lines; the last line with content is kept whole, its own
    trailing spaces included."""
    data = path.read_bytes()
    content_end = len(data.rstrip(b" \t\r\n\f\v"))
    breaks = [at for at in (data.find(b"\n", content_end), data.find(b"\r", content_end)) if at != -1]
    if not breaks:
        return None
    cut = min(breaks) + 1
    if data[cut - 1 : cut + 1] == b"\r\n":
        cut += 1
    return data[:cut] if cut < len(data) and data[cut:].strip(b"\r\n") else None


def _csv_problem(path: Path, n_columns: int, exc: BaseException, data: bytes | None = None) -> str:
    """Describe a CSV that cannot be parsed (its `data`, else the file's), by row number, without
    echoing any row's content."""
    data = (path.read_bytes() if data is None else data).removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as bad:
        line = data[: bad.start].count(b"\n") + 1
        return f"{path.name}: not UTF-8 text (bad byte on line {line}); save it as UTF-8"
    wrong = []
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        for number, row in enumerate(rows):
            if number and row and len(row) != n_columns:
                wrong.append(f"row {number} has {len(row)}")
                if len(wrong) == schema.SHOW:
                    break
    except csv.Error:  # e.g. a lone CR inside an unquoted value: say where, never what
        return (f"{path.name}: row {rows.line_num} is not valid CSV (a line break inside an unquoted value?); "
                "quote values that contain line breaks")
    if wrong:
        return (
            f"{path.name}: rows with a wrong number of fields ({'; '.join(wrong)}, the header has {n_columns}); "
            "quote values that contain commas"
        )
    reason = re.sub(r":.*", "", str(exc).splitlines()[0])  # Arrow appends the offending row: never show it
    return f"{path.name}: not a readable CSV file ({reason})"


# --- Parquet ---------------------------------------------------------------------------------


def _read_parquet(path: Path, table: schema.Table) -> tuple[pd.DataFrame, list[str], list[str]]:
    try:
        names = pq.ParquetFile(path).schema_arrow.names
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path.name}: not a readable Parquet file ({type(exc).__name__})") from None
    mapping, personal, extra = schema.contract_columns(names, table, path.name)
    try:
        arrow = pq.read_table(path, columns=list(mapping)).combine_chunks()
    except (pa.ArrowException, OSError) as exc:  # the schema reads, a data page does not (a torn copy)
        raise DataError(f"{path.name}: not a readable Parquet file ({type(exc).__name__})") from None
    columns = {mapping[name]: _column_text(arrow.column(name), f"{path.name} column {name!r}") for name in mapping}
    df = pd.DataFrame({name: pd.Series(values.to_pandas(), dtype="str") for name, values in columns.items()})
    if not columns:
        df = pd.DataFrame(index=pd.RangeIndex(arrow.num_rows))
    return df.fillna(""), personal, extra


def _column_text(column: pa.ChunkedArray, where: str) -> pa.ChunkedArray:
    """`_as_text`, with a column Arrow cannot turn into text named instead of its traceback: a struct,
    map or nested list where the contract has one value (or a list of codes), or bytes that are not
    UTF-8 text."""
    kind = column.type
    try:
        text = _as_text(column)
        text.validate(full=True)  # UTF-8 of a string column (a binary one is checked by its cast)
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise DataError(f"{where}: type {kind} is not allowed; allowed: text, numbers, dates, booleans, "
                        "or a list of text") from exc
    except pa.ArrowInvalid as exc:
        if "utf8" in str(exc).lower() or "utf-8" in str(exc).lower():
            raise DataError(f"{where}: not UTF-8 text; the CRM's text must be UTF-8") from None
        raise DataError(f"{where}: type {kind} cannot be read as text ({str(exc).splitlines()[0][:80]})") from None
    return text


def _as_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A Parquet column as the text a CSV would hold: lists `;`-joined, nulls empty."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = pc.cast(column, kind.value_type)
        kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        as_strings = pc.cast(column, pa.list_(pa.string()))
        joined = pc.binary_join(as_strings, schema.MULTI_SEPARATOR)
        if joined.null_count > as_strings.null_count:  # a null inside a list: join the rest
            joined = pa.chunked_array(
                [
                    pa.array(
                        [
                            None if v is None else schema.MULTI_SEPARATOR.join(x for x in v if x is not None)
                            for v in as_strings.to_pylist()
                        ],
                        pa.string(),
                    )
                ]
            )
        column = joined
    elif not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        if pa.types.is_floating(kind):  # NaN is how many writers (pandas, Polars, Spark) store a missing number
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, kind), column)
        # numbers and dates: 120.0 → "120", a date → "2024-03-15", a timestamp → "2024-03-15 00:00:00…"
        column = pc.cast(column, pa.string())
    return pc.fill_null(column, "")


# --- the source ------------------------------------------------------------------------------


class FileSource(OwnTablesWriter):
    """`crm.CrmSource` over a directory of CSV/Parquet files (contract §2), own tables in `needs_rec.db`.

    Contact lookups read organizations and contacts once and index them by id; the index is
    rebuilt when either file changes (checked at most every `refresh_s` seconds), so a lookup is
    never older than the files were `refresh_s` ago.
    """

    def __init__(self, directory: Path, *, refresh_s: float = 1.0):
        self.directory = Path(directory)
        self.refresh_s = refresh_s
        self._own: OwnTables | None = None
        self._lock = threading.Lock()
        self._index: _ContactIndex | None = None
        self._latest: tuple[int, dict[str, Latest]] | None = None
        self._display: tuple[tuple[int, ...], pd.DataFrame, list[pd.Series]] | None = None
        self._checked = 0.0

    def describe(self) -> str:
        return str(self.directory)

    def check_tables(self) -> None:
        check_directory(self.directory)
        for table in schema.TABLES:
            path = find_table_file(self.directory, table.name)
            if path.suffix == ".parquet":
                try:
                    names = pq.ParquetFile(path).schema_arrow.names
                except (pa.ArrowException, OSError) as exc:
                    raise DataError(f"{path.name}: not a readable Parquet file ({type(exc).__name__})") from None
            else:
                names = _csv_header(path)
            mapping, _, _ = schema.contract_columns(names, table, path.name)
            schema.check_required_columns(mapping.values(), table, path.name)

    def read_table(self, name: str) -> pd.DataFrame:
        if name == schema.FEEDBACK.name:
            own_file = self.directory / OWN_DATABASE
            feedback = self.own().read_feedback() if own_file.is_file() else None  # never create it to look
            if feedback is None:
                raise DataError(f"no feedback table yet in {str(own_file)!r}")
            return feedback
        self.check_exists()
        return read_table(find_table_file(self.directory, name), name)

    def read_crm(self) -> dict[str, pd.DataFrame]:
        frames = read_crm(self.directory)
        if (self.directory / OWN_DATABASE).is_file():
            feedback = self.own().read_feedback()
            if feedback is not None:
                frames[schema.FEEDBACK.name] = feedback
        return frames

    def contact(self, contact_id: str) -> ContactRecord | None:
        return self._contacts().get(contact_id)

    def snapshot(self, limit: int) -> dict[str, ContactRecord] | None:
        return None  # lookups are in memory already (the files' index, rebuilt when a file changes)

    def search(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        rows, folded = self._display_and_folded()
        for terms in search_terms(query):  # the phrase, else every word in some field
            hit = pd.Series(True, index=rows.index)
            for term in terms:
                in_some = pd.Series(False, index=rows.index)
                for column in folded:
                    in_some |= column.str.contains(term, regex=False)
                hit &= in_some
            if hit.any():
                break
        found = rows.loc[hit].sort_values("contact_id", kind="stable").head(limit)  # as the SQL search orders
        return [_display_row(row) for row in found.to_dict("records")]

    def own(self) -> OwnTables:
        """needs_rec's own tables, in `needs_rec.db` inside the directory (created on first write)."""
        if self._own is None:
            self.check_exists()
            with self._lock:  # one OwnTables (one engine, one table creation) however many threads ask
                if self._own is None:
                    self._own = OwnTables.for_sqlite(self.directory / OWN_DATABASE, describe=self.describe())
        return self._own

    def feedback_since(self, since: dt.datetime) -> list[dict[str, Any]]:
        if not (self.directory / OWN_DATABASE).is_file():
            return []
        return self.own().feedback_since(since)

    def latest_stages(self, contact_id: str) -> Latest | None:
        """From the outcomes file (every contact's latest day, indexed once per file version) and the feedback table."""
        path = find_table_file(self.directory, "outcomes")
        stamp = path.stat().st_mtime_ns
        with self._lock:
            if self._latest is None or self._latest[0] != stamp:
                outcomes = read_table(path, "outcomes")
                rows = zip(outcomes["contact_id"], outcomes["occurred_on"], outcomes["stage"], strict=True)
                self._latest = (stamp, latest_days(rows))
            latest = self._latest[1].get(contact_id.strip())
        feedback = None
        if (self.directory / OWN_DATABASE).is_file():  # never create needs_rec.db just to look
            feedback = self.own().latest_feedback_day(contact_id.strip())
        return merge(latest, feedback)

    def feedback_on(self, contact_id: str, day: dt.date) -> list[dict[str, Any]]:
        if not (self.directory / OWN_DATABASE).is_file():  # never create needs_rec.db just to look
            return []
        return self.own().feedback_on(contact_id.strip(), day)

    def display(self, contact_id: str) -> dict[str, Any] | None:
        rows = self._display_rows()
        found = rows.loc[rows["contact_id"].str.strip() == contact_id.strip()].head(1)
        return _display_row(found.to_dict("records")[0]) if len(found) else None

    def _display_rows(self) -> pd.DataFrame:
        """contacts joined with their organizations, with the names; re-read only when a file changed."""
        return self._display_and_folded()[0]

    def _display_and_folded(self) -> tuple[pd.DataFrame, list[pd.Series]]:
        """`_display_rows` and its searchable columns folded as `crm.source.fold` folds a query: built
        together once per file version (not per search), and read together from one cached tuple."""
        self.check_exists()
        paths = [find_table_file(self.directory, name) for name in ("organizations", "contacts")]
        stamp = tuple(p.stat().st_mtime_ns for p in paths)
        cached = self._display
        if cached is not None and cached[0] == stamp:
            return cached[1], cached[2]
        tables = schema.DISPLAY_TABLES
        orgs = read_table(paths[0], tables["organizations"], replace_bad_text=True)
        contacts = read_table(paths[1], tables["contacts"], replace_bad_text=True)
        rows = contacts.merge(orgs, on="org_id", how="left", validate="many_to_one") if "name" in orgs else contacts
        folded = [rows[c].fillna("").str.lower().str.replace("ё", "е", regex=False)
                  for c in ("contact_id", "org_id", "position", "full_name", "name") if c in rows]
        self._display = (stamp, rows, folded)
        return rows, folded

    def close(self) -> None:
        if self._own is not None:
            self._own.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def check_exists(self) -> None:
        check_directory(self.directory)

    def _contacts(self) -> _ContactIndex:
        now = time.monotonic()
        index = self._index
        if index is not None and now - self._checked < self.refresh_s:
            return index
        with self._lock:
            self._checked = now
            paths = [find_table_file(self.directory, name) for name in ("organizations", "contacts")]
            stamp = tuple(p.stat().st_mtime_ns for p in paths)
            if self._index is None or self._index.stamp != stamp:
                orgs, contacts = read_table(paths[0], "organizations"), read_table(paths[1], "contacts")
                self._index = _ContactIndex(orgs, contacts, stamp)
            return self._index


class _ContactIndex:
    """contact_id → (contact row, organization row), from the files' text."""

    def __init__(self, orgs: pd.DataFrame, contacts: pd.DataFrame, stamp: tuple[int, ...]):
        self.stamp = stamp
        self._orgs = {row["org_id"].strip(): row for row in orgs.to_dict("records")}
        self._contacts = {row["contact_id"].strip(): row for row in contacts.to_dict("records")}

    def get(self, contact_id: str) -> ContactRecord | None:
        row = self._contacts.get(contact_id.strip())
        if row is None:
            return None
        return record_of(row, self._orgs.get(str(row.get("org_id", "")).strip()))


def _display_row(row: Mapping[str, Any]) -> dict[str, Any]:
    def text(name: str) -> str | None:
        value = row.get(name)
        return None if value is None or (isinstance(value, float) and value != value) or value == "" else str(value)

    return {
        "contact_id": text("contact_id"),
        "org_id": text("org_id"),
        "organization": text("name"),
        "contact": text("full_name"),
        "position": text("position"),
    }
