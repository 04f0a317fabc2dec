"""needs_rec.schema.validate(lenient=True): invalid rows left out with a warning, the rest served."""

from __future__ import annotations

import pandas as pd
import pytest
from crm_factory import N_CONTACTS, N_ORGS, crm_frames

from needs_rec import schema
from needs_rec.errors import DataError


@pytest.fixture
def frames(tiny_dictionaries):
    return crm_frames(tiny_dictionaries)


def _left_out(report: schema.ValidationReport, file: str) -> schema.ValidationWarning:
    (found,) = [w for w in report.warnings if w.kind == "invalid_rows" and w.file == file]
    return found


def test_clean_data_gives_what_strict_validation_gives(frames, tiny_dictionaries):
    strict, strict_report = schema.validate(frames, tiny_dictionaries)
    lenient, report = schema.validate(frames, tiny_dictionaries, lenient=True)
    for name in ("organizations", "contacts", "outcomes"):
        pd.testing.assert_frame_equal(getattr(lenient, name), getattr(strict, name))
    assert report.to_dict() == strict_report.to_dict()


def test_an_invalid_organization_goes_with_its_contacts_and_their_outcomes(frames, tiny_dictionaries):
    frames["organizations"].loc[0, "employees"] = "abc"  # o1: contacts c1 and c7
    with pytest.raises(DataError, match="column 'employees'"):
        schema.validate(frames, tiny_dictionaries)
    crm, report = schema.validate(frames, tiny_dictionaries, lenient=True)
    assert "o1" not in set(crm.organizations["org_id"]) and len(crm.organizations) == N_ORGS - 1
    assert set(crm.contacts["contact_id"]) == {f"c{i}" for i in range(1, N_CONTACTS + 1)} - {"c1", "c7"}
    assert not set(crm.outcomes["contact_id"]) & {"c1", "c7"}
    org_warning = _left_out(report, "organizations.csv")
    assert org_warning.count == 1 and org_warning.examples == ("o1",)
    assert "'employees'" in org_warning.message and "'abc' (row 1)" in org_warning.message
    contact_warning = _left_out(report, "contacts.csv")
    assert contact_warning.count == 2 and set(contact_warning.examples) == {"c1", "c7"}
    assert "2 contact(s) of an organization left out as invalid: contact 'c1' → org 'o1' (row 1), contact 'c7'" \
        in contact_warning.message  # the file's row numbers
    assert "(row 7)" in contact_warning.message and "not in organizations.csv" not in contact_warning.message
    assert report.notes["organizations_rows_left_out"] == 1 and report.notes["contacts_rows_left_out"] == 2


def test_every_row_of_a_duplicated_key_is_left_out(frames, tiny_dictionaries):
    frames["contacts"].loc[1, "contact_id"] = "c1"
    crm, report = schema.validate(frames, tiny_dictionaries, lenient=True)
    assert "c1" not in set(crm.contacts["contact_id"]) and len(crm.contacts) == N_CONTACTS - 2
    warning = _left_out(report, "contacts.csv")
    assert warning.count == 2 and "duplicate contact_id 'c1' (rows 1, 2)" in warning.message


def test_a_duplicate_of_an_invalid_row_keeps_the_valid_one(frames, tiny_dictionaries):
    frames["organizations"].loc[1, ["org_id", "founded_year"]] = ["o1", "19x6"]  # the second o1 is invalid
    crm, report = schema.validate(frames, tiny_dictionaries, lenient=True)
    assert list(crm.organizations["org_id"]).count("o1") == 1
    assert crm.organizations.loc[0, "org_id"] == "o1"
    warning = _left_out(report, "organizations.csv")
    assert warning.count == 1 and "duplicate" not in warning.message and "'19x6' (row 2)" in warning.message


def test_invalid_outcome_rows_are_left_out_and_the_rules_for_training_do_not_apply(frames, tiny_dictionaries):
    outcomes = frames["outcomes"]
    outcomes.loc[:, "outcome"] = "negative"  # no positive episode at all: training refuses it
    outcomes.loc[0, "occurred_on"] = "01.02.2024"
    outcomes.loc[1:9, "contact_id"] = "nobody"  # 15% dropped as unknown contacts
    with pytest.raises(DataError):
        schema.validate(frames, tiny_dictionaries)
    crm, report = schema.validate(frames, tiny_dictionaries, lenient=True)
    assert len(crm.outcomes) == len(outcomes) - 10
    assert report.positive_episodes == 0 and report.outcome_rows_dropped == 9
    assert "'01.02.2024' (row 1)" in _left_out(report, "outcomes.csv").message


