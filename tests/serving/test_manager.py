"""The manager's page over a real SQLite CRM (no browser): search, the card, stages, show more, errors, privacy."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crm_factory import write_crm_database
from fastapi.testclient import TestClient
from model_factory import build_version, copy_version
from serving_support import FIXED_PROBABILITIES, LOCAL, capture_logger, serve, settings_for, wait_until

import crm
from serving.access import CSRF_COOKIE, CSRF_HEADER
from serving.web import CONTENT_SECURITY_POLICY


@pytest.fixture(scope="module")
def crm_url(tmp_path_factory: pytest.TempPathFactory, dictionaries_dir: Path) -> str:
    from needs_rec import dictionaries

    return write_crm_database(f"sqlite:///{tmp_path_factory.mktemp('crm') / 'crm.db'}",
                              dictionaries.load(dictionaries_dir))


@pytest.fixture(scope="module")
def app(built: dict[str, Path], crm_url: str) -> Iterator[tuple[TestClient, Any]]:
    """The 'fixed' version (constant outputs 0.9, 0.2, 0.7, 0.4; cuts 0.5) with the tiny CRM."""
    with serve(settings_for(built["fixed"].parent, crm=crm_url), "manager") as (client, log):
        yield client, log


@pytest.fixture
def client(app: tuple[TestClient, Any]) -> TestClient:
    return app[0]


def found_ids(html: str) -> list[str]:
    return re.findall(r'data-contact-id="([^"]+)"', html)


def points(html: str) -> list[str]:
    return re.findall(r'data-characteristic="([^"]+)"', html)


def test_search_by_organization_name_in_any_case(client: TestClient) -> None:
    page = client.get("/", params={"q": "ромашка 1"})  # stored as «ООО Ромашка 1»: Cyrillic folded too
    assert page.status_code == 200
    assert found_ids(page.text) == ["c2", "c8"]
    assert "ООО Ромашка 1" in page.text and "Иван Петров 1" in page.text


def test_search_by_contact_name_and_by_id(client: TestClient) -> None:
    assert found_ids(client.get("/", params={"q": "Петров 3"}).text) == ["c4"]
    assert "c12" in found_ids(client.get("/", params={"q": "C12"}).text)
    nothing = client.get("/", params={"q": "нет такого"})
    assert nothing.status_code == 200 and "Ничего не найдено по запросу «нет такого»" in nothing.text


def test_a_search_says_more_were_found_only_when_there_are_more(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exactly SEARCH_LIMIT matches said «показаны первые N, уточните запрос», as if some were hidden."""
    from serving import manager

    monkeypatch.setattr(manager, "SEARCH_LIMIT", 2)
    exact = client.get("/", params={"q": "ромашка 1"}).text  # c2 and c8: all there are
    assert found_ids(exact) == ["c2", "c8"] and "Найдено: 2</h2>" in exact and "показаны первые" not in exact
    more = client.get("/", params={"q": "ромашка"}).text  # every contact: more than 2
    assert len(found_ids(more)) == 2 and "Найдено: 2 (показаны первые 2, уточните запрос)" in more


def test_card_defaults_to_the_latest_known_stage(client: TestClient, crm_url: str) -> None:
    outcomes = crm.open_source(crm_url).read_table("outcomes")
    mine = outcomes.loc[outcomes["contact_id"] == "c1"]
    latest_day = mine["occurred_on"].max()
    stages = ["lead", "demo", "deal"]
    expected = max(mine.loc[mine["occurred_on"] == latest_day, "stage"], key=stages.index)
    page = client.get("/", params={"contact": "c1"})
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert f'<option value="{expected}" selected>' in page.text and "(последний известный)" in page.text
    assert "<h2 id=\"contact-title\">ООО Ромашка 0</h2>" in page.text and "Иван Петров 0" in page.text


