"""How validation messages show rows and values: 1-based row numbers, at most `SHOW` examples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from needs_rec.schema.columns import SHOW, Table


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



def _n_rows(n: int) -> str:
    return f"{n:,} row" + ("" if n == 1 else "s")
