"""The manager page's templates rendered on their own: the §8 hooks, escaping, words for probabilities."""

from __future__ import annotations

import re
from typing import Any

import pytest

from serving.manager import CardView, ContactView
from serving.web import Pages

STAGES = [("lead", "Лид"), ("demo", "Демонстрация"), ("deal", "Сделка")]


def contact(**overrides: Any) -> ContactView:
    values: dict[str, Any] = {
        "contact_id": "C-1", "organization": "ООО «Ромашка» <script>alert(1)</script>", "contact_name": "Иванова Анна",
        "position": "Финансовый директор", "decision_role": "Принимает решение", "department": "", "industry": "ИТ",
        "region": "Москва", "employees": "120", "status": "клиент с 2023-01-01",
        "interests": ["Снизить затраты"], "products_owned": ["CRM"],
    }
    values.update(overrides)
    return ContactView(**values)


def point(code: str, p: float, selected: bool = True) -> dict[str, Any]:
    return {"characteristic": code, "name": f"Имя {code}", "product": "crm", "product_name": "CRM-система",
            "probability": p, "percent": round(p * 100), "word": "высокая" if p >= 0.7 else "низкая",
            "text": f"Текст {code} для этапа & <b>как есть</b>", "reasons": ["Причина один", "Причина два"],
            "selected": selected}


def render(name: str, **context: Any) -> str:
    pages = Pages()
    template = pages.templates.env.get_template(name)
    base: dict[str, Any] = {"page": "manager", "model_version": 3, "csrf_token": "tok", "q": "", "results": None,
                            "notice": None, "contact": None, "search_limit": 20, "more_results": False}
    base.update(context)
    return template.render(base)


def card_context(card: CardView, stage: str = "demo", latest: str | None = "demo") -> dict[str, Any]:
    return {"contact": contact(), "stages": STAGES, "stage": stage, "stage_name": dict(STAGES)[stage],
            "latest_stage": latest, "card": card}


def test_search_box_and_found_contacts_carry_the_hooks() -> None:
    rows = [{"contact_id": "C-1", "org_id": "O-1", "organization": "ООО «Ромашка»", "contact": "Иванова Анна",
             "position": "cfo"},
            {"contact_id": "C-2&x", "org_id": "O-2", "organization": None, "contact": None, "position": None}]
    html = render("manager.html", q="ромашка", results=rows)
    assert re.search(r'<input id="q" name="q" type="search" value="ромашка"', html)
    assert re.findall(r'data-contact-id="([^"]*)"', html) == ["C-1", "C-2&amp;x"]
    assert 'href="/?contact=C-2%26x"' in html  # ids are URL-encoded in links
    assert "Найдено: 2" in html and "O-2" in html  # a nameless organization shows its id
    assert "Ничего не найдено по запросу «xyz»" in render("manager.html", q="xyz", results=[])


def test_card_points_stage_selector_and_feedback_buttons() -> None:
    card = CardView(points=[point("ch_a", 0.81), point("ch_b", 0.35, selected=False)], request_id="req-1", hidden=2)
    html = render("manager.html", **card_context(card))
    options = re.findall(r'<option value="(\w+)"( selected)?>([^<]*)</option>', html)
    assert [(code, bool(sel)) for code, sel, _ in options] == [("lead", False), ("demo", True), ("deal", False)]
    assert "Демонстрация (последний известный)" in html
    assert '<select id="stage" name="stage"' in html
    assert re.findall(r'data-characteristic="(\w+)"', html) == ["ch_a", "ch_b"]
    assert html.count('data-outcome="positive"') == 2 and html.count('data-outcome="negative"') == 2
    assert 'data-request-id="req-1"' in html and 'data-stage="demo"' in html and 'data-contact="C-1"' in html
    # the dictionary's text as written (escaped for HTML, so the browser shows exactly those characters)
    assert "Текст ch_a для этапа &amp; &lt;b&gt;как есть&lt;/b&gt;" in html
    assert '<meter min="0" max="1" low="0.4" high="0.7" optimum="1" value="0.81"' in html
    assert "Вероятность отклика: <strong>высокая</strong> — около 81 %" in html
    assert "около 35 %, ниже порога модели" in html
    assert "0.8100" not in html  # never four decimals
    assert "Показать ещё (2)" in html and "more=1" in html


def test_a_positive_only_point_reads_its_chance_against_the_stage() -> None:
    chance = {**point("ch_a", 0.12), "word": "высокий", "comparison": "в 3 раза чаще, чем в среднем на этапе",
              "usual": 0.04, "percent": 12}
    html = render("manager.html", **card_context(CardView(points=[chance])))
    assert ("Шанс отклика: <strong>высокий</strong> — около 12 % разговоров, в 3 раза чаще, чем в среднем на этапе"
            in html)
    assert '<meter min="0" max="0.12" low="0.04" high="0.08" optimum="1" value="0.12"' in html
    assert "Вероятность отклика" not in html


def test_crm_names_are_escaped() -> None:
    html = render("manager.html", **card_context(CardView(points=[point("ch_a", 0.9)])))
    assert "<script>alert(1)</script>" not in html
    assert "ООО «Ромашка» &lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_crm_names_never_carry_control_or_bidi_characters_onto_the_page() -> None:
    """An ESC, a BEL or U+202E (which reverses the text after it) in a CRM name reached the page as is."""
    shown = contact(organization="ООО \u202eакшамоР\u202c", contact_name="Анна\x1b[31m\x07 Иванова")
    html = render("manager.html", **{**card_context(CardView(points=[point("ch_a", 0.9)])), "contact": shown})
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]", html)
    assert "ООО \ufffdакшамоР\ufffd" in html and "Анна\ufffd[31m\ufffd Иванова" in html


@pytest.mark.parametrize(("latest", "hint"), [(None, "Этап контакта пока неизвестен"),
                                              ("demo", "По умолчанию — последний известный этап")])
def test_stage_hint(latest: str | None, hint: str) -> None:
    assert hint in render("manager.html", **card_context(CardView(), stage="lead" if latest is None else "demo",
                                                          latest=latest))


def test_empty_card_and_error_card() -> None:
    html = render("_points.html", **card_context(CardView(hidden=4)))
    assert "Ни одна характеристика не прошла порог модели" in html and "Показать ещё (4)" in html
    html = render("_points.html", **card_context(CardView(error="Данные контакта не подходят")))
    assert 'role="alert">Данные контакта не подходят' in html
    html = render("_points.html", **card_context(CardView(points=[point("ch_a", 0.9)], more=True)))
    assert "Показать только главное" in html and "Все характеристики этапа «Демонстрация»" in html


def test_base_page_has_no_inline_script_or_style() -> None:
    html = render("manager.html")
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # every script element loads a file
    assert "style=" not in html and "onclick" not in html and "javascript:" not in html
    assert '<meta name="csrf-token" content="tok">' in html
    assert '<html lang="ru">' in html


def test_promotion_details_show_yes_no_and_no_python_reprs() -> None:
    """The details read 'window.partial: True · error: None' (Python's words on a Russian page)."""
    from serving.web import _promotion_details

    text = _promotion_details({"action": "retrain", "promoted": True, "window": {"partial": False, "days": 90,
                                                                               "cutoff": None}, "ndcg": 0.912345})
    assert text == "promoted: да · window.partial: нет · window.days: 90 · window.cutoff: — · ndcg: 0.9123"
