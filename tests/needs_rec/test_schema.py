"""needs_rec.schema.validate: normalised frames and the report, on in-memory tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from crm_factory import PERSONAL, crm_frames

from needs_rec import schema
from needs_rec.errors import DataError


@pytest.fixture
def frames(tiny_dictionaries):
    return crm_frames(tiny_dictionaries)


def test_values_are_normalised(frames, tiny_dictionaries):
    frames["contacts"].loc[0, ["position", "interests"]] = [" CEO ", " Speed;;save_money ; speed"]
    frames["outcomes"].loc[0, ["stage", "outcome", "characteristic"]] = [" DEMO", "Positive ", "CH_Price"]
    frames["outcomes"].loc[1, "occurred_on"] = "2024-01-01T15:30:00+03:00"
    crm, report = schema.validate(frames, tiny_dictionaries)
    assert crm.contacts.loc[0, ["position", "interests"]].tolist() == ["ceo", "save_money;speed"]
    assert crm.outcomes.loc[0, ["stage", "outcome", "characteristic"]].tolist() == ["demo", "positive", "ch_price"]
    assert crm.outcomes.loc[1, "occurred_on"] == pd.Timestamp("2024-01-01")
    assert crm.organizations.loc[1, "industry"] == "retail"  # written " RETAIL " by the factory
    assert report.warnings_count == 0


def test_dtypes_and_missing_encoding(frames, tiny_dictionaries):
    frames["organizations"].loc[0, ["region", "employees", "founded_year"]] = ["", "", ""]
    crm, _ = schema.validate(frames, tiny_dictionaries)
    orgs = crm.organizations
    assert list(orgs.columns) == [c.name for c in schema.ORGANIZATIONS.columns]
    assert orgs["employees"].dtype == np.float64 and np.isnan(orgs.loc[0, "employees"])
    assert orgs["founded_year"].dtype == np.float64 and np.isnan(orgs.loc[0, "founded_year"])
    assert orgs.loc[1, "founded_year"] == 1996.0
    assert orgs["client_since"].dtype == "datetime64[ns]" and pd.isna(orgs.loc[1, "client_since"])
    assert orgs.loc[0, "region"] == "" and not orgs["region"].isna().any()
    assert crm.outcomes["occurred_on"].dtype == "datetime64[ns]"
    assert set(crm.outcomes["outcome"]) == {"positive", "negative"}


def test_personal_data_never_reaches_crm_data_or_report(frames, tiny_dictionaries):
    crm, report = schema.validate(frames, tiny_dictionaries)
    personal = {c.lower() for cols in PERSONAL.values() for c in cols}
    for df in (crm.organizations, crm.contacts, crm.outcomes):
        assert not personal & {c.lower() for c in df.columns}
        assert "notes" not in df.columns
    text = str(report) + json.dumps(report.to_dict(), ensure_ascii=False)
    for value in ("Иван", "example.ru", "+7 900", "Ромашка", "7701234567"):
        assert value not in text


def test_in_memory_typed_columns_are_accepted(frames, tiny_dictionaries):
    expected, _ = schema.validate(crm_frames(tiny_dictionaries), tiny_dictionaries)
    orgs = frames["organizations"]
    orgs["employees"] = orgs["employees"].astype(int)
    orgs["client_since"] = pd.to_datetime(orgs["client_since"].replace("", None))
    contacts = frames["contacts"]
    contacts["interests"] = contacts["interests"].str.split(";").astype(object)
    crm, _ = schema.validate(frames, tiny_dictionaries)
    pd.testing.assert_frame_equal(crm.organizations, expected.organizations)
    pd.testing.assert_frame_equal(crm.contacts, expected.contacts)


def test_unknown_code_is_kept_normalised_and_reported(frames, tiny_dictionaries):
    frames["contacts"].loc[[0, 1], "position"] = ["Astronaut", "astronaut "]
    crm, report = schema.validate(frames, tiny_dictionaries)
    assert crm.contacts.loc[:1, "position"].tolist() == ["astronaut", "astronaut"]
    (warning,) = report.warnings
    assert (warning.kind, warning.file, warning.column) == ("unknown_code", "contacts.csv", "position")
    assert warning.count == 2
    assert warning.examples == ("astronaut",)


def test_outcome_rows_for_unknown_contacts_are_dropped(frames, tiny_dictionaries):
    frames["outcomes"].loc[5, "contact_id"] = "ghost"
    crm, report = schema.validate(frames, tiny_dictionaries)
    assert len(crm.outcomes) == len(frames["outcomes"]) - 1
    assert "ghost" not in set(crm.outcomes["contact_id"])
    assert report.outcome_rows_dropped == 1 and report.outcome_rows_kept == len(crm.outcomes)
    assert report.warnings[0].kind == "dropped_rows" and report.warnings[0].examples == ("ghost",)


def test_report_counts_episodes_and_dates(tiny_dictionaries):
    frames = crm_frames(tiny_dictionaries)
    frames["outcomes"] = pd.DataFrame(
        {
            "contact_id": ["c1", "c1", "c1", "c2"],
            "occurred_on": ["2024-01-01", "2024-01-01", "2024-01-08", "2024-01-08"],
            "stage": ["lead", "lead", "lead", "demo"],
            "characteristic": ["ch_price", "ch_cloud", "ch_price", "ch_price"],
            "outcome": ["positive", "negative", "negative", "negative"],
        }
    )
    _, report = schema.validate(frames, tiny_dictionaries)
    assert (report.episodes, report.positive_episodes, report.contacts_with_episodes) == (3, 1, 2)
    assert (report.date_min, report.date_max) == ("2024-01-01", "2024-01-08")
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["episodes"] == 3 and as_dict["date_range"] == ["2024-01-01", "2024-01-08"]
    assert as_dict["rows"] == {"organizations": 6, "contacts": 12, "outcomes": 4}
    assert "episodes (contact, date, stage): 3, with a positive outcome: 1" in str(report)


def test_report_lines_and_dict_agree_on_warnings(frames, tiny_dictionaries):
    frames["organizations"].loc[0, "region"] = ""
    frames["organizations"] = frames["organizations"].drop(columns=["legal_form"])
    crm, report = schema.validate(frames, tiny_dictionaries)
    assert report.warnings_count == 2
    kinds = [(w["kind"], w["column"], w["count"]) for w in report.to_dict()["warnings"]]
    assert kinds == [("missing_value", "region", 1), ("absent_column", "legal_form", 6)]
    assert report.lines()[-1] == "OK with 2 warning(s)"
    assert crm.organizations["legal_form"].eq("").all()  # absent column: present, all missing


@pytest.mark.parametrize(
    ("table", "column", "value", "fragment"),
    [
        ("organizations", "founded_year", "1999.5", "a whole year"),
        ("organizations", "employees", "inf", "'inf' (row 3)"),
        ("organizations", "employees", "1,5", "'1,5' (row 3)"),
        ("organizations", "client_since", "0001-01-01", "'0001-01-01' (row 3)"),
        ("outcomes", "occurred_on", "15.01.2024", "'15.01.2024' (row 3)"),
    ],
)
def test_bad_values_are_errors(frames, tiny_dictionaries, table, column, value, fragment):
    frames[table].loc[2, column] = value
    with pytest.raises(DataError) as caught:
        schema.validate(frames, tiny_dictionaries)
    message = str(caught.value)
    assert f"{table}.csv column {column!r}" in message and fragment in message


def test_error_shows_at_most_five_offenders(frames, tiny_dictionaries):
    frames["outcomes"].loc[:7, "outcome"] = "maybe"
    with pytest.raises(DataError) as caught:
        schema.validate(frames, tiny_dictionaries)
    message = str(caught.value)
    assert "8 invalid value(s)" in message and "(row 5)" in message and "(row 6)" not in message
    assert "(and 3 more)" in message


def test_missing_table_and_source_name(frames, tiny_dictionaries):
    del frames["contacts"]
    with pytest.raises(DataError, match=r"missing file contacts\.csv"):
        schema.validate(frames, tiny_dictionaries)


def test_source_attr_names_the_file_in_messages(frames, tiny_dictionaries):
    frames["organizations"].attrs["source"] = "orgs_export.parquet"
    frames["organizations"].loc[0, "employees"] = "-1"
    with pytest.raises(DataError, match=r"orgs_export\.parquet column 'employees'"):
        schema.validate(frames, tiny_dictionaries)


def test_lookup_and_isin():
    values = pd.Series(["b", "x", None, "a"], dtype="str")
    assert schema.lookup(values, ["a", "b"]).tolist() == [1, -1, -1, 0]
    assert schema.isin(values, pd.Series(["a", "b"], dtype="str")).tolist() == [True, False, False, True]
    assert schema.lookup(["a"], pd.Index(["z", "a"])).tolist() == [1]


def test_select_columns_matches_headers_case_insensitively():
    df = pd.DataFrame({" Contact_ID": ["c1"], "STAGE": ["demo"], "EMAIL": ["x@y.z"], "misc": [1]})
    out = schema.select_columns(df, "requests", "requests.csv")
    assert list(out.columns) == ["contact_id", "stage"]
    assert out.attrs == {
        "source": "requests.csv",
        "personal_columns_dropped": ["email"],
        "extra_columns_ignored": ["misc"],
    }
    assert schema.is_personal(" Full_Name ") and not schema.is_personal("position")


def test_a_date_out_of_range_and_a_negative_amount_say_what_is_allowed(frames, tiny_dictionaries):
    """'2300-01-01' is an ISO date, so 'allowed: an ISO date such as 2024-03-15' did not say why it was refused."""
    frames["outcomes"].loc[0, "occurred_on"] = "2300-01-01"
    frames["organizations"].loc[0, "revenue_mln"] = "-5"
    with pytest.raises(DataError) as caught:
        schema.validate(frames, tiny_dictionaries)
    assert "'2300-01-01' (row 1); allowed: an ISO date YYYY-MM-DD such as 2024-03-15, from 1678-01-01 to 2261-12-31" \
        in str(caught.value)
    assert "'revenue_mln': 1 invalid value(s) -5.0 (row 1); allowed: a number ≥ 0 (counts and amounts" \
        in str(caught.value)


def test_fingerprint_ignores_row_order_and_an_exact_repeat_but_not_a_change(frames, tiny_dictionaries):
    """One outcome row exported twice changed the fingerprint although training counts it once, so a
    retrain trained and promoted an identical clone and pushed the real rollback target out of `previous`."""
    base = schema.validate(frames, tiny_dictionaries)[0].fingerprint()
    outcomes = frames["outcomes"]
    shuffled = dict(frames, outcomes=outcomes.sample(frac=1.0, random_state=3).reset_index(drop=True))
    assert schema.validate(shuffled, tiny_dictionaries)[0].fingerprint() == base
    repeated = dict(frames, outcomes=pd.concat([outcomes, outcomes.iloc[[0]]], ignore_index=True))
    assert schema.validate(repeated, tiny_dictionaries)[0].fingerprint() == base
    changed = outcomes.copy()
    changed.loc[0, "outcome"] = "negative" if changed.loc[0, "outcome"] == "positive" else "positive"
    assert schema.validate(dict(frames, outcomes=changed), tiny_dictionaries)[0].fingerprint() != base
