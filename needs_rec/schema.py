"""Column names and kinds of the CRM tables (contract §2) and of the model's raw inputs.

Only this module knows column names. Validation of loaded tables against the contract and the
dictionaries lives here too (`validate`), so nothing downstream re-checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from needs_rec.errors import DataError, preview

if TYPE_CHECKING:
    from needs_rec.dictionaries import Dictionaries


class Kind(StrEnum):
    """How a column's values are parsed and encoded."""

    ID = "id"  # identifier, kept as text, never a model input
    CODE = "code"  # one dictionary code
    MULTI = "multi"  # several dictionary codes, `;`-separated in CSV
    NUMBER = "number"  # non-negative number
    YEAR = "year"  # a calendar year (number)
    DATE = "date"  # ISO date
    OUTCOME = "outcome"  # `positive` / `negative`


@dataclass(frozen=True)
class Column:
    """One contract column: its name, kind, whether required, and its dictionary if a code."""

    name: str
    kind: Kind
    required: bool = False
    vocabulary: str | None = None  # attribute of needs_rec.dictionaries.Dictionaries


@dataclass(frozen=True)
class Table:
    """One CRM table: file base name and its contract columns."""

    name: str
    columns: tuple[Column, ...]
    key: str | None = None

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


ORGANIZATIONS = Table(
    "organizations",
    (
        Column("org_id", Kind.ID, required=True),
        Column("industry", Kind.CODE, required=True, vocabulary="industries"),
        Column("region", Kind.CODE, vocabulary="regions"),
        Column("employees", Kind.NUMBER),
        Column("revenue_mln", Kind.NUMBER),
        Column("legal_form", Kind.CODE, vocabulary="legal_forms"),
        Column("founded_year", Kind.YEAR),
        Column("client_since", Kind.DATE),
        Column("products_owned", Kind.MULTI, vocabulary="products"),
    ),
    key="org_id",
)

CONTACTS = Table(
    "contacts",
    (
        Column("contact_id", Kind.ID, required=True),
        Column("org_id", Kind.ID, required=True),
        Column("position", Kind.CODE, required=True, vocabulary="positions"),
        Column("department", Kind.CODE, vocabulary="departments"),
        Column("decision_role", Kind.CODE, vocabulary="decision_roles"),
        Column("interests", Kind.MULTI, vocabulary="needs"),
    ),
    key="contact_id",
)

OUTCOMES = Table(
    "outcomes",
    (
        Column("contact_id", Kind.ID, required=True),
        Column("occurred_on", Kind.DATE, required=True),
        Column("stage", Kind.CODE, required=True, vocabulary="funnel_stages"),
        Column("characteristic", Kind.CODE, required=True, vocabulary="characteristics"),
        Column("outcome", Kind.OUTCOME, required=True),
    ),
)

TABLES: tuple[Table, ...] = (ORGANIZATIONS, CONTACTS, OUTCOMES)

#: Requests for batch scoring (contract §3).
REQUESTS = Table(
    "requests",
    (
        Column("contact_id", Kind.ID, required=True),
        Column("stage", Kind.CODE, required=True, vocabulary="funnel_stages"),
        Column("request_id", Kind.ID),
    ),
)

POSITIVE, NEGATIVE = "positive", "negative"
OUTCOME_VALUES = (POSITIVE, NEGATIVE)
MULTI_SEPARATOR = ";"

#: Columns that may carry personal data. They are dropped on read and never reach a model input,
#: an artifact, a report or a log line. Matched case-insensitively.
PERSONAL_COLUMNS = frozenset(
    {
        "full_name",
        "first_name",
        "last_name",
        "middle_name",
        "patronymic",
        "name",
        "email",
        "phone",
        "mobile",
        "inn",
        "snils",
        "passport",
        "address",
        "birth_date",
    }
)

