"""The CRM source seam (contract §2, §5, §6): the one place that reads the firm's CRM — a directory
of CSV/Parquet files or a SQL database — and writes needs_rec's own tables in it.

    source = crm.open_source("sqlite:///crm.db")        # or a directory, or postgresql+psycopg://…
    frames = source.read_crm()                           # raw §2 tables (+ feedback), text, no personal data
    record = source.contact("C-000042")                  # one contact's §2 fields, or None
    source.add_feedback(event)                           # stored / duplicate / conflict, committed

See `crm.source` for the protocol and the errors, `crm.files` and `crm.sql` for the two kinds,
`crm.own` for the feedback and exposure tables, `crm.write` for writing a CRM into a database.
"""

from crm.source import (
    ContactRecord,
    CrmSource,
    FeedbackEvent,
    FeedbackResult,
    check_location,
    check_tables,
    is_url,
    open_source,
    parse_url,
)
from needs_rec.errors import SourceUnavailable

__all__ = [
    "ContactRecord",
    "CrmSource",
    "FeedbackEvent",
    "FeedbackResult",
    "SourceUnavailable",
    "check_location",
    "check_tables",
    "is_url",
    "open_source",
    "parse_url",
]
