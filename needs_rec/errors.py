"""One error hierarchy for everything a user can get wrong.

Each error says what was wrong, what is allowed and what was received. Command-line programs map
any `NeedsRecError` to exit code 2 and one readable line; the service maps it to a 4xx answer
with `{"error": ...}`.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence


class NeedsRecError(Exception):
    """Base of every error caused by input (files, configs, requests), never by a bug."""


class DictionaryError(NeedsRecError):
    """A reference dictionary is missing, malformed or inconsistent."""


class DataError(NeedsRecError):
    """CRM data breaks the data contract (missing file or column, bad value, ...)."""


class CrmRowError(DataError):
    """One CRM row that was found holds a value no request could carry (a number column with "abc").

    `detail` is what is wrong without the advice to an API caller (a page gives its own)."""

    def __init__(self, detail: str, advice: str = ""):
        super().__init__(f"{detail}; {advice}" if advice else detail)
        self.detail = detail


class ConfigError(NeedsRecError):
    """A training or serving configuration value is missing, of the wrong type or out of range."""


class RequestError(NeedsRecError):
    """A scoring request is malformed: bad JSON, wrong type, missing field, unknown stage.

    `field` is the request field at fault in dotted form ('instances.0.organization.employees'),
    when one is: a caller that filled some fields itself (a contact looked up in the CRM) can tell
    by it whose value was wrong without reading the message.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class ModelError(NeedsRecError):
    """A model version is missing, corrupted or does not match its manifest."""


class NotFittedError(NeedsRecError):
    """An estimator-like object was used before `fit` was called."""


_SHOWN = reprlib.Repr()  # its keyword arguments need Python 3.12
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxtuple, _SHOWN.maxdict, _SHOWN.maxset = 2, 5, 5, 5, 5
_SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 60, 60, 40


def clipped(text: str, limit: int = 40, mark: str = "...") -> str:
    """`text` cut to at most `limit` characters, the cut marked by `mark` (pages use '…'): a value a
    message or page echoes stays readable however long the caller made it."""
    return text if len(text) <= limit else text[: limit - len(mark)] + mark


def unknown_characteristic(code: object, known: Sequence[str]) -> RequestError:
    """The 400 for a `characteristic` query value outside the vocabulary: the caller's value clipped
    (it may be any length), and the first ten known codes."""
    listed = ", ".join(known[:10]) + (" …" if len(known) > 10 else "")
    return RequestError(f"field 'characteristic': unknown characteristic {clipped(str(code))!r}; known codes: {listed}")


def shown(value: object) -> str:
    """`repr(value)` bounded for a message: a few levels, items and characters (reprlib), so a
    value built from YAML aliases (a "billion laughs" file) cannot turn an error into gigabytes."""
    return clipped(_SHOWN.repr(value), 200)


def yaml_problem(exc: Exception) -> str:
    """What is wrong with a file read as YAML: not UTF-8, or the parser's first problem and where."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8"
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"not valid YAML ({where}{problem})"


def preview(values, limit: int = 5) -> str:
    """Render up to `limit` offending values for an error message, saying how many were left out;
    each text clipped (`clipped`), so one 100,000-character value cannot make the line that long."""
    values = list(values)
    shown = ", ".join(repr(clipped(v) if isinstance(v, str) else v) for v in values[:limit])
    more = len(values) - limit
    return shown + (f" (and {more} more)" if more > 0 else "")


class SourceUnavailable(NeedsRecError):
    """The CRM source (a database) cannot be reached, read or written right now; retrying may work.

    The service answers it with 503; command-line programs exit 2 with its one line. The message
    names the source without its password; `detail` is the database driver's own reason inside
    it, which may name the server's host and port: the operator's CLI line and the service log
    keep it, an API client reads `public`, the message without it. `lasting`: the database answered
    and refused what the URL names (no such database or role, a wrong password, a file that is no
    database): a request still gets 503, but a service does not start on it (`crm.check_tables`).
    """

    def __init__(self, message: str, *, detail: str = "", lasting: bool = False):
        super().__init__(message)
        self.lasting = lasting
        self.public = message.replace(f" ({detail})", "") if detail else message
