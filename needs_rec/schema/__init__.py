"""Column names and kinds of the CRM tables (contract §2) and needs_rec's own tables (§6), the
model's raw inputs, and validation of loaded tables against the contract and the dictionaries.

Only this package knows column names; nothing downstream re-checks what it validated.

- `columns`: tables, columns, kinds, the model's inputs, header matching (`select_columns`).
- `tables`: per-table checks (`check_table`): one table's values parsed, normalised, its key unique.
- `rows`: the value rules of the event tables in pure Python (`parse_date`, `text_value`), one row
  checked with them (`check_row`, the same messages as a table's), and `FeedbackRules` (a posted
  feedback event: a CSV outcome row's rules plus the strict feedback checks, compiled per dictionaries).
- `crossref`: checks across tables and `validate` (the whole CRM), `validate_contacts` (no
  outcomes: batch scoring, lookups).
- `report`: `CrmData` (the clean tables) and `ValidationReport`.
"""

from needs_rec.schema.columns import (
    CONTACTS,
    DISPLAY_TABLES,
    EMPTY_IS_MEANINGFUL,
    EVENT_COLUMNS,
    EXPOSURES,
    FEEDBACK,
    MAX_DROPPED_OUTCOME_FRACTION,
    MODEL_INPUT_NAMES,
    MODEL_INPUTS,
    MULTI_SEPARATOR,
    NEGATIVE,
    NUMERIC_INPUTS,
    OCCURRED_ON,
    ORGANIZATIONS,
    OUTCOME_VALUES,
    OUTCOMES,
    PERSONAL_COLUMNS,
    POSITIVE,
    REQUESTS,
    SHOW,
    STAGE,
    STRING_INPUTS,
    TABLES,
    TABLES_BY_NAME,
    Column,
    Kind,
    Table,
    check_required_columns,
    contract_columns,
    is_personal,
    isin,
    lookup,
    normalize_column_name,
    select_columns,
)
from needs_rec.schema.crossref import episode_codes, validate, validate_contacts
from needs_rec.schema.messages import raise_if
from needs_rec.schema.report import CrmData, ValidationReport, ValidationWarning
from needs_rec.schema.rows import (
    YEAR_MIN,
    FeedbackRules,
    ascii_int,
    check_row,
    is_ascii_int,
    latest_event_date,
    parse_date,
    year_max,
)
from needs_rec.schema.tables import check_table, clean_table

__all__ = [
    "CONTACTS",
    "DISPLAY_TABLES",
    "EMPTY_IS_MEANINGFUL",
    "EVENT_COLUMNS",
    "EXPOSURES",
    "FEEDBACK",
    "MAX_DROPPED_OUTCOME_FRACTION",
    "MODEL_INPUTS",
    "MODEL_INPUT_NAMES",
    "MULTI_SEPARATOR",
    "NEGATIVE",
    "NUMERIC_INPUTS",
    "OCCURRED_ON",
    "ORGANIZATIONS",
    "OUTCOMES",
    "OUTCOME_VALUES",
    "PERSONAL_COLUMNS",
    "POSITIVE",
    "REQUESTS",
    "SHOW",
    "STAGE",
    "STRING_INPUTS",
    "TABLES",
    "TABLES_BY_NAME",
    "YEAR_MIN",
    "Column",
    "CrmData",
    "FeedbackRules",
    "Kind",
    "Table",
    "ValidationReport",
    "ValidationWarning",
    "ascii_int",
    "check_required_columns",
    "check_row",
    "check_table",
    "clean_table",
    "contract_columns",
    "episode_codes",
    "is_ascii_int",
    "is_personal",
    "isin",
    "latest_event_date",
    "lookup",
    "normalize_column_name",
    "parse_date",
    "raise_if",
    "select_columns",
    "validate",
    "validate_contacts",
    "year_max",
]