def test_invalid_feedback_rows_are_left_out(frames, tiny_dictionaries):
    feedback = frames["outcomes"].iloc[:2].copy()
    feedback["feedback_id"] = ["f1", "f2"]
    feedback["occurred_on"] = ["2024-03-01", "yesterday"]
    frames["feedback"] = feedback
    with pytest.raises(DataError, match="'yesterday'"):
        schema.validate(frames, tiny_dictionaries)
    _, report = schema.validate(frames, tiny_dictionaries, lenient=True)
    assert report.notes["outcome_rows_from_feedback"] == 1
    assert _left_out(report, "feedback.csv").count == 1


def test_a_contact_whose_organization_is_missing_is_left_out(frames, tiny_dictionaries):
    frames["contacts"].loc[4, "org_id"] = "o404"
    crm, report = schema.validate(frames, tiny_dictionaries, lenient=True)
    assert "c5" not in set(crm.contacts["contact_id"]) and len(crm.contacts) == N_CONTACTS - 1
    warning = _left_out(report, "contacts.csv")
    assert warning.count == 1 and warning.examples == ("c5",)
    assert "refer to an org_id that is not in organizations.csv: contact 'c5' → org 'o404' (row 5)" in warning.message


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda f: f.__setitem__("contacts", f["contacts"].drop(columns="position")), "required column"),
        (lambda f: f.__setitem__("contacts", f["contacts"].iloc[:0]), "empty table"),
        (lambda f: f["contacts"].__setitem__("org_id", "nowhere"), "none of its 12 rows is valid"),
    ],
)
def test_what_lenient_validation_still_refuses(frames, tiny_dictionaries, edit, match):
    edit(frames)
    with pytest.raises(DataError, match=match):
        schema.validate(frames, tiny_dictionaries, lenient=True)


def test_an_outcome_dated_in_the_future_is_an_error_and_left_out_when_lenient(frames, tiny_dictionaries):
    """A typo such as 2099 for 2019 would land in the newest window of the time split."""
    frames["outcomes"]["occurred_on"] = frames["outcomes"]["occurred_on"].astype(str)
    frames["outcomes"].loc[2, "occurred_on"] = "2099-01-01"
    latest = schema.latest_event_date().isoformat()
    with pytest.raises(DataError) as raised:
        schema.validate(frames, tiny_dictionaries)
    assert str(raised.value) == (f"outcomes.csv column 'occurred_on': 1 invalid value(s) '2099-01-01' (row 3); "
                                 f"allowed: a date up to today ({latest}), not in the future")
    crm, report = schema.validate(frames, tiny_dictionaries, lenient=True)
    assert len(crm.outcomes) == len(frames["outcomes"]) - 1 and crm.outcomes["occurred_on"].max().year < 2099
    assert "'2099-01-01' (row 3)" in _left_out(report, "outcomes.csv").message
    frames["outcomes"].loc[2, "occurred_on"] = latest  # today in the easternmost zone is still today somewhere
    schema.validate(frames, tiny_dictionaries)


def test_feedback_that_contradicts_an_outcome_is_named(frames, tiny_dictionaries):
    """A manager's 'negative' on a cell the CRM holds as positive was taken without a word, then overruled."""
    outcomes = frames["outcomes"]
    row = outcomes.iloc[0]
    flipped = "negative" if row["outcome"] == "positive" else "positive"
    feedback = outcomes.iloc[:2].copy()
    feedback["feedback_id"] = ["f1", "f2"]
    feedback.loc[feedback.index[0], "outcome"] = flipped  # contradicts row 1; the second repeats row 2
    frames["feedback"] = feedback
    crm, report = schema.validate(frames, tiny_dictionaries)
    [warning] = [w for w in report.warnings if w.kind == "conflicting_outcomes"]
    assert warning.count == 1 and warning.examples == (row["contact_id"],)
    day = pd.Timestamp(row["occurred_on"])
    assert f"contact {row['contact_id']!r} {day:%Y-%m-%d} {row['stage']}" in warning.message
    assert f"{flipped} here, {row['outcome']} in another report" in warning.message
    assert "in training the positive one wins" in warning.message
    assert report.notes["outcome_rows_from_feedback"] == 1 and len(crm.outcomes) == len(outcomes) + 1
    frames["feedback"] = outcomes.iloc[:2].assign(feedback_id=["f1", "f2"])  # agreeing feedback: no warning
    _, report = schema.validate(frames, tiny_dictionaries)
    assert not [w for w in report.warnings if w.kind == "conflicting_outcomes"]


