"""Column names and kinds of the CRM tables (contract §2) and of the model's raw inputs.

Only this module knows column names. Validation of loaded tables against the contract and the
dictionaries lives here too (`validate`), so nothing downstream re-checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(str, Enum):
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
