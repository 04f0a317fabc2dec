"""Row rules in pure Python: what one value of a column may be, and one event row checked whole.

This module owns the value rules of the event tables (`outcomes`, `feedback`): which text is a date
(`parse_date`), how a code or an id is normalised (`text_value`), which outcomes exist, and the
words of what is allowed. `needs_rec.schema.tables.clean_table` applies them to a whole table (to
its distinct values, vectorised around them); `check_row` applies them to one row — a feedback
event posted to the service — without pandas, in microseconds, with the very messages a CSV row
gets (the message builders of `needs_rec.schema.messages`).

`FeedbackRules` adds what only a posted event is held to (contract §6), compiled once per set of
dictionaries (the served version caches its own): a stage or characteristic outside the
dictionaries, a characteristic not offered at that stage, and a date in the future are errors
there, where a CSV row would be dropped with a warning — a manager can correct a typo at once.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from needs_rec.schema.columns import (
    FEEDBACK,
    OUTCOME_VALUES,
    Kind,
    Table,
    check_required_columns,
)
from needs_rec.schema.messages import _short, _shown, bad_values_message, empty_required_message, raise_if

if TYPE_CHECKING:
    from needs_rec.dictionaries import Dictionaries

#: A date's text: year, month and day in ASCII digits (`2024-03-15`; a one-digit month or day too).
_DATE = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})")
#: A date and time (`2024-03-15T10:00`, `2024-03-15 10:00:00.5+03:00`, `…Z`): its first ten characters
#: are the date. Anything else after a date (`2024-03-15 (перенесено)`) makes the text no date at all.
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)? ?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?"
)
#: Every text `parse_date` may take as a date, as one regular expression (surrounding spaces allowed, as
#: they are stripped), for schemas that document it: the OpenAPI schema of POST /v1/feedback's occurred_on.
DATE_TEXT_PATTERN = rf"^\s*({_DATE.pattern}|{_DATE_TIME.pattern})\s*$"
#: The dates a table can hold (pandas' datetime64[ns] range, which the whole-table path uses).
DATE_MIN, DATE_MAX = dt.date(1678, 1, 1), dt.date(2261, 12, 31)
#: Text kinds: ids and timestamps are only stripped; codes and outcomes are also lower-cased.
_STRIPPED_ONLY = frozenset({Kind.ID, Kind.TIMESTAMP})
#: The kinds `check_row` knows: those of the event tables' columns a caller sends.
ROW_KINDS = frozenset({Kind.ID, Kind.TIMESTAMP, Kind.CODE, Kind.OUTCOME, Kind.DATE})

ALLOWED_OUTCOME = f"allowed: {', '.join(OUTCOME_VALUES)}"
#: Every text `text_value` makes an outcome of (any case, surrounding spaces), as one regular expression
#: without flags (JSON Schema has none), for the OpenAPI schema of POST /v1/feedback.
OUTCOME_TEXT_PATTERN = (
    r"^\s*(" + "|".join("".join(f"[{c.upper()}{c}]" for c in value) for value in OUTCOME_VALUES) + r")\s*$"
)
#: A feedback date is "in the future" once it is past today in the easternmost time zone (UTC+14):
#: a manager anywhere may report today's call by their own calendar.
EARLIEST_ZONE = dt.timedelta(hours=14)


#: The earliest plausible year of a `founded_year` (a YEAR column); the latest is next year (`year_max`).
YEAR_MIN = 1700


def year_max() -> int:
    """The latest plausible year: next year (a firm registered for January). Read per call, so a
    service that runs past New Year moves with the calendar."""
    return time.gmtime().tm_year + 1


def plausible_year(value: float) -> bool:
    """Whether a year (not NaN) is one a firm can have been founded in: 99999 or 14 is a typo that would
    shift the year's normalisation for every organization, so both paths treat it as missing."""
    return YEAR_MIN <= value <= year_max()


#: Tables of events (an outcome, a feedback): their `occurred_on` cannot be in the future.
EVENT_TABLES = frozenset({"outcomes", "feedback"})