def test_a_crm_that_repeats_or_contradicts_its_own_events_is_told_so(frames, tiny_dictionaries):
    """A double export, or every row again with its outcome flipped, passed with the clean sample's warnings."""
    outcomes = frames["outcomes"]
    flipped = outcomes.iloc[[0]].assign(outcome="negative" if outcomes.iloc[0]["outcome"] == "positive" else "positive")
    frames["outcomes"] = pd.concat([outcomes, outcomes.iloc[[1, 2]], flipped], ignore_index=True)
    n = len(outcomes)
    _, report = schema.validate(frames, tiny_dictionaries)
    [repeated] = [w for w in report.warnings if w.kind == "duplicate_events"]
    assert repeated.count == 2 and repeated.examples == (f"row {n + 1}", f"row {n + 2}")
    assert "each event counts once" in repeated.message
    [conflict] = [w for w in report.warnings if w.kind == "conflicting_outcomes"]
    assert conflict.count == 1 and conflict.examples == (outcomes.iloc[0]["contact_id"],)
    assert "reported both positive and negative" in conflict.message and "the positive one wins" in conflict.message
    frames["outcomes"] = outcomes
    _, clean = schema.validate(frames, tiny_dictionaries)
    assert not [w for w in clean.warnings if w.kind in ("duplicate_events", "conflicting_outcomes")]


def test_an_implausible_founded_year_is_missing_with_its_own_warning(frames, tiny_dictionaries):
    """-5, 99999 or 14 were taken as years and shifted the year's normalisation for every organization."""
    frames["organizations"].loc[[0, 1], "founded_year"] = ["99999", "14"]
    crm, report = schema.validate(frames, tiny_dictionaries)
    years = crm.organizations.set_index("org_id")["founded_year"]
    assert pd.isna(years["o1"]) and pd.isna(years["o2"]) and years["o3"] == 1997
    [odd] = [w for w in report.warnings if w.kind == "implausible_value"]
    assert odd.count == 2 and odd.examples == ("o1", "o2") and odd.column == "founded_year"
    assert f"year outside {schema.YEAR_MIN}–{schema.year_max()} (99999, 14;" in odd.message
    assert not [w for w in report.warnings if w.kind == "missing_value" and w.column == "founded_year"]
    frames["organizations"].loc[0, "founded_year"] = "2014г"
    with pytest.raises(DataError, match=r"'2014г' \(row 1\); allowed: a whole year such as 2004, or empty"):
        schema.validate(frames, tiny_dictionaries)


def test_a_client_since_after_today_is_missing_with_its_own_warning(frames, tiny_dictionaries):
    """2099-01-01 was accepted silently (a client of many years became one of none: tenure 0), where a
    founded_year of 3025 gets a warning and is treated as missing; the same now for client_since."""
    import datetime as dt

    today = schema.latest_event_date()
    tomorrow = (today + dt.timedelta(days=1)).isoformat()
    frames["organizations"].loc[[0, 1, 2], "client_since"] = ["2099-01-01", tomorrow, today.isoformat()]
    crm, report = schema.validate(frames, tiny_dictionaries)
    since = crm.organizations.set_index("org_id")["client_since"]
    assert pd.isna(since["o1"]) and pd.isna(since["o2"]) and since["o3"] == pd.Timestamp(today)
    [odd] = [w for w in report.warnings if w.kind == "implausible_value"]
    assert odd.count == 2 and odd.examples == ("o1", "o2") and odd.column == "client_since"
    assert odd.message == (f"organizations.csv column 'client_since': 2 rows with a date after today {today} "
                           f"(2099-01-01, {tomorrow}; org_id o1, o2), treated as missing")
    assert "treated as missing" in str(report)


def test_empty_rows_a_spreadsheet_leaves_at_the_end_are_skipped_and_counted(frames, tiny_dictionaries):
    """Three trailing ',,,,' rows were 'empty required value: rows 7, 8, 9'."""
    orgs = frames["organizations"]
    blank = pd.DataFrame([[""] * orgs.shape[1], [" "] * orgs.shape[1], [""] * orgs.shape[1]], columns=orgs.columns)
    frames["organizations"] = pd.concat([orgs, blank], ignore_index=True)
    crm, report = schema.validate(frames, tiny_dictionaries)
    assert len(crm.organizations) == N_ORGS and report.rows["organizations"] == N_ORGS
    [empty] = [w for w in report.warnings if w.kind == "empty_rows"]
    assert empty.count == 3 and f"with no value at all at the end (from row {N_ORGS + 1}), skipped" in empty.message
    middle = pd.concat([orgs.iloc[:2], blank.iloc[:1], orgs.iloc[2:]], ignore_index=True)  # among the data
    frames["organizations"] = middle
    with pytest.raises(DataError, match=r"column 'org_id': 1 row\(s\) with an empty required value: rows 3"):
        schema.validate(frames, tiny_dictionaries)
