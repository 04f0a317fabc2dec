"""Reading CRM tables (contract §2) from CSV or Parquet files into DataFrames.

The only place on the training side that touches CRM files. Every table comes back with its
contract columns only (renamed to their contract names), every value as text (`str` dtype, ""
when empty), and `df.attrs["source"]` = the file name; personal-data and extra columns are never
loaded, so personal data goes no further than the file. Parsing, normalising and checking the
values is `needs_rec.schema.validate`'s job.

CSV: UTF-8 (a BOM is tolerated), comma-separated, first row = header, quoted fields may span
lines. Parquet: any column types; a list column is accepted for multi-valued fields (joined with
`;`), numbers and dates are turned into the same text a CSV would hold.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from needs_rec import schema
from needs_rec.errors import DataError

SUFFIXES: tuple[str, ...] = (".csv", ".parquet")


def read_crm(directory: str | Path) -> dict[str, pd.DataFrame]:
    """Read organizations, contacts and outcomes from `directory` (`<name>.csv` or `<name>.parquet`).

    Raises DataError for a missing directory, a table with neither file or with both.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"CRM data directory {str(directory)!r} does not exist or is not a directory")
    return {table.name: read_table(find_table_file(directory, table.name), table) for table in schema.TABLES}


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


def read_table(path: str | Path, table: schema.Table | str) -> pd.DataFrame:
    """Read one table (a contract table or `requests`) from a `.csv` or `.parquet` file.

    Keeps the table's contract columns only (header names matched after stripping spaces and
    lower-casing), checks that its required columns are there, and records the file name in
    `attrs["source"]` and the names of the dropped personal-data columns in
    `attrs["personal_columns_dropped"]`.
    """
    path = Path(path)
    table = _table(table)
    if not path.is_file():
        raise DataError(f"missing file {path.name} ({str(path)!r}): the {table.name} table is required")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df, personal, extra = _read_csv(path, table)
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
    for candidate in (*schema.TABLES, schema.REQUESTS):
        if candidate.name == table:
            return candidate
    raise ValueError(f"unknown table {table!r}")


# --- CSV -------------------------------------------------------------------------------------


def _read_csv(path: Path, table: schema.Table) -> tuple[pd.DataFrame, list[str], list[str]]:
    header = _csv_header(path)
    mapping, personal, extra = schema.contract_columns(header, table, path.name)
    wanted = list(mapping)
    if not wanted:
        return pd.DataFrame({}), personal, extra
    try:
        arrow = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                include_columns=wanted,
                column_types=dict.fromkeys(wanted, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise DataError(_csv_problem(path, len(header), exc)) from None
    df = arrow.combine_chunks().to_pandas()  # one chunk per column: later string kernels run faster
    df.columns = [mapping[c] for c in df.columns]
    return df.astype("str"), personal, extra


def _csv_header(path: Path) -> list[str]:
    with path.open("rb") as handle:
        start = handle.read(1 << 16)
    try:
        text = start.decode("utf-8-sig")
    except UnicodeDecodeError as exc:  # a bad byte, or a character cut at the buffer's end
        text = start[: exc.start].decode("utf-8-sig")
        if "\n" not in text and len(start) < 1 << 16:
            raise DataError(f"{path.name}: not UTF-8 text (bad byte on line 1); save it as UTF-8") from None
    row = next(csv.reader(io.StringIO(text)), None)
    if not row or not any(cell.strip() for cell in row):
        raise DataError(f"{path.name}: empty file, no header row; the first row must name the columns")
    return row


def _csv_problem(path: Path, n_columns: int, exc: BaseException) -> str:
    """Describe a CSV that cannot be parsed, by row number, without echoing any row's content."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as bad:
        line = data[: bad.start].count(b"\n") + 1
        return f"{path.name}: not UTF-8 text (bad byte on line {line}); save it as UTF-8"
    wrong = []
    for number, row in enumerate(csv.reader(io.StringIO(text))):
        if number and row and len(row) != n_columns:
            wrong.append(f"row {number} has {len(row)}")
            if len(wrong) == schema.SHOW:
                break
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
    arrow = pq.read_table(path, columns=list(mapping)).combine_chunks()
    columns = {mapping[name]: _as_text(arrow.column(name)) for name in mapping}
    df = pd.DataFrame({name: pd.Series(values.to_pandas(), dtype="str") for name, values in columns.items()})
    if not columns:
        df = pd.DataFrame(index=pd.RangeIndex(arrow.num_rows))
    return df.fillna(""), personal, extra


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
        # numbers and dates: 120.0 → "120", a date → "2024-03-15", a timestamp → "2024-03-15 00:00:00…"
        column = pc.cast(column, pa.string())
    return pc.fill_null(column, "")
