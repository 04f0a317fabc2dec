"""The service with a CRM source (`--crm`, contract §4 v2, §5, §6): lookups by contact_id, request_id
in every answer, POST /v1/feedback, exposures — on SQLite, PostgreSQL and a CSV directory."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from crm_factory import crm_frames, write_crm, write_crm_database
from databases import postgres_schema
from fastapi.testclient import TestClient
from serving_support import models_dir_with, serve, settings_for, wait_until

from needs_rec import dictionaries


@pytest.fixture(params=["sqlite", "postgresql", "files"])
def crm_location(request: pytest.FixtureRequest, dictionaries_dir: Path, tmp_path: Path) -> Iterator[str]:
    """A tiny CRM (tests/crm_factory.py) as a SQLite file, a PostgreSQL schema, or a CSV directory."""
    dicts = dictionaries.load(dictionaries_dir)
    if request.param == "files":
        yield str(write_crm(tmp_path / "crm", dicts))
    elif request.param == "sqlite":
        yield write_crm_database(f"sqlite:///{tmp_path / 'crm.db'}", dicts)
    else:
        with postgres_schema() as url:
            yield write_crm_database(url, dicts)


@pytest.fixture
def app(built: dict[str, Path], crm_location: str, tmp_path: Path) -> Iterator[TestClient]:
    models = models_dir_with(tmp_path, built["random"])  # untrained: every field moves the probabilities
    with serve(settings_for(models, crm=crm_location, crm_cache_s=60), "crm") as (client, _):
        yield client


def post(client: TestClient, path: str, body: Any) -> Any:
    return client.post(path, content=json.dumps(body, ensure_ascii=False), headers={"Content-Type": "application/json"})


def full_fields(contact_id: str, dicts: Any) -> dict[str, Any]:
    """The §4 full-fields body for a contact of crm_frames, typed as a caller would send it."""
    frames = crm_frames(dicts)
    person = frames["contacts"].set_index("contact_id").loc[contact_id]
    org = frames["organizations"].set_index("org_id").loc[person["org_id"]]

    def multi(text: str) -> list[str]:
        return [p for p in text.split(";") if p]

    def number(text: str) -> float | None:
        return float(text) if text else None

    return {
        "organization": {
            "industry": org["industry"], "region": org["region"], "employees": number(org["employees"]),
            "revenue_mln": number(org["revenue_mln"]), "legal_form": org["legal_form"],
            "founded_year": number(org["founded_year"]), "client_since": org["client_since"] or None,
            "products_owned": multi(org["products_owned"]),
        },
        "contact": {
            "position": person["position"], "department": person["department"],
            "decision_role": person["decision_role"], "interests": multi(person["interests"]),
        },
    }


def without_ids(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k not in ("request_id", "contact_id")}


def test_contact_id_answers_exactly_what_the_full_fields_answer(app: TestClient, dictionaries_dir: Path) -> None:
    dicts = dictionaries.load(dictionaries_dir)
    for contact_id in ("c2", "c5", "c12"):
        for stage in ("lead", "demo"):
            by_id = post(app, "/v1/recommendations", {"contact_id": contact_id, "stage": stage, "top_k": 4})
            full = post(app, "/v1/recommendations", {**full_fields(contact_id, dicts), "stage": stage, "top_k": 4})
            assert by_id.status_code == 200 and full.status_code == 200, (by_id.text, full.text)
            assert without_ids(by_id.json()) == without_ids(full.json())
            assert by_id.json()["contact_id"] == contact_id and "contact_id" not in full.json()
    again = post(app, "/v1/recommendations", {"contact_id": "c2", "stage": "lead", "top_k": 4})  # from the cache
    assert without_ids(again.json()) == without_ids(
        post(app, "/v1/recommendations", {**full_fields("c2", dicts), "stage": "lead", "top_k": 4}).json()
    )


def test_every_answer_has_a_request_id(app: TestClient) -> None:
    one = post(app, "/v1/recommendations", {"contact_id": "c1", "stage": "deal"}).json()
    two = post(app, "/v1/recommendations", {"contact_id": "c1", "stage": "deal"}).json()
    assert re.fullmatch(r"v1-[0-9a-f]{32}", one["request_id"]) and one["request_id"] != two["request_id"]
    mine = post(app, "/v1/recommendations", {"contact_id": "c1", "stage": "deal", "request_id": "crm-42"}).json()
    assert mine["request_id"] == "crm-42"
    batch = post(app, "/v1/recommendations:batch", {"requests": [
        {"contact_id": "c3", "stage": "lead"},
        {"stage": "lead", "organization": {"industry": "it"}, "contact": {"position": "ceo"}},
    ]}).json()["results"]
    assert [r.get("contact_id") for r in batch] == ["c3", None]
    assert all(re.fullmatch(r"v1-[0-9a-f]{32}", r["request_id"]) for r in batch)
    assert batch[0]["request_id"] != batch[1]["request_id"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"contact_id": "c404", "stage": "lead"}, 404, "field 'contact_id': no contact 'c404' in the CRM"),
        ({"contact_id": 7, "stage": "lead"}, 400, "field 'contact_id' must be a non-empty string"),
        ({"contact_id": "c1", "stage": "lead", "contact": {"position": "ceo"}}, 400, "not both"),
        ({"contact_id": "c1", "stage": "nope"}, 400, "field 'stage': unknown stage 'nope'"),
    ],
)
def test_lookup_errors(app: TestClient, body: dict[str, Any], status: int, fragment: str) -> None:
    response = post(app, "/v1/recommendations", body)
    assert response.status_code == status and fragment in response.json()["error"], response.text


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "files"])
def test_a_wrong_value_in_the_crm_row_is_said_to_be_the_crms(
    built: dict[str, Path], dictionaries_dir: Path, tmp_path: Path, kind: str
) -> None:
    """o1 (contacts c1, c7) has employees 'many', o2 (c2, c8) has -5: a lookup says the value is the
    CRM row's (not the caller's), every other contact answers, and feedback about c1 or c2 is stored
    (it needs only that the contact exists)."""
    dicts = dictionaries.load(dictionaries_dir)
    edits = [("organizations", 1, "employees", "many"), ("organizations", 2, "employees", "-5")]
    with contextlib.ExitStack() as stack:
        if kind == "files":
            location = str(write_crm(tmp_path / "crm", dicts, edits=edits))
        elif kind == "sqlite":
            location = write_crm_database(f"sqlite:///{tmp_path / 'crm.db'}", dicts, edits=edits)
        else:
            location = write_crm_database(stack.enter_context(postgres_schema()), dicts, edits=edits)
        models = models_dir_with(tmp_path, built["random"])
        client, _ = stack.enter_context(serve(settings_for(models, crm=location, crm_cache_s=60), f"bad_row_{kind}"))
        unreadable = post(client, "/v1/recommendations", {"contact_id": "c1", "stage": "lead"})
        assert unreadable.status_code == 400
        assert unreadable.json()["error"] == (
            "CRM organizations column 'employees' for contact 'c1': 'many' is not a number; fix the CRM row or "
            "send the contact's fields in the request"
        )
        negative = post(client, "/v1/recommendations", {"contact_id": "c2", "stage": "lead"})
        assert negative.status_code == 400
        assert negative.json()["error"].startswith(
            "contact 'c2' in the CRM: field 'organization.employees' must be a number >= 0, got -5"
        )
        assert "the CRM row's, not this request's); fix the CRM row" in negative.json()["error"]
        batch = post(client, "/v1/recommendations:batch", {"requests": [{"contact_id": "c3", "stage": "lead"},
                                                                       {"contact_id": "c8", "stage": "lead"}]})
        assert batch.status_code == 400
        assert batch.json()["error"].startswith("contact 'c8' in the CRM: field 'requests[1].organization.employees'")
        unreadable_item = post(client, "/v1/recommendations:batch", {"requests": [{"contact_id": "c3", "stage": "lead"},
                                                                                {"contact_id": "c1", "stage": "lead"}]})
        assert unreadable_item.status_code == 400  # the item is named, as every other batch error names it
        assert unreadable_item.json()["error"].startswith(
            "field 'requests[1].contact_id': CRM organizations column 'employees' for contact 'c1': "
            "'many' is not a number"
        )
        assert post(client, "/v1/recommendations", {"contact_id": "c3", "stage": "lead"}).status_code == 200
        for feedback_id, contact_id in (("fb-bad-1", "c1"), ("fb-bad-2", "c2")):
            stored = post(client, "/v1/feedback", feedback_body(feedback_id, contact_id=contact_id))
            assert stored.status_code == 201, stored.text
        assert post(client, "/v1/feedback", feedback_body("fb-bad-3", contact_id="c404")).status_code == 404
        assert set(stored_feedback(location)["contact_id"]) == {"c1", "c2"}  # committed before the 201


def test_without_crm_lookups_and_feedback_answer_503_naming_the_flag(built: dict[str, Path], tmp_path: Path) -> None:
    with serve(settings_for(models_dir_with(tmp_path, built["fixed"])), "no-crm") as (client, _):
        for path, body in (
            ("/v1/recommendations", {"contact_id": "c1", "stage": "lead"}),
            ("/v1/feedback", feedback_body("f1")),
        ):
            response = post(client, path, body)
            assert response.status_code == 503 and "needs a CRM source (--crm)" in response.json()["error"]
        plain = post(client, "/v1/recommendations", {"stage": "lead", "organization": {"industry": "it"},
                                                     "contact": {"position": "ceo"}})
        assert plain.status_code == 200 and plain.json()["request_id"]  # everything else works as before


def test_unreachable_database_is_503_never_500(built: dict[str, Path], tmp_path: Path) -> None:
    settings = settings_for(models_dir_with(tmp_path, built["fixed"]), crm="postgresql://crm:s3cret@127.0.0.1:9/crm")
    with serve(settings, "down") as (client, log):
        for path, body in (
            ("/v1/recommendations", {"contact_id": "c1", "stage": "lead"}),
            ("/v1/feedback", feedback_body("f1")),
        ):
            response = post(client, path, body)
            assert response.status_code == 503, response.text
            assert set(response.json()) == {"error"}
            # where the database is (a host here, a server path for SQLite) stays in the service log
            assert response.json()["error"].startswith("CRM database: cannot "), response.text
            assert "127.0.0.1:9" not in response.text and "postgresql" not in response.text
            # nor the driver's own words, which name the host and port ('server at "127.0.0.1", port 9')
            assert "127.0.0.1" not in response.text and "port 9" not in response.text, response.text
            assert "s3cret" not in response.text and response.headers["Retry-After"] == "1"
        for query in ("/v1/audience?characteristic=ch_price&stage=lead",
                      "/v1/organizations/o1/similar?characteristic=ch_price"):
            answer = client.get(query)  # the queries' snapshot: the driver's words were in their answer
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "1", answer.text
            assert answer.json()["error"].startswith("CRM database: cannot "), answer.text
            assert "127.0.0.1" not in answer.text and "port 9" not in answer.text, answer.text
        assert "s3cret" not in log.getvalue()
        assert "port 9" in log.getvalue()  # the operator still reads why
        assert '"crm_unavailable"' in log.getvalue() and "postgresql://crm:***@127.0.0.1:9/crm" in log.getvalue()


def test_error_answers_never_name_the_crm_files_path(built: dict[str, Path], tmp_path: Path) -> None:
    location = f"sqlite:///{tmp_path / 'firm' / 'crm.db'}"
    (tmp_path / "firm").mkdir()
    (tmp_path / "firm" / "crm.db").touch()
    with serve(settings_for(models_dir_with(tmp_path, built["fixed"]), crm=location), "paths") as (client, _):
        service = client.app.state.service
        shown = service.public_text(f"CRM database {location}: cannot store the feedback (database is locked)")
        assert shown == "CRM database: cannot store the feedback (database is locked)"
        assert str(tmp_path) not in service.public_text(f"table 'contacts' of {location}: cannot be read (x)")


def feedback_body(feedback_id: str, **changes: Any) -> dict[str, Any]:
    body = {"feedback_id": feedback_id, "contact_id": "c1", "stage": "demo", "characteristic": "ch_price",
            "outcome": "positive", "occurred_on": "2024-05-02", "manager_id": "m-7"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def stored_feedback(location: str) -> pd.DataFrame:
    import crm

    with crm.open_source(location) as source:
        return pd.DataFrame(source.recent_feedback(10_000))


def test_feedback_stored_duplicate_conflict(app: TestClient, crm_location: str) -> None:
    first = post(app, "/v1/feedback", feedback_body("fb-1"))
    assert first.status_code == 201 and first.json() == {"feedback_id": "fb-1", "stored": True, "warnings": []}
    retry = post(app, "/v1/feedback", feedback_body("fb-1", stage=" DEMO "))  # the same event, normalised alike
    assert retry.status_code == 200
    assert retry.json() == {"feedback_id": "fb-1", "stored": False, "duplicate": True, "warnings": []}
    conflict = post(app, "/v1/feedback", feedback_body("fb-1", outcome="negative"))
    assert conflict.status_code == 409 and "already stored with different content" in conflict.json()["error"]
    rows = stored_feedback(crm_location)
    assert len(rows) == 1 and rows.loc[0, "outcome"] == "positive" and rows.loc[0, "manager_id"] == "m-7"
    assert str(rows.loc[0, "occurred_on"])[:10] == "2024-05-02"


def test_the_openapi_schema_of_feedback_accepts_what_the_service_stores(app: TestClient, crm_location: str) -> None:
    """Feedback values get a CSV outcome row's rules on purpose (CRM exports are messy); the schema said
    YYYY-MM-DD and a lowercase enum while the service stored '2024-2-9' and 'Positive'."""
    properties = app.get("/openapi.json").json()["components"]["schemas"]["FeedbackRequest"]["properties"]
    schema = {name: next(p for p in [prop, *prop.get("anyOf", [])] if "pattern" in p)  # optional: anyOf [str, null]
              for name, prop in properties.items() if name in ("occurred_on", "outcome")}
    accepted = {"occurred_on": ["2024-2-9", "2024-02-29T10:00:00+03:00", "2024-02-29 10:00", " 2024-05-02 "],
                "outcome": ["Positive", " NEGATIVE "]}
    for n, (field, value) in enumerate((f, v) for f, vs in accepted.items() for v in vs):
        answer = post(app, "/v1/feedback", feedback_body(f"fb-s{n}", **{field: value}))
        assert answer.status_code == 201, (field, value, answer.text)
        assert re.search(schema[field]["pattern"], value), (field, value)
    for field, value in (("occurred_on", "2024-05-02 (перенесено)"), ("outcome", "maybe")):
        assert post(app, "/v1/feedback", feedback_body("fb-no", **{field: value})).status_code == 400
        assert not re.search(schema[field]["pattern"], value), (field, value)


def test_a_feedback_id_is_echoed_as_sent_and_said_to_be_compared_trimmed(app: TestClient, crm_location: str) -> None:
    note = ("field 'feedback_id': surrounding spaces trimmed: compared and stored as 'collide' (a feedback_id "
            "differing only in them is the same event)")
    first = post(app, "/v1/feedback", feedback_body("collide "))
    assert first.status_code == 201 and first.json() == {"feedback_id": "collide ", "stored": True, "warnings": [note]}
    assert post(app, "/v1/feedback", feedback_body("collide")).json() == {
        "feedback_id": "collide", "stored": False, "duplicate": True, "warnings": []}
    conflict = post(app, "/v1/feedback", feedback_body(" collide", outcome="negative"))
    assert conflict.status_code == 409
    assert conflict.json()["error"].startswith("field 'feedback_id': ' collide' (compared as 'collide': surrounding "
                                               "spaces are trimmed) is already stored with different content")
    assert list(stored_feedback(crm_location)["feedback_id"]) == ["collide"]


def test_feedback_on_a_locked_sqlite_file_is_a_503_within_the_request_timeout(
    built: dict[str, Path], dictionaries_dir: Path, tmp_path: Path
) -> None:
    """Another process holding the write lock made the post wait SQLite's 30 s busy timeout; now the
    request timeout answers, and the retry with the same feedback_id stores the event once."""
    import sqlite3

    database = tmp_path / "crm.db"
    location = write_crm_database(f"sqlite:///{database}", dictionaries.load(dictionaries_dir))
    models = models_dir_with(tmp_path, built["random"])
    with serve(settings_for(models, crm=location, request_timeout_s=1), "locked_sqlite") as (client, _):
        assert post(client, "/v1/feedback", feedback_body("fb-before")).status_code == 201  # tables exist
        other = sqlite3.connect(database, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer: readers go on, writers wait
        try:
            locked = post(client, "/v1/feedback", feedback_body("fb-locked"))
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert locked.status_code == 503 and locked.headers["Retry-After"]
        assert locked.json()["error"] == (
            "the CRM source did not store the feedback within 1 s (busy or locked); nothing is half-stored: "
            "retry with the same feedback_id"
        )
        retry = post(client, "/v1/feedback", feedback_body("fb-locked"))
        assert retry.status_code in (200, 201), retry.text  # 200: the first write committed once the lock went
        rows = stored_feedback(location)
        assert sorted(rows["feedback_id"]) == ["fb-before", "fb-locked"]


def test_a_retry_of_a_stored_event_is_a_duplicate_even_when_the_dictionaries_changed(
    app: TestClient, crm_location: str
) -> None:
    """fb-old was stored while 'ch_gone' was a characteristic (another version served then); its retry
    must still be the 200 duplicate, not a 400 that makes the caller think it was lost."""
    import crm

    with crm.open_source(crm_location) as source:
        old = crm.FeedbackEvent(feedback_id="fb-old", contact_id="c1", stage="demo", characteristic="ch_gone",
                                outcome="positive", occurred_on="2024-05-02", manager_id="m-7")
        assert source.add_feedback(old) is crm.FeedbackResult.STORED
    retry = post(app, "/v1/feedback", feedback_body("fb-old", characteristic=" CH_GONE "))
    assert retry.status_code == 200, retry.text
    assert retry.json() == {"feedback_id": "fb-old", "stored": False, "duplicate": True, "warnings": []}
    changed = post(app, "/v1/feedback", feedback_body("fb-old", characteristic="ch_gone", outcome="negative"))
    assert changed.status_code == 400 and "unknown characteristic 'ch_gone'" in changed.json()["error"]
    new = post(app, "/v1/feedback", feedback_body("fb-new", characteristic="ch_gone"))
    assert new.status_code == 400 and "unknown characteristic 'ch_gone'" in new.json()["error"]
    assert list(stored_feedback(crm_location)["feedback_id"]) == ["fb-old"]


def test_feedback_names_unknown_fields_and_stores_none_of_them(app: TestClient, crm_location: str) -> None:
    body = {**feedback_body("fb-u"), "manger_id": "m-8", "note": "called twice", "phone": "+7 900 000-00-00"}
    answer = post(app, "/v1/feedback", body)
    assert answer.status_code == 201
    assert answer.json()["warnings"] == ["unknown field 'manger_id' ignored (did you mean 'manager_id'?)",
                                         "unknown field 'note' ignored"]  # the personal field: without a word
    rows = stored_feedback(crm_location)
    assert list(rows["feedback_id"]) == ["fb-u"] and not {"manger_id", "note", "phone"} & set(rows.columns)
    assert rows.loc[0, "manager_id"] == "m-7"  # the body's real manager_id, not the misspelled one


def test_feedback_giving_a_field_twice_is_a_400_and_stores_nothing(app: TestClient, crm_location: str) -> None:
    """Two "outcome" keys: JSON parsers keep the last one silently, so a positive report could be stored
    as negative; which one the caller meant cannot be told, so the body is refused."""
    sent = json.dumps(feedback_body("fb-twice"))[:-1] + ', "outcome": "negative"}'
    for body in (sent, sent.replace('"outcome": "negative"', '"\\u006futcome": "negative"')):  # an escape is one key
        answer = app.post("/v1/feedback", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, answer.text
        assert answer.json() == {"error": "body: field 'outcome' given twice; send each field once (which one was "
                                          "meant cannot be told)"}
    nested = json.dumps(feedback_body("fb-nested"))[:-1] + ', "note": {"a": 1, "a": 2}}'  # never stored
    answer = app.post("/v1/feedback", content=nested, headers={"Content-Type": "application/json"})
    assert answer.status_code == 201, answer.text
    assert list(stored_feedback(crm_location)["feedback_id"]) == ["fb-nested"]


def test_feedback_knows_the_model_version_of_its_answer(app: TestClient, crm_location: str) -> None:
    answer = post(app, "/v1/recommendations", {"contact_id": "c1", "stage": "demo"}).json()
    known = post(app, "/v1/feedback", feedback_body("fb-v", request_id=answer["request_id"]))
    assert known.status_code == 201 and known.json()["warnings"] == []
    unknown = post(app, "/v1/feedback", feedback_body("fb-none", request_id="unknown-id"))
    assert unknown.status_code == 201  # stored as given: the answer may be older than what is remembered
    assert unknown.json()["warnings"] == ["field 'request_id': no answer 'unknown-id' is known (neither remembered "
                                          "nor in exposures); stored without its model_version"]
    rows = stored_feedback(crm_location).set_index("feedback_id")
    assert rows.loc["fb-v", "model_version"] == 1 and pd.isna(rows.loc["fb-none", "model_version"])


def warned_twice(app: TestClient, crm_location: str, asked: dict[str, str], feedback_id: str, warning: str) -> str:
    """Post feedback (contact c1, stage demo) naming the answer to `asked`: 201 with `warning` (the
    `{request_id}` in it filled in), the same from `exposures` as a worker that did not give the
    answer; returns the answer's request_id."""
    answer = post(app, "/v1/recommendations", asked).json()
    request_id = answer["request_id"]
    first = post(app, "/v1/feedback", feedback_body(feedback_id, request_id=request_id))
    assert first.status_code == 201, first.text
    assert first.json()["warnings"] == [warning.format(request_id=repr(request_id))]
    assert wait_until(lambda: len(exposures(crm_location)) > 0, timeout=20)  # another worker reads exposures
    crm_link_of(app)._answers.clear()  # as a worker that did not give the answer
    again = post(app, "/v1/feedback", feedback_body(f"{feedback_id}-2", request_id=request_id))
    assert again.json()["warnings"] == first.json()["warnings"]
    return request_id


