"""needs_rec.episodes: episodes from outcomes, the time split and the model-input frame."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from crm_factory import crm_frames

from needs_rec import episodes, schema
from needs_rec.errors import ConfigError, DataError

CODES = ["ch_a", "ch_b", "ch_c"]


def outcomes_frame(rows):
    df = pd.DataFrame(rows, columns=["contact_id", "occurred_on", "stage", "characteristic", "outcome"])
    df["occurred_on"] = pd.to_datetime(df["occurred_on"]).astype("datetime64[ns]")
    return df.astype({c: "str" for c in ("contact_id", "stage", "characteristic", "outcome")})


def test_build_episodes_hand_made_case():
    outcomes = outcomes_frame(
        [
            ("c2", "2024-01-02", "demo", "ch_b", "positive"),
            ("c1", "2024-01-02", "lead", "ch_a", "negative"),
            ("c1", "2024-01-01", "lead", "ch_a", "positive"),
            ("c1", "2024-01-01", "lead", "ch_b", "negative"),
            ("c1", "2024-01-01", "lead", "ch_b", "positive"),  # positive wins over the negative above
            ("c1", "2024-01-01", "demo", "ch_c", "negative"),
        ]
    )
    eps = episodes.build_episodes(outcomes, CODES)
    assert list(eps.keys.columns) == ["contact_id", "occurred_on", "stage"]
    assert eps.keys.astype({"occurred_on": str}).values.tolist() == [
        ["c1", "2024-01-01", "demo"],
        ["c1", "2024-01-01", "lead"],
        ["c1", "2024-01-02", "lead"],
        ["c2", "2024-01-02", "demo"],
    ]
    assert eps.keys["occurred_on"].dtype == "datetime64[ns]"
    assert eps.positives.dtype == np.uint8 and eps.negatives.dtype == np.uint8
    assert eps.positives.tolist() == [[0, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0]]
    assert eps.negatives.tolist() == [[0, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert eps.presented.tolist() == [[0, 0, 1], [1, 1, 0], [1, 0, 0], [0, 1, 0]]
    assert len(eps) == 4 and eps.characteristic_codes == tuple(CODES)


def test_build_episodes_rejects_codes_outside_the_vocabulary():
    outcomes = outcomes_frame([("c1", "2024-01-01", "lead", "ch_zz", "positive")])
    with pytest.raises(DataError, match="'ch_zz'"):
        episodes.build_episodes(outcomes, CODES)


def test_build_episodes_empty():
    eps = episodes.build_episodes(outcomes_frame([]), CODES)
    assert len(eps) == 0 and eps.positives.shape == (0, 3)


def keys_on(days, contacts=None):
    """Episode keys, one per entry of `days` (day offsets from 2024-01-01)."""
    dates = pd.Timestamp("2024-01-01") + pd.to_timedelta(days, unit="D")
    contacts = contacts or [f"c{i}" for i in range(len(days))]
    return pd.DataFrame(
        {
            "contact_id": pd.Series(contacts, dtype="str"),
            "occurred_on": pd.Series(dates).astype("datetime64[ns]"),
            "stage": "lead",
        }
    )


def test_time_split_orders_parts_by_date_and_never_splits_a_date():
    days = [d for d in range(10) for _ in range(3)]  # 10 dates × 3 episodes
    split = episodes.time_split(keys_on(days), validation_fraction=0.2, test_fraction=0.2)
    dates = keys_on(days)["occurred_on"].to_numpy()
    assert dates[split.train].max() < dates[split.validation].min()
    assert dates[split.validation].max() < dates[split.test].min()
    assert (split.train.sum(), split.validation.sum(), split.test.sum()) == (18, 6, 6)
    assert (split.train | split.validation | split.test).all()
    assert not (split.train & split.validation).any() and not (split.validation & split.test).any()
    assert split.validation_start == dt.date(2024, 1, 7) and split.test_start == dt.date(2024, 1, 9)
    assert split.train_index.tolist() == list(range(18))
    summary = split.summary()
    assert summary["validation_start"] == "2024-01-07" and summary["test_episodes"] == 6


def test_time_split_uses_the_order_of_dates_not_of_rows():
    days = [9, 0, 5, 1, 8, 2, 7, 3, 6, 4]
    split = episodes.time_split(keys_on(days), validation_fraction=0.2, test_fraction=0.2)
    assert np.array(days)[split.test].tolist() == [9, 8]
    assert np.array(days)[split.validation].tolist() == [7, 6]


def test_time_split_cutoff_drops_episodes_on_and_after_it():
    days = list(range(20))
    split = episodes.time_split(keys_on(days), validation_fraction=0.2, test_fraction=0.2, cutoff="2024-01-11")
    kept = split.train | split.validation | split.test
    assert kept.tolist() == [d < 10 for d in days]
    assert split.test_start < dt.date(2024, 1, 11) and split.cutoff == dt.date(2024, 1, 11)
    assert not split.cold_start[~kept].any()


def test_time_split_with_a_held_out_window_as_the_test_part():
    days = list(range(10))  # 2024-01-01 … 2024-01-10, one episode each
    split = episodes.time_split(keys_on(days), validation_fraction=0.25, test_fraction=0.3, test_start="2024-01-09")
    assert np.array(days)[split.test].tolist() == [8, 9]  # the window, whatever test_fraction says
    assert np.array(days)[split.validation].tolist() == [6, 7]  # 25% of the 8 episodes before it
    assert split.test_start == dt.date(2024, 1, 9)
    with pytest.raises(DataError, match="leaves 1 distinct date"):
        episodes.time_split(keys_on(days), validation_fraction=0.2, test_fraction=0.2, test_start="2024-01-02")


def test_time_split_each_part_gets_at_least_one_date():
    split = episodes.time_split(keys_on([0, 0, 0, 0, 0, 0, 1, 2]), validation_fraction=0.01, test_fraction=0.01)
    assert (split.train.sum(), split.validation.sum(), split.test.sum()) == (6, 1, 1)


def test_time_split_with_too_few_dates_is_a_clear_error():
    with pytest.raises(DataError, match=r"cannot split 4 episode\(s\) on 2 distinct date\(s\)"):
        episodes.time_split(keys_on([0, 0, 1, 1]), validation_fraction=0.2, test_fraction=0.2)
    with pytest.raises(DataError, match="before the cutoff"):
        episodes.time_split(keys_on(list(range(10))), validation_fraction=0.2, test_fraction=0.2, cutoff="2024-01-02")


@pytest.mark.parametrize(("validation", "test"), [(0, 0.2), (0.5, 0.5), (-0.1, 0.2), (0.2, 1.0)])
def test_time_split_rejects_bad_fractions(validation, test):
    with pytest.raises(ConfigError, match="validation_fraction and test_fraction"):
        episodes.time_split(keys_on(list(range(10))), validation_fraction=validation, test_fraction=test)


def test_cold_start_flags_organizations_first_seen_after_training():
    # days 0..7 train, 8 validation, 9 test (10 dates, 10% + 10%)
    contacts = ["a1", "a1", "b1", "a1", "a1", "a2", "a1", "a1", "c1", "a2", "d1"]
    days = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9]
    orgs = pd.DataFrame({"contact_id": ["a1", "a2", "b1", "c1", "d1"], "org_id": ["A", "A", "B", "C", "D"]})
    split = episodes.time_split(keys_on(days, contacts), validation_fraction=0.1, test_fraction=0.1, contacts=orgs)
    assert split.validation_start == dt.date(2024, 1, 9)
    # c1 (org C) first seen in validation, d1 (org D) in test; a2 is new but its org A was seen in train
    assert split.cold_start.tolist() == [False] * 8 + [True, False, True]
    as_series = orgs.set_index("contact_id")["org_id"]
    again = episodes.time_split(keys_on(days, contacts), validation_fraction=0.1, test_fraction=0.1, contacts=as_series)
    assert again.cold_start.tolist() == split.cold_start.tolist()
    assert split.summary()["cold_start_validation_episodes"] == 1 and split.summary()["cold_start_test_episodes"] == 1


def test_cold_start_without_a_map_is_per_contact():
    contacts = ["a1"] * 8 + ["a2", "a1"]
    split = episodes.time_split(keys_on(list(range(10)), contacts), validation_fraction=0.1, test_fraction=0.1)
    assert split.cold_start.tolist() == [False] * 8 + [True, False]


@pytest.fixture
def crm(tiny_dictionaries):
    frames = crm_frames(tiny_dictionaries)
    frames["organizations"].loc[0, ["employees", "region", "client_since"]] = ["", "", ""]
    frames["organizations"].loc[2, "client_since"] = "2019-02-03"
    frames["contacts"].loc[0, "department"] = ""
    return schema.validate(frames, tiny_dictionaries)[0]


def test_model_inputs_columns_types_and_missing(crm):
    keys = pd.DataFrame(
        {
            "contact_id": ["c1", "c3", "c7"],  # c1 and c7 are contacts of o1, c3 of o3
            "stage": [" Demo", "lead", "deal"],
            "occurred_on": pd.to_datetime(["2024-02-01", "2024-02-02", "2024-02-03"]),
        }
    )
    frame = episodes.model_inputs(keys, crm)
    assert tuple(frame.columns) == schema.MODEL_INPUT_NAMES
    for name in schema.NUMERIC_INPUTS:
        assert frame[name].dtype == np.float32
    for name in schema.STRING_INPUTS:
        assert isinstance(frame[name].dtype, pd.StringDtype) and not frame[name].isna().any()
    assert frame["stage"].tolist() == ["demo", "lead", "deal"]
    assert frame["occurred_on"].tolist() == ["2024-02-01", "2024-02-02", "2024-02-03"]
    assert np.isnan(frame.loc[0, "employees"]) and frame.loc[1, "employees"] == 30.0
    assert frame["region"].tolist() == ["", "msk", ""]
    assert frame["client_since"].tolist() == ["", "2019-02-03", ""]
    assert frame.loc[1, "founded_year"] == 1997.0
    assert frame["department"].tolist() == ["", "it", "it"]
    assert frame.loc[1, "products_owned"] == "crm;erp"
    assert frame.loc[1, "position"] == "buyer"


def test_model_inputs_without_dates_and_with_unknown_contacts(crm):
    keys = pd.DataFrame({"contact_id": ["c2", "ghost", "c4", "nobody"], "stage": ["lead"] * 4}, index=[10, 11, 12, 13])
    with pytest.raises(DataError, match=r"2 row.*'ghost', 'nobody'"):
        episodes.model_inputs(keys, crm)
    frame = episodes.model_inputs(keys, crm, skip_unknown=True)
    assert frame.index.tolist() == [10, 12]
    assert frame["occurred_on"].tolist() == ["", ""]
    assert tuple(frame.columns) == schema.MODEL_INPUT_NAMES


def test_model_inputs_of_episode_keys_line_up(crm, tiny_dictionaries):
    eps = episodes.build_episodes(crm.outcomes, tiny_dictionaries.characteristic_codes)
    frame = episodes.model_inputs(eps.keys, crm)
    assert len(frame) == len(eps) and frame.index.equals(eps.keys.index)
    assert frame["stage"].tolist() == eps.keys["stage"].tolist()
    positions = crm.contacts.set_index("contact_id")["position"]
    assert frame["position"].tolist() == positions.loc[eps.keys["contact_id"]].tolist()