def latest_event_date(today: dt.date | None = None) -> dt.date:
    """The latest date an event may carry: `today` when given, else today in the easternmost time
    zone. A later one is a typo (2099 for 2019) or a clock error, never something that happened: the
    time split would put it into the newest window, and a retrain's window would never close."""
    return today or (dt.datetime.now(dt.UTC) + EARLIEST_ZONE).date()


#: Date columns of a record (not an event) that cannot lie in the future either: an organization
#: becomes a client on a day that has come. Judged like events' dates (`latest_event_date`), but a
#: later one is a typo to drop, as an implausible `founded_year` is (treated as missing, a warning),
#: not an error: one bad cell in the organizations table should not stop a training.
NOT_IN_FUTURE = frozenset({"client_since"})


def allowed_event_date(latest: dt.date) -> str:
    """What an event's date accepts beyond the date rule, in an error message."""
    return f"allowed: a date up to today ({latest.isoformat()}), not in the future"


_ASCII_WHOLE = re.compile(r"[0-9]+")
_ASCII_SIGNED = re.compile(r"-?[0-9]+")


def ascii_int(text: str, *, signed: bool = False) -> int | None:
    """`text` as a whole number when it is ASCII digits (after a '-' when `signed`), else None.

    For ids, versions and query values that arrive as text: `int()` would also take '+5', ' 5',
    '1_000' and '٣', and '³'.isdigit() is True while int('³') fails. More than `MAX_DIGITS` digits
    is None too (`int()` refuses 4,300 with a ValueError; no id, version or limit is that long):
    `is_ascii_int` tells such a number from text that is none."""
    if len(text) > MAX_DIGITS + 1 or not (_ASCII_SIGNED if signed else _ASCII_WHOLE).fullmatch(text):
        return None
    return int(text)


def is_ascii_int(text: str, *, signed: bool = False) -> bool:
    """True when `text` is ASCII digits (after a '-' when `signed`), however many: a number even
    where `ascii_int` is None for its length, so a message can say its range, not 'not a number'."""
    return (_ASCII_SIGNED if signed else _ASCII_WHOLE).fullmatch(text) is not None


#: The most digits `ascii_int` converts (a 64-bit id has 19).
MAX_DIGITS = 100


def allowed_date(optional: bool) -> str:
    """What a date column accepts, in an error message."""
    return (f"allowed: an ISO date YYYY-MM-DD such as 2024-03-15, from {DATE_MIN.isoformat()} to "
            f"{DATE_MAX.isoformat()}" + (", or empty" if optional else ""))


def parse_date(text: str) -> dt.date | None:
    """The date a (stripped) text stands for, or None when it is not a date a table can hold.

    `YYYY-MM-DD`, or a date and time whose first ten characters are one (the time is dropped: an
    episode is a day). The whole-table path calls this on each distinct text of a date column.
    """
    match = _DATE.fullmatch(text)
    if match is None and _DATE_TIME.fullmatch(text):
        match = _DATE.fullmatch(text[:10])
    if match is None:
        return None
    try:
        day = dt.date(*(int(part) for part in match.groups()))
    except ValueError:  # 2023-02-29, month 13
        return None
    return day if DATE_MIN <= day <= DATE_MAX else None


def text_value(kind: Kind, text: str) -> str:
    """A text value as tables hold it: stripped; a code or an outcome also lower-cased.

    `text_values` is the same rule over a whole column (vectorised; tests pin the two together).
    """
    text = text.strip()
    return text if kind in _STRIPPED_ONLY else text.lower()


def text_values(kind: Kind, texts: pd.Series) -> pd.Series:
    """`text_value` over a column of `str` dtype, vectorised.

    Arrow's strip removes exactly Python's whitespace, and its lower-casing is Python's for ASCII;
    a non-ASCII text (`İ`, which Python lowers to two characters) is lowered by `str.lower` itself.
    """
    texts = texts.str.strip()
    if kind in _STRIPPED_ONLY:
        return texts
    lowered = texts.str.lower()
    other = ~pc.string_is_ascii(pa.array(texts, pa.large_string())).to_numpy(zero_copy_only=False)
    if other.any():
        lowered = lowered.copy()
        lowered[other] = [value.lower() for value in texts[other]]
    return lowered