def test_feedback_naming_another_contacts_answer_is_stored_with_a_warning(app: TestClient, crm_location: str) -> None:
    warned_twice(app, crm_location, {"contact_id": "c2", "stage": "demo"}, "fb-other",
                 "field 'request_id': answer {request_id} was given for contact 'c2', not 'c1'; stored with that "
                 "answer's model_version")
    assert stored_feedback(crm_location).set_index("feedback_id").loc["fb-other", "model_version"] == 1


def test_feedback_naming_an_answer_of_another_stage_is_stored_with_a_warning(
    app: TestClient, crm_location: str
) -> None:
    """The answer was given at stage 'lead', the feedback says 'demo': like another contact's answer,
    stored with that answer's version and a warning naming both stages (remembered and from exposures)."""
    request_id = warned_twice(app, crm_location, {"contact_id": "c1", "stage": "lead"}, "fb-stage",
                              "field 'request_id': answer {request_id} was given at stage 'lead', not 'demo'; "
                              "stored with that answer's model_version")
    both = post(app, "/v1/feedback", feedback_body("fb-stage-3", contact_id="c2", request_id=request_id))
    assert both.json()["warnings"] == [f"field 'request_id': answer {request_id!r} was given for contact "
                                       "'c1', not 'c2', and at stage 'lead', not 'demo'; stored with that answer's "
                                       "model_version"]
    assert stored_feedback(crm_location).set_index("feedback_id").loc["fb-stage", "model_version"] == 1


