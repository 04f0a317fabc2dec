"""The HTML pages (contract §8): the manager's `GET /` and the analyst's `GET /analyst`, plus their assets.

* `GET /` — search a contact of the CRM source (`q`), open one (`contact`), pick the stage
  (`stage`, default the contact's latest known one) and read its talking points; `more=1` shows
  every characteristic offered at the stage. `GET /contacts/card` answers the same card as an HTML
  fragment, which the page's script swaps in when the stage changes.
* `GET /analyst` — versions side by side, the promotion log, managers' feedback of the last 30
  days, unknown codes per field, the CRM rows the queries' snapshot left out as invalid, and one
  version's report (`report=N`, default the served version's, else the newest one not refused);
  `GET /analyst/versions/{n}/{chart}` serves that report's charts.
* `GET /static/{name}` — the pages' CSS and script, shipped inside the package.

Access (credential, cross-site checks) is `serving.access.AccessMiddleware`'s job; these routes
only render. Pages never log what they show: the request log line holds the endpoint label only.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from needs_rec import schema
from serving import analyst, manager
from serving.queries import iso_utc, snapshots_for
from serving.service import ApiError, Service
from serving.web import PAGE_HEADERS, Pages, is_head, visible

#: Feedback window on the analyst page (days).
FEEDBACK_DAYS = 30


def router(service: Service) -> APIRouter:
    """The pages over `service`."""
    pages = Pages()
    routes = APIRouter()
    model_path = service.settings.model

    def served_version(request: Request | None = None) -> int | None:
        """The version serving now (None while none is loaded), also put on `request`'s log line."""
        current = service.registry.current
        version = current.version if current is not None else None
        if request is not None:
            request.state.model_version = version
        return version

    @routes.get("/", include_in_schema=False)
    async def manager_page(request: Request) -> Response:
        """The manager's page: search, contact, stage, talking points."""
        shown = not is_head(request)  # a HEAD answer has no body: its points are never seen
        context, status = await manager.page_context(service, dict(request.query_params), shown)
        context.update(page="manager", model_version=served_version(request))
        return pages.render(request, "manager.html", context, status)

    @routes.get("/contacts/card", include_in_schema=False)
    async def contact_card(request: Request) -> Response:
        """The talking-point card of one contact at one stage, as an HTML fragment (the page's script swaps it in)."""
        served_version(request)
        shown = not is_head(request)  # a HEAD answer has no body: its points are never seen
        context, status = await manager.card_context(service, dict(request.query_params), shown)
        if context["contact"] is None:
            return pages.render(request, "_notice.html", {"notice": context.get("notice")}, status)
        return pages.render(request, "_points.html", context, status)

    @routes.get("/analyst", include_in_schema=False)
    async def analyst_page(request: Request) -> Response:
        """The analyst's page: versions, promotions, feedback, unknown codes, a report."""
        served = served_version(request)
        requested = request.query_params.get("report")
        report_number = schema.ascii_int(requested) if requested else None
        refused = {int(entry["version"]): entry["status"]["error_message"] for entry in service.registry.status()
                   if entry["state"] == "END" and entry["status"]["error_code"] != "OK"}
        overview = analyst.overview(model_path, served, refused)
        context: dict[str, Any] = {
            "page": "analyst",
            "model_version": served,
            "served": served,
            "overview": overview,
            "feedback_days": FEEDBACK_DAYS,
        }
        context.update(await manager.feedback_context(service, FEEDBACK_DAYS))
        context["unknown"] = _unknown_rows(service)
        context["crm_check"] = await _crm_check(service)
        context["report_hint"] = None
        missing = requested and (report_number is None or report_number not in analyst.version_numbers(model_path))
        if missing:
            report_number = None
        shown = analyst.report_version(model_path, report_number, overview.rows, served, refused)
        if missing:
            shown_text = visible(requested)
            context["report_hint"] = (f"Версии «{shown_text}» нет; показан отчёт версии {shown}." if shown is not None
                                      else f"Версии «{shown_text}» нет.")
        # a refused version's report describes no model that answers: say so above it
        problem = analyst.refused_reason(overview.rows, refused, shown) if shown is not None else None
        context["report_refused"] = (
            f"Версия {shown} не обслуживается: {problem.rstrip('.')}. Этот отчёт — не о модели, которая отвечает сейчас"
            + (f" (обслуживается версия {served})." if served is not None else ".")
        ) if problem else None
        context["report_version"] = shown
        context["report_html"] = None
        if shown is None:
            context["report_notice"] = (
                f"У версии {report_number} нет отчёта." if report_number else "Ни у одной версии пока нет отчёта."
            )
        else:
            chart_url = "/analyst/versions/{version}/{name}"
            context["report_html"] = analyst.render_report(model_path, shown, chart_url)
        return pages.render(request, "analyst.html", context)

    @routes.get("/analyst/versions/{number}/{name}", include_in_schema=False)
    async def chart(number: str, name: str) -> Response:
        """A chart of a version's report (`report_*.png` inside the version directory only)."""
        version = schema.ascii_int(number)
        path = analyst.chart_path(model_path, version, name) if version is not None else None
        if path is None:
            raise ApiError(404, f"no chart {name!r} in version {number!r}")
        headers = {**PAGE_HEADERS, "Cache-Control": "private, max-age=3600"}
        return FileResponse(path, media_type="image/png", headers=headers)

    @routes.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        """The pages' CSS and script (shipped in the package)."""
        response = pages.static_file(name)
        if response is None:
            raise ApiError(404, f"no static file {name!r}")
        return response

    def _unknown_rows(service: Service) -> list[tuple[str, int, int]]:
        current = service.registry.current
        trained = analyst.training_unknown_codes(current.loaded.manifest) if current is not None else {}
        live = service.metrics.unknown_counts()
        fields = sorted(set(trained) | set(live))
        return [(f, live.get(f, 0), trained.get(f, 0)) for f in fields]

    async def _crm_check(service: Service) -> dict[str, Any] | None:
        """What the served version's snapshot of the CRM left out (None without a CRM source; a
        missing snapshot starts building, the page never waits for it). The CRM's tables are looked
        at first (names only, no rows: `check_tables`): a CRM unreachable now (a file gone, the
        database down) is said so, not «every row passed» from a snapshot read before."""
        source, model = service.crm, service.registry.current
        if source is None or model is None:
            return None
        current = snapshots_for(service).peek(model, source.read_crm)
        checked_at = iso_utc(current.built_at) if current is not None else None
        try:
            await service.need_crm("the CRM check").call(source.check_tables)
        except service.crm_unavailable:
            return {"unreachable": True, "checked_at": checked_at, "left_out": []}
        if current is None:
            return {"unreachable": False, "checked_at": None, "left_out": []}
        return {"unreachable": False, "checked_at": checked_at, "left_out": list(current.left_out)}

    return routes
