"""Plumbing shared by the HTML pages: Jinja2 templates, static files, security headers, the CSRF cookie.

Templates and static files live inside the `serving` package (package data in pyproject.toml), so
an installed service serves its pages with no internet, no CDN and no build step. Jinja2
autoescapes every value; the only unescaped HTML is the analyst's rendered report, which
markdown-it-py produced with raw HTML switched off (`serving.analyst`).

Every page answer carries a Content-Security-Policy that allows scripts, styles and images from
this service only (no inline script or style, no framing, forms posting only here), and
`Cache-Control: no-store`, since pages show the CRM's own data about people.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
from fastapi import Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.templating import Jinja2Templates

from needs_rec.errors import clipped
from needs_rec.talking_points import times
from serving.access import CSRF_COOKIE, new_csrf_token, valid_csrf_token
from serving.plain_page import without_control, without_hidden

PACKAGE = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE / "templates"
STATIC_DIR = PACKAGE / "static"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
#: Scope key `serving.app.GuardedApp` sets on a HEAD request it answers as a GET without a body:
#: a page asked by HEAD shows nothing, so it records no answer (no exposures).
HEAD_SCOPE_KEY = "needs_rec.head"


def is_head(request: Request) -> bool:
    """Whether `request` came as HEAD (its answer has no body: nothing in it is seen)."""
    return bool(request.scope.get(HEAD_SCOPE_KEY))


_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}

#: Probability bands and the words a manager reads (lower bound, word), highest first.
PROBABILITY_WORDS = ((0.7, "высокая"), (0.4, "средняя"), (0.2, "низкая"), (0.0, "очень низкая"))


def visible(text: str, limit: int = 40) -> str:
    """A value a page echoes: `without_control`, at most `limit` characters."""
    return clipped(without_control(text), limit, "…")


ROLE_NAMES = {"stable": "stable", "previous": "previous", "candidate": "кандидат", "served": "обслуживается",
              "refused": "не загружена"}
METHOD_NAMES = {
    "network": "модель",
    "popularity": "самые популярные",
    "group_popularity": "популярные для этапа и должности",
    "stage_position_popularity": "популярные для этапа и должности",
    "logistic": "логистическая регрессия",
    "gradient_boosting": "градиентный бустинг",
    "gbt": "градиентный бустинг",
}


def probability_word(p: float) -> str:
    """'высокая' / 'средняя' / 'низкая' / 'очень низкая' for a probability in [0, 1]."""
    return next(word for bound, word in PROBABILITY_WORDS if p >= bound)


#: Bands of a positive-only CRM's chance against its stage's usual rate (lower bound of the ratio, word).
LIFT_WORDS = ((2.0, "высокий"), (1.25, "выше среднего"), (0.8, "средний"), (0.0, "ниже среднего"))


def chance_words(p: float, usual: float | None) -> tuple[str, str | None]:
    """The word and comparison a positive-only CRM's probability is read with: against `usual`, the
    stage's share of conversations where the characteristic resonated (`TalkingPoints.stage_rate`).
    («высокий», «в 3,1 раза чаще, чем в среднем на этапе»); without `usual`, the absolute word alone."""
    if not usual or usual <= 0:
        return probability_word(p), None
    lift = p / usual
    word = next(word for bound, word in LIFT_WORDS if lift >= bound)
    if lift >= 1.25:
        return word, f"в {times(lift)} чаще, чем в среднем на этапе"
    if lift >= 0.8:
        return word, "как в среднем на этапе"
    return word, f"в {times(1 / lift)} реже, чем в среднем на этапе"


def shown_percent(p: float) -> int:
    """A model probability as the whole percent a page shows, 1 to 99: a model is never sure, so
    0.9954 is «около 99 %», never «100 %» (nor 0.003 «0 %»)."""
    return min(max(round(p * 100), 1), 99)


def _metric(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}"


def _count(value: Any) -> str:
    return "—" if value is None else f"{value:,}".replace(",", "\u202f")


def _when(value: Any) -> str:
    if not isinstance(value, str) or not value:
        return "—"
    try:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return stamp.strftime("%Y-%m-%d %H:%M") + (" UTC" if stamp.utcoffset() == dt.timedelta(0) else "")


_WHEN_KEYS = ("at", "time", "timestamp", "decided_at", "created_at")
_TITLE_KEYS = ("line", "decision", "action", "result")
#: Promotion-log keys not repeated in the details: the title's, process ids, the gate's whole configuration.
_QUIET_KEYS = frozenset({*_WHEN_KEYS, *_TITLE_KEYS, "pid", "by", "gate"})
_ACTIONS = {"promote": "продвижение вручную", "rollback": "откат", "retrain": "переобучение"}


#: An absolute path inside a text: at the start, after a space, quote, '(' or '=', or as a URL's path
#: (`sqlite:////srv/crm.db`); it runs to the next space or quote.
_ABSOLUTE_PATH = re.compile(r"""(?:^|(?<=[\s'"(=])|(?<=:///))/[^\s'"<>]+""")


def without_paths(text: str) -> str:
    """`text` with each absolute path cut to its last part: the promotion log records where the data
    and the gate file were (`/srv/needs_rec/gate.yaml`), and a page shows the service's users no
    server paths; the file's name is what an analyst needs to recognise it."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group().rstrip("/").rsplit("/", 1)[-1] or "/", text)


def _promotion_when(entry: Mapping[str, Any]) -> str:
    return next((_when(entry[k]) for k in _WHEN_KEYS if k in entry), "—")


def _promotion_title(entry: Mapping[str, Any]) -> str:
    """The entry's own one-line summary (`training.retrain` writes one), else its action and decision."""
    if isinstance(entry.get("line"), str):
        return without_paths(str(entry["line"]))
    action = str(entry.get("action") or "")
    decision = str(entry.get("decision") or entry.get("result") or "")
    return " — ".join(p for p in (_ACTIONS.get(action, action), decision) if p) or "запись"


def _promotion_details(entry: Mapping[str, Any]) -> str:
    """The other scalar fields of a promotion-log entry, `key: value` joined (nested objects flattened one level)."""
    parts = []
    for key, value in entry.items():
        if key in _QUIET_KEYS or value is None:
            continue
        if isinstance(value, Mapping):
            parts.extend(f"{key}.{k}: {_scalar(v)}" for k, v in value.items() if not isinstance(v, Mapping | list))
        elif not isinstance(value, list):
            parts.append(f"{key}: {_scalar(value)}")
    return without_paths(" · ".join(parts))


def _scalar(value: Any) -> str:
    """A log value as the page shows it: numbers to 4 significant digits, yes/no, «—» for none."""
    if isinstance(value, bool):
        return "да" if value else "нет"
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _static_versions() -> dict[str, str]:
    """Static file name → short content hash (cache-busting query), for the files shipped in the package."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in sorted(STATIC_DIR.iterdir())
        if path.is_file() and path.suffix in _STATIC_TYPES
    }


def shown_text(value: Any) -> Any:
    """Every `{{ … }}` of the pages (Jinja's `finalize`): text through `plain_page.without_hidden`
    (controls and bidi overrides as U+FFFD), before it is escaped. Markup (a rendered report) passes
    as it is."""
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return without_hidden(value)
    return value


class Pages:
    """The templates environment and static files of the pages (built once per app)."""

    def __init__(self) -> None:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=shown_text,
        )
        self.static = _static_versions()
        env.globals["static_url"] = self.static_url
        env.globals["role_names"] = ROLE_NAMES
        env.globals["method_names"] = METHOD_NAMES
        env.filters.update(
            metric=_metric,
            count=_count,
            when=_when,
            promotion_when=_promotion_when,
            promotion_title=_promotion_title,
            promotion_details=_promotion_details,
        )
        self.templates = Jinja2Templates(env=env)

    def static_url(self, name: str) -> str:
        return f"/static/{name}?v={self.static[name]}"

    def render(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        """A page (or fragment) with the security headers and, when the browser lacks one, a CSRF cookie."""
        token = request.cookies.get(CSRF_COOKIE)
        fresh = not valid_csrf_token(token)
        if fresh:
            token = new_csrf_token()
        response = self.templates.TemplateResponse(
            request, name, {**context, "csrf_token": token}, status_code=status, headers=PAGE_HEADERS
        )
        if fresh:
            response.set_cookie(
                CSRF_COOKIE,
                token or "",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
                path="/",
            )
        return response  # type: ignore[return-value]

    def static_file(self, name: str) -> Response | None:
        """A shipped static file with a long cache (its URL changes with its content), or None."""
        if name not in self.static:
            return None
        path = STATIC_DIR / name
        headers = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
        return FileResponse(path, media_type=_STATIC_TYPES[path.suffix], headers=headers)
