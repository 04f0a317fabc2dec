"""A browser's page request that fails gets a plain HTML page; the API and scripts keep the JSON."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serving_support import serve, settings_for

from serving import plain_page

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.fixture(scope="module")
def client(built: dict[str, Path]) -> Iterator[TestClient]:
    with serve(settings_for(built["fixed"].parent), "plain-page") as (client, _):
        yield client


@pytest.mark.parametrize(("path", "accept", "wanted"), [
    ("/analyst/versions/1", "text/html,*/*;q=0.8", True),
    ("/", "text/html", True),
    ("/analyst", "*/*", False),  # curl, the pages' own fetch
    ("/analyst", None, False),
    ("/v1/nope", "text/html", False),  # the JSON API answers JSON whatever the client asks
])
def test_only_a_browser_page_request_gets_a_page(path: str, accept: str | None, wanted: bool) -> None:
    assert plain_page.wanted(path, accept) is wanted


def test_the_page_escapes_the_message_and_drops_control_characters() -> None:
    page = plain_page.body(404, "no such endpoint: GET /<script>\x1b[2J").decode()
    assert "<h1>Страница не найдена</h1>" in page
    assert "&lt;script&gt;\ufffd[2J" in page and "<script>" not in page and "\x1b" not in page
    assert "<h1>Ошибка сервиса</h1>" in plain_page.body(599, "x").decode()  # a status without its own words


def test_a_stale_page_address_is_a_page(client: TestClient) -> None:
    answer = client.get("/analyst/versions/1", headers=BROWSER)  # a chart address missing its chart name
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert answer.headers["x-frame-options"] == "DENY" and answer.headers["x-content-type-options"] == "nosniff"
    assert "<h1>Страница не найдена</h1>" in answer.text
    assert "no such endpoint: GET /analyst/versions/1" in answer.text
    assert '<a href="/analyst">' in answer.text


def test_a_form_posted_to_a_get_only_page_is_a_page_with_allow(client: TestClient) -> None:
    answer = client.post("/", headers=BROWSER, data={"q": "x"})
    assert answer.status_code == 405 and answer.headers["allow"] == "GET"
    assert answer.headers["content-type"].startswith("text/html")
    assert "<h1>Так эту страницу не открыть</h1>" in answer.text and "allowed: GET" in answer.text


def test_a_missing_chart_asked_by_a_browser_tab_is_a_page(client: TestClient) -> None:
    answer = client.get("/analyst/versions/1/report_none.png", headers=BROWSER)
    assert answer.status_code == 404 and "<h1>Страница не найдена</h1>" in answer.text
    assert "no chart 'report_none.png' in version '1'" in answer.text


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/analyst/versions/1", 404),
    ("POST", "/", 405),
    ("GET", "/v1/nope", 404),
])
def test_scripts_and_the_api_keep_the_json(client: TestClient, method: str, path: str, status: int) -> None:
    headers = BROWSER if path.startswith("/v1/") else {"Accept": "*/*"}
    answer = client.request(method, path, headers=headers)
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("application/json")
    assert set(answer.json()) == {"error"}
