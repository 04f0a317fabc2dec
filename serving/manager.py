"""What the manager's page shows: found contacts, one contact's card, its talking points at a stage.

The CRM source (`crm.open_source`, given to the service with `--crm`) answers the search and the
contact lookup; the served version scores the contact exactly as `POST /v1/recommendations` with
its `contact_id` would, and its dictionaries give every name and the stage's talking-point text
as written there. The card's points are the JSON answer's points: those passing the version's
thresholds, at most its `top_k` cap (or `DEFAULT_CAP` when the version has none); "show more"
asks for every characteristic offered at the stage. Each card is one recommendation answer with
its own `request_id`, whose exposures are recorded like the JSON endpoint's, and which the
feedback buttons send back with `/v1/feedback`.

The CRM's own names (organization, person) are shown here and nowhere else: never logged, never
written to a model version or to needs_rec's tables.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from needs_rec import versions
from needs_rec.errors import CrmRowError
from serving.analyst import feedback_summary
from serving.cards import render_points
from serving.queries import similar_reasons
from serving.registry import ServingModel
from serving.requests import MAX_ID
from serving.service import Service
from serving.web import chance_words, shown_percent, visible, without_control

#: Talking points on a card when the version has no `top_k` cap of its own.
DEFAULT_CAP = 5
#: Contacts listed for one search.
SEARCH_LIMIT = 20
#: Longest search text accepted (longer is cut).
MAX_QUERY = 200


@dataclass
class ContactView:
    """One contact as the card shows it: CRM names, dictionary names for codes."""

    contact_id: str
    organization: str
    contact_name: str
    position: str
    decision_role: str
    department: str
    industry: str
    region: str
    employees: str | None
    status: str
    interests: list[str]
    products_owned: list[str]


@dataclass
class CardView:
    """The talking points of one answer, ready for the template."""

    points: list[dict[str, Any]] = field(default_factory=list)
    request_id: str | None = None
    more: bool = False
    hidden: int = 0
    error: str | None = None
    notice: str | None = None  # something the manager should know, not an error


def _name(model: ServingModel, vocabulary: str, code: Any) -> str:
    if code is None or code == "":
        return ""
    text = str(code)
    return model.dictionaries.name_of(vocabulary, text.strip().lower()) or text


def _names(model: ServingModel, vocabulary: str, codes: Any) -> list[str]:
    return [_name(model, vocabulary, c) for c in (codes or []) if str(c).strip()]


def _need_names(model: ServingModel, codes: Any) -> list[str]:
    names = model.dictionaries.need_names()
    return [names.get(str(c).strip().lower(), str(c)) for c in (codes or []) if str(c).strip()]


def shown_date(value: Any) -> str:
    """An ISO date as a Russian reader writes it (2012-01-17 → 17.01.2012); anything else as it is."""
    try:
        return dt.date.fromisoformat(str(value).strip()).strftime("%d.%m.%Y")
    except ValueError:
        return str(value)


def contact_view(model: ServingModel, record: Any, display: Mapping[str, Any] | None) -> ContactView:
    """The card's header from a `crm.ContactRecord` and the contact's search row (its CRM names)."""
    org = record.organization or {}
    person = record.contact or {}
    employees = org.get("employees")
    since = org.get("client_since")
    status = f"клиент с {shown_date(since)}" if since else "потенциальный клиент"
    display = display or {}
    return ContactView(
        contact_id=record.contact_id,
        organization=str(display.get("organization") or record.org_id),
        contact_name=str(display.get("contact") or ""),
        position=_name(model, "positions", person.get("position")),
        decision_role=_name(model, "decision_roles", person.get("decision_role")),
        department=_name(model, "departments", person.get("department")),
        industry=_name(model, "industries", org.get("industry")),
        region=_name(model, "regions", org.get("region")),
        employees=None if employees is None else f"{int(employees):,}".replace(",", "\u202f"),
        status=status,
        interests=_need_names(model, person.get("interests")),
        products_owned=_names(model, "products", org.get("products_owned")),
    )


def request_body(record: Any, stage: str) -> dict[str, Any]:
    """The full-fields recommendation request for a looked-up contact (what `contact_id` stands for)."""
    return {"stage": stage, "organization": dict(record.organization or {}), "contact": dict(record.contact or {})}


async def score_card(service: Service, model: ServingModel, record: Any, stage: str, more: bool,
                     shown: bool = True) -> CardView:
    """Score the contact at `stage` and render the card's points (all offered ones with `more`).
    Only a card that is `shown` (not a HEAD request's, which has no body) is recorded as an answer
    with its exposures."""
    parsed = model.parser.recommendation(request_body(record, stage))
    service.count_unknown([parsed])
    probabilities = (await service.scorer.predict(model, [parsed.row]))[0]
    talking = model.talking
    offered = int(talking.offered(stage).sum())
    if more:
        chosen = talking.select(probabilities, model.thresholds, stage, top_k=offered)
    else:
        chosen = talking.select(probabilities, model.thresholds, stage, cap=model.top_k or DEFAULT_CAP,
                                min_selected=model.min_selected)  # fmt: skip
    points = render_points(model, parsed, probabilities, chosen)
    product_names = {item.code: item.name for item in model.dictionaries.products}
    for point in points:
        p = float(point["probability"])
        point["percent"] = shown_percent(p)
        # explicit negatives: an absolute chance (no reference); positive-only: a share of conversations,
        # read against the stage's usual share
        usual = None if talking.explicit_negatives else talking.stage_rate(point["characteristic"], stage)
        point["word"], point["comparison"] = chance_words(p, usual)
        point["usual"] = usual
        point["product_name"] = product_names.get(point["product"], point["product"])
    # «сработало у 4 похожих организаций: …» from the query snapshot, when one is built (never waits)
    similar = similar_reasons(service, model, record.org_id, [p["characteristic"] for p in points])
    for point in points:
        if point["characteristic"] in similar:
            point["reasons"] = [*point["reasons"], similar[point["characteristic"]]]
    request_id = service.record_answer(model, record.contact_id, stage, points) if shown else None
    return CardView(points=points, request_id=request_id, more=more, hidden=max(offered - len(points), 0))


def page_feedback_id(contact_id: str, stage: str, characteristic: str, day: dt.date) -> str:
    """The feedback_id the card's buttons send for one talking point on one day: the same for every
    card of that (contact, stage, characteristic) that day — after a reload, in another tab — so the
    point is stored at most once a day and another answer is a 409 (a hash keeps it short, ≤ 60
    characters, whatever the contact id holds)."""
    key = "\x1f".join((contact_id.strip(), stage.strip().lower(), characteristic.strip().lower()))
    return f"page-{day.isoformat()}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}"


def answered_today(rows: Iterable[Mapping[str, Any]] | None) -> dict[tuple[str, str], str]:
    """(stage, characteristic) → the outcome of its latest feedback row among `rows` (one contact, one day)."""
    return {(str(r.get("stage") or ""), str(r.get("characteristic") or "")): str(r.get("outcome") or "")
            for r in rows or ()}


def mark_answered(points: list[dict[str, Any]], contact_id: str, stage: str, answered: Mapping[tuple[str, str], str],
                  day: dt.date) -> None:
    """Give each point its `feedback_id` for `day` and, when feedback of that day answered it, `answered`."""
    for point in points:
        code = str(point["characteristic"])
        point["feedback_id"] = page_feedback_id(contact_id, stage, code, day)
        point["answered"] = answered.get((stage, code))


def _stages(model: ServingModel) -> list[tuple[str, str]]:
    return [(item.code, item.name) for item in model.dictionaries.funnel_stages]


def _query(params: Mapping[str, str], name: str) -> str:
    """A query parameter, stripped, at most MAX_QUERY characters, control characters shown as U+FFFD."""
    return without_control((params.get(name) or "").strip()[:MAX_QUERY])


async def page_context(service: Service, params: Mapping[str, str], shown: bool = True) -> tuple[dict[str, Any], int]:
    """Template context and status for `GET /`: search results and/or one contact's card (`shown`:
    see `card_context`)."""
    q = _query(params, "q")
    contact_id = _query(params, "contact")
    context: dict[str, Any] = {
        "q": q,
        "results": None,
        "notice": None,
        "contact": None,
        "search_limit": SEARCH_LIMIT,
        "more_results": False,
    }
    crm = service.crm
    if crm is None:
        context["notice"] = (
            "Сервис запущен без источника CRM, поэтому искать контакты негде. "
            "Администратору: перезапустите его с --crm (каталог выгрузки или URL базы CRM)."
        )
        return context, 503 if (q or contact_id) else 200
    if q:
        try:
            async with asyncio.timeout(service.settings.request_timeout_s):
                rows = await service.need_crm("contact search").call(crm.search, q, SEARCH_LIMIT + 1)
        except TimeoutError:
            context["notice"] = f"{crm_too_slow(service)} Поиск не выполнен."
            return context, 503
        except service.crm_unavailable:
            context["notice"] = "База CRM сейчас недоступна, поиск не выполнен. Попробуйте через минуту."
            return context, 503
        model = service.registry.current
        context["more_results"] = len(rows) > SEARCH_LIMIT  # one more asked for: are some not listed?
        context["results"] = [
            {**row, "position": _name(model, "positions", row.get("position")) if model else row.get("position")}
            for row in rows[:SEARCH_LIMIT]
        ]
    if contact_id:
        card, status = await card_context(service, params, shown)
        context.update(card)
        return context, status
    return context, 200


def crm_too_slow(service: Service) -> str:
    """What a page says when the CRM did not answer within --request-timeout-s (busy or locked), as
    /v1/feedback gives up then too, instead of keeping the manager waiting out a 30 s busy timeout."""
    return (f"База CRM не ответила за {service.settings.request_timeout_s:g} с (занята или перегружена). "
            "Попробуйте через минуту.")


def no_model_notice(service: Service) -> str:
    """Why no version serves: still loading, none in the models directory at all (the card said
    «загружается» forever then), or every one refused."""
    registry = service.registry
    if registry.first_poll_done.is_set() and registry.loading is None:
        if not registry.fixed and not versions.list_versions(registry.model_path):
            return ("В каталоге моделей нет ни одной версии: обучите модель (python -m training.fit --data … "
                    "--dictionaries … --output <каталог моделей>); сервис подхватит её сам, без перезапуска.")
        if registry.refused:
            return ("Ни одна версия модели не загрузилась: почему — на странице «Аналитику». Сервис подхватит "
                    "исправленную или новую версию сам.")
    return "Модель ещё загружается. Обновите страницу через несколько секунд."


async def card_context(service: Service, params: Mapping[str, str], shown: bool = True) -> tuple[dict[str, Any], int]:
    """Template context and status for one contact's card (`contact`, `stage`, `more` query parameters);
    `shown` is False for a HEAD request: its points are never seen, so no answer or exposure is recorded."""
    contact_id = _query(params, "contact")
    more = params.get("more") == "1"
    context: dict[str, Any] = {"card": CardView(more=more), "contact": None, "stage": "", "stage_name": ""}
    crm = service.crm
    if crm is None:
        context["notice"] = "Сервис запущен без источника CRM (--crm)."
        return context, 503
    model = service.registry.current
    if model is None:
        context["notice"] = no_model_notice(service)
        return context, 503
    if not contact_id:
        context["notice"] = "Не указан контакт: выберите его в результатах поиска."
        return context, 400
    if len((params.get("contact") or "").strip()) > MAX_ID:  # never cut to its prefix: that is another id
        context["notice"] = (f"ID контакта длиннее {MAX_ID} символов: сервис работает только с ID до {MAX_ID} "
                             "символов (так же их принимают /v1/recommendations и /v1/feedback). "
                             "Сократите ID этого контакта в CRM.")
        return context, 400
    link = service.need_crm("the contact card")

    today = dt.datetime.now(dt.UTC).date()  # the day /v1/feedback stores when the page sends none

    def names_and_stages() -> tuple[Any, Any, Any]:  # one hop to the CRM's thread pool for the three reads
        return crm.display(contact_id), crm.latest_stages(contact_id), crm.feedback_on(contact_id, today)

    try:
        async with asyncio.timeout(service.settings.request_timeout_s):  # a locked SQLite file waits 30 s
            record = await link.contact(contact_id)  # the JSON endpoint's lookup, its cache included
            display, latest, todays = (await link.call(names_and_stages) if record is not None
                                       else (None, None, None))
    except TimeoutError:
        context["notice"] = crm_too_slow(service)
        return context, 503
    except service.crm_unavailable:
        context["notice"] = "База CRM сейчас недоступна. Попробуйте через минуту."
        return context, 503
    except CrmRowError as exc:  # the row is there, but one of its values no request could carry
        context["notice"] = (f"Данные контакта в CRM не подходят модели: {' '.join(exc.detail.split())}. "
                             "Исправьте эту строку в CRM.")
        return context, 200
    if record is None:
        context["notice"] = f"Контакт «{contact_id}» не найден в CRM. Найдите его поиском заново."
        return context, 404
    stages = _stages(model)
    codes = [code for code, _ in stages]
    requested = _query(params, "stage").lower()
    known = [code for code in codes if latest is not None and code in latest[1]]
    latest_code = known[-1] if known else None  # the furthest along the funnel of the latest day's stages
    stage = requested if requested in codes else (latest_code or codes[0])
    context.update(
        contact=contact_view(model, record, display),
        stages=stages,
        stage=stage,
        stage_name=dict(stages)[stage],
        latest_stage=latest_code,
    )
    if record.organization is None:
        context["card"].error = "У контакта в CRM нет организации (org_id не найден), подсказки не построить."
        return context, 200
    try:
        context["card"] = await score_card(service, model, record, stage, more, shown)
        mark_answered(context["card"].points, record.contact_id, stage, answered_today(todays), today)
    except service.request_errors as exc:  # a CRM value the request rules refuse: show it, do not fail the page
        context["card"].error = f"Данные контакта в CRM не подходят модели: {' '.join(str(exc).split())}"
    if requested and requested not in codes:  # a stale link or a typo: say which stage is shown instead
        context["card"].notice = f"Этапа «{visible(requested)}» нет в воронке; показан этап «{dict(stages)[stage]}»."
    return context, 200


async def feedback_context(service: Service, days: int) -> dict[str, Any]:
    """`feedback` (per characteristic: count, share positive) of the last `days` days, or a notice why not."""
    crm = service.crm
    if crm is None:
        return {"feedback": [], "feedback_notice": "Сервис запущен без источника CRM (--crm): отзывов не видно."}
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    try:
        rows = await service.need_crm("feedback").call(crm.feedback_since, since)
    except service.crm_unavailable:
        return {"feedback": [], "feedback_notice": "База CRM сейчас недоступна: отзывы не прочитаны."}
    model = service.registry.current
    names = {ch.code: ch.name for ch in model.dictionaries.characteristics} if model is not None else {}
    return {"feedback": feedback_summary(rows, names), "feedback_notice": None}