#: The raw fields the model takes, in this order: the stage, the organization's and the contact's
#: contract fields (identifiers and personal data excluded) and the episode date. The exported
#: SavedModel takes exactly these as a dict of 1-D tensors (strings for codes, `;`-joined codes
#: and ISO dates; float32 with NaN for missing numbers).
STAGE = "stage"
OCCURRED_ON = "occurred_on"
MODEL_INPUTS: tuple[Column, ...] = (
    OUTCOMES.column("stage"),
    *(c for c in ORGANIZATIONS.columns if c.kind is not Kind.ID),
    *(c for c in CONTACTS.columns if c.kind is not Kind.ID),
    Column(OCCURRED_ON, Kind.DATE),
)
MODEL_INPUT_NAMES: tuple[str, ...] = tuple(c.name for c in MODEL_INPUTS)
NUMERIC_INPUTS: tuple[str, ...] = tuple(c.name for c in MODEL_INPUTS if c.kind in (Kind.NUMBER, Kind.YEAR))
STRING_INPUTS: tuple[str, ...] = tuple(c.name for c in MODEL_INPUTS if c.name not in NUMERIC_INPUTS)


# ---------------------------------------------------------------------------------------------
# Validation (contract §2): raw tables → clean, normalised frames + a report.
# ---------------------------------------------------------------------------------------------

#: More than this fraction of outcome rows dropped (unknown contact, characteristic or stage) is an error.
MAX_DROPPED_OUTCOME_FRACTION = 0.05
#: How many offending rows or values an error or warning shows.
SHOW = 5
#: Optional columns where an empty value is meaningful, not missing: an empty `client_since` is a
#: prospect, an empty multi-valued field is the empty set. They are counted, not warned about.
EMPTY_IS_MEANINGFUL = frozenset({"client_since", "products_owned", "interests"})
_DATE_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]")
_DATE_MIN, _DATE_MAX = pd.Timestamp("1678-01-01"), pd.Timestamp("2261-12-31")
_TABLES_BY_NAME = {t.name: t for t in (*TABLES, REQUESTS)}


def normalize_column_name(name: Any) -> str:
    """Header names are matched after stripping whitespace (and a BOM) and lower-casing."""
    return str(name).replace("\ufeff", "").strip().lower()


def is_personal(name: Any) -> bool:
    """True for a column that may carry personal data (schema.PERSONAL_COLUMNS, any case)."""
    return normalize_column_name(name) in PERSONAL_COLUMNS


def contract_columns(names: Iterable[Any], table: Table, source: str) -> tuple[dict[Any, str], list[str], list[str]]:
    """Map a file's header to contract columns.

    Returns (original name → contract name for the contract columns present, personal-data
    columns dropped, other extra columns ignored). Raises DataError when two headers normalise to
    the same contract column.
    """
    wanted = {c.name for c in table.columns}
    mapping: dict[Any, str] = {}
    personal: list[str] = []
    extra: list[str] = []
    for name in names:
        norm = normalize_column_name(name)
        if norm in wanted:
            if norm in mapping.values():
                raise DataError(
                    f"{source}: column {norm!r} appears more than once in the header "
                    "(names are compared after stripping spaces and lower-casing); keep one"
                )
            mapping[name] = norm
        elif norm in PERSONAL_COLUMNS:
            personal.append(norm)
        else:
            extra.append(str(name))
    return mapping, personal, extra


def check_required_columns(columns: Iterable[str], table: Table, source: str) -> None:
    """DataError naming the file and every required contract column that is absent."""
    present = set(columns)
    missing = [name for name in table.required if name not in present]
    if missing:
        raise DataError(
            f"{source}: missing required column(s) {preview(missing)}; "
            f"required: {', '.join(table.required)}; found: {preview(sorted(present), limit=12) or 'no columns'}"
        )