def crm_link_of(client: TestClient) -> Any:
    return client.app.state.service.crm_link


@pytest.mark.parametrize("caller_id", [None, "crm-7"])
def test_feedback_on_another_workers_answer_gets_its_version_before_the_exposures_are_written(
    built: dict[str, Path], database_url: str, dictionaries_dir: Path, tmp_path: Path, caller_id: str | None
) -> None:
    """--workers 2: the answer was in the other worker's memory and not yet in exposures, so half the
    prompt feedback was stored without its model_version and with a false warning. Two services on
    one database are the two workers here."""
    location = write_crm_database(database_url, dictionaries.load(dictionaries_dir))
    models = models_dir_with(tmp_path, built["fixed"])
    settings = settings_for(models, crm=location, crm_cache_s=0, workers=2)
    with serve(settings, "worker-a") as (a, _), serve(settings, "worker-b") as (b, _):
        body = {"contact_id": "c1", "stage": "demo", "top_k": 2} | ({"request_id": caller_id} if caller_id else {})
        answer = post(a, "/v1/recommendations", body).json()
        # b asks at once: the answer's exposures are still in a's buffer (a flushes every 0.25 s)
        feedback = post(b, "/v1/feedback", feedback_body("fb-w", request_id=answer["request_id"]))
        assert feedback.status_code == 201 and feedback.json()["warnings"] == [], feedback.text
    assert stored_feedback(location).set_index("feedback_id").loc["fb-w", "model_version"] == 1