def test_points_follow_the_thresholds_and_the_stage_texts(client: TestClient) -> None:
    lead = client.get("/", params={"contact": "c1", "stage": "lead"}).text
    assert points(lead) == ["ch_price", "ch_integration"]  # 0.9 and 0.7 pass the 0.5 cut; 0.4, 0.2 do not
    assert "Дешевле аналогов." in lead and "Интегрируется со всем." in lead
    assert "около 90 %" in lead and "Показать ещё (2)" in lead
    demo = client.get("/", params={"contact": "c1", "stage": "demo"}).text
    assert points(demo) == ["ch_price"] and "Показать ещё (2)" in demo  # ch_integration: not offered at demo
    more = client.get("/", params={"contact": "c1", "stage": "demo", "more": "1"}).text
    assert points(more) == ["ch_price", "ch_support", "ch_cloud"]
    assert "Покажите облако." in more and "Работает в облаке." not in more  # the stage's own text wins
    assert "ниже порога модели" in more and "Показать только главное" in more


def test_card_fragment_for_the_stage_switch(client: TestClient) -> None:
    fragment = client.get("/contacts/card", params={"contact": "c1", "stage": "lead"})
    assert fragment.status_code == 200 and fragment.headers["Cache-Control"] == "no-store"
    assert fragment.text.startswith('<section class="points"') and 'data-stage="lead"' in fragment.text
    assert re.search(r'data-request-id="[^"]+"', fragment.text)
    assert "<html" not in fragment.text
    first = re.search(r'data-request-id="([^"]+)"', fragment.text).group(1)
    again = client.get("/contacts/card", params={"contact": "c1", "stage": "lead"}).text
    assert re.search(r'data-request-id="([^"]+)"', again).group(1) != first  # every card is its own answer


def test_unknown_contact_and_unknown_stage(client: TestClient) -> None:
    missing = client.get("/", params={"contact": "c404"})
    assert missing.status_code == 404 and "Контакт «c404» не найден в CRM" in missing.text
    assert client.get("/contacts/card", params={"contact": "c404"}).status_code == 404
    odd = client.get("/", params={"contact": "c1", "stage": "no_such_stage"})  # falls back to the default stage
    assert odd.status_code == 200 and re.search(r'<option value="\w+" selected>', odd.text)
    assert re.search(r"Этапа «no_such_stage» нет в воронке; показан этап «[^»]+»\.", odd.text)  # was silent
    fragment = client.get("/contacts/card", params={"contact": "c1", "stage": "NOPE"})
    assert fragment.status_code == 200 and "Этапа «nope» нет в воронке" in fragment.text
    assert "нет в воронке" not in client.get("/", params={"contact": "c1", "stage": "demo"}).text


def test_control_characters_asked_for_are_never_echoed(client: TestClient) -> None:
    for params in ({"contact": "\x1b[31mc1"}, {"q": "\x00"}, {"contact": "c1", "stage": "demo\x00"}):
        page = client.get("/", params=params)
        assert page.status_code in (200, 404) and "\x1b" not in page.text and "\x00" not in page.text, params


def test_names_shown_are_never_logged(app: tuple[TestClient, Any]) -> None:
    client, log = app
    client.get("/", params={"q": "ромашка"})
    client.get("/", params={"contact": "c3"})
    text = log.getvalue()
    assert '"endpoint":"page_manager"' in text.replace(" ", "")
    pages = [json.loads(line) for line in text.splitlines() if '"page_manager"' in line]
    assert pages and all(line["model_version"] == 1 for line in pages)  # it was null on every page line
    assert "Ромашка" not in text and "Петров" not in text and "ромашка" not in text