def check_row(
    row: Mapping[str, str], table: Table, source: str, *, today: dt.date | None = None
) -> tuple[dict[str, Any], list[str]]:
    """One row of `table` (column → text; an absent optional column is missing) → its clean values
    and the errors the whole-table check would report for a one-row table, in the same order and
    words: a missing required column (DataError at once), an empty required value, a bad date, an
    event dated after `latest_event_date(today)`, a bad outcome. Dates become `datetime.date`,
    missing ones None.
    """
    check_required_columns(row.keys(), table, source)
    clean: dict[str, Any] = {}
    errors: list[str] = []
    for col in table.columns:
        where = f"{source} column {col.name!r}"
        text = row.get(col.name)
        if text is None:
            clean[col.name] = None if col.kind is Kind.DATE else ""
            continue
        if col.kind not in ROW_KINDS:
            raise ValueError(f"check_row: column {col.name!r} of kind {col.kind} is not a text or date column")
        if col.kind is Kind.DATE:
            text = text.strip()
            value: Any = parse_date(text) if text else None
            empty = not text
            if not empty and value is None:
                errors.append(bad_values_message(where, [(text, 0)], 1, allowed_date(optional=not col.required)))
            elif value is not None and table.name in EVENT_TABLES and col.name == "occurred_on":
                latest = latest_event_date(today)
                if value > latest:
                    errors.append(bad_values_message(where, [(value.isoformat(), 0)], 1, allowed_event_date(latest)))
        else:
            value = text_value(col.kind, text)
            empty = not value
        if col.required and empty:
            errors.append(empty_required_message(where, col.name, [0]))
        if col.kind is Kind.OUTCOME and not empty and value not in OUTCOME_VALUES:
            errors.append(bad_values_message(where, [(value, 0)], 1, ALLOWED_OUTCOME))
        clean[col.name] = value
    return clean, errors


class FeedbackRules:
    """The checks of one posted feedback event against one set of dictionaries (see the module doc).

    Built once per dictionaries (sets of the codes and of the offered pairs), so checking an event
    is a few dictionary lookups.
    """

    def __init__(self, dictionaries: Dictionaries):
        self.stages = tuple(dictionaries.stage_codes)
        self._stages = frozenset(self.stages)
        characteristics = dictionaries.characteristic_codes
        self._characteristics = frozenset(characteristics)
        offered = dictionaries.offered()
        self._offered = frozenset(
            (stage, code)
            for i, stage in enumerate(self.stages)
            for j, code in enumerate(characteristics)
            if offered[i, j]
        )

    def check(
        self, row: Mapping[str, str], *, source: str = FEEDBACK.name, today: dt.date | None = None
    ) -> dict[str, Any]:
        """The event's clean values (`check_row` of the `feedback` table), or DataError naming the
        column: first the row rules of any CSV outcome row, then the strict feedback checks."""
        clean, errors = check_row(row, FEEDBACK, source, today=today)
        raise_if(errors)
        raise_if(self.strict_errors(clean, source))
        return clean

    def strict_errors(self, clean: Mapping[str, Any], source: str) -> list[str]:
        """What the feedback endpoint refuses beyond the row rules, for a row that passed them."""
        errors: list[str] = []
        stage, characteristic = clean["stage"], clean["characteristic"]
        for column, value, known, allowed in (
            ("stage", stage, self._stages, f"allowed: {', '.join(self.stages)}"),
            ("characteristic", characteristic, self._characteristics, "allowed: a code of characteristics.yaml"),
        ):
            if value not in known:
                shown = _shown([repr(_short(value))], 1)
                errors.append(f"{source} column {column!r}: unknown {column} {shown}; {allowed}")
        if errors:
            return errors
        if (stage, characteristic) not in self._offered:
            errors.append(
                f"{source} column 'characteristic': {characteristic!r} at {stage!r}: not offered at that stage "
                "(characteristics.yaml has no talking point for it there); only an offered characteristic can be put"
            )
        return errors