def test_every_request_id_an_answer_accepts_feedback_can_name(app: TestClient, crm_location: str) -> None:
    longest = "r" * 200
    answer = post(app, "/v1/recommendations", {"contact_id": "c1", "stage": "demo", "request_id": longest})
    assert answer.status_code == 200 and answer.json()["request_id"] == longest
    assert post(app, "/v1/feedback", feedback_body("fb-long", request_id=longest)).status_code == 201
    too_long = post(app, "/v1/recommendations", {"contact_id": "c1", "stage": "demo", "request_id": longest + "r"})
    assert too_long.status_code == 400
    assert too_long.json()["error"] == "field 'request_id' is longer than 200 characters"
    rows = stored_feedback(crm_location).set_index("feedback_id")
    assert rows.loc["fb-long", "model_version"] == 1  # the answer it names was found


def test_ids_with_control_characters_are_400_on_every_database(app: TestClient, crm_location: str) -> None:
    # PostgreSQL text cannot hold U+0000: such an id would be stored on SQLite and be a 503 forever on PostgreSQL
    for path, body, field in (
        ("/v1/feedback", feedback_body("nul\u0000x"), "feedback_id"),
        ("/v1/feedback", feedback_body("fb-ctl", manager_id="m\n7"), "manager_id"),
        ("/v1/recommendations", {"contact_id": "c1", "stage": "demo", "request_id": "r\u0000"}, "request_id"),
        ("/v1/recommendations", {"contact_id": "c\u00001", "stage": "demo"}, "contact_id"),
    ):
        response = post(app, path, body)
        assert response.status_code == 400, (field, response.text)
        assert response.json()["error"].startswith(f"field '{field}' must not contain control characters; found U+")
    assert stored_feedback(crm_location).empty or not stored_feedback(crm_location)["feedback_id"].isin(
        ["nul\u0000x", "fb-ctl"]).any()