def exposures_of(crm_url: str, request_id: str) -> list[tuple[Any, ...]]:
    import sqlalchemy as sa

    engine = sa.create_engine(crm_url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("exposures"):
                return []
            return conn.execute(
                sa.text("SELECT characteristic, rank, contact_id, stage FROM exposures "
                        "WHERE request_id = :r ORDER BY rank"),
                {"r": request_id},
            ).all()
    finally:
        engine.dispose()


def test_a_card_is_an_answer_with_its_exposures(client: TestClient, crm_url: str) -> None:
    page = client.get("/", params={"contact": "c5", "stage": "lead"}).text
    request_id = re.search(r'data-request-id="([^"]+)"', page).group(1)
    assert wait_until(lambda: len(exposures_of(crm_url, request_id)) == 2, timeout=20)
    assert exposures_of(crm_url, request_id) == [("ch_price", 1, "c5", "lead"), ("ch_integration", 2, "c5", "lead")]


def test_a_head_request_for_a_card_records_no_exposures(client: TestClient, crm_url: str) -> None:
    """HEAD (a link checker, a monitor, a chat's link preview) gets the card's status and headers but
    no body: nothing was shown, so no exposure rows (each HEAD wrote one row per point before)."""
    import sqlalchemy as sa

    for path in ("/", "/contacts/card"):
        head = client.head(path, params={"contact": "c11", "stage": "lead"})
        assert head.status_code == 200 and head.content == b"", path
    page = client.get("/", params={"contact": "c11", "stage": "lead"}).text  # shown: recorded
    request_id = re.search(r'data-request-id="([^"]+)"', page).group(1)
    assert wait_until(lambda: len(exposures_of(crm_url, request_id)) == 2, timeout=20)  # flushed in order
    engine = sa.create_engine(crm_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT request_id FROM exposures WHERE contact_id = 'c11'")).all()
    finally:
        engine.dispose()
    assert {r[0] for r in rows} == {request_id}


def test_feedback_from_the_card_reaches_the_analyst_page(client: TestClient) -> None:
    page = client.get("/contacts/card", params={"contact": "c6", "stage": "lead"}).text
    request_id = re.search(r'data-request-id="([^"]+)"', page).group(1)
    token = client.cookies.get(CSRF_COOKIE)
    for i, outcome in enumerate(["positive", "positive", "negative"]):
        body = {"feedback_id": f"page-{i}", "contact_id": "c6", "stage": "lead", "characteristic": "ch_integration",
                "outcome": outcome, "request_id": request_id}
        answer = client.post("/v1/feedback", json=body, headers={"Origin": "http://localhost", CSRF_HEADER: token})
        assert answer.status_code == 201, answer.text
    analyst = client.get("/analyst").text
    row = analyst.split('<tr data-characteristic="ch_integration">')[1].split("</tr>")[0]
    assert "Интеграции" in row and "<td>3</td>" in row and "67 % (2)" in row
    assert client.get("/", params={"contact": "c6"}).text.count('<option value="lead" selected>') == 1


def test_unreachable_crm_database_is_a_503_page(built: dict[str, Path], tmp_path: Path) -> None:
    settings = settings_for(built["fixed"].parent, crm="postgresql://crm:s3cret@127.0.0.1:9/crm")
    with serve(settings, "crm-down") as (client, log):
        search = client.get("/", params={"q": "ромашка"})
        assert search.status_code == 503 and "База CRM сейчас недоступна" in search.text
        card = client.get("/", params={"contact": "c1"})
        assert card.status_code == 503 and "s3cret" not in card.text
        analyst = client.get("/analyst")
        assert analyst.status_code == 200 and "База CRM сейчас недоступна: отзывы не прочитаны." in analyst.text
        assert "s3cret" not in log.getvalue()


def test_a_wrong_value_in_the_contacts_crm_row_is_a_page_saying_so(
    built: dict[str, Path], tmp_path: Path, dictionaries_dir: Path
) -> None:
    """o1 (c1, c7) has employees 'many' (no request can carry it), o2 (c2, c8) has -5 (the request
    rules refuse it): both cards are pages naming the CRM's value, never a JSON error; c3 has its points."""
    from needs_rec import dictionaries

    edits = [("organizations", 1, "employees", "many"), ("organizations", 2, "employees", "-5")]
    url = write_crm_database(f"sqlite:///{tmp_path / 'crm.db'}", dictionaries.load(dictionaries_dir), edits=edits)
    with serve(settings_for(built["fixed"].parent, crm=url), "manager-bad-row") as (client, _):
        for contact_id, shown in (("c1", "&#39;many&#39; is not a number"), ("c2", "got -5")):
            card = client.get("/", params={"contact": contact_id})
            assert card.status_code == 200 and card.headers["content-type"].startswith("text/html"), card.text[:200]
            assert "Данные контакта в CRM" in card.text and shown in card.text
            assert "send the contact&#39;s fields" not in card.text  # the API caller's advice is not the page's
            assert not points(card.text)
        assert points(client.get("/", params={"contact": "c3"}).text)


def test_a_crm_table_gone_while_serving_is_a_503_page_not_the_managers_fault(
    built: dict[str, Path], tmp_path: Path, dictionaries_dir: Path
) -> None:
    """A CRM export that lost a file after start-up: the card and a lookup answered 400 (the caller's
    fault, as if the request were wrong) while the queries answered 503 for the same fault."""
    from crm_factory import write_crm

    from needs_rec import dictionaries

    directory = write_crm(tmp_path / "export", dictionaries.load(dictionaries_dir))
    settings = settings_for(built["fixed"].parent, crm=str(directory), crm_cache_s=0)  # every lookup reads
    with serve(settings, "manager-table-gone") as (client, _):
        assert points(client.get("/", params={"contact": "c3"}).text)
        (directory / "contacts.csv").unlink()
        time.sleep(1.1)
        card = client.get("/", params={"contact": "c3"})
        assert card.status_code == 503 and card.headers["content-type"].startswith("text/html"), card.text[:300]
        assert "База CRM сейчас недоступна" in card.text
        fragment = client.get("/contacts/card", params={"contact": "c3", "stage": "lead"})
        assert fragment.status_code == 503 and "База CRM сейчас недоступна" in fragment.text
        search = client.get("/", params={"q": "ромашка"})
        assert search.status_code == 503 and "поиск не выполнен" in search.text
        time.sleep(1.1)  # the files source re-checks its files once a second (crm.files.FileSource refresh_s)
        lookup = client.post("/v1/recommendations", json={"contact_id": "c3", "stage": "lead"})
        assert lookup.status_code == 503 and lookup.headers["Retry-After"], lookup.text
        error = lookup.json()["error"]
        assert error.startswith("the CRM source cannot be read: missing file contacts.csv")
        assert str(tmp_path) not in error


def point_ids(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-characteristic="([^"]+)" data-feedback-id="([^"]+)"', html))


def test_a_point_is_answered_once_a_day_whatever_the_tab(client: TestClient, crm_url: str) -> None:
    """Each card had a random feedback_id per shown point: a reload or a second tab stored the same point
    again, even with the opposite answer. Now the id is one per (contact, stage, characteristic, day) and
    a card shows the points answered today locked, with their answer."""
    first = client.get("/", params={"contact": "c9", "stage": "lead"}).text
    second = client.get("/contacts/card", params={"contact": "c9", "stage": "lead"}).text  # a reload, another tab
    ids = point_ids(first)
    assert set(ids) == {"ch_price", "ch_integration"} and ids == point_ids(second)
    assert all(len(i) <= 200 and i.startswith("page-") for i in ids.values())
    assert point_ids(client.get("/", params={"contact": "c9", "stage": "demo"}).text)["ch_price"] != ids["ch_price"]
    assert point_ids(client.get("/", params={"contact": "c10", "stage": "lead"}).text)["ch_price"] != ids["ch_price"]
    token = client.cookies.get(CSRF_COOKIE)
    headers = {"Origin": "http://localhost", CSRF_HEADER: token}

    def press(page: str, outcome: str) -> int:
        body = {"feedback_id": ids["ch_price"], "contact_id": "c9", "stage": "lead", "characteristic": "ch_price",
                "outcome": outcome, "request_id": re.search(r'data-request-id="([^"]+)"', page).group(1)}
        return client.post("/v1/feedback", json=body, headers=headers).status_code

    assert press(first, "positive") == 201
    assert press(first, "positive") == 200  # the same card's retry: a duplicate
    assert press(second, "negative") == 409  # the other tab: refused, not a contradicting second row
    with crm.open_source(crm_url) as source:
        rows = [r for r in source.recent_feedback(100) if r["contact_id"] == "c9"]
    assert [(r["characteristic"], r["outcome"]) for r in rows] == [("ch_price", "positive")]
    again = client.get("/", params={"contact": "c9", "stage": "lead"}).text
    price = again.split('data-characteristic="ch_price"')[1].split('<li class="point')[0]
    assert 'data-answered="positive"' in price and "Сохранено: отозвалось" in price
    assert '<button type="button" data-outcome="positive" disabled aria-pressed="true">' in price
    assert '<button type="button" data-outcome="negative" disabled aria-pressed="false">' in price
    other = again.split('data-characteristic="ch_integration"')[1].split("</ol>")[0]
    assert "disabled" not in other and "Сохранено" not in other
    demo = client.get("/", params={"contact": "c9", "stage": "demo"}).text  # another stage: not answered there
    assert "data-answered" not in demo


def test_the_analyst_page_says_when_the_crm_is_unreachable(
    built: dict[str, Path], tmp_path: Path, dictionaries_dir: Path
) -> None:
    """With contacts.csv renamed while serving, /analyst still said «Все строки CRM прошли проверку
    (2026-12-04T04:38:28+00:00)» from the snapshot read before, while the card said the CRM was down."""
    from crm_factory import write_crm

    from needs_rec import dictionaries

    directory = write_crm(tmp_path / "export", dictionaries.load(dictionaries_dir))
    with serve(settings_for(built["fixed"].parent, crm=str(directory), crm_cache_s=0), "analyst-crm-gone") as (
        client, _
    ):
        passed = re.compile(r"Все строки CRM прошли проверку \(\d{4}-\d\d-\d\d \d\d:\d\d UTC\)")
        assert wait_until(lambda: passed.search(client.get("/analyst").text), timeout=30)
        (directory / "contacts.csv").rename(directory / "contacts.csv.old")
        page = client.get("/analyst")
        assert page.status_code == 200
        assert "База CRM сейчас недоступна: проверить её строки нельзя" in page.text
        assert "прошли проверку" not in page.text and str(tmp_path) not in page.text
        assert re.search(r"последняя удачная проверка \d{4}-\d\d-\d\d \d\d:\d\d UTC", page.text)


def test_an_empty_models_directory_is_said_so_not_still_loading(
    built: dict[str, Path], crm_url: str, tmp_path: Path
) -> None:
    """With no version at all the card said «Модель ещё загружается…» forever; now it says there is none
    and how to make one, and the card appears once a version is trained into the directory."""
    from serving.app import create_app

    models = tmp_path / "models"
    models.mkdir()
    logger, _ = capture_logger("manager-no-model")
    with TestClient(create_app(settings_for(models, crm=crm_url), logger=logger), base_url=LOCAL) as client:
        def card() -> str:
            return client.get("/", params={"contact": "c1"}).text

        assert wait_until(lambda: "нет ни одной версии" in card(), timeout=20)
        page = client.get("/", params={"contact": "c1"})
        assert page.status_code == 503 and "обучите модель" in page.text and "загружается" not in page.text
        copy_version(built["fixed"], models, 1)
        assert wait_until(lambda: points(card()), timeout=30)


def test_an_answered_point_is_shown_on_a_files_crm_too(
    built: dict[str, Path], tmp_path: Path, dictionaries_dir: Path
) -> None:
    """The same day's feedback is read from needs_rec.db beside a directory CRM.

    (That a look alone never creates needs_rec.db is tests/crm/test_stages.py's: here the page's exposures
    are written in the background and may create it at any moment.)"""
    from crm_factory import write_crm

    from needs_rec import dictionaries

    directory = write_crm(tmp_path / "export", dictionaries.load(dictionaries_dir))
    with serve(settings_for(built["fixed"].parent, crm=str(directory)), "manager-files-answered") as (client, _):
        page = client.get("/", params={"contact": "c3", "stage": "lead"}).text
        assert "data-answered" not in page
        body = {"feedback_id": point_ids(page)["ch_integration"], "contact_id": "c3", "stage": "lead",
                "characteristic": "ch_integration", "outcome": "negative"}
        headers = {"Origin": "http://localhost", CSRF_HEADER: client.cookies.get(CSRF_COOKIE)}
        assert client.post("/v1/feedback", json=body, headers=headers).status_code == 201
        again = client.get("/", params={"contact": "c3", "stage": "lead"}).text
        assert 'data-characteristic="ch_integration"' in again
        shown = again.split('data-characteristic="ch_integration"')[1].split("</ol>")[0]
        assert 'data-answered="negative"' in shown and "Сохранено: не отозвалось" in shown


def test_a_contact_id_over_the_id_limit_is_said_so_never_cut_to_another_contact(
    built: dict[str, Path], tmp_path: Path, dictionaries_dir: Path
) -> None:
    """An id longer than the service takes (serving.requests.MAX_ID, as /v1/recommendations and
    /v1/feedback refuse it) was cut to its first 200 characters: the page then said «не найден»
    (404) of a contact the search had just listed, or opened another contact whose id is that prefix."""
    from crm_factory import write_crm

    from needs_rec import dictionaries
    from serving.requests import MAX_ID

    prefix = "L" * MAX_ID
    directory = write_crm(tmp_path / "export", dictionaries.load(dictionaries_dir),
                          edits=[("contacts", 1, "contact_id", prefix)])
    with serve(settings_for(built["fixed"].parent, crm=str(directory)), "manager-long-id") as (client, _):
        assert f'data-card-contact="{prefix}"' in client.get("/", params={"contact": prefix}).text  # 200: served
        longer = prefix + "X"
        for path in ("/", "/contacts/card"):
            page = client.get(path, params={"contact": longer})
            assert page.status_code == 400, path
            assert "data-card-contact" not in page.text and "data-characteristic" not in page.text, path
            assert f"длиннее {MAX_ID} символов" in page.text and "не найден" not in page.text, path


def test_a_locked_crm_database_is_a_503_card_within_the_request_timeout(
    built: dict[str, Path], tmp_path: Path, dictionaries_dir: Path
) -> None:
    """Another process's exclusive lock on the CRM's SQLite file held the card and the search for
    SQLite's 30 s busy timeout (a manager staring at a blank card); like /v1/feedback, they now give
    up after --request-timeout-s and say so."""
    import sqlite3

    from needs_rec import dictionaries

    database = tmp_path / "crm.db"
    location = write_crm_database(f"sqlite:///{database}", dictionaries.load(dictionaries_dir))
    settings = settings_for(built["fixed"].parent, crm=location, crm_cache_s=0, request_timeout_s=1)
    with serve(settings, "manager-locked") as (client, _):
        assert points(client.get("/", params={"contact": "c1", "stage": "lead"}).text)  # the CRM answers
        other = sqlite3.connect(database, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # no reader gets in
        try:
            card = client.get("/", params={"contact": "c2", "stage": "lead"})
            fragment = client.get("/contacts/card", params={"contact": "c2", "stage": "lead"})
            search = client.get("/", params={"q": "Петров"})
        finally:
            other.execute("ROLLBACK")
            other.close()
        for page in (card, fragment, search):
            assert page.status_code == 503
            assert "База CRM не ответила за 1 с" in page.text, page.text
        assert points(client.get("/", params={"contact": "c2", "stage": "lead"}).text)  # and again once it is free


def test_a_positive_only_version_reads_each_chance_against_the_stage(
    tmp_path: Path, dictionaries_dir: Path, crm_url: str
) -> None:
    """On a positive-only CRM the probability is a share of conversations (0.2 for the best pick read
    «очень низкая»): the card now says how it compares with the stage's usual share; the header's
    client_since is a Russian date (it showed 2020-05-01)."""
    version = build_version(tmp_path / "models", dictionaries_dir, probabilities=FIXED_PROBABILITIES,
                            thresholds=0.5, explicit_negatives=False)
    with serve(settings_for(version.parent, crm=crm_url), "manager-positive-only") as (client, _):
        page = client.get("/", params={"contact": "c1", "stage": "demo"}).text
        other = client.get("/", params={"contact": "c2", "stage": "demo"}).text  # c1, c2: one is a client
    chances = re.findall(r'<span class="words">([^<]*<strong>[^<]*</strong>[^<]*)</span>', page)
    assert chances and all(c.startswith("Шанс отклика: <strong>") and " % разговоров" in c for c in chances), chances
    assert any("чем в среднем на этапе" in c or "как в среднем на этапе" in c for c in chances), chances
    assert "Вероятность отклика" not in page
    assert "клиент с 01.05.2020" in page + other and not re.search(r"клиент с \d{4}-", page + other)

