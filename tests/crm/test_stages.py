"""crm.stages and the sources' page lookups: latest stages per contact, one contact's display row, recent feedback."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from crm_factory import write_crm, write_crm_database

import crm
from crm.stages import LatestStages, latest_days, merge
from needs_rec.errors import DataError


def test_latest_days_pools_the_stages_of_the_last_day() -> None:
    rows = [("c1", "2024-01-01", "lead"), ("c1", "2024-02-01", "Demo"), ("c1", "2024-02-01", "deal"),
            ("c2", dt.date(2024, 3, 1), "lead"), (" c2 ", "2024-01-01", "deal"), ("c3", "", "lead"), ("", "x", "y")]
    assert latest_days(rows) == {"c1": ("2024-02-01", ("deal", "demo")), "c2": ("2024-03-01", ("lead",))}


def test_merge_takes_the_later_day_and_pools_ties() -> None:
    assert merge(("2024-01-01", ("lead",)), ("2024-02-01", ("demo",))) == ("2024-02-01", ("demo",))
    assert merge(("2024-02-01", ("lead",)), ("2024-02-01", ("demo",)), None) == ("2024-02-01", ("demo", "lead"))
    assert merge(None, None) is None


def test_index_rebuilds_in_the_background_and_survives_a_failed_rebuild() -> None:
    calls: list[int] = []
    data = {"rows": [("c1", "2024-01-01", "lead")]}

    def load() -> list[tuple[str, str, str]]:
        calls.append(1)
        if data["rows"] is None:
            raise RuntimeError("database away")
        return data["rows"]

    index = LatestStages(load, refresh_s=0.05)
    assert index.get("c1") == ("2024-01-01", ("lead",)) and len(calls) == 1
    data["rows"] = [("c1", "2024-05-01", "deal")]
    time.sleep(0.06)
    index.get("c1")  # starts the rebuild; answers from the old index meanwhile
    deadline = time.monotonic() + 5
    while index.get("c1") != ("2024-05-01", ("deal",)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert index.get("c1") == ("2024-05-01", ("deal",))
    data["rows"] = None
    time.sleep(0.06)
    index.get("c1")
    deadline = time.monotonic() + 5
    while index.last_error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert index.last_error == "RuntimeError" and index.get("c1") == ("2024-05-01", ("deal",))


@pytest.mark.parametrize("kind", ["files", "database"])
def test_sources_answer_latest_stages_display_rows_and_recent_feedback(
    kind: str, open_crm, database_url, tmp_path, tiny_dictionaries
) -> None:
    location = write_crm(tmp_path / "files", tiny_dictionaries) if kind == "files" else write_crm_database(
        database_url, tiny_dictionaries)
    source = open_crm(location)
    outcomes = source.read_table("outcomes")
    mine = outcomes.loc[outcomes["contact_id"] == "c1"]
    last = mine["occurred_on"].max()
    expected = (last, tuple(sorted(set(mine.loc[mine["occurred_on"] == last, "stage"].str.lower()))))
    assert source.latest_stages("c1") == expected
    assert source.latest_stages("c404") is None

    shown = source.display("c2")
    assert shown is not None and shown["contact_id"] == "c2" and shown["organization"] and shown["contact"]
    assert shown == next(r for r in source.search("c2", 50) if r["contact_id"] == "c2")
    assert source.display("c404") is None

    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    assert source.feedback_since(before) == []
    assert source.feedback_on("c1", dt.date(2024, 3, 1)) == []
    if kind == "files":  # looking (a card, the audience, a read of feedback) never creates needs_rec.db
        with pytest.raises(DataError, match="no feedback table yet in"):
            source.read_table("feedback")
        assert source.read_crm().keys() == {"organizations", "contacts", "outcomes"}
        assert not (location / "needs_rec.db").exists()
    later = "2099-01-01"  # a manager's report after every outcome moves the contact's latest stage at once
    event = crm.FeedbackEvent("fb-stage", "c1", "deal", "ch_price", "positive", later)
    assert source.add_feedback(event) is crm.FeedbackResult.STORED
    assert source.latest_stages("c1") == (later, ("deal",))
    [row] = source.feedback_since(before)
    assert row["feedback_id"] == "fb-stage"
    assert source.feedback_since(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)) == []