TOMORROW_PLUS = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).date().isoformat()


@pytest.mark.parametrize(
    ("changes", "status", "fragment"),
    [
        ({"stage": "nope"}, 400, "feedback column 'stage': unknown stage 'nope'; allowed: lead, demo, deal"),
        ({"characteristic": "ch_zz"}, 400, "unknown characteristic 'ch_zz'"),
        ({"characteristic": "ch_integration"}, 400, "'ch_integration' at 'demo': not offered at that stage"),
        ({"occurred_on": TOMORROW_PLUS}, 400, "allowed: a date up to today"),
        ({"occurred_on": "2024-13-01"}, 400, "feedback column 'occurred_on': 1 invalid value(s) '2024-13-01'"),
        ({"outcome": "maybe"}, 400, "feedback column 'outcome': 1 invalid value(s) 'maybe' (row 1); allowed: positive"),
        ({"outcome": None}, 400, "field 'outcome' is required"),
        ({"stage": 3}, 400, "field 'stage' must be a string"),
        ({"contact_id": "c404"}, 404, "field 'contact_id': no contact 'c404' in the CRM"),
    ],
)
def test_feedback_refusals_store_nothing(
    app: TestClient, crm_location: str, changes: dict[str, Any], status: int, fragment: str
) -> None:
    response = post(app, "/v1/feedback", feedback_body("fb-x", **changes))
    assert response.status_code == status and fragment in response.json()["error"], response.text
    assert stored_feedback(crm_location).empty


