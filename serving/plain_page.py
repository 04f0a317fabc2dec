"""The plain HTML page a browser gets instead of the API's `{"error"}` JSON, and when it gets it.

A person who follows a stale bookmark (`/analyst/versions/1`), submits a form to a page that only
answers GET, or cancels the login box sees this page: a title, what to do, the error's own words.
It has no script, no style and nothing from the service's templates, so it renders whatever state
the service is in (no model, no CRM) and can carry `Content-Security-Policy: default-src 'none'`.

Only a page request gets it: a path outside the JSON API (`/v1/`) whose `Accept` asks for HTML, as
a browser's navigation does. The CRM, scripts and the pages' own fetches (`Accept: */*` or JSON)
keep the contract's JSON answer on every path.
"""

from __future__ import annotations

import html
import re

#: Headers of every plain page: nothing to load, nothing to cache, and no framing (`default-src`
#: does not cover `frame-ancestors`; a framed login page is a clickjacking lure even without data).
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}
CONTENT_TYPE = "text/html; charset=utf-8"

_TEXTS = {  # status → (title, what to do)
    400: ("Неверный запрос", "Проверьте адрес страницы или вернитесь на страницу менеджера."),
    401: ("Нужен вход", "Обновите страницу и введите имя и пароль (или токен), которые выдал администратор."),
    403: ("Запрос отклонён", "Откройте страницу из адресной строки браузера, не с другого сайта."),
    404: ("Страница не найдена", "Проверьте адрес: страница менеджера — «/», страница аналитика — «/analyst»."),
    405: ("Так эту страницу не открыть", "Откройте страницу по ссылке или из адресной строки браузера."),
    413: ("Запрос слишком большой", "Сократите запрос и повторите."),
    503: ("Сервис временно недоступен", "Повторите через несколько секунд."),
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FALLBACK = ("Ошибка сервиса", "Повторите позже; если ошибка не проходит, сообщите администратору.")


def without_control(text: str) -> str:
    """`text` with its control characters shown as U+FFFD: a page echoes what was asked for, and an
    ESC or NUL has no business in it."""
    return _CONTROL.sub("\ufffd", text)


#: What a page never shows as it is of any text it renders (`without_hidden`): the controls of
#: `_CONTROL` but tab and line breaks (an ESC or a BEL in a CRM name), and the bidi embeddings,
#: overrides and isolates (U+202E would show «gpj.exe» as «exe.jpg» and reorder the text around it).
_HIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def without_hidden(text: str) -> str:
    """`text` with the `_HIDDEN` characters shown as U+FFFD (the pages' templates, `serving.web`)."""
    return _HIDDEN.sub("\ufffd", text)


def wanted(path: str, accept: str | None) -> bool:
    """True when a request to `path` with this `Accept` header should get a page, not JSON."""
    return not path.startswith("/v1/") and accept is not None and "text/html" in accept


def body(status: int, message: str) -> bytes:
    """The page for an error answer with `status` whose text is `message` (escaped)."""
    title, hint = _TEXTS.get(status, _FALLBACK)
    return (f'<!doctype html><html lang="ru"><head><meta charset="utf-8"><title>{title}</title></head>'
            f"<body><h1>{title}</h1><p>{hint}</p><p>{html.escape(without_control(message), quote=False)}</p>"
            '<p><a href="/">Страница менеджера</a> · <a href="/analyst">Страница аналитика</a></p>'
            "</body></html>").encode()
