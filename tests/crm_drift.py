"""Drift injected into a CRM export's outcomes, for the retrain gate's tests and bench/retrain_gate.py.

    from crm_drift import recent_start, shuffle_recent, shift_recent

    since = recent_start(outcomes, 0.3)                     # the date after which 30% of outcome rows lie
    broken = shuffle_recent(outcomes, since, seed=1)        # characteristic column shuffled after `since`
    shifted = shift_recent(outcomes, "ch_x", since, share=0.6, seed=1, stages=[...])  # ch_x became popular

Both work on the raw outcomes table as `training.sample` writes it (text columns).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd


def recent_start(outcomes: pd.DataFrame, share: float) -> str:
    """The ISO date on/after which about `share` of the outcome rows lie."""
    dates = np.sort(outcomes["occurred_on"].to_numpy().astype(str))
    return str(dates[int(len(dates) * (1 - share))])


def shuffle_recent(outcomes: pd.DataFrame, since: str, *, seed: int) -> pd.DataFrame:
    """Outcomes with the `characteristic` column permuted across every row on/after `since` (tail and window alike).

    Each characteristic keeps its count, but which contact it resonated with becomes noise: nothing
    learnable is left in the newest months, so no model should beat popularity there.
    """
    out = outcomes.copy()
    recent = np.flatnonzero(out["occurred_on"].astype(str).to_numpy() >= since)
    rng = np.random.default_rng(seed)
    values = out["characteristic"].to_numpy().copy()
    values[recent] = values[rng.permutation(recent)]
    out["characteristic"] = values
    # A permutation can put one characteristic twice into an episode: keep one row per cell.
    return out.drop_duplicates(["contact_id", "occurred_on", "stage", "characteristic"], keep="first")


def shift_recent(
    outcomes: pd.DataFrame, characteristic: str, since: str, *, share: float, seed: int, stages: Iterable[str]
) -> pd.DataFrame:
    """Outcomes where `characteristic` resonates in `share` of the episodes on/after `since` at `stages`.

    A genuine recent shift (it became popular): for the chosen episodes an existing row for it is
    made positive, or a positive row is added.
    """
    out = outcomes.copy()
    keys = ["contact_id", "occurred_on", "stage"]
    episodes = out.loc[(out["occurred_on"].astype(str) >= since) & out["stage"].isin(list(stages)), keys]
    episodes = episodes.drop_duplicates().reset_index(drop=True)
    rng = np.random.default_rng(seed)
    chosen = episodes[rng.random(len(episodes)) < share]
    mark = out[keys].merge(chosen.assign(_chosen=True), on=keys, how="left")["_chosen"].fillna(False).to_numpy(bool)
    existing = mark & (out["characteristic"] == characteristic).to_numpy()
    out.loc[existing, "outcome"] = "positive"
    have = out.loc[existing, keys].drop_duplicates()
    missing = chosen.merge(have.assign(_have=True), on=keys, how="left")
    missing = missing[missing["_have"].isna()].drop(columns="_have")
    added = missing.assign(characteristic=characteristic, outcome="positive")
    extra = [c for c in out.columns if c not in added.columns]
    for column in extra:
        added[column] = ""
    return pd.concat([out, added[out.columns]], ignore_index=True)