def select_columns(df: pd.DataFrame, table: Table | str, source: str | None = None) -> pd.DataFrame:
    """Keep only `table`'s contract columns (renamed to their contract names), dropping
    personal-data and extra columns; checks required columns. The result's attrs hold `source`,
    `personal_columns_dropped` and `extra_columns_ignored` (column names only, never values)."""
    table = _TABLES_BY_NAME[table] if isinstance(table, str) else table
    source = source or df.attrs.get("source") or table.name
    mapping, personal, extra = contract_columns(df.columns, table, source)
    out = df.loc[:, list(mapping)].rename(columns=mapping)
    check_required_columns(out.columns, table, source)
    out.attrs = {
        "source": source,
        "personal_columns_dropped": sorted(set(personal) | set(df.attrs.get("personal_columns_dropped", ()))),
        "extra_columns_ignored": list(dict.fromkeys([*df.attrs.get("extra_columns_ignored", ()), *extra])),
    }
    return out


def lookup(values: Any, vocabulary: Any) -> np.ndarray:
    """Position of each of `values` in `vocabulary` (int64, -1 when absent), for text, vectorised.

    Both may be Series, arrays or lists of strings; missing values are never found. Runs in Arrow,
    so 1M values against a 100k vocabulary take a fraction of a second.
    """
    found = pc.index_in(_arrow_text(values), value_set=_arrow_text(vocabulary))
    return pc.fill_null(found, -1).to_numpy().astype(np.int64, copy=False)


def isin(values: Any, vocabulary: Any) -> np.ndarray:
    """Boolean array: which of `values` are in `vocabulary` (text, vectorised; missing → False)."""
    return pc.is_in(_arrow_text(values), value_set=_arrow_text(vocabulary)).to_numpy(zero_copy_only=False)


def _arrow_text(values: Any) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, pd.Index):
        values = values.to_series()
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.StringDtype):
        array = pa.array(values)  # zero-copy for Arrow-backed strings
    else:
        array = pa.array(np.asarray(values, dtype=object), pa.large_string(), from_pandas=True)
    return array if array.type == pa.large_string() else pc.cast(array, pa.large_string())


@dataclass(frozen=True)
class CrmData:
    """The three CRM tables after validation, every contract column present, values normalised.

    Codes: normalised (strip + lower) strings, "" when missing; codes not in their dictionary are
    kept as they are (the model encodes them as unknown). Multi-valued fields: a `;`-joined string
    of distinct normalised codes in sorted order, "" for none. Numbers and `founded_year`:
    float64, NaN when missing. Dates: datetime64[ns], NaT when missing. `outcome`: 'positive' or
    'negative'. Identifiers: text with surrounding spaces stripped. Rows keep file order;
    outcome rows for unknown contacts, characteristics or stages are already dropped.
    """

    organizations: pd.DataFrame
    contacts: pd.DataFrame
    outcomes: pd.DataFrame

    def contact_orgs(self) -> pd.Series:
        """contact_id → org_id, for the time split's cold-start flags."""
        return pd.Series(
            self.contacts["org_id"].to_numpy(),
            index=pd.Index(self.contacts["contact_id"], name="contact_id"),
            name="org_id",
        )


@dataclass(frozen=True)
class ValidationWarning:
    """One kind of data problem that was tolerated: what, where, how many rows, a few examples.

    Examples are identifiers, codes or row numbers only, never personal data.
    """

    kind: str  # unknown_code | missing_value | absent_column | dropped_rows
    file: str
    column: str
    count: int
    examples: tuple[str, ...]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "file": self.file,
            "column": self.column,
            "count": self.count,
            "examples": list(self.examples),
            "message": self.message,
        }


