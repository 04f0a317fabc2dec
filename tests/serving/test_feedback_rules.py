"""One set of rules for a feedback event and a CSV outcome row (contract §2, §6).

The same events, good and bad, go through the file path (a one-row `outcomes.csv`, and the
`feedback` table as training reads it, both checked by `schema.check_table`) and through
`POST /v1/feedback`: the endpoint refuses exactly what the file path refuses, in the same words
(the source named differently), stores what it accepts with the values the file path cleans them
to, and refuses beyond that only the strict feedback cases (unknown or not offered codes, a date
in the future).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from crm_factory import write_crm_database
from fastapi.testclient import TestClient
from serving_support import models_dir_with, serve, settings_for

import crm
from crm.files import read_table
from needs_rec import dictionaries, schema
from needs_rec.errors import DataError

FUTURE = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).date().isoformat()
GOOD = {"contact_id": "c1", "stage": "demo", "characteristic": "ch_price", "outcome": "positive",
        "occurred_on": "2024-05-02", "manager_id": "m-7"}

#: name → (changes to GOOD, what only the endpoint refuses or None); every other refusal is the CSV's.
EVENTS: dict[str, tuple[dict[str, str], str | None]] = {
    "plain": ({}, None),
    "codes in another case and spaced": (
        {"stage": " DEMO ", "characteristic": "Ch_Price ", "outcome": " Negative"}, None
    ),
    "date with a time": ({"occurred_on": "2024-05-02T10:30:00"}, None),
    "one-digit month and day": ({"occurred_on": "2024-5-2"}, None),
    "no manager": ({"manager_id": ""}, None),
    "month 13": ({"occurred_on": "2024-13-01"}, None),
    "30 February": ({"occurred_on": "2023-02-30"}, None),
    "day first": ({"occurred_on": "02.05.2024"}, None),
    "before 1678": ({"occurred_on": "1600-01-01"}, None),
    "compact date": ({"occurred_on": "20240502"}, None),
    "empty stage": ({"stage": "  "}, None),
    "empty characteristic": ({"characteristic": ""}, None),
    "empty outcome": ({"outcome": ""}, None),
    "empty contact": ({"contact_id": " "}, None),
    "outcome maybe": ({"outcome": "maybe"}, None),
    "two problems": ({"occurred_on": "2024-02-31", "outcome": "yes"}, None),
    "unknown stage": ({"stage": "nope"}, "feedback column 'stage': unknown stage 'nope'; allowed: lead, demo, deal"),
    "unknown characteristic": (
        {"characteristic": "ch_zz"},
        "feedback column 'characteristic': unknown characteristic 'ch_zz'; allowed: a code of characteristics.yaml",
    ),
    "not offered": ({"characteristic": "ch_integration"}, "'ch_integration' at 'demo': not offered at that stage"),
    "future": ({"occurred_on": FUTURE}, None),  # a CSV row's rule too: an event cannot have happened yet
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, built: dict[str, Path], dictionaries_dir: Path) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("feedback-rules")
    location = write_crm_database(f"sqlite:///{root / 'crm.db'}", dictionaries.load(dictionaries_dir))
    with serve(settings_for(models_dir_with(root, built["fixed"]), crm=location), "rules") as (client, _):
        yield client, location, root


def file_path(event: dict[str, str], table: schema.Table, directory: Path, dicts: Any) -> tuple[str, Any]:
    """('ok', the clean row) or ('refused', the message with the file's name replaced by 'feedback')."""
    directory.mkdir(parents=True, exist_ok=True)
    columns = [c.name for c in table.columns if c.name in event or c.name == "feedback_id"]
    row = {**event, "feedback_id": "f-1"}
    path = directory / f"{table.name}.csv"
    pd.DataFrame([{c: row.get(c, "") for c in columns}]).to_csv(path, index=False)
    errors: list[str] = []
    try:
        clean = schema.check_table(read_table(path, table), table, dicts, schema.ValidationReport(), errors)
        schema.raise_if(errors)
    except DataError as exc:
        return "refused", str(exc).replace(f"{table.name}.csv", "feedback")
    return "ok", clean.iloc[0]


def post(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post("/v1/feedback", content=json.dumps(body), headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("name", list(EVENTS))
def test_an_event_gets_the_rules_of_a_csv_row(setup: Any, name: str, dictionaries_dir: Path) -> None:
    client, location, root = setup
    dicts = dictionaries.load(dictionaries_dir)
    changes, strict = EVENTS[name]
    event = {**GOOD, **changes}
    feedback_id = f"rules-{abs(hash(name))}"
    body = {"feedback_id": feedback_id, **event}
    answer = post(client, body)
    by_file = {table.name: file_path(event, table, root / name.replace(" ", "-"), dicts)
               for table in (schema.OUTCOMES, schema.FEEDBACK)}
    assert by_file["outcomes"][0] == by_file["feedback"][0]
    verdict, detail = by_file["outcomes"]
    if verdict == "refused":
        assert strict is None
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == detail == by_file["feedback"][1]
        return
    if strict is not None:
        assert answer.status_code == 400, answer.text
        assert strict in answer.json()["error"]
        return
    assert answer.status_code == 201, answer.text
    with crm.open_source(location) as source:
        stored = {row["feedback_id"]: row for row in source.recent_feedback(1000)}[feedback_id]
    assert stored["stage"] == detail["stage"] and stored["characteristic"] == detail["characteristic"]
    assert stored["outcome"] == detail["outcome"]
    assert str(stored["occurred_on"])[:10] == detail["occurred_on"].strftime("%Y-%m-%d")
    assert (stored["manager_id"] or "") == detail["manager_id"]


def test_the_file_path_refuses_what_the_table_check_refuses_in_these_words(setup: Any, dictionaries_dir: Path) -> None:
    """The messages compared above are the CSV path's own (so the comparison cannot pass vacuously)."""
    _, _, root = setup
    dicts = dictionaries.load(dictionaries_dir)
    verdict, message = file_path({**GOOD, "occurred_on": "2024-13-01"}, schema.OUTCOMES, root / "words", dicts)
    assert verdict == "refused"
    assert message == ("feedback column 'occurred_on': 1 invalid value(s) '2024-13-01' (row 1); allowed: an ISO date "
                       "YYYY-MM-DD such as 2024-03-15, from 1678-01-01 to 2261-12-31")
    verdict, message = file_path({**GOOD, "occurred_on": "2024-02-31", "outcome": "yes"}, schema.OUTCOMES,
                                 root / "two", dicts)
    assert verdict == "refused"
    assert "(and 1 more problem(s): feedback column 'outcome': 1 invalid value(s) 'yes'" in message
    verdict, message = file_path({**GOOD, "stage": " "}, schema.OUTCOMES, root / "empty", dicts)
    assert message == ("feedback column 'stage': 1 row(s) with an empty required value: rows 1; 'stage' is required "
                       "in every row")
