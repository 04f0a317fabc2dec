"""The pages in a real headless browser (Debian chromium + chromedriver through Selenium, no downloads).

Skipped with a reason when chromium or chromedriver is missing, except under CI=true (where
`.ci/run` installs them), where a missing browser fails.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser_support import (
    full_page_screenshot,
    live_server,
    output_dir,
    require_chromium,
    severe_console_messages,
    start_chromium,
)
from serving_support import capture_logger, models_dir_with, settings_for

from serving.app import create_app

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8ff"
    "ff3f0005fe02fea7d6a4c50000000049454e44ae426082"
)


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    """One headless Chromium for the module's tests."""
    driver = start_chromium(require_chromium())
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_analyst_page_shows_the_report_with_its_charts(
    chrome: Any, built: dict[str, Path], tmp_path: Path
) -> None:
    models = models_dir_with(tmp_path, built["fixed"])
    (models / "1" / "report.md").write_text("# Отчёт\n\n![Калибровка](report_calibration.png)\n", encoding="utf-8")
    (models / "1" / "report_calibration.png").write_bytes(PNG)
    logger, _ = capture_logger("browser-analyst")
    with live_server(create_app(settings_for(models), logger=logger)) as base:
        chrome.get(base + "/analyst")
        assert chrome.title.startswith("Модели и отзывы")
        image = chrome.find_element("css selector", ".report img")
        assert chrome.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 1
        assert chrome.find_element("css selector", 'th[data-version="1"]').text.startswith("v1")
        assert severe_console_messages(chrome) == []  # no CSP violation, no failed asset


# -- the manager's page: search, card, stages, feedback — by mouse and by keyboard ---------------------

REPO = Path(__file__).resolve().parents[2]
DICTIONARIES = REPO / "dictionaries"


