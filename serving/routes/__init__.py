"""The service's routers, one module per group of endpoints, each built from the shared `Service`.

Every module exposes `router(service: Service) -> APIRouter`; `serving.app.create_app` includes
them in order. See `serving.app` for how to add one.

A path parameter written `{name:segment}` matches one path segment without a ':' — TF Serving's
paths put the verb after one (`needs_rec:predict`, `versions/3:predict`) — so a GET of a
`…:predict` path matches no GET route and Starlette answers 405 naming POST, and a POST of a
status path answers 405 naming GET, with no check in any route.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor


class SegmentConvertor(Convertor[str]):
    """One path segment without ':' (Starlette's own `str` convertor allows it)."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("segment", SegmentConvertor())