@dataclass
class ValidationReport:
    """What validation found: table sizes, episodes, date range, and every warning.

    `warnings_count` is the number of warning entries (one per kind of problem and column; each
    entry says how many rows it concerns). Printable (`str(report)`, `lines()`) and JSON-able
    (`to_dict()`, for the model manifest); it never holds personal data.
    """

    files: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    outcome_rows_kept: int = 0
    outcome_rows_dropped: int = 0
    episodes: int = 0
    positive_episodes: int = 0
    contacts_with_episodes: int = 0
    date_min: str | None = None
    date_max: str | None = None
    warnings: list[ValidationWarning] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def warnings_count(self) -> int:
        return len(self.warnings)

    @property
    def dropped_fraction(self) -> float:
        total = self.rows.get("outcomes", 0)
        return self.outcome_rows_dropped / total if total else 0.0

    def lines(self) -> list[str]:
        out = ["Validation report"]
        for name, source in self.files.items():
            text = f"  {source}: {self.rows.get(name, 0):,} rows"
            if name == "outcomes":
                text += f" ({self.outcome_rows_kept:,} kept, {self.outcome_rows_dropped:,} dropped"
                text += f" = {self.dropped_fraction:.1%})"
            out.append(text)
        out.append(
            f"  episodes (contact, date, stage): {self.episodes:,}, with a positive outcome: "
            f"{self.positive_episodes:,}, contacts with episodes: {self.contacts_with_episodes:,}"
        )
        if self.date_min is not None:
            out.append(f"  dates: {self.date_min} .. {self.date_max}")
        for key, value in self.notes.items():
            if value not in (None, 0, [], {}):
                out.append(f"  {key.replace('_', ' ')}: {_note_text(value)}")
        if self.warnings:
            out.append(f"  warnings ({self.warnings_count}):")
            out.extend(f"    - {w.message}" for w in self.warnings)
        out.append(f"OK with {self.warnings_count} warning(s)" if self.warnings else "OK: no problems found")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": dict(self.files),
            "rows": dict(self.rows),
            "outcome_rows_kept": self.outcome_rows_kept,
            "outcome_rows_dropped": self.outcome_rows_dropped,
            "episodes": self.episodes,
            "positive_episodes": self.positive_episodes,
            "contacts_with_episodes": self.contacts_with_episodes,
            "date_range": [self.date_min, self.date_max],
            "warnings_count": self.warnings_count,
            "warnings": [w.to_dict() for w in self.warnings],
            "notes": _jsonable(self.notes),
        }


def validate(frames: Mapping[str, pd.DataFrame], dictionaries: Dictionaries) -> tuple[CrmData, ValidationReport]:
    """Check the CRM tables against the contract (§2) and the dictionaries.

    `frames` maps 'organizations', 'contacts', 'outcomes' to raw DataFrames (as read by
    training.data, or built in memory: strings, numbers, dates or lists are accepted). Raises
    DataError, naming the file, column, up to 5 offending rows (1-based data row numbers, the
    header not counted) or values, and what is allowed, for: a missing table or required column,
    an empty table, an empty required value, an unparseable date or number, a negative count, an
    outcome other than positive/negative, a duplicate org_id/contact_id, a contact whose org is
    missing, more than 5% of outcome rows dropped, no episode with a positive outcome.

    Tolerated with a warning in the report: a code not in its dictionary (kept, the model encodes
    it as unknown), a missing optional value or column (kept as missing), outcome rows whose
    contact, characteristic or stage is unknown (dropped: an episode needs a known contact and
    stage, and the label a known characteristic).
    """
    report = ValidationReport()
    tables: dict[str, pd.DataFrame] = {}
    for table in TABLES:
        if table.name not in frames or frames[table.name] is None:
            raise DataError(
                f"missing file {table.name}.csv (or {table.name}.parquet): the {table.name} table is required"
            )
        raw = frames[table.name]
        source = raw.attrs.get("source") or f"{table.name}.csv"
        raw = select_columns(raw, table, source)
        if len(raw) == 0:
            raise DataError(f"{source}: empty table (a header but no data rows); at least one row is required")
        report.files[table.name] = source
        report.rows[table.name] = len(raw)
        for key in ("personal_columns_dropped", "extra_columns_ignored"):
            if raw.attrs.get(key):
                report.notes.setdefault(key, {})[source] = list(raw.attrs[key])
        tables[table.name] = raw

    errors: list[str] = []
    clean = {table.name: _clean_table(tables[table.name], table, dictionaries, report, errors) for table in TABLES}
    _raise_if(errors)

    orgs, contacts, outcomes = clean["organizations"], clean["contacts"], clean["outcomes"]
    _check_unique(orgs, "org_id", report.files["organizations"], errors)
    _check_unique(contacts, "contact_id", report.files["contacts"], errors)
    orphan = ~isin(contacts["org_id"], orgs["org_id"])
    if orphan.any():
        rows = np.flatnonzero(orphan)
        shown = [
            f"contact {c!r} → org {o!r} (row {r + 1})"
            for c, o, r in zip(
                contacts["contact_id"].iloc[rows[:SHOW]], contacts["org_id"].iloc[rows[:SHOW]], rows[:SHOW], strict=True
            )
        ]
        errors.append(
            f"{report.files['contacts']} column 'org_id': {len(rows)} contact(s) refer to an org_id that is not in "
            f"{report.files['organizations']}: {_shown(shown, len(rows))}; every contact's org_id must be an "
            "org_id of organizations"
        )
    _raise_if(errors)

    outcomes, contact_pos, stage_pos = _drop_unknown_outcomes(outcomes, contacts, dictionaries, report)
    _count_episodes(outcomes, contact_pos, stage_pos, report)
    if report.positive_episodes == 0:
        raise DataError(
            f"{report.files['outcomes']} column 'outcome': no episode with a positive outcome among "
            f"{report.outcome_rows_kept:,} usable outcome rows; at least one 'positive' is needed to learn from"
        )
    return CrmData(organizations=orgs, contacts=contacts, outcomes=outcomes), report