@dataclass
class Site:
    base: str
    crm_db: Path
    contact_id: str
    organization: str
    texts: dict[str, dict[str, str]]  # stage → characteristic → the dictionary's talking point


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The service on a synthetic SQLite CRM (the repo's Russian dictionaries) with a small untrained version."""
    from model_factory import build_version

    from crm.write import write_tables
    from needs_rec import dictionaries
    from training.sample import generate

    root = tmp_path_factory.mktemp("site")
    dicts = dictionaries.load(DICTIONARIES)
    version = build_version(root / "models", DICTIONARIES, seed=3, thresholds=0.05, top_k=5)
    sample = generate(dicts, n_orgs=25, seed=11)
    crm_db = root / "crm.db"
    write_tables(f"sqlite:///{crm_db}", {t: getattr(sample, t) for t in ("organizations", "contacts", "outcomes")})
    contacts, orgs = sample.contacts, sample.organizations.set_index("org_id")
    contact = contacts.iloc[3]
    texts = {
        stage: {c.code: text for c in dicts.characteristics if (text := c.talking_point(stage)) is not None}
        for stage in dicts.stage_codes
    }
    logger, _ = capture_logger("browser-manager")
    app = create_app(settings_for(version.parent, crm=f"sqlite:///{crm_db}"), logger=logger)
    with live_server(app) as base:
        yield Site(base, crm_db, str(contact["contact_id"]), str(orgs.loc[contact["org_id"], "name"]), texts)


def wait(driver: Any, condition: Any, timeout: float = 20) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the card is swapped in as a whole: an element read mid-swap is stale, so look again
    return WebDriverWait(driver, timeout, ignored_exceptions=[StaleElementReferenceException]).until(condition)


def points_at(driver: Any, stage: str) -> list[Any]:
    """The card's talking points once the card shows `stage`."""
    wait(driver, lambda d: d.find_element("css selector", "#card .points").get_attribute("data-stage") == stage)
    return driver.find_elements("css selector", "#card [data-characteristic]")


def shown_texts(points: list[Any]) -> dict[str, str]:
    return {p.get_attribute("data-characteristic"): p.find_element("css selector", ".text").text for p in points}


def feedback_rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as con:
        return con.execute(
            "SELECT contact_id, stage, characteristic, outcome, request_id, feedback_id FROM feedback"
        ).fetchall()


def search_term(organization: str) -> str:
    """What a manager would type: the organization's own name, without its legal form (the part in quotes)."""
    quoted = re.search(r"[«\"]([^»\"]+)[»\"]", organization)
    return (quoted.group(1) if quoted else organization).lower()


def test_manager_flow_with_the_mouse(chrome: Any, site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    from selenium.webdriver.support.ui import Select

    chrome.get(site.base + "/")
    box = chrome.find_element("css selector", 'input[name="q"]')
    box.send_keys(search_term(site.organization))
    chrome.find_element("css selector", "form.search button").click()
    found = wait(chrome, lambda d: d.find_elements("css selector", f'[data-contact-id="{site.contact_id}"]'))
    assert site.organization in found[0].text
    found[0].click()
    wait(chrome, lambda d: d.find_elements("css selector", 'select[name="stage"]'))
    assert chrome.find_element("css selector", ".contact h2").text == site.organization

    first, second = "needs_analysis", "proposal"
    Select(chrome.find_element("css selector", 'select[name="stage"]')).select_by_value(first)
    points = points_at(chrome, first)
    assert len(points) >= 3
    before = shown_texts(points)
    assert before == {code: site.texts[first][code] for code in before}  # exactly the dictionary's texts
    for point in points:
        assert point.find_element("css selector", "meter").get_attribute("value")
        assert re.search(r"Вероятность отклика: \w[\w ]* — около \d{1,3} %", point.text)
        assert point.find_elements("css selector", ".reasons li")

    request_id = chrome.find_element("css selector", "#card .points").get_attribute("data-request-id")
    target = points[1]
    code = target.get_attribute("data-characteristic")
    target.find_element("css selector", 'button[data-outcome="positive"]').click()
    wait(chrome, lambda d: "Сохранено" in target.find_element("css selector", ".status").text)
    rows = [r for r in feedback_rows(site.crm_db) if r[2] == code and r[1] == first]
    assert len(rows) == 1
    assert rows[0][:5] == (site.contact_id, first, code, "positive", request_id) and request_id

    path = full_page_screenshot(chrome, output_dir() / "contact_card.png")  # the card, one answer saved
    with capsys.disabled():
        print(f"\nscreenshot of the contact card: {path}")
    assert path.stat().st_size > 10_000

    Select(chrome.find_element("css selector", 'select[name="stage"]')).select_by_value(second)
    after = shown_texts(points_at(chrome, second))
    assert after == {c: site.texts[second][c] for c in after} and len(after) >= 3
    assert set(after.values()).isdisjoint(before.values())  # another stage, other texts

    more = chrome.find_element("css selector", "a[data-more='1']")
    hidden = int(re.search(r"\((\d+)\)", more.text).group(1))
    more.click()
    wait(chrome, lambda d: d.find_elements("css selector", "a[data-more='0']"))
    assert len(chrome.find_elements("css selector", "#card [data-characteristic]")) == len(after) + hidden

    assert severe_console_messages(chrome) == []


def test_manager_flow_by_keyboard_only(chrome: Any, site: Site) -> None:
    from selenium.webdriver.common.keys import Keys

    chrome.get(site.base + "/")
    active = chrome.switch_to.active_element
    assert active.get_attribute("name") == "q"  # the search box has the focus on arrival
    active.send_keys(search_term(site.organization) + Keys.ENTER)
    wait(chrome, lambda d: d.find_elements("css selector", "[data-contact-id]"))

    def tab_to(matches: Any, limit: int = 80) -> Any:
        for _ in range(limit):
            element = chrome.switch_to.active_element
            if matches(element):
                return element
            element.send_keys(Keys.TAB)
        raise AssertionError("never reached by Tab")

    link = tab_to(lambda e: e.get_attribute("data-contact-id") == site.contact_id)
    link.send_keys(Keys.ENTER)
    wait(chrome, lambda d: d.find_elements("css selector", 'select[name="stage"]'))
    select = tab_to(lambda e: e.get_attribute("name") == "stage")
    start = select.get_attribute("value")
    select.send_keys(Keys.ARROW_DOWN if start != "retention" else Keys.ARROW_UP)
    stage = wait(chrome, lambda d: (v := d.find_element("css selector", "#card .points").get_attribute("data-stage"))
                 != start and v)
    points = points_at(chrome, stage)
    assert len(points) >= 3 and shown_texts(points) == {c: site.texts[stage][c] for c in shown_texts(points)}
    assert chrome.switch_to.active_element.get_attribute("name") == "stage"  # the focus stays where it was

    button = tab_to(lambda e: e.get_attribute("data-outcome") == "negative")
    point = button.find_element("xpath", "ancestor::*[@data-characteristic][1]")
    code = point.get_attribute("data-characteristic")
    button.send_keys(Keys.SPACE)
    wait(chrome, lambda d: "Сохранено" in point.find_element("css selector", ".status").text)
    rows = [r for r in feedback_rows(site.crm_db) if r[2] == code and r[1] == stage and r[3] == "negative"]
    assert len(rows) == 1 and rows[0][0] == site.contact_id

    more = tab_to(lambda e: e.get_attribute("data-more") == "1")
    more.send_keys(Keys.ENTER)
    wait(chrome, lambda d: d.find_elements("css selector", "a[data-more='0']"))
    assert len(chrome.find_elements("css selector", "#card [data-characteristic]")) > len(points)
    assert chrome.switch_to.active_element.get_attribute("id") == "points-title"  # the focus follows the new list
    assert severe_console_messages(chrome) == []


def other_contact(site: Site) -> str:
    """A contact no other test of the module gives feedback for."""
    with sqlite3.connect(site.crm_db) as con:
        ids = [r[0] for r in con.execute("SELECT contact_id FROM contacts ORDER BY contact_id")]
    return next(i for i in reversed(ids) if i != site.contact_id)


def test_a_point_is_answered_once_after_a_reload_and_in_another_tab(chrome: Any, site: Site) -> None:
    """Each shown point had a random feedback_id: a reload showed it blank and «Не отозвалось» stored a
    contradicting row, another tab a third one. Now: locked after a reload, a 409 in Russian in another tab."""
    contact = other_contact(site)
    url = f"{site.base}/?contact={contact}&stage=needs_analysis"
    chrome.get(url)
    first_tab = chrome.current_window_handle
    chrome.switch_to.new_window("tab")
    chrome.get(url)  # the second tab's card, rendered before any answer
    second_tab = chrome.current_window_handle
    chrome.switch_to.window(first_tab)
    point = points_at(chrome, "needs_analysis")[0]
    code = point.get_attribute("data-characteristic")
    point.find_element("css selector", 'button[data-outcome="positive"]').click()
    wait(chrome, lambda d: "Сохранено" in point.find_element("css selector", ".status").text)

    chrome.refresh()
    point = points_at(chrome, "needs_analysis")[0]
    assert point.get_attribute("data-characteristic") == code
    buttons = point.find_elements("css selector", "button[data-outcome]")
    assert [b.is_enabled() for b in buttons] == [False, False]
    assert buttons[0].get_attribute("aria-pressed") == "true"
    assert "Сохранено: отозвалось" in point.find_element("css selector", ".status").text

    chrome.switch_to.window(second_tab)
    point = points_at(chrome, "needs_analysis")[0]
    point.find_element("css selector", 'button[data-outcome="negative"]').click()
    wait(chrome, lambda d: "Уже отмечено сегодня" in point.find_element("css selector", ".status").text)
    assert "stored" not in point.find_element("css selector", ".status").text  # no English server text appended
    chrome.close()
    chrome.switch_to.window(first_tab)
    rows = [r for r in feedback_rows(site.crm_db) if r[0] == contact and r[1] == "needs_analysis" and r[2] == code]
    assert [r[3] for r in rows] == ["positive"]


def test_a_stage_change_that_fails_keeps_the_shown_stage_and_one_notice(chrome: Any, site: Site) -> None:
    """Offline, a stage change left the old stage's points under the new stage's name, and each failure
    added another «Нет связи…» notice. Now the selector goes back to the stage shown, with one notice."""
    from selenium.webdriver.support.ui import Select

    chrome.get(f"{site.base}/?contact={site.contact_id}&stage=needs_analysis")
    points_at(chrome, "needs_analysis")
    chrome.execute_cdp_cmd("Network.enable", {})
    offline = {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    chrome.execute_cdp_cmd("Network.emulateNetworkConditions", offline)
    try:
        for stage in ("proposal", "retention"):
            select = Select(chrome.find_element("css selector", 'select[name="stage"]'))
            select.select_by_value(stage)
            wait(chrome, lambda d: d.find_elements("css selector", "#card .card-problem"))
            wait(chrome, lambda d: d.find_element("css selector", 'select[name="stage"]').get_attribute("value")
                 == "needs_analysis")
        notices = chrome.find_elements("css selector", "#card .notice")
        assert [n.text for n in notices] == ["Нет связи с сервисом. Проверьте сеть и выберите этап ещё раз."]
        assert chrome.find_element("css selector", "#card .points").get_attribute("data-stage") == "needs_analysis"
    finally:
        online = {**offline, "offline": False}
        chrome.execute_cdp_cmd("Network.emulateNetworkConditions", online)


def test_a_card_the_server_refuses_shows_the_servers_notice_as_text(chrome: Any, site: Site) -> None:
    """A 404/400 card fragment showed «Не удалось загрузить подсказки (404)…», hiding the server's
    notice (which contact, what to do). Now its notice is shown, as text: markup in an id stays text."""
    from selenium.webdriver.support.ui import Select

    for contact, shown in (
        ('<img src=x onerror="window.pwned=1">', 'Контакт «<img src=x onerror="window.pwned=1">» не найден в CRM. '
                                                 "Найдите его поиском заново."),
        ("c" * 201, "ID контакта длиннее 200 символов: сервис работает только с ID до 200 символов"),
    ):
        chrome.get(f"{site.base}/?contact={site.contact_id}&stage=needs_analysis")
        points_at(chrome, "needs_analysis")
        chrome.execute_script('document.querySelector(\'form.stage input[name="contact"]\').value = arguments[0]',
                              contact)
        Select(chrome.find_element("css selector", 'select[name="stage"]')).select_by_value("proposal")
        problem = wait(chrome, lambda d: d.find_elements("css selector", "#card .card-problem"))[0]
        assert problem.text.startswith(shown), problem.text
        assert chrome.find_elements("css selector", "#card img") == []
        assert chrome.execute_script("return window.pwned === undefined")
        assert chrome.find_element("css selector", "#card .points").get_attribute("data-stage") == "needs_analysis"
    severe_console_messages(chrome)  # drained: the refused fetches are logged as failed loads, as meant here


def test_the_pages_fit_a_375_px_phone(chrome: Any, site: Site) -> None:
    """The stage selector (488–597 px with «… (последний известный)»), a 165-character word in an
    organization's name and the analyst's tables made the pages wider than a 375 px phone."""
    with sqlite3.connect(site.crm_db) as con:
        contact, org = con.execute("SELECT contact_id, org_id FROM contacts WHERE contact_id NOT IN (?, ?) "
                                   "ORDER BY contact_id LIMIT 1", (site.contact_id, other_contact(site))).fetchone()
        con.execute("UPDATE organizations SET name = ? WHERE org_id = ?", ("ООО " + "Ы" * 165, org))
    chrome.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 375, "height": 800, "deviceScaleFactor": 1, "mobile": True})
    try:
        def page_width() -> int:
            return int(chrome.execute_script("return document.documentElement.scrollWidth"))

        chrome.get(f"{site.base}/?contact={contact}")
        wait(chrome, lambda d: d.find_elements("css selector", "#card .points"))
        assert "Ы" * 20 in chrome.find_element("css selector", ".contact h2").text
        select = chrome.find_element("css selector", 'select[name="stage"]')
        assert select.size["width"] <= 375 and page_width() <= 375
        contact_id = chrome.find_element("css selector", ".facts .id")
        assert contact_id.value_of_css_property("white-space") == "nowrap"
        chrome.save_screenshot(str(output_dir() / "contact_card_375px.png"))  # the phone view, for a look
        chrome.get(f"{site.base}/?q={contact}")
        wait(chrome, lambda d: d.find_elements("css selector", "[data-contact-id]"))
        assert page_width() <= 375
        chrome.get(f"{site.base}/analyst")
        wait(chrome, lambda d: d.find_elements("css selector", "table.versions"))
        assert page_width() <= 375
    finally:
        chrome.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_a_stale_session_is_explained_in_russian_only(chrome: Any, site: Site) -> None:
    """A 403 (stale CSRF token) read «Не сохранено: сессия устарела (missing or stale CSRF token (header
    'X-CSRF-Token'): reload the page and try again)…»: the server's English inside a Russian sentence."""
    chrome.get(f"{site.base}/?contact={other_contact(site)}&stage=proposal")
    point = points_at(chrome, "proposal")[-1]
    chrome.execute_script("document.querySelector('meta[name=\"csrf-token\"]').setAttribute('content', 'stale')")
    point.find_element("css selector", 'button[data-outcome="positive"]').click()
    status = point.find_element("css selector", ".status")
    wait(chrome, lambda d: "сессия устарела" in status.text)
    assert status.text == "Не сохранено: сессия устарела. Обновите страницу и нажмите ещё раз."
    assert [b.is_enabled() for b in point.find_elements("css selector", "button[data-outcome]")] == [True, True]


def test_without_javascript_the_feedback_buttons_are_hidden(chrome: Any, site: Site) -> None:
    """With JavaScript off the buttons were shown but did nothing; now only the note is."""
    chrome.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        chrome.get(f"{site.base}/?contact={site.contact_id}&stage=proposal")
        buttons = chrome.find_elements("css selector", "#card button[data-outcome]")
        assert buttons and not any(b.is_displayed() for b in buttons)
        assert "работают только с включённым JavaScript" in chrome.find_element("css selector", "#card").text
    finally:
        chrome.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})
    chrome.get(f"{site.base}/?contact={site.contact_id}&stage=proposal")
    wait(chrome, lambda d: d.find_element("css selector", "#card button[data-outcome]").is_displayed())