def exposures(location: str) -> pd.DataFrame:
    import crm

    with crm.open_source(location) as source:
        own = source.own()
        if not own._exists(own.exposures):
            return pd.DataFrame()
        with own.engine.connect() as conn:
            return pd.DataFrame([dict(r._mapping) for r in conn.execute(sa.select(own.exposures))])


def test_exposures_are_written_off_the_request_path(app: TestClient, crm_location: str) -> None:
    answer = post(app, "/v1/recommendations", {"contact_id": "c4", "stage": "lead", "top_k": 3}).json()
    plain = post(app, "/v1/recommendations", {"stage": "deal", "organization": {"industry": "it"},
                                              "contact": {"position": "ceo"}, "top_k": 2}).json()
    assert wait_until(lambda: len(exposures(crm_location)) == 5, timeout=20)
    rows = exposures(crm_location).sort_values(["request_id", "rank"])
    mine = rows[rows.request_id == answer["request_id"]]
    assert list(mine["characteristic"]) == [t["characteristic"] for t in answer["talking_points"]]
    assert list(mine["rank"]) == [1, 2, 3] and set(mine["contact_id"]) == {"c4"} and set(mine["model_version"]) == {1}
    assert list(mine["probability"]) == pytest.approx([t["probability"] for t in answer["talking_points"]], abs=1e-6)
    assert rows[rows.request_id == plain["request_id"]]["contact_id"].isna().all()
    text = rows.to_csv()
    assert "Иван" not in text and "example.ru" not in text  # no personal data
    metrics = app.get("/metrics").text
    assert 'needs_rec_exposures_total{fate="written"} 5.0' in metrics


