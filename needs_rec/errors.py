"""One error hierarchy for everything a user can get wrong.

Each error says what was wrong, what is allowed and what was received. Command-line programs map
any `NeedsRecError` to exit code 2 and one readable line; the service maps it to a 4xx answer
with `{"error": ...}`.
"""

from __future__ import annotations


class NeedsRecError(Exception):
    """Base of every error caused by input (files, configs, requests), never by a bug."""


class DictionaryError(NeedsRecError):
    """A reference dictionary is missing, malformed or inconsistent."""


class DataError(NeedsRecError):
    """CRM data breaks the data contract (missing file or column, bad value, ...)."""


class CrmRowError(DataError):
    """One CRM row that was found holds a value no request could carry (a number column with "abc")."""


class ConfigError(NeedsRecError):
    """A training or serving configuration value is missing, of the wrong type or out of range."""


class RequestError(NeedsRecError):
    """A scoring request is malformed: bad JSON, wrong type, missing field, unknown stage."""


class ModelError(NeedsRecError):
    """A model version is missing, corrupted or does not match its manifest."""


class NotFittedError(NeedsRecError):
    """An estimator-like object was used before `fit` was called."""


def preview(values, limit: int = 5) -> str:
    """Render up to `limit` offending values for an error message, saying how many were left out."""
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:limit])
    more = len(values) - limit
    return shown + (f" (and {more} more)" if more > 0 else "")


class SourceUnavailable(NeedsRecError):
    """The CRM source (a database) cannot be reached, read or written right now; retrying may work.

    The service answers it with 503; command-line programs exit 2 with its one line. The message
    names the source without its password.
    """
