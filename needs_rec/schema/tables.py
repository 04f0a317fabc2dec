"""Per-table validation (contract §2): one raw table → its clean, normalised frame, errors and warnings.

Everything here looks at one table only, so the same rules apply wherever rows come from: a CSV or
Parquet file, a database table or view, or one feedback row posted to the service. Checks that
relate tables (a contact's organization, outcome rows for unknown contacts, episodes) are in
`needs_rec.schema.crossref`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from needs_rec.errors import DataError
from needs_rec.schema.columns import (
    EMPTY_IS_MEANINGFUL,
    MULTI_SEPARATOR,
    OUTCOME_VALUES,
    SHOW,
    Column,
    Kind,
    Table,
    isin,
    select_columns,
)
from needs_rec.schema.messages import (
    _bad_values,
    _examples_for,
    _id_label,
    _n_rows,
    _short,
    _shown,
    empty_required_message,
    raise_if,  # noqa: F401 — `tables.raise_if` stays importable
)
from needs_rec.schema.report import ValidationReport, ValidationWarning
from needs_rec.schema.rows import (
    ALLOWED_OUTCOME,
    EVENT_TABLES,
    NOT_IN_FUTURE,
    YEAR_MIN,
    allowed_date,
    allowed_event_date,
    latest_event_date,
    parse_date,
    text_values,
    year_max,
)

if TYPE_CHECKING:
    from needs_rec.dictionaries import Dictionaries

#: Tables of outcome rows: their unknown codes drop the row (crossref), so they get no unknown-code warning here.
OUTCOME_TABLES = EVENT_TABLES


def check_table(
    raw: pd.DataFrame,
    table: Table,
    dictionaries: Dictionaries,
    report: ValidationReport,
    errors: list[str],
    invalid: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """One raw table → its clean frame: contract columns, not empty, values parsed, key unique.

    Records the table's source and row count (and dropped personal or extra column names) in
    `report`; value problems are appended to `errors` (raise them with `raise_if`), tolerated ones
    become warnings. Raises DataError at once for a missing required column or an empty table.

    With `invalid` (lenient validation), `invalid[table.name]` becomes the mask of the rows that
    break a value rule or share their key with another such-valid row (the key is checked among
    the other rows only), so the caller can leave those rows out; `errors` still gets every message.
    """
    source = raw.attrs.get("source") or f"{table.name}.csv"
    raw = select_columns(raw, table, source)
    raw = _without_trailing_empty_rows(raw, source, report)
    if len(raw) == 0:
        raise DataError(f"{source}: empty table (a header but no data rows); at least one row is required")
    report.files[table.name] = source
    report.rows[table.name] = len(raw)
    for key in ("personal_columns_dropped", "extra_columns_ignored"):
        if raw.attrs.get(key):
            report.notes.setdefault(key, {})[source] = list(raw.attrs[key])
    if invalid is None:
        clean = clean_table(raw, table, dictionaries, report, errors)
        if table.key and not errors:
            check_unique(clean, table.key, source, errors)
        return clean
    bad = np.zeros(len(raw), dtype=bool)
    clean = clean_table(raw, table, dictionaries, report, errors, bad)
    if table.key:
        bad |= check_unique(clean, table.key, source, errors, among=~bad)
    invalid[table.name] = bad
    return clean


def _without_trailing_empty_rows(raw: pd.DataFrame, source: str, report: ValidationReport) -> pd.DataFrame:
    """`raw` without the rows at its end that hold no value at all (`,,,,` lines a spreadsheet leaves
    after the data), with one `empty_rows` warning. Only trailing ones: the other rows keep their
    numbers, and an empty row among the data stays an error naming it."""
    if raw.empty or raw.shape[1] == 0 or not _blank_rows(raw.iloc[-1:])[0]:
        return raw  # the usual case costs one row's look
    tail = min(len(raw), 256)
    blank = _blank_rows(raw.iloc[-tail:])
    while blank.all() and tail < len(raw):  # a long run of empty rows: look further back
        tail = min(len(raw), tail * 4)
        blank = _blank_rows(raw.iloc[-tail:])
    dropped = len(blank) - (int(np.flatnonzero(~blank)[-1]) + 1 if (~blank).any() else 0)
    keep = len(raw) - dropped
    report.warnings.append(ValidationWarning(
        "empty_rows", source, "", dropped, (f"row {keep + 1}",),
        f"{source}: {_n_rows(dropped)} with no value at all at the end (from row {keep + 1}), skipped",
    ))
    trimmed = raw.iloc[:keep]
    trimmed.attrs = raw.attrs
    return trimmed


def _blank_rows(frame: pd.DataFrame) -> np.ndarray:
    """Per row: True when no column holds anything but spaces (missing counts as empty)."""
    cells = frame.fillna("").astype("str")
    return np.logical_and.reduce([(cells[c].str.strip() == "").to_numpy() for c in cells.columns])


def check_unique(
    df: pd.DataFrame, key: str, source: str, errors: list[str], among: np.ndarray | None = None
) -> np.ndarray:
    """An error naming each duplicated `key` value and its rows (only rows of `among`, when given,
    count); returns the mask of the duplicated rows."""
    keys = df[key] if among is None else df[key].where(among)
    dup = keys.duplicated(keep=False).to_numpy()
    if among is not None:
        dup = dup & among
    if not dup.any():
        return dup
    groups = pd.Series(np.flatnonzero(dup) + 1).groupby(df[key].to_numpy()[dup], sort=False).agg(list)
    shown = [f"{k!r} (rows {', '.join(map(str, v[:SHOW]))})" for k, v in groups.iloc[:SHOW].items()]
    errors.append(f"{source} column {key!r}: duplicate {key} {_shown(shown, len(groups))}; each {key} must appear once")
    return dup


def clean_table(
    df: pd.DataFrame,
    table: Table,
    dictionaries: Dictionaries,
    report: ValidationReport,
    errors: list[str],
    bad: np.ndarray | None = None,
) -> pd.DataFrame:
    """`df`'s contract columns parsed and normalised; each broken value rule appends its message to
    `errors` and, with `bad` (one flag per row), flags its rows there."""
    bad = np.zeros(len(df), dtype=bool) if bad is None else bad
    source = report.files[table.name]
    n = len(df)
    ids = df[table.key] if table.key else None
    out: dict[str, pd.Series] = {}
    for col in table.columns:
        where = f"{source} column {col.name!r}"
        if col.name not in df.columns:
            if not col.required and col.name not in EMPTY_IS_MEANINGFUL:
                report.warnings.append(
                    ValidationWarning(
                        "absent_column",
                        source,
                        col.name,
                        n,
                        (),
                        f"{where}: column absent, all {n:,} values treated as missing",
                    )
                )
            out[col.name] = _missing_column(col, n)
            continue
        raw = df[col.name].reset_index(drop=True)
        if col.kind in (Kind.NUMBER, Kind.YEAR, Kind.INTEGER):
            values, empty, broken = _parse_numbers(raw, col, where, errors)
            bad |= broken
            if col.kind is Kind.YEAR:
                _implausible_years(values, empty | broken, col.name, where, source, table, ids, report)
        elif col.kind is Kind.DATE:
            values, empty, broken = _parse_dates(raw, where, errors, optional=not col.required)
            bad |= broken
            if table.name in EVENT_TABLES and col.name == "occurred_on":
                bad |= _future_dates(values, where, errors)
            elif col.name in NOT_IN_FUTURE:
                _implausible_dates(values, empty | broken, col.name, where, source, table, ids, report)
        elif col.kind is Kind.MULTI:
            assert col.vocabulary is not None
            values, unknown = _canonical_multi(raw, dictionaries.codes(col.vocabulary))
            empty = (values == "").to_numpy()
            if unknown:
                _warn_unknown(unknown, col, source, report)
        else:  # ID, CODE, OUTCOME
            values = text_values(col.kind, _text(raw)).astype("str")
            empty = (values == "").to_numpy()
        if col.required:
            if empty.any():
                errors.append(empty_required_message(where, col.name, np.flatnonzero(empty)))
                bad |= empty
        elif empty.any() and col.name not in EMPTY_IS_MEANINGFUL:
            rows = np.flatnonzero(empty)
            examples = _examples_for(rows, ids)
            report.warnings.append(
                ValidationWarning(
                    "missing_value",
                    source,
                    col.name,
                    len(rows),
                    examples,
                    f"{where}: {_n_rows(len(rows))} with no value, kept and encoded as missing "
                    f"({_id_label(table)} {', '.join(examples)}{' …' if len(rows) > SHOW else ''})",
                )
            )
        if col.kind is Kind.OUTCOME:
            wrong = ~isin(values, OUTCOME_VALUES) & ~empty
            if wrong.any():
                errors.append(_bad_values(where, values, wrong, ALLOWED_OUTCOME))
                bad |= wrong
        if col.kind is Kind.CODE and col.vocabulary and table.name not in OUTCOME_TABLES:
            unknown_rows = ~empty & ~isin(values, dictionaries.codes(col.vocabulary))
            if unknown_rows.any():
                counts = values[unknown_rows].value_counts()
                _warn_unknown({str(k): int(v) for k, v in counts.items()}, col, source, report, int(unknown_rows.sum()))
        out[col.name] = values
        if col.name == "client_since":
            report.notes["prospects_without_client_since"] = int(empty.sum())
        elif col.kind is Kind.MULTI:
            report.notes[f"{table.name}_without_{col.name}"] = int(empty.sum())
    return pd.DataFrame(out)


def _missing_column(col: Column, n: int) -> pd.Series:
    if col.kind in (Kind.NUMBER, Kind.YEAR, Kind.INTEGER):
        return pd.Series(np.full(n, np.nan), dtype="float64")
    if col.kind is Kind.DATE:
        return pd.Series(np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]"))
    return pd.Series([""] * n, dtype="str")


def _text(s: pd.Series) -> pd.Series:
    """Values as `str` dtype with "" for missing; lists become `;`-joined text."""
    if isinstance(s.dtype, pd.StringDtype):
        return s.fillna("").astype("str")
    if s.dtype == object:
        return s.map(_scalar_text).astype("str")
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    texts = np.array([_scalar_text(v) for v in uniques] + [""], dtype=object)
    return pd.Series(texts[codes], index=s.index, dtype="str")


def _scalar_text(value: Any) -> str:
    if value is None or value is pd.NaT:
        return ""
    if isinstance(value, list | tuple | np.ndarray):
        return MULTI_SEPARATOR.join(_scalar_text(v) for v in value)
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return ""
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d") if value == value.normalize() else value.isoformat()
    return str(value)


def _parse_numbers(
    raw: pd.Series, col: Column, where: str, errors: list[str]
) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """(values, empty, rows breaking a rule): parsed floats, NaN when empty."""
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        values = raw.astype("float64").reset_index(drop=True)
        empty = values.isna().to_numpy()
        text = None
    else:
        text = _text(raw).str.strip()
        codes, uniques = pd.factorize(text)
        parsed = pd.to_numeric(pd.Series(uniques, dtype="str"), errors="coerce").to_numpy(dtype="float64")
        values = pd.Series(parsed[codes], dtype="float64")
        empty = (text == "").to_numpy()
    vals = values.to_numpy()
    bad = ~empty & ~np.isfinite(vals)
    if bad.any():
        shown = text if text is not None else values
        allowed = ("a whole year such as 2004" if col.kind is Kind.YEAR
                   else "a number such as 120 or 3.5 (decimal point)")
        errors.append(_bad_values(where, shown, bad, f"allowed: {allowed}, or empty"))
        return values, empty, bad
    if col.kind is Kind.NUMBER:
        bad = ~empty & (vals < 0)
        if bad.any():
            allowed = "allowed: a number ≥ 0 (counts and amounts cannot be negative)"
            errors.append(_bad_values(where, values, bad, allowed))
    else:
        bad = ~empty & (vals != np.floor(vals))
        if bad.any():
            allowed = "a whole year such as 2004" if col.kind is Kind.YEAR else "a whole number such as 3"
            errors.append(_bad_values(where, values, bad, f"allowed: {allowed}"))
    return values, empty, bad


def _implausible_years(
    values: pd.Series, skip: np.ndarray, column: str, where: str, source: str, table: Table,
    ids: pd.Series | None, report: ValidationReport,
) -> None:
    """Years outside YEAR_MIN..next year become missing (NaN, in `values`) with their own warning (not
    counted as "no value"): the request parser does the same, so training and serving see such a
    typo alike. `skip`: rows already empty or refused."""
    vals = values.to_numpy()
    odd = ~skip & ((vals < YEAR_MIN) | (vals > year_max()))
    if odd.any():
        rows = np.flatnonzero(odd)
        examples = _examples_for(rows, ids)
        shown = ", ".join(f"{vals[r]:g}" for r in rows[:SHOW])
        report.warnings.append(ValidationWarning(
            "implausible_value", source, column, len(rows), examples,
            f"{where}: {_n_rows(len(rows))} with a year outside {YEAR_MIN}–{year_max()} ({shown}"
            f"{' …' if len(rows) > SHOW else ''}; {_id_label(table)} {', '.join(examples)}), treated as missing",
        ))
        values.iloc[rows] = np.nan


def _implausible_dates(
    values: pd.Series, skip: np.ndarray, column: str, where: str, source: str, table: Table,
    ids: pd.Series | None, report: ValidationReport,
) -> None:
    """Dates after today (`latest_event_date`) in a `NOT_IN_FUTURE` column become missing (NaT, in
    `values`) with an `implausible_value` warning, as `_implausible_years` treats a `founded_year`:
    2099-01-01 for 2019-01-01 would otherwise make a client of many years a client of none (tenure
    0). `skip`: rows already empty or refused."""
    latest = latest_event_date()
    odd = ~skip & (values > pd.Timestamp(latest)).to_numpy()
    if odd.any():
        rows = np.flatnonzero(odd)
        examples = _examples_for(rows, ids)
        shown = ", ".join(values.iloc[rows[:SHOW]].dt.strftime("%Y-%m-%d"))
        report.warnings.append(ValidationWarning(
            "implausible_value", source, column, len(rows), examples,
            f"{where}: {_n_rows(len(rows))} with a date after today {latest.isoformat()} ({shown}"
            f"{' …' if len(rows) > SHOW else ''}; {_id_label(table)} {', '.join(examples)}), treated as missing",
        ))
        values.iloc[rows] = pd.NaT


def _parse_dates(
    raw: pd.Series, where: str, errors: list[str], optional: bool
) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """(values, empty, rows breaking the date rule): midnight timestamps, NaT when empty."""
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        values = raw.reset_index(drop=True)
        if getattr(values.dt, "tz", None) is not None:
            values = values.dt.tz_localize(None)
        values = values.dt.normalize().astype("datetime64[ns]")
        empty = values.isna().to_numpy()
        return values, empty, np.zeros(len(values), dtype=bool)
    text = text_values(Kind.ID, _text(raw))  # stripped, as one row's date is (rows.check_row)
    codes, uniques = pd.factorize(text)
    # The row rule (`rows.parse_date`) on each distinct text: a date column has few of them.
    days = [parse_date(value) for value in uniques]
    parsed = np.array([np.datetime64(d, "ns") if d is not None else np.datetime64("NaT", "ns") for d in days]
                      + [np.datetime64("NaT", "ns")], dtype="datetime64[ns]")
    values = pd.Series(parsed[codes], dtype="datetime64[ns]")
    empty = (text == "").to_numpy()
    bad = ~empty & values.isna().to_numpy()
    if bad.any():
        errors.append(_bad_values(where, text, bad, allowed_date(optional)))
    return values, empty, bad


def _future_dates(values: pd.Series, where: str, errors: list[str]) -> np.ndarray:
    """Rows of an event table dated after `latest_event_date` (`rows.check_row`'s rule, for a table)."""
    latest = latest_event_date()
    future = (values > pd.Timestamp(latest)).to_numpy()
    if future.any():
        errors.append(_bad_values(where, values.dt.strftime("%Y-%m-%d"), future, allowed_event_date(latest)))
    return future


def _canonical_multi(raw: pd.Series, known: Sequence[str]) -> tuple[pd.Series, dict[str, int]]:
    """`;`-separated codes → distinct normalised codes, sorted, `;`-joined ("" for none).

    Also returns {unknown code: number of rows holding it}. Works on the distinct raw strings only.
    """
    text = _text(raw)
    codes, uniques = pd.factorize(text)
    rows_per_unique = np.bincount(codes[codes >= 0], minlength=len(uniques))
    known_set = set(known)
    canon: list[str] = []
    unknown: dict[str, int] = {}
    for value, rows in zip(uniques, rows_per_unique, strict=True):
        parts = sorted({p.strip().lower() for p in value.split(MULTI_SEPARATOR)} - {""})
        canon.append(MULTI_SEPARATOR.join(parts))
        for part in parts:
            if part not in known_set:
                unknown[part] = unknown.get(part, 0) + int(rows)
    table = np.array([*canon, ""], dtype=object)
    return pd.Series(table[codes], dtype="str"), unknown


def _warn_unknown(
    counts: Mapping[str, int], col: Column, source: str, report: ValidationReport, rows: int | None = None
) -> None:
    """A warning for codes not in `col`'s dictionary; `counts`: code → rows holding it."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    rows = rows if rows is not None else sum(counts.values())  # multi: a row may hold two unknown codes
    examples = tuple(code for code, _ in ordered[:SHOW])
    shown = ", ".join(f"{_short(code)!r} ({_n_rows(n)})" for code, n in ordered[:SHOW])
    more = f" and {len(ordered) - SHOW} more codes" if len(ordered) > SHOW else ""
    report.warnings.append(
        ValidationWarning(
            "unknown_code",
            source,
            col.name,
            rows,
            examples,
            f"{source} column {col.name!r}: {_n_rows(rows)} with a code not in {col.vocabulary}.yaml, "
            f"kept and encoded as unknown: {shown}{more}",
        )
    )