# --- per-column parsing ---------------------------------------------------------------------


def _clean_table(
    df: pd.DataFrame, table: Table, dictionaries: Dictionaries, report: ValidationReport, errors: list[str]
) -> pd.DataFrame:
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
        if col.kind is Kind.NUMBER or col.kind is Kind.YEAR:
            values, empty = _parse_numbers(raw, col, where, errors)
        elif col.kind is Kind.DATE:
            values, empty = _parse_dates(raw, where, errors, optional=not col.required)
        elif col.kind is Kind.MULTI:
            assert col.vocabulary is not None
            values, unknown = _canonical_multi(raw, dictionaries.codes(col.vocabulary))
            empty = (values == "").to_numpy()
            if unknown:
                _warn_unknown(unknown, col, source, report)
        else:  # ID, CODE, OUTCOME
            text = _text(raw).str.strip()
            if col.kind is not Kind.ID:
                text = text.str.lower()
            values = text.astype("str")
            empty = (values == "").to_numpy()
        if col.required:
            if empty.any():
                rows = np.flatnonzero(empty)
                errors.append(
                    f"{where}: {len(rows)} row(s) with an empty required value: rows {_rows(rows)}; "
                    f"{col.name!r} is required in every row"
                )
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
            bad = ~isin(values, OUTCOME_VALUES) & ~empty
            if bad.any():
                errors.append(_bad_values(where, values, bad, "allowed: positive, negative"))
        if col.kind is Kind.CODE and col.vocabulary and table is not OUTCOMES:
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
    if col.kind in (Kind.NUMBER, Kind.YEAR):
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


def _parse_numbers(raw: pd.Series, col: Column, where: str, errors: list[str]) -> tuple[pd.Series, np.ndarray]:
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
        errors.append(_bad_values(where, shown, bad, "allowed: a number such as 120 or 3.5 (decimal point), or empty"))
        return values, empty
    if col.kind is Kind.NUMBER:
        negative = ~empty & (vals < 0)
        if negative.any():
            errors.append(_bad_values(where, values, negative, "allowed: a number ≥ 0 (a count cannot be negative)"))
    else:
        fraction = ~empty & (vals != np.floor(vals))
        if fraction.any():
            errors.append(_bad_values(where, values, fraction, "allowed: a whole year such as 2004"))
    return values, empty