def test_a_full_exposure_buffer_drops_rows_and_counts_them(
    built: dict[str, Path], database_url: str, dictionaries_dir: Path, tmp_path: Path
) -> None:
    location = write_crm_database(database_url, dictionaries.load(dictionaries_dir))
    settings = settings_for(models_dir_with(tmp_path, built["fixed"]), crm=location, exposure_buffer=2)
    with serve(settings, "tiny-buffer") as (client, _):
        answers = [post(client, "/v1/recommendations", {"contact_id": "c1", "stage": "lead", "top_k": 3})
                   for _ in range(3)]
        assert all(a.status_code == 200 for a in answers)  # never a failed request
        metrics = client.get("/metrics").text
        assert 'needs_rec_exposures_total{fate="dropped_buffer_full"} 9.0' in metrics


PLAIN = {"stage": "deal", "organization": {"industry": "it"}, "contact": {"position": "ceo"}, "top_k": 3}


def held_exclusively(database: Path, seconds: float) -> Any:
    """Another process's `BEGIN EXCLUSIVE` on a SQLite file (no reader or writer gets in), let go after
    `seconds` by a timer thread; returns the timer (join it to be sure the lock is gone)."""
    import sqlite3
    import threading

    other = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")

    def release() -> None:
        other.execute("ROLLBACK")
        other.close()

    timer = threading.Timer(seconds, release)
    timer.start()
    return timer


def answer_in_a_locked_database(
    built: dict[str, Path], dictionaries_dir: Path, tmp_path: Path, shutdown_timeout_s: float, locked_s: float
) -> tuple[Any, str, Any]:
    """10 answers of 3 points while the CRM's SQLite file is locked, then the service stopped (as on
    SIGTERM); returns (the service, its log, the lock's timer)."""
    database = tmp_path / "crm.db"
    location = write_crm_database(f"sqlite:///{database}", dictionaries.load(dictionaries_dir))
    settings = settings_for(models_dir_with(tmp_path, built["fixed"]), crm=location, crm_cache_s=0,
                            shutdown_timeout_s=shutdown_timeout_s)
    with serve(settings, "slow-shutdown") as (client, log):
        assert post(client, "/v1/recommendations", PLAIN).status_code == 200  # the tables exist
        assert wait_until(lambda: len(exposures(location)) == 3, timeout=20)
        timer = held_exclusively(database, locked_s)
        for _ in range(10):
            assert post(client, "/v1/recommendations", PLAIN).status_code == 200
        service = client.app.state.service
    return service, log.getvalue(), timer


def test_exposures_buffered_at_shutdown_wait_for_a_slow_database_within_the_budget(
    built: dict[str, Path], dictionaries_dir: Path, tmp_path: Path
) -> None:
    """The writer was given 5 s at shutdown whatever --shutdown-timeout-s said: a database locked for
    6 s lost every buffered row, uncounted. Now the close waits within the budget (20 s here)."""
    service, log, timer = answer_in_a_locked_database(built, dictionaries_dir, tmp_path, 20, locked_s=6)
    timer.join()
    assert service.crm_link.exposures.written == 33 and service.crm_link.exposures.dropped == 0
    assert len(exposures(f"sqlite:///{tmp_path / 'crm.db'}")) == 33
    assert '"exposures_dropped"' not in log


def test_exposures_not_written_within_the_shutdown_budget_are_counted_and_logged_once(
    built: dict[str, Path], dictionaries_dir: Path, tmp_path: Path
) -> None:
    service, log, timer = answer_in_a_locked_database(built, dictionaries_dir, tmp_path, 1, locked_s=4)
    timer.join()
    assert service.crm_link.exposures.dropped == 30
    counted = service.metrics.exposures.labels("dropped_shutdown")._value.get()
    assert counted == 30
    [line] = [json.loads(x) for x in log.splitlines() if '"exposures_dropped"' in x]
    assert line["rows"] == 30 and line["reason"] == "shutdown" and "--shutdown-timeout-s" in line["error"]


