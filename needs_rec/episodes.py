"""Episodes, the time split and the model-input frame.

An episode is one (contact_id, occurred_on, stage) of the validated outcomes (contract §2). Its
label is the set of characteristics with a positive outcome in it; characteristics presented
with a negative outcome (and no positive one) are its explicit negatives. Episodes are split by
time, train < validation < test, never shuffled across time; cold-start episodes are those of
organizations first seen after the training period. `model_inputs` joins contacts and
organizations into the raw fields the model takes (`schema.MODEL_INPUT_NAMES`), for training
and for batch scoring alike. Everything is vectorised: no Python loop over rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from needs_rec import schema
from needs_rec.dictionaries import normalize_code
from needs_rec.errors import ConfigError, DataError, preview

KEY_COLUMNS: tuple[str, ...] = ("contact_id", schema.OCCURRED_ON, schema.STAGE)


@dataclass(frozen=True)
class Episodes:
    """Episodes in (occurred_on, contact_id, stage) order and their label matrices.

    `keys`: DataFrame [contact_id, occurred_on (datetime64[ns]), stage], RangeIndex.
    `positives[i, j]` = 1 when characteristic j (vocabulary order) had a positive outcome in
    episode i; `negatives[i, j]` = 1 when it was presented with a negative outcome and no positive
    one. Both uint8 of shape (len(keys), len(characteristic_codes)).
    """

    keys: pd.DataFrame
    positives: np.ndarray
    negatives: np.ndarray
    characteristic_codes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def presented(self) -> np.ndarray:
        """uint8 (n, C): 1 where the characteristic was put to the contact in the episode."""
        return self.positives | self.negatives


def build_episodes(outcomes: pd.DataFrame, characteristic_codes: Sequence[str]) -> Episodes:
    """Group validated outcome rows (schema.CrmData.outcomes) into episodes.

    Episodes are sorted by occurred_on, then contact_id, then stage (both as text). Raises
    DataError for a characteristic not in `characteristic_codes` (validation drops those rows, so
    this means the outcomes and the vocabulary do not belong together).
    """
    codes = tuple(characteristic_codes)
    n_char = len(codes)
    char_index = schema.lookup(outcomes["characteristic"], codes)
    if (char_index < 0).any():
        unknown = pd.unique(outcomes["characteristic"].to_numpy()[char_index < 0])
        raise DataError(
            f"outcomes column 'characteristic': code(s) {preview(unknown)} are not in the output vocabulary "
            f"({n_char} characteristics); validate the outcomes against the same dictionaries"
        )
    if outcomes.empty:
        keys = pd.DataFrame(
            {
                "contact_id": pd.Series([], dtype="str"),
                schema.OCCURRED_ON: pd.Series([], dtype="datetime64[ns]"),
                schema.STAGE: pd.Series([], dtype="str"),
            }
        )
        empty = np.zeros((0, n_char), dtype=np.uint8)
        return Episodes(keys, empty, empty.copy(), codes)

    contact, contacts = pd.factorize(outcomes["contact_id"], sort=True)
    stage, stages = pd.factorize(outcomes[schema.STAGE], sort=True)
    day = outcomes[schema.OCCURRED_ON].to_numpy().astype("datetime64[D]").astype(np.int64)
    day0 = day.min()
    n_contacts, n_stages = len(contacts), len(stages)
    # One int64 per row whose order is (date, contact, stage): sorting it sorts the episodes.
    key = ((day - day0) * n_contacts + contact) * n_stages + stage
    unique_keys, episode = np.unique(key, return_inverse=True)

    positive = (outcomes["outcome"] == schema.POSITIVE).to_numpy()
    positives = np.zeros((len(unique_keys), n_char), dtype=np.uint8)
    negatives = np.zeros_like(positives)
    positives[episode[positive], char_index[positive]] = 1
    negatives[episode[~positive], char_index[~positive]] = 1
    negatives &= 1 - positives  # a positive outcome in the same episode wins

    stage_of = unique_keys % n_stages
    contact_of = (unique_keys // n_stages) % n_contacts
    day_of = unique_keys // (n_stages * n_contacts) + day0
    keys = pd.DataFrame(
        {
            "contact_id": pd.Series(np.asarray(contacts, dtype=object)[contact_of], dtype="str"),
            schema.OCCURRED_ON: pd.Series(day_of.astype("datetime64[D]").astype("datetime64[ns]")),
            schema.STAGE: pd.Series(np.asarray(stages, dtype=object)[stage_of], dtype="str"),
        }
    )
    return Episodes(keys, positives, negatives, codes)


@dataclass(frozen=True)
class Split:
    """A time split of episodes: boolean masks over all episodes (those on/after the cutoff are in none).

    train < validation_start ≤ validation < test_start ≤ test, by occurred_on; one date is never in
    two parts. `cold_start[i]`: episode i's organization was first seen (first episode of any of
    its contacts) on or after `validation_start`, i.e. after the training period.
    """

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    validation_start: dt.date
    test_start: dt.date
    cold_start: np.ndarray
    cutoff: dt.date | None = None

    @property
    def train_index(self) -> np.ndarray:
        return np.flatnonzero(self.train)

    @property
    def validation_index(self) -> np.ndarray:
        return np.flatnonzero(self.validation)

    @property
    def test_index(self) -> np.ndarray:
        return np.flatnonzero(self.test)

    def summary(self) -> dict[str, Any]:
        """Sizes and boundary dates, JSON-able (for the manifest and the report)."""
        return {
            "train_episodes": int(self.train.sum()),
            "validation_episodes": int(self.validation.sum()),
            "test_episodes": int(self.test.sum()),
            "validation_start": self.validation_start.isoformat(),
            "test_start": self.test_start.isoformat(),
            "cutoff": self.cutoff.isoformat() if self.cutoff else None,
            "cold_start_validation_episodes": int((self.cold_start & self.validation).sum()),
            "cold_start_test_episodes": int((self.cold_start & self.test).sum()),
        }


def time_split(
    keys: pd.DataFrame,
    *,
    validation_fraction: float,
    test_fraction: float,
    cutoff: dt.date | str | None = None,
    contacts: pd.DataFrame | pd.Series | Mapping[str, str] | None = None,
    test_start: dt.date | str | None = None,
) -> Split:
    """Split episodes by date: train < validation < test.

    `test_start` (retraining): the test part is every kept episode on or after this date (the
    gate's held-out window) and `test_fraction` is not used; validation is then the
    `validation_fraction` share of the episodes before it.

    Episodes on or after `cutoff` are dropped (in no part). The remaining distinct dates are cut
    where the share of episodes before the cut is nearest 1 - validation_fraction - test_fraction
    and 1 - test_fraction, so each part gets about its share of episodes, at least one date, and a
    date never spans two parts. `contacts` maps contact_id → org_id (a contacts DataFrame, a Series
    or a dict) for the cold-start flags; without it each contact counts as its own organization.
    Raises DataError, naming the sizes, when a part would be empty (fewer than 3 distinct dates).
    """
    if not (0 < validation_fraction < 1 and 0 < test_fraction < 1 and validation_fraction + test_fraction < 1):
        raise ConfigError(
            "validation_fraction and test_fraction must each be in (0, 1) and sum to less than 1; "
            f"received {validation_fraction!r} and {test_fraction!r}"
        )
    dates = pd.to_datetime(keys[schema.OCCURRED_ON]).to_numpy().astype("datetime64[D]")
    n = len(dates)
    cut = _as_day(cutoff)
    kept = dates < cut if cut is not None else np.ones(n, dtype=bool)
    uniq, counts = np.unique(dates[kept], return_counts=True)
    if len(uniq) < 3:
        raise DataError(
            f"cannot split {int(kept.sum())} episode(s) on {len(uniq)} distinct date(s)"
            + (f" before the cutoff {cut}" if cut is not None else "")
            + " into train, validation and test by time; at least 3 distinct dates are needed"
        )
    before = np.concatenate([[0], np.cumsum(counts)])  # before[i]: episodes on the first i dates
    total = before[-1]
    # Boundaries at the dates whose share of episodes before them is nearest the quantiles, each
    # part keeping at least one date.
    if test_start is not None:
        i_test = int(np.searchsorted(uniq, _as_day(test_start)))
        if not 2 <= i_test < len(uniq):
            raise DataError(f"the held-out window from {_as_day(test_start)} leaves {i_test} distinct date(s) "
                            "before it and needs at least 2, and at least one date in it")
        lo, hi = 1, i_test - 1
        i_val = lo + int(np.argmin(np.abs(before[lo : hi + 1] - before[i_test] * (1 - validation_fraction))))
    else:
        lo, hi = 1, len(uniq) - 2
        i_val = lo + int(np.argmin(np.abs(before[lo : hi + 1] - total * (1 - validation_fraction - test_fraction))))
        lo, hi = i_val + 1, len(uniq) - 1
        i_test = lo + int(np.argmin(np.abs(before[lo : hi + 1] - total * (1 - test_fraction))))
    val_start, test_start = uniq[i_val], uniq[i_test]
    train = kept & (dates < val_start)
    validation = kept & (dates >= val_start) & (dates < test_start)
    test = kept & (dates >= test_start)
    sizes = {"train": int(train.sum()), "validation": int(validation.sum()), "test": int(test.sum())}
    if min(sizes.values()) == 0:  # cannot happen with ≥ 3 dates, kept as a guard
        raise DataError(f"time split would leave a part empty: {sizes}")

    org = _org_codes(keys["contact_id"], contacts)
    day = dates.astype(np.int64)
    first_seen = np.full(int(org.max(initial=-1)) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first_seen, org[kept], day[kept])
    cold = kept & (first_seen[org] >= val_start.astype(np.int64))
    return Split(
        train=train,
        validation=validation,
        test=test,
        validation_start=_to_date(val_start),
        test_start=_to_date(test_start),
        cold_start=cold,
        cutoff=_to_date(cut) if cut is not None else None,
    )


def _as_day(value: dt.date | str | None) -> np.datetime64 | None:
    if value is None:
        return None
    try:
        return np.datetime64(pd.Timestamp(value).date(), "D")
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cutoff must be an ISO date YYYY-MM-DD; received {value!r}") from exc


def _to_date(day: np.datetime64) -> dt.date:
    return pd.Timestamp(day).date()


def _org_codes(contact_ids: pd.Series, contacts: Any) -> np.ndarray:
    """An integer per episode naming its contact's organization (the contact itself when unmapped)."""
    if contacts is None:
        return pd.factorize(contact_ids)[0]
    if isinstance(contacts, pd.DataFrame):
        ids, orgs = contacts["contact_id"], contacts["org_id"]
    elif isinstance(contacts, pd.Series):
        ids, orgs = contacts.index.to_series(), contacts
    else:
        mapping = dict(contacts)
        ids, orgs = pd.Series(list(mapping), dtype="str"), pd.Series(list(mapping.values()), dtype="str")
    org_code = pd.factorize(pd.Series(orgs).astype("str"))[0]
    position = schema.lookup(contact_ids, ids)
    code = np.where(position >= 0, org_code[np.maximum(position, 0)], -1)
    unmapped = code < 0
    if unmapped.any():  # a contact without an org counts as its own organization
        code[unmapped] = len(org_code) + pd.factorize(contact_ids[unmapped])[0]
    return code


def model_inputs(keys: pd.DataFrame, data: schema.CrmData, *, skip_unknown: bool = False) -> pd.DataFrame:
    """The model's raw inputs for each (contact_id, stage[, occurred_on]) row of `keys`.

    Columns exactly `schema.MODEL_INPUT_NAMES`: codes and `;`-joined multi fields as normalised
    strings ("" when missing; the stage is normalised here too), numbers float32 (NaN when
    missing), dates as ISO 'YYYY-MM-DD' strings ("" when missing); `occurred_on` from `keys`, ""
    when `keys` has no such column. The index is `keys`' index. Raises DataError naming (up to 5)
    contact ids not in `data.contacts`, unless `skip_unknown`, which leaves those rows out (check
    the returned index to see which).
    """
    contact_ids = keys["contact_id"].astype("str").fillna("").str.strip()
    contacts, orgs = data.contacts, data.organizations
    c_pos = schema.lookup(contact_ids, contacts["contact_id"])
    unknown = c_pos < 0
    index = keys.index
    if unknown.any():
        if not skip_unknown:
            missing = pd.unique(contact_ids.to_numpy()[unknown])
            rows = preview([int(r) + 1 for r in np.flatnonzero(unknown)])  # as batch names its other bad rows
            raise DataError(
                f"{int(unknown.sum())} row(s) name a contact_id that is not in contacts: {preview(missing)} "
                f"(row(s) {rows}); "
                "every contact_id must be a contact_id of the contacts table"
            )
        c_pos = c_pos[~unknown]
        index = index[~unknown]
        keys = keys.loc[~unknown]
    o_pos = schema.lookup(contacts["org_id"].iloc[c_pos], orgs["org_id"])
    if (o_pos < 0).any():
        lost = pd.unique(contacts["org_id"].to_numpy()[c_pos][o_pos < 0])
        raise DataError(f"contacts refer to org_id(s) not in organizations: {preview(lost)}; validate the data first")

    columns: dict[str, Any] = {}
    for col in schema.MODEL_INPUTS:
        name = col.name
        if name == schema.STAGE:
            values: Any = _normalized_codes(keys[schema.STAGE])
        elif name == schema.OCCURRED_ON:
            values = _iso(keys[name]) if name in keys.columns else np.full(len(keys), "", dtype=object)
        elif name in contacts.columns and name != "org_id":
            values = _column_values(contacts[name], c_pos, col)
        else:
            values = _column_values(orgs[name], o_pos, col)
        if col.kind in (schema.Kind.NUMBER, schema.Kind.YEAR):
            columns[name] = pd.Series(np.asarray(values, dtype=np.float32), index=index)
        else:
            columns[name] = pd.Series(values, index=index, dtype="str")
    return pd.DataFrame(columns, index=index)


def _column_values(series: pd.Series, positions: np.ndarray, col: schema.Column) -> np.ndarray:
    if col.kind is schema.Kind.DATE:
        series = _iso(series)
    values = series.to_numpy()
    taken = values[positions] if len(positions) else values[:0]
    if col.kind in (schema.Kind.NUMBER, schema.Kind.YEAR):
        return taken.astype(np.float32)
    taken = taken.astype(object)
    taken[pd.isna(taken)] = ""
    return taken


def _iso(series: pd.Series) -> pd.Series:
    """Dates → 'YYYY-MM-DD' strings ("" when missing); text is kept as it is (stripped)."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return series.dt.strftime("%Y-%m-%d").fillna("").astype("str")
    return series.astype("str").fillna("").str.strip()


def _normalized_codes(series: pd.Series) -> np.ndarray:
    codes, uniques = pd.factorize(series.astype("str").fillna(""))
    normalized = np.array([normalize_code(u) for u in uniques] + [""], dtype=object)
    return normalized[codes]