def _parse_dates(raw: pd.Series, where: str, errors: list[str], optional: bool) -> tuple[pd.Series, np.ndarray]:
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        values = raw.reset_index(drop=True)
        if getattr(values.dt, "tz", None) is not None:
            values = values.dt.tz_localize(None)
        values = values.dt.normalize().astype("datetime64[ns]")
        return values, values.isna().to_numpy()
    text = _text(raw).str.strip()
    codes, uniques = pd.factorize(text)
    uniq = pd.Series(uniques, dtype="str")
    parsed = pd.to_datetime(uniq, format="%Y-%m-%d", errors="coerce")
    retry = parsed.isna() & uniq.str.match(_DATE_PREFIX)
    if retry.any():
        parsed[retry] = pd.to_datetime(uniq[retry].str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
    in_range = (parsed >= _DATE_MIN) & (parsed <= _DATE_MAX)  # what datetime64[ns] can hold
    parsed_ns = parsed.where(in_range).astype("datetime64[ns]").to_numpy()
    values = pd.Series(parsed_ns[codes], dtype="datetime64[ns]")
    empty = (text == "").to_numpy()
    bad = ~empty & values.isna().to_numpy()
    if bad.any():
        allowed = "allowed: an ISO date YYYY-MM-DD such as 2024-03-15" + (", or empty" if optional else "")
        errors.append(_bad_values(where, text, bad, allowed))
    return values, empty


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


def _n_rows(n: int) -> str:
    return f"{n:,} row" + ("" if n == 1 else "s")


# --- keys, outcomes, episodes ----------------------------------------------------------------


def _check_unique(df: pd.DataFrame, key: str, source: str, errors: list[str]) -> None:
    dup = df[key].duplicated(keep=False).to_numpy()
    if not dup.any():
        return
    groups = pd.Series(np.flatnonzero(dup) + 1).groupby(df[key].to_numpy()[dup], sort=False).agg(list)
    shown = [f"{k!r} (rows {', '.join(map(str, v[:SHOW]))})" for k, v in groups.iloc[:SHOW].items()]
    errors.append(f"{source} column {key!r}: duplicate {key} {_shown(shown, len(groups))}; each {key} must appear once")


def _drop_unknown_outcomes(
    outcomes: pd.DataFrame, contacts: pd.DataFrame, dictionaries: Dictionaries, report: ValidationReport
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Drop outcome rows whose contact, characteristic or stage is unknown (warnings; > 5% is an error).

    Returns the kept rows and, per kept row, the position of its contact in `contacts` and of its
    stage in the funnel (integer keys for counting episodes).
    """
    source = report.files["outcomes"]
    contact_pos = lookup(outcomes["contact_id"], contacts["contact_id"])
    stage_pos = lookup(outcomes["stage"], dictionaries.stage_codes)
    checks = (
        ("contact_id", contact_pos >= 0, f"not in {report.files['contacts']}"),
        (
            "characteristic",
            isin(outcomes["characteristic"], dictionaries.characteristic_codes),
            "not in characteristics.yaml",
        ),
        ("stage", stage_pos >= 0, "not in funnel_stages.yaml (an episode needs a known stage)"),
    )
    dropped = np.zeros(len(outcomes), dtype=bool)
    parts: list[str] = []
    for column, known, why in checks:
        bad = ~known
        if not bad.any():
            continue
        dropped |= bad
        counts = outcomes[column][bad].value_counts()
        examples = tuple(str(v) for v in counts.index[:SHOW])
        shown = ", ".join(f"{_short(v)!r} ({_n_rows(c)})" for v, c in counts.iloc[:SHOW].items())
        more = f" and {len(counts) - SHOW} more" if len(counts) > SHOW else ""
        message = f"{source} column {column!r}: {_n_rows(int(bad.sum()))} dropped, {column} {why}: {shown}{more}"
        parts.append(message)
        report.warnings.append(ValidationWarning("dropped_rows", source, column, int(bad.sum()), examples, message))
    n_dropped = int(dropped.sum())
    report.outcome_rows_dropped = n_dropped
    report.outcome_rows_kept = len(outcomes) - n_dropped
    if n_dropped > MAX_DROPPED_OUTCOME_FRACTION * len(outcomes):
        raise DataError(
            f"{source}: {n_dropped:,} of {len(outcomes):,} outcome rows ({n_dropped / len(outcomes):.1%}) would be "
            f"dropped, more than the {MAX_DROPPED_OUTCOME_FRACTION:.0%} allowed — "
            f"{'; '.join(parts)}. Check that the export and the dictionaries belong together"
        )
    if n_dropped:
        outcomes = outcomes.loc[~dropped].reset_index(drop=True)
        contact_pos, stage_pos = contact_pos[~dropped], stage_pos[~dropped]
    return outcomes, contact_pos, stage_pos


def episode_codes(contact: np.ndarray, occurred_on: pd.Series | np.ndarray, stage: np.ndarray) -> np.ndarray:
    """One int64 per outcome row, equal for rows of the same episode (contact, date, stage), from
    non-negative integer codes of the contact and the stage."""
    day = np.asarray(occurred_on).astype("datetime64[D]").astype(np.int64)
    if len(day) == 0:
        return day
    day = day - day.min()
    n_stages = int(stage.max()) + 1
    return (contact.astype(np.int64) * (int(day.max()) + 1) + day) * n_stages + stage


def _count_episodes(
    outcomes: pd.DataFrame, contact_pos: np.ndarray, stage_pos: np.ndarray, report: ValidationReport
) -> None:
    if outcomes.empty:
        return
    keys = episode_codes(contact_pos, outcomes["occurred_on"].to_numpy(), stage_pos)
    report.episodes = len(pd.unique(keys))
    report.positive_episodes = len(pd.unique(keys[(outcomes["outcome"] == POSITIVE).to_numpy()]))
    report.contacts_with_episodes = len(pd.unique(contact_pos))
    dates = outcomes["occurred_on"]
    report.date_min = dates.min().strftime("%Y-%m-%d")
    report.date_max = dates.max().strftime("%Y-%m-%d")


# --- message helpers -------------------------------------------------------------------------


def _raise_if(errors: list[str]) -> None:
    if errors:
        more = f" (and {len(errors) - 1} more problem(s): " + " | ".join(errors[1:]) + ")" if len(errors) > 1 else ""
        raise DataError(errors[0] + more)


def _rows(positions: np.ndarray) -> str:
    shown = ", ".join(str(int(p) + 1) for p in positions[:SHOW])
    more = len(positions) - SHOW
    return shown + (f" (and {more} more)" if more > 0 else "")


def _shown(items: Sequence[str], total: int) -> str:
    more = total - min(len(items), SHOW)
    return ", ".join(items[:SHOW]) + (f" (and {more} more)" if more > 0 else "")


def _bad_values(where: str, values: pd.Series, mask: np.ndarray, allowed: str) -> str:
    rows = np.flatnonzero(mask)
    shown = [f"{_short(values.iloc[r])!r} (row {r + 1})" for r in rows[:SHOW]]
    return f"{where}: {len(rows)} invalid value(s) {_shown(shown, len(rows))}; {allowed}"


def _short(value: Any, limit: int = 40) -> Any:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return float(value)
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _examples_for(rows: np.ndarray, ids: pd.Series | None) -> tuple[str, ...]:
    if ids is None:
        return tuple(f"row {int(r) + 1}" for r in rows[:SHOW])
    return tuple(str(v).strip() for v in ids.iloc[rows[:SHOW]])


def _id_label(table: Table) -> str:
    return table.key or "rows"


def _note_text(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_note_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return f"{value:,}" if isinstance(value, int) else str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
