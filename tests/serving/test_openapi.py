"""/openapi.json and /docs: every JSON endpoint with its schemas, the served vocabularies, no external URL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from serving_support import serve, settings_for


@pytest.fixture(scope="module")
def client(built: dict[str, Path]) -> Any:
    with serve(settings_for(built["fixed"].parent, max_batch=7), "openapi") as (client, _):
        yield client


def test_every_json_endpoint_is_documented_with_request_and_answer_schemas(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for path in ("/v1/recommendations", "/v1/recommendations:batch", "/v1/models/needs_rec:predict"):
        post = paths[path]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].startswith("#/components/")
        assert "$ref" in post["responses"]["200"]["content"]["application/json"]["schema"]
        assert {"400", "413", "503"} <= set(post["responses"]) and "422" not in post["responses"]
    for path in ("/v1/models/{name}", "/v1/models/{name}/metadata", "/healthz", "/readyz"):
        assert "$ref" in paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"], path
    assert "/" not in paths and "/analyst" not in paths  # pages are not JSON endpoints
    assert not [p for p in paths if ":segment" in p]  # the routes' convertor stays out of the description
    error = document["components"]["schemas"]["ErrorAnswer"]
    assert error["required"] == ["error"]


def test_the_served_versions_stages_are_an_enum_and_its_codes_examples(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["RecommendationRequest"]["properties"]["stage"]["enum"] == ["lead", "demo", "deal"]
    assert schemas["Instance"]["properties"]["stage"]["enum"] == ["lead", "demo", "deal"]
    assert schemas["Organization"]["properties"]["region"]["examples"] == ["msk", "spb"]
    assert "enum" not in schemas["Organization"]["properties"]["region"]  # unknown codes are warnings, not errors
    assert schemas["BatchRequest"]["properties"]["requests"]["maxItems"] == 7


def test_docs_are_served_locally_with_no_external_url(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert not re.search(r"(https?:)?//[a-z]", page.text)
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 100, asset


def test_the_queries_are_documented_with_their_parameters(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    audience = paths["/v1/audience"]["get"]
    assert "$ref" in audience["responses"]["200"]["content"]["application/json"]["schema"]
    assert {p["name"] for p in audience["parameters"]} == {
        "characteristic", "stage", "limit", "industry", "region", "clients", "exclude_presented_days"}
    similar = paths["/v1/organizations/{org_id}/similar"]["get"]
    assert {p["name"] for p in similar["parameters"]} == {"org_id", "characteristic", "k"}
    assert "$ref" in similar["responses"]["200"]["content"]["application/json"]["schema"]


def test_the_paths_behind_the_credential_document_it_and_their_401_and_403(client: TestClient) -> None:
    """Schemathesis or a generated client read an undocumented 401/403 as an answer that breaks the schema."""
    document = client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert {name: scheme["scheme"] for name, scheme in schemes.items()} == {"bearer": "bearer", "basic": "basic"}
    paths = document["paths"]
    feedback = paths["/v1/feedback"]["post"]
    assert feedback["security"] == [{"bearer": []}, {"basic": []}]
    assert {"401", "403", "429"} <= set(feedback["responses"])  # 429: an address over the guessing limit
    audience = paths["/v1/audience"]["get"]
    assert "401" in audience["responses"] and "403" not in audience["responses"]  # a GET is never cross-site refused
    for path in ("/v1/recommendations", "/v1/recommendations:batch"):  # open, but a contact_id needs the credential
        post = paths[path]["post"]
        assert post["security"][0] == {} and {"401", "429"} <= set(post["responses"])
    predict = paths["/v1/models/needs_rec:predict"]["post"]
    assert "security" not in predict and not {"401", "429"} & set(predict["responses"])
