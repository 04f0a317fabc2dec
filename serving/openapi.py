"""`GET /openapi.json` and `GET /docs`: the service's machine-readable description, served without internet.

FastAPI documents its decorated routes itself; the hand-tuned hot routes (plain Starlette
endpoints that read their own bodies) are declared next to their `add_route` with
`service.docs.document(...)`, naming the request model and the answer models of
`serving.api_schemas`. `build_schema` merges both, gives every operation the error answers the
service can always give (`{"error": ...}` with 400, 404, 413, 503 — FastAPI's 422 never happens
here: validation errors answer 400) and the 401/403 and security of the paths behind the
credential (`serving.access`), and fills in the served version's vocabularies: the funnel
stages as an enum (an unknown stage is a 400), the dictionary codes as examples (an unknown code
is a warning, not an error). The schema is rebuilt when another version starts serving.

`/docs` is Swagger UI from the `swagger-ui-bundle` package, served from this process: no CDN, no
external URL (the service runs without internet).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from needs_rec import schema as contract
from serving import api_schemas

if TYPE_CHECKING:
    from serving.service import Service

DOCS_STATIC = "/docs/static"
#: Error answers any operation can give (the guard and the model registry produce them everywhere).
COMMON_ERRORS = {
    "400": "malformed body or field (the message names it)",
    "404": "unknown model, version or path",
    "405": "wrong method (Allow names the right one), e.g. a GET of a …:predict path",
    "413": "body over the limit, refused before it is parsed (a gzip body: its decoded size)",
    "415": "a Content-Encoding other than gzip",
    "503": "not ready, shedding load or timed out (with Retry-After)",
}
_REF = "#/components/schemas/{model}"
#: The credential a service started with --auth-token / --basic-auth asks for (`serving.access`).
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "--auth-token T: `Authorization: Bearer T`"},
    "basic": {"type": "http", "scheme": "basic",
              "description": "--basic-auth U:P (or any user name with the --auth-token as its password)"},
}
#: Recommendation paths that are open, except that a `contact_id` in the body needs the credential.
_CREDENTIAL_FOR_CONTACT_ID = ("/v1/recommendations", "/v1/recommendations:batch")
_GUESSING = "too many wrong credentials from this address; try again after Retry-After seconds"
#: Swagger UI's page: every file from this service, no validator badge (it would call swagger.io).
SWAGGER_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{static}/swagger-ui.css">
<link rel="icon" type="image/png" href="{static}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{static}/swagger-ui-bundle.js"></script>
<script src="{static}/swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout"
}});
</script>
</body>
</html>
"""


@dataclass
class Operation:
    """One hand-routed operation's documentation."""

    method: str
    path: str
    summary: str
    request: type[BaseModel] | None
    responses: dict[int, type[BaseModel]]
    description: str = ""
    tags: list[str] = field(default_factory=list)