def metric(client: TestClient, name: str) -> float:
    """One unlabelled sample of /metrics (0 when absent)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_a_database_crm_is_snapshotted_and_a_new_contact_is_still_found(
    app: TestClient, crm_location: str, dictionaries_dir: Path
) -> None:
    if not crm_location.startswith(("sqlite", "postgresql")):  # a CSV directory's lookups are in memory already
        assert post(app, "/v1/recommendations", {"contact_id": "c1", "stage": "lead"}).status_code == 200
        assert metric(app, "needs_rec_crm_snapshot_contacts") == 0 and metric(app, "needs_rec_crm_lookups_total") == 1
        return
    n_contacts = len(crm_frames(dictionaries.load(dictionaries_dir))["contacts"])
    assert wait_until(lambda: metric(app, "needs_rec_crm_snapshot_contacts") == n_contacts)
    assert 0 <= metric(app, "needs_rec_crm_snapshot_age_seconds") < 60
    reads = metric(app, "needs_rec_crm_lookups_total")
    for contact_id in ("c1", "c4", "c7", "c9"):
        assert post(app, "/v1/recommendations", {"contact_id": contact_id, "stage": "lead"}).status_code == 200
    assert metric(app, "needs_rec_crm_lookups_total") == reads  # all four answered from the snapshot

    engine = sa.create_engine(crm_location.split("?")[0], future=True)
    schema_name = crm_location.partition("?schema=")[2] or None
    contacts = sa.Table("contacts", sa.MetaData(schema=schema_name), autoload_with=engine)
    with engine.begin() as conn:
        row = dict(conn.execute(sa.select(contacts).where(contacts.c.contact_id == "c1")).mappings().one())
        conn.execute(contacts.insert().values({**row, "contact_id": "c-new"}))
    engine.dispose()
    fresh = post(app, "/v1/recommendations", {"contact_id": "c-new", "stage": "lead"})
    assert fresh.status_code == 200 and fresh.json()["contact_id"] == "c-new"  # not in the snapshot: read at once
    assert metric(app, "needs_rec_crm_lookups_total") == reads + 1


def test_an_expired_snapshot_is_not_used(tmp_path: Path, dictionaries_dir: Path) -> None:
    import asyncio
    import time

    import crm
    from serving.crm_link import CrmLink

    location = write_crm_database(f"sqlite:///{tmp_path / 'crm.db'}", dictionaries.load(dictionaries_dir))
    source = crm.open_source(location)
    link = CrmLink(source, cache_s=60, workers=1)
    try:
        stale = crm.ContactRecord(contact_id="c1", org_id="o-old", organization={}, contact={})
        link._snapshot = (time.monotonic() - 61, {"c1": stale})  # read 61 s ago: past the 60 s bound
        assert asyncio.run(link.contact("c1")).org_id != "o-old"  # read from the CRM instead
        link._snapshot = (time.monotonic() - 1, {"c1": stale})
        assert asyncio.run(link.contact("c1")) is stale
    finally:
        link.stop()


def test_with_a_credential_the_crms_own_data_needs_it(built: dict[str, Path], dictionaries_dir: Path,
                                                      tmp_path: Path) -> None:
    """With a token set (as beyond loopback), a contact_id lookup, the audience and similar organizations
    answered anyone: the contact's interests and position in the reasons, every contact id, manager ids."""
    dicts = dictionaries.load(dictionaries_dir)
    token = "t0ken-for-the-tests-0123456789"
    settings = settings_for(models_dir_with(tmp_path, built["random"]), crm=str(write_crm(tmp_path / "crm", dicts)),
                            auth_token=token)
    bearer = {"Authorization": f"Bearer {token}"}
    with serve(settings, "locked-crm") as (client, _):
        for body in ({"contact_id": "c2", "stage": "lead"}, {"contact_id": "no-such-contact", "stage": "lead"}):
            refused = client.post("/v1/recommendations", json=body)  # an unknown id too: nothing says who exists
            assert refused.status_code == 401, refused.text
            assert "needs the service's credential" in refused.json()["error"]
            assert refused.headers["WWW-Authenticate"].startswith("Basic realm=")
        batch = client.post("/v1/recommendations:batch", json={"requests": [{"contact_id": "c2", "stage": "lead"}]})
        assert batch.status_code == 401 and "requests[0].contact_id" in batch.json()["error"]
        assert client.post("/v1/recommendations", json={"contact_id": "c2", "stage": "lead"},
                           headers=bearer).status_code == 200
        assert post(client, "/v1/recommendations", {**full_fields("c2", dicts), "stage": "lead"}).status_code == 200
        for path in ("/v1/audience?characteristic=x&stage=lead", "/v1/organizations/o1/similar?characteristic=x"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers=bearer).status_code not in (401, 403), path


def test_the_queries_on_a_locked_sqlite_file_are_a_503_within_the_request_timeout(
    built: dict[str, Path], dictionaries_dir: Path, tmp_path: Path
) -> None:
    """Before its first snapshot, /v1/audience on a SQLite file another process holds with BEGIN
    EXCLUSIVE waited SQLite's 30 s busy timeout for its 503; like /v1/feedback and the card it now
    gives up after --request-timeout-s, and the snapshot's build goes on for the retry."""
    import sqlite3

    database = tmp_path / "crm.db"
    location = write_crm_database(f"sqlite:///{database}", dictionaries.load(dictionaries_dir))
    models = models_dir_with(tmp_path, built["fixed"])
    query = {"characteristic": "ch_price", "stage": "demo"}
    with serve(settings_for(models, crm=location, crm_cache_s=0, request_timeout_s=1), "locked_queries") as (
        client, _
    ):
        other = sqlite3.connect(database, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # no reader gets in
        try:
            locked = client.get("/v1/audience", params=query)
            similar = client.get("/v1/organizations/o1/similar", params={"characteristic": "ch_price"})
        finally:
            other.execute("ROLLBACK")
            other.close()
        for answer, what in ((locked, "GET /v1/audience"), (similar, "GET /v1/organizations/<org_id>/similar")):
            assert answer.status_code == 503 and answer.headers["Retry-After"], answer.text
            assert answer.json()["error"] == (
                f"{what}: the CRM snapshot was not ready within 1 s (the CRM source busy or locked, or still "
                "being read); it goes on being built: retry in a minute"
            )
        assert wait_until(lambda: client.get("/v1/audience", params=query).status_code == 200, timeout=30)
