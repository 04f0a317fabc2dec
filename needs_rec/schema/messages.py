"""How validation messages show rows and values: 1-based row numbers, at most `SHOW` examples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from needs_rec.errors import DataError, clipped
from needs_rec.schema.columns import SHOW, Table


def _rows(positions: Sequence[int] | np.ndarray) -> str:
    shown = ", ".join(str(int(p) + 1) for p in positions[:SHOW])
    more = len(positions) - SHOW
    return shown + (f" (and {more} more)" if more > 0 else "")


def _shown(items: Sequence[str], total: int) -> str:
    more = total - min(len(items), SHOW)
    return ", ".join(items[:SHOW]) + (f" (and {more} more)" if more > 0 else "")


def _bad_values(where: str, values: pd.Series, mask: np.ndarray, allowed: str) -> str:
    rows = np.flatnonzero(mask)
    return bad_values_message(where, [(values.iloc[r], int(r)) for r in rows[:SHOW]], len(rows), allowed)


def bad_values_message(where: str, examples: Sequence[tuple[Any, int]], total: int, allowed: str) -> str:
    """`total` invalid values of a column, the first `SHOW` of `examples` (value, 0-based row) shown."""
    shown = [f"{_short(value)!r} (row {row + 1})" for value, row in examples[:SHOW]]
    return f"{where}: {total} invalid value(s) {_shown(shown, total)}; {allowed}"


def empty_required_message(where: str, column: str, rows: Sequence[int] | np.ndarray) -> str:
    """Rows (0-based positions) with no value in a required column."""
    return (
        f"{where}: {len(rows)} row(s) with an empty required value: rows {_rows(rows)}; "
        f"{column!r} is required in every row"
    )


def raise_if(errors: list[str]) -> None:
    """DataError with the first problem, the others appended, when there are any."""
    if errors:
        more = f" (and {len(errors) - 1} more problem(s): " + " | ".join(errors[1:]) + ")" if len(errors) > 1 else ""
        raise DataError(errors[0] + more)


def _short(value: Any, limit: int = 40) -> Any:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return float(value)
    return clipped(str(value), limit, "…")


def _examples_for(rows: np.ndarray, ids: pd.Series | None) -> tuple[str, ...]:
    if ids is None:
        return tuple(f"row {int(r) + 1}" for r in rows[:SHOW])
    return tuple(str(v).strip() for v in ids.iloc[rows[:SHOW]])


def _id_label(table: Table) -> str:
    return table.key or "rows"


def _n_rows(n: int) -> str:
    return f"{n:,} row" + ("" if n == 1 else "s")