class ApiDocs:
    """The documentation of the service's hand-tuned routes, and the cached OpenAPI schema."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []
        self._cached: tuple[Any, dict[str, Any]] | None = None

    def document(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        request: type[BaseModel] | None = None,
        responses: dict[int, type[BaseModel]],
        description: str = "",
        tags: list[str] | None = None,
    ) -> None:
        """Describe a route added with `add_route` (FastAPI-decorated routes document themselves)."""
        self.operations.append(Operation(method.lower(), path, summary, request, responses, description, tags or []))

    def schema(self, app: FastAPI, service: Service) -> dict[str, Any]:
        """The OpenAPI document for the version being served (rebuilt when it changes)."""
        model = service.registry.current
        key = (model.version, id(model)) if model is not None else None
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, build_schema(app, self.operations, model, service.settings.max_batch))
        return self._cached[1]


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorAnswer")}}}}


def build_schema(app: FastAPI, operations: list[Operation], model: Any, max_batch: int) -> dict[str, Any]:
    """FastAPI's schema of the decorated routes + the documented hand routes + errors + vocabularies."""
    document = get_openapi(title=app.title, version=app.version, summary=app.summary,
                           description=app.description, routes=app.routes)
    components = document.setdefault("components", {}).setdefault("schemas", {})
    models = {api_schemas.ErrorAnswer}
    for op in operations:
        models.update(op.responses.values())
        if op.request is not None:
            models.add(op.request)
    _, definitions = models_json_schema([(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
                                        ref_template=_REF)
    components.update(definitions.get("$defs", {}))
    paths = document.setdefault("paths", {})
    for op in operations:
        entry: dict[str, Any] = {"summary": op.summary, "operationId": _operation_id(op), "tags": op.tags,
                                 "responses": {}}
        if op.description:
            entry["description"] = op.description
        names = re.findall(r"{(\w+)}", op.path)
        if names:
            entry["parameters"] = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                                   for name in names]
        if op.request is not None:
            ref = {"$ref": _REF.format(model=op.request.__name__)}
            entry["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
        for status, answer in op.responses.items():
            ref = {"$ref": _REF.format(model=answer.__name__)}
            description = "OK" if status < 300 else (answer.__doc__ or "error").strip().splitlines()[0]
            entry["responses"][str(status)] = {"description": description,
                                               "content": {"application/json": {"schema": ref}}}
        paths.setdefault(op.path, {})[op.method] = entry
    for path, path_item in paths.items():
        for method, operation in path_item.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # validation errors are 400 here
            for status, description in COMMON_ERRORS.items():
                responses.setdefault(status, _error_response(description))
            _access(path, method, operation)
    components_root = document["components"]
    components_root["securitySchemes"] = SECURITY_SCHEMES
    for name, key in (("BatchRequest", "requests"), ("RowPredict", "instances")):
        items = components.get(name, {}).get("properties", {}).get(key)
        if items is not None:
            items["maxItems"] = max_batch  # --max-batch: more is a 400
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    if model is not None:
        _vocabularies(components, model)
        _path_values(paths, model)
    return document


def _access(path: str, method: str, operation: dict[str, Any]) -> None:
    """The credential an operation needs and the 401/403 it can answer, as `serving.access` enforces them.

    A protected path (`access.is_protected`) needs the credential once the service has one (on
    loopback without one it is open to this machine); a POST to it is also refused (403) from
    another site. A recommendation needs it only for a `contact_id` (so anonymous access is listed too).
    """
    from serving.access import is_protected

    credential = [{"bearer": []}, {"basic": []}]
    responses = operation["responses"]
    if is_protected(path):
        operation["security"] = credential
        responses.setdefault("401", _error_response("a credential is required or was wrong (WWW-Authenticate)"))
        responses.setdefault("429", _error_response(_GUESSING))
        if method == "post":
            responses.setdefault("403", _error_response("refused from another site (Origin, Sec-Fetch-Site) or "
                                                        "without the page's X-CSRF-Token"))
    elif path in _CREDENTIAL_FOR_CONTACT_ID:
        operation["security"] = [{}, *credential]
        responses.setdefault("401", _error_response("a contact_id needs the credential (WWW-Authenticate)"))
        responses.setdefault("429", _error_response(_GUESSING))


def _path_values(paths: dict[str, Any], model: Any) -> None:
    """The model name as an enum (only one is served), the served version and the labels as examples."""
    from serving.registry import MODEL_NAME

    examples = {"version": [str(model.version)], "label": ["stable", "previous"]}
    for path, item in paths.items():
        if not path.startswith("/v1/models/"):
            continue
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") != "path":
                    continue
                if parameter["name"] == "name":
                    parameter["schema"]["enum"] = [MODEL_NAME]
                elif parameter["name"] in examples:
                    parameter["schema"]["examples"] = examples[parameter["name"]]


def _operation_id(op: Operation) -> str:
    words = "".join(c if c.isalnum() else "_" for c in op.path).strip("_")
    return f"{op.method}_{words}"


def _vocabularies(components: dict[str, Any], model: Any) -> None:
    """Stages of the served version as an enum; its dictionary codes as examples."""
    stages = list(model.parser.stages)
    codes = {c.name: model.dictionaries.codes(c.vocabulary) for c in contract.MODEL_INPUTS
             if c.vocabulary is not None and c.name != contract.STAGE}
    for name in ("RecommendationRequest", "LookupRequest", "Instance"):
        stage = components.get(name, {}).get("properties", {}).get(contract.STAGE)
        if stage is not None:
            stage["enum"] = stages
    for name in ("Organization", "Contact", "Instance"):
        properties = components.get(name, {}).get("properties", {})
        for field_name, values in codes.items():
            if field_name in properties and values:
                properties[field_name]["examples"] = values[:50]


def mount_docs(app: FastAPI, service: Service) -> None:
    """Serve `/openapi.json` and Swagger UI at `/docs`, its files from the `swagger-ui-bundle` package."""
    from swagger_ui_bundle import swagger_ui_path

    docs = service.docs
    app.openapi = lambda: docs.schema(app, service)  # type: ignore[method-assign]
    app.mount(DOCS_STATIC, StaticFiles(directory=str(swagger_ui_path)), name="docs-static")

    async def openapi_json() -> Any:
        from serving.service import json_response

        return json_response(app.openapi())

    page = SWAGGER_PAGE.format(title=f"{app.title} API", static=DOCS_STATIC)

    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(page)

    add: Callable[..., None] = app.add_api_route
    add("/openapi.json", openapi_json, methods=["GET"], include_in_schema=False)
    add("/docs", swagger_ui, methods=["GET"], include_in_schema=False)
