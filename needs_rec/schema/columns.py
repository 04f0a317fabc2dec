"""Column names and kinds of the CRM tables (contract §2), of needs_rec's own tables (§6) and of the
model's raw inputs, plus the column-name matching every reader uses.

Only this package knows column names; the other modules of `needs_rec.schema` check values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from needs_rec.errors import DataError, preview


class Kind(StrEnum):
    """How a column's values are parsed and encoded."""

    ID = "id"  # identifier, kept as text, never a model input
    CODE = "code"  # one dictionary code
    MULTI = "multi"  # several dictionary codes, `;`-separated in CSV
    NUMBER = "number"  # non-negative number
    YEAR = "year"  # a calendar year (number)
    DATE = "date"  # ISO date
    OUTCOME = "outcome"  # `positive` / `negative`
    TIMESTAMP = "timestamp"  # ISO date and time (UTC), kept as text
    FLAG = "flag"  # true / false
    INTEGER = "integer"  # a whole number written by needs_rec itself (a version, a rank)


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
        Column("manager_id", Kind.ID),  # v2: who presented it (an opaque code, never a name)
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

#: needs_rec's own table of managers' feedback (contract §6): outcome rows plus who, when and about which answer.
FEEDBACK = Table(
    "feedback",
    (
        Column("feedback_id", Kind.ID, required=True),
        *(c for c in OUTCOMES.columns),  # manager_id among them
        Column("request_id", Kind.ID),
        Column("model_version", Kind.INTEGER),
        Column("received_at", Kind.TIMESTAMP),
    ),
    key="feedback_id",
)

#: needs_rec's own table of what the service showed (contract §6): one row per characteristic in an answer.
EXPOSURES = Table(
    "exposures",
    (
        Column("request_id", Kind.ID, required=True),
        Column("served_at", Kind.TIMESTAMP, required=True),
        Column("model_version", Kind.INTEGER, required=True),
        Column("contact_id", Kind.ID),
        Column("stage", Kind.CODE, required=True, vocabulary="funnel_stages"),
        Column("characteristic", Kind.CODE, required=True, vocabulary="characteristics"),
        Column("rank", Kind.INTEGER, required=True),
        Column("probability", Kind.NUMBER, required=True),
        Column("selected", Kind.FLAG, required=True),
    ),
)

#: The CRM's own display names, read only for the manager's page (contact search, behind access
#: control) — never for a model input, an artifact, a report or a log line.
DISPLAY_TABLES = {
    "organizations": Table("organizations", (ORGANIZATIONS.column("org_id"), Column("name", Kind.ID)), key="org_id"),
    "contacts": Table(
        "contacts",
        (*CONTACTS.columns[:3], Column("full_name", Kind.ID)),
        key="contact_id",
    ),
}

#: The columns that identify one outcome event: a row of `feedback` equal to a row of `outcomes` in
#: all of them is the same event, counted once.
EVENT_COLUMNS: tuple[str, ...] = tuple(c.name for c in OUTCOMES.columns if c.name != "manager_id")

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




#: More than this fraction of outcome rows dropped (unknown contact, characteristic or stage) is an error.
MAX_DROPPED_OUTCOME_FRACTION = 0.05
#: How many offending rows or values an error or warning shows.
SHOW = 5
#: Optional columns where an empty value is meaningful, not missing: an empty `client_since` is a
#: prospect, an empty multi-valued field is the empty set. They are counted, not warned about.
EMPTY_IS_MEANINGFUL = frozenset(
    {"client_since", "products_owned", "interests", "request_id", "manager_id", "model_version", "received_at"}
)
TABLES_BY_NAME = {t.name: t for t in (*TABLES, REQUESTS, FEEDBACK, EXPOSURES)}


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
    table = TABLES_BY_NAME[table] if isinstance(table, str) else table
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

