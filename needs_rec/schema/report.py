"""What validation produces: the clean tables (`CrmData`) and the report (`ValidationReport`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


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

    def fingerprint(self) -> str:
        """SHA-256 of the three tables' clean contents, whatever their row order: two reads of an
        unchanged CRM (from a file or a database, which need not keep an order) give the same value,
        any changed, added or removed row another — except a row that repeats another exactly (an
        event the CRM recorded twice counts once in training, so it is no news for a retrain either).
        A one-way digest: nothing of a row can be read back."""
        digest = hashlib.sha256()
        for name in ("organizations", "contacts", "outcomes"):
            frame = getattr(self, name)
            rows = np.unique(pd.util.hash_pandas_object(frame, index=False).to_numpy())  # sorted, once each
            digest.update(f"{name}:{','.join(map(str, frame.columns))}:{len(rows)}:".encode())
            digest.update(rows.tobytes())
        return digest.hexdigest()

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

    kind: str  # unknown_code | missing_value | absent_column | dropped_rows | invalid_rows
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
        total = self.outcome_rows_kept + self.outcome_rows_dropped
        return self.outcome_rows_dropped / total if total else 0.0

    def lines(self) -> list[str]:
        out = ["Validation report"]
        for name, source in self.files.items():
            count = self.rows.get(name, 0)
            text = f"  {source}: {count:,} row{'' if count == 1 else 's'}"
            if name == "outcomes":
                from_feedback = self.notes.get("outcome_rows_from_feedback")
                with_feedback = f" incl. {from_feedback:,} from feedback" if from_feedback else ""
                text += f" ({self.outcome_rows_kept:,} kept{with_feedback}, {self.outcome_rows_dropped:,} dropped"
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
