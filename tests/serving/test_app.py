"""The HTTP service (contract §4) in-process: answers, every error case, limits, logs and metrics."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from model_factory import reseal_manifest
from serving_support import LOCAL, VOCABULARY, capture_logger, models_dir_with, serve, settings_for, wait_until

from needs_rec import artifact, fast_path, features, schema
from serving.app import create_app
from serving.registry import Registry, load_version

BODY = {
    "stage": "demo",
    "organization": {"industry": "it", "region": "msk", "employees": 120, "products_owned": ["crm"]},
    "contact": {"position": "ceo", "decision_role": "decider", "interests": ["save_money", "speed"]},
}


@pytest.fixture(scope="module")
def app_client(built: dict[str, Path]) -> Iterator[tuple[TestClient, Any]]:
    """One running app over the 'fixed' version (constant outputs), shared by the module's tests."""
    with serve(settings_for(built["fixed"].parent, max_body_bytes=4096, max_batch=3), "app") as (client, log):
        yield client, log


@pytest.fixture
def client(app_client: tuple[TestClient, Any]) -> TestClient:
    return app_client[0]


def post(client: TestClient, path: str, body: Any) -> Any:
    content = json.dumps(body, ensure_ascii=False).encode()
    return client.post(path, content=content, headers={"Content-Type": "application/json"})


# -- answers ---------------------------------------------------------------------------------


def test_recommendation_answer_shape_and_order(client: TestClient) -> None:
    response = post(client, "/v1/recommendations", {**BODY, "stage": "lead"})
    assert response.status_code == 200
    answer = response.json()
    assert answer["model_version"] == 1 and answer["stage"] == "lead" and answer["warnings"] == []
    # cut 0.5: ch_price 0.9 and ch_integration 0.7 pass; ch_support 0.4 and ch_cloud 0.2 do not
    assert [t["characteristic"] for t in answer["talking_points"]] == ["ch_price", "ch_integration"]
    first = answer["talking_points"][0]
    assert set(first) >= {"characteristic", "name", "product", "probability", "text", "reasons"}
    assert first["probability"] == pytest.approx(0.9, abs=1e-4)
    assert all(isinstance(r, str) and r for r in first["reasons"])


def test_stage_text_default_fallback_and_skip(client: TestClient) -> None:
    demo = post(client, "/v1/recommendations", {**BODY, "top_k": 4}).json()["talking_points"]
    # ch_integration (0.7) has a text at 'lead' only: never offered at 'demo', even when asked for 4
    assert [(t["characteristic"], t["text"]) for t in demo] == [
        ("ch_price", "Дешевле аналогов."),
        ("ch_support", "Поддержка 24/7."),
        ("ch_cloud", "Покажите облако."),
    ]
    lead = post(client, "/v1/recommendations", {**BODY, "stage": "lead", "top_k": 4}).json()["talking_points"]
    assert {t["characteristic"]: t["text"] for t in lead}["ch_cloud"] == "Работает в облаке."  # the default text
    assert [t["selected"] for t in lead] == [True, True, False, False]


def test_top_k(client: TestClient) -> None:
    answer = post(client, "/v1/recommendations", {**BODY, "stage": "lead", "top_k": 1}).json()
    assert [t["characteristic"] for t in answer["talking_points"]] == ["ch_price"]


def test_manifest_top_k_caps_the_default_selection(built: dict[str, Path], tmp_path: Path) -> None:
    models = models_dir_with(tmp_path, built["fixed"])
    reseal_manifest(models / "1", top_k=1)
    with serve(settings_for(models), "cap") as (capped, _):
        default = post(capped, "/v1/recommendations", {**BODY, "stage": "lead"}).json()["talking_points"]
        asked = post(capped, "/v1/recommendations", {**BODY, "stage": "lead", "top_k": 3}).json()["talking_points"]
    assert [t["characteristic"] for t in default] == ["ch_price"]  # ch_integration passes its cut too, but cap 1
    assert [t["characteristic"] for t in asked] == ["ch_price", "ch_integration", "ch_support"]


def test_reasons_name_the_contacts_interests_and_owned_product(client: TestClient) -> None:
    body = {**BODY, "stage": "deal", "organization": {"industry": "it", "products_owned": ["crm"]}}
    (price,) = [t for t in post(client, "/v1/recommendations", body).json()["talking_points"]
                if t["characteristic"] == "ch_price"]
    assert "Отвечает на интерес контакта: «Экономия»" in price["reasons"]
    assert "Клиент уже пользуется «CRM»" in price["reasons"]


def test_unknown_code_is_a_warning_not_an_error(client: TestClient) -> None:
    body = {**BODY, "organization": {"industry": "xyz"}, "contact": {"position": "ceo", "interests": ["nope"]}}
    response = post(client, "/v1/recommendations", body)
    assert response.status_code == 200
    assert response.json()["warnings"] == [
        "unknown industry code 'xyz' treated as unknown",
        "unknown interests code 'nope' treated as unknown",
    ]


def test_unknown_fields_are_named_in_warnings_and_personal_fields_ignored_silently(client: TestClient) -> None:
    body = {**BODY, "toop_k": 2, "full_name": "Иван Петров",
            "organization": {**BODY["organization"], "inn": "7701234567", "segment": "smb"},
            "contact": {"position": "ceo", "intrests": ["speed"], "email": "ivan@example.com", "phone": "+7 900"}}
    response = post(client, "/v1/recommendations", body)
    assert response.status_code == 200
    assert response.json()["warnings"] == [
        "unknown field 'toop_k' ignored (did you mean 'top_k'?)",
        "unknown field 'organization.segment' ignored",
        "unknown field 'contact.intrests' ignored (did you mean 'interests'?)",
    ]
    for value in ("Иван", "7701234567", "ivan@example.com", "+7 900", "smb"):
        assert value not in response.text
    ids = {**BODY, "request_id": "r1", "organization": {**BODY["organization"], "org_id": "o1"},
           "contact": {**BODY["contact"], "contact_id": "c1", "org_id": "o1"}}
    assert post(client, "/v1/recommendations", ids).json()["warnings"] == []  # contract fields are known


def test_codes_are_normalised(client: TestClient) -> None:
    body = {**BODY, "stage": " DEMO ", "organization": {"industry": " IT"}, "contact": {"position": "CEO "}}
    response = post(client, "/v1/recommendations", body)
    assert response.status_code == 200 and response.json()["warnings"] == [] and response.json()["stage"] == "demo"


def test_batch_endpoint(client: TestClient) -> None:
    body = {"requests": [{**BODY, "request_id": "a"}, {**BODY, "stage": "lead", "top_k": 1}]}
    answer = post(client, "/v1/recommendations:batch", body).json()
    assert answer["model_version"] == 1 and len(answer["results"]) == 2
    assert answer["results"][0]["request_id"] == "a" and answer["results"][0]["stage"] == "demo"
    assert [t["characteristic"] for t in answer["results"][1]["talking_points"]] == ["ch_price"]
    assert post(client, "/v1/recommendations:batch", {"requests": []}).json()["results"] == []
    assert answer["warnings"] == []


def test_batch_names_the_bodys_own_unknown_keys(client: TestClient) -> None:
    """A key beside `requests` (e.g. a `top_k` meant for every item) is named, never dropped silently."""
    body = {"requests": [BODY], "top_k": 3, "requets": [], "email": "a@b.c"}
    answer = post(client, "/v1/recommendations:batch", body).json()
    assert answer["warnings"] == ["unknown field 'requets' ignored (did you mean 'requests'?)",
                                  "unknown field 'top_k' ignored"]  # personal fields: ignored without a word
    alone = post(client, "/v1/recommendations", BODY).json()
    assert answer["results"][0]["talking_points"] == alone["talking_points"]  # the stray top_k changed nothing


INSTANCES = [
    {"stage": "lead", "industry": "it", "position": "ceo", "occurred_on": "2024-05-01"},
    {"stage": "deal", "industry": "retail", "region": "spb", "employees": 3000, "revenue_mln": 12.5,
     "legal_form": "ao", "founded_year": 2001, "client_since": "2019-03-01", "products_owned": ["crm", "erp"],
     "position": "buyer", "department": "finance", "decision_role": "influencer", "interests": "speed;scale",
     "occurred_on": "2024-06-15"},
]


def test_tf_serving_predict_matches_in_process_prediction(built: dict[str, Path], tmp_path: Path) -> None:
    instances = INSTANCES
    with serve(settings_for(built["random"]), "predict") as (client, _):
        response = post(client, "/v1/models/needs_rec:predict", {"instances": instances})
        again = post(client, "/v1/models/needs_rec/versions/1:predict", {"instances": instances[:1]})
    assert response.status_code == 200, response.text
    predictions = np.asarray(response.json()["predictions"], dtype=np.float32)
    assert predictions.shape == (2, len(VOCABULARY))
    rows = [{**i, "products_owned": ";".join(i.get("products_owned", []))} for i in instances]
    frame = pd.DataFrame(rows).reindex(columns=list(schema.MODEL_INPUT_NAMES))
    expected = artifact.load(built["random"]).predict(features.frame_to_inputs(frame))
    np.testing.assert_allclose(predictions, expected, atol=1e-6)
    np.testing.assert_allclose(again.json()["predictions"][0], expected[0], atol=1e-6)
    assert len(set(np.round(predictions[0], 4))) > 1  # a real network, not constants


def _events(log: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.getvalue().splitlines()]


def test_small_calls_use_the_verified_numpy_twin_and_larger_ones_tensorflow(built: dict[str, Path]) -> None:
    with serve(settings_for(built["random"], fast_path_max_rows=1), "twin") as (client, log):
        model = client.app.state.service.registry.current
        assert model.twin is not None and model.twin_note.startswith("verified")
        one = post(client, "/v1/models/needs_rec:predict", {"instances": INSTANCES[1:]})
        two = post(client, "/v1/models/needs_rec:predict", {"instances": INSTANCES})
        metrics = client.get("/metrics").text
    assert 'needs_rec_model_calls_total{path="numpy"} 1.0' in metrics
    assert 'needs_rec_model_calls_total{path="tensorflow"} 1.0' in metrics
    np.testing.assert_allclose(one.json()["predictions"][0], two.json()["predictions"][1], atol=1e-5)
    loaded = [e for e in _events(log) if e["event"] == "model_loaded"]
    assert loaded and loaded[0]["fast_path"].startswith("verified")


def test_a_twin_that_disagrees_is_not_used(built: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    original = fast_path.Twin.predict_rows
    monkeypatch.setattr(fast_path.Twin, "predict_rows", lambda self, rows: original(self, rows) + 0.01)
    with serve(settings_for(built["random"]), "twin-refused") as (client, log):
        model = client.app.state.service.registry.current
        response = post(client, "/v1/models/needs_rec:predict", {"instances": INSTANCES[:1]})
        metrics = client.get("/metrics").text
    assert model.twin is None and "differs from the SavedModel" in model.twin_note
    assert response.status_code == 200
    assert 'needs_rec_model_calls_total{path="tensorflow"} 1.0' in metrics
    assert 'path="numpy"} 1.0' not in metrics
    loaded = [e for e in _events(log) if e["event"] == "model_loaded"]
    assert loaded and loaded[0]["fast_path"].startswith("refused")


def test_a_twin_that_raises_is_dropped_and_tensorflow_answers(built: dict[str, Path]) -> None:
    with serve(settings_for(built["random"]), "twin-raises") as (client, log):
        model = client.app.state.service.registry.current
        assert model.twin is not None

        def broken(rows: Any) -> Any:
            raise RuntimeError("boom")

        model.twin.predict_rows = broken  # type: ignore[method-assign]
        first = post(client, "/v1/models/needs_rec:predict", {"instances": INSTANCES[:1]})
        second = post(client, "/v1/models/needs_rec:predict", {"instances": INSTANCES[:1]})
        metrics = client.get("/metrics").text
    assert first.status_code == 200 and second.status_code == 200
    assert first.json()["predictions"] == second.json()["predictions"]
    assert model.twin is None and model.twin_note == "dropped after RuntimeError"
    assert 'needs_rec_model_calls_total{path="tensorflow"} 2.0' in metrics
    dropped = [e for e in _events(log) if e["event"] == "fast_path_dropped"]
    assert len(dropped) == 1 and dropped[0]["error"] == "RuntimeError" and "boom" not in log.getvalue()


def test_model_status_and_metadata(client: TestClient) -> None:
    available = {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    assert client.get("/v1/models/needs_rec").json() == {"model_version_status": [available]}
    assert client.get("/v1/models/needs_rec/versions/1").json()["model_version_status"][0]["state"] == "AVAILABLE"
    meta = client.get("/v1/models/needs_rec/metadata").json()
    assert meta["version"] == 1 and meta["vocabulary"] == VOCABULARY and meta["thresholds"] == [0.5] * 4
    assert meta["stages"] == ["lead", "demo", "deal"] and "metrics" in meta
    assert client.get("/v1/models/needs_rec/versions/1/metadata").json()["version"] == 1


def test_health(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").json() == {"status": "ready", "model_version": 1}


# -- errors: always {"error": ...} naming the field, never a 500 -----------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**BODY, "stage": "nope"}, "'stage'"),
        ({k: v for k, v in BODY.items() if k != "stage"}, "'stage'"),
        ({**BODY, "stage": 3}, "'stage'"),
        ({**BODY, "organization": {"region": "msk"}}, "'organization.industry'"),
        ({**BODY, "organization": "it"}, "'organization'"),
        ({k: v for k, v in BODY.items() if k != "contact"}, "'contact'"),
        ({**BODY, "contact": {"position": 5}}, "'contact.position'"),
        ({**BODY, "organization": {"industry": "it", "employees": "many"}}, "'organization.employees'"),
        ({**BODY, "organization": {"industry": "it", "employees": True}}, "'organization.employees'"),
        ({**BODY, "organization": {"industry": "it", "revenue_mln": -1}}, "'organization.revenue_mln'"),
        ({**BODY, "organization": {"industry": "it", "employees": 1e39}}, "'organization.employees'"),
        ({**BODY, "organization": {"industry": "it", "founded_year": -5e38}}, "'organization.founded_year'"),
        ({**BODY, "organization": {"industry": "it", "client_since": "2024-13-01"}}, "'organization.client_since'"),
        ({**BODY, "contact": {"position": "ceo", "interests": [1, 2]}}, "'contact.interests'"),
        ({**BODY, "top_k": 0}, "'top_k'"),
        ({**BODY, "top_k": "5"}, "'top_k'"),
        ([BODY], "'body'"),
    ],
)
def test_bad_field_is_400_naming_it(client: TestClient, body: Any, field: str) -> None:
    response = post(client, "/v1/recommendations", body)
    assert response.status_code == 400
    assert field in response.json()["error"]


def test_malformed_json_is_400(client: TestClient) -> None:
    for raw in (b"{oops", b"", b"\xff\xfe", b'{"stage": "demo", "organization": {"employees": 1e400}}'):
        response = client.post("/v1/recommendations", content=raw)
        assert response.status_code == 400 and response.json()["error"].startswith("body:")


def test_batch_errors_name_the_item(client: TestClient) -> None:
    response = post(client, "/v1/recommendations:batch", {"requests": [BODY, {**BODY, "stage": "nope"}]})
    assert response.status_code == 400 and "'requests[1].stage'" in response.json()["error"]
    response = post(client, "/v1/recommendations:batch", {"requests": [BODY] * 4})  # max_batch=3
    assert response.status_code == 400 and "'requests'" in response.json()["error"]
    response = post(client, "/v1/models/needs_rec:predict", {"instances": [{"stage": "lead", "industry": "it"}]})
    assert response.status_code == 400 and "'instances[0].position'" in response.json()["error"]


def test_a_gzip_body_is_decoded_as_tf_serving_does_and_counted_decoded(client: TestClient) -> None:
    """It was a 400 "malformed JSON (… surrogates not allowed …)"; another coding was read as JSON too."""
    gz = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    for path, body in (("/v1/models/needs_rec:predict", {"instances": [{"stage": "lead", "industry": "it",
                                                                          "position": "ceo"}]}),
                       ("/v1/recommendations", BODY)):
        plain = client.post(path, json=body).json()
        packed = client.post(path, content=gzip.compress(json.dumps(body).encode()), headers=gz)
        assert packed.status_code == 200
        answer = packed.json()
        answer.pop("request_id", None), plain.pop("request_id", None)  # a fresh id each time
        assert answer == plain
    bomb = gzip.compress(b" " * 50_000)  # 50 KB of spaces in 80 bytes: the decoded size meets max_body_bytes=4096
    assert len(bomb) < 4096
    response = client.post("/v1/recommendations", content=bomb, headers=gz)
    assert response.status_code == 413 and "limit of 4096 bytes" in response.json()["error"]
    response = client.post("/v1/recommendations", content=b'{"stage": "lead"}', headers=gz)
    assert response.status_code == 400 and "Content-Encoding is gzip but the body is not" in response.json()["error"]
    response = client.post("/v1/recommendations", content=gzip.compress(json.dumps(BODY).encode())[:-6], headers=gz)
    assert response.status_code == 400 and "cut short" in response.json()["error"]
    response = client.post("/v1/recommendations", json=BODY, headers={"Content-Encoding": "br"})
    assert response.status_code == 415
    assert response.json() == {"error": "header 'Content-Encoding': 'br' is not supported; send the body as it is "
                                        "or gzip"}
    assert client.get("/v1/models/needs_rec", headers=gz).status_code == 200  # no body: nothing to decode


def test_oversized_body_is_413_before_parsing(client: TestClient) -> None:
    big = b'{"stage": "' + b"x" * 5000 + b'"}'  # max_body_bytes=4096
    response = client.post("/v1/recommendations", content=big)
    assert response.status_code == 413 and "limit" in response.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed bytes are counted
        yield b'{"stage": "'
        for _ in range(10):
            yield b"x" * 1000

    response = client.post("/v1/recommendations", content=chunks())
    assert response.status_code == 413 and "limit" in response.json()["error"]


def test_unknown_model_version_or_name_is_404(client: TestClient) -> None:
    for response in (
        client.get("/v1/models/needs_rec/versions/99"),
        client.get("/v1/models/needs_rec/versions/99/metadata"),
        post(client, "/v1/models/needs_rec/versions/99:predict", {"instances": []}),
        client.get("/v1/models/other"),
        post(client, "/v1/models/other:predict", {"instances": []}),
        client.get("/v1/nothing-here"),
    ):
        assert response.status_code == 404 and response.json()["error"]
    wrong = client.get("/v1/recommendations")
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
    assert wrong.json() == {"error": "method GET not allowed on /v1/recommendations; allowed: POST"}


def test_get_on_a_predict_path_is_405_not_an_unknown_model(client: TestClient) -> None:
    for path in ("/v1/models/needs_rec:predict", "/v1/models/needs_rec/versions/1:predict",
                 "/v1/models/needs_rec/labels/stable:predict"):
        response = client.get(path)  # the GET status routes would read 'needs_rec:predict' as a model name
        assert response.status_code == 405 and response.headers["Allow"] == "POST", (path, response.text)
        assert response.json() == {"error": f"method GET not allowed on {path}; allowed: POST"}


def test_post_on_a_status_path_is_405_naming_get(client: TestClient) -> None:
    for path in ("/v1/models/needs_rec", "/v1/models/needs_rec/versions/1", "/v1/models/needs_rec/metadata",
                 "/v1/models/needs_rec/labels/stable"):
        response = client.post(path, json={"instances": []})  # it was read as a predict of verb '' (a 404)
        assert response.status_code == 405 and response.headers["Allow"] == "GET", (path, response.text)
        assert response.json() == {"error": f"method POST not allowed on {path}; allowed: GET"}
    for path in ("/v1/models/needs_rec:classify", "/v1/models/needs_rec/versions/1:regress"):
        response = client.post(path, json={"instances": []})  # a verb TF Serving has but this service does not
        assert response.status_code == 404 and response.json() == {"error": f"no such endpoint: POST {path}"}


def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_host_sent(client: TestClient) -> None:
    """Starlette answered 307 with an empty body and `Location: http://<the Host sent>/…`: an open redirect
    once any Host is accepted, and no `{"error"}`."""
    for method, path in (("GET", "/v1/models/needs_rec/versions/1/"), ("POST", "/v1/models/needs_rec:predict/"),
                         ("GET", "/v1/models/needs_rec/")):
        response = client.request(method, path, follow_redirects=False)
        assert response.status_code == 404 and "location" not in response.headers, (path, response.status_code)
        assert response.json() == {"error": f"no such endpoint: {method} {path}"}


def test_overload_is_503_with_retry_after(app_client: tuple[TestClient, Any]) -> None:
    client = app_client[0]
    service = client.app.state.service
    service.in_flight = service.settings.max_concurrency  # as if that many were being served
    try:
        response = post(client, "/v1/recommendations", BODY)
    finally:
        service.in_flight = 0
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert "overloaded" in response.json()["error"]
    assert client.get("/healthz").status_code == 200  # health is never shed


def test_request_timeout_is_503(built: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    async def stuck(model: Any, rows: Any) -> Any:
        await asyncio.sleep(30)

    with serve(settings_for(built["fixed"].parent, request_timeout_s=0.2), "timeout") as (client, _):
        monkeypatch.setattr(client.app.state.service.scorer, "predict", stuck)
        response = post(client, "/v1/recommendations", BODY)
    assert response.status_code == 503 and "timed out" in response.json()["error"]
    assert response.headers["Retry-After"] == "1"


def test_a_bug_on_the_hot_path_is_a_500_that_names_nothing_internal(
    built: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """/v1/recommendations is answered from the guard's lane, past the router: its errors must read the same."""
    from serving.routes import recommendations

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("/srv/secret/path/model.py exploded")

    logger, log = capture_logger("lane_bug")
    app = create_app(settings_for(built["fixed"].parent), logger=logger)
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as client:  # answer a bug as a client sees it
        assert wait_until(lambda: client.get("/readyz").status_code == 200)
        assert ("POST", "/v1/recommendations") in client.app.state.service.lanes
        good = post(client, "/v1/recommendations", {**BODY, "stage": "lead"})
        bad_field = post(client, "/v1/recommendations", {**BODY, "stage": "nope"})
        monkeypatch.setattr(recommendations, "render_points", broken)
        response = post(client, "/v1/recommendations", BODY)
        batch = post(client, "/v1/recommendations:batch", {"requests": [BODY]})  # through the router
    assert good.status_code == 200 and bad_field.status_code == 400 and "stage" in bad_field.json()["error"]
    for answer in (response, batch):
        assert answer.status_code == 500
        assert answer.json() == {"error": "internal error; the service log has the details"}
        assert "secret" not in answer.text
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    assert sum(line["event"] == "unhandled_error" for line in lines) == 2
    requests = [line for line in lines if line["event"] == "request" and line["endpoint"] == "recommendations"]
    assert [line["status"] for line in requests] == [200, 400, 500]


# -- readiness, logs, metrics -----------------------------------------------------------------


def test_not_ready_until_loaded_and_warmed(built: dict[str, Path]) -> None:
    release = threading.Event()

    def slow_loader(path: Path) -> Any:
        release.wait(30)
        return load_version(path)

    settings = settings_for(built["fixed"].parent)
    logger, _ = capture_logger("ready")
    registry = Registry(settings.model, poll_interval_s=0.2, warmup_rounds=1, max_rows=8, logger=logger,
                        loader=slow_loader)
    with TestClient(create_app(settings, registry=registry, logger=logger), base_url=LOCAL) as client:
        response = client.get("/readyz")
        assert response.status_code == 503 and response.json()["error"].startswith("not ready")
        assert client.get("/healthz").status_code == 200
        refused = post(client, "/v1/recommendations", BODY)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        status = lambda: client.get("/v1/models/needs_rec").json()["model_version_status"]  # noqa: E731
        assert wait_until(lambda: status() != [])  # the loader thread starts at its own pace on a busy machine
        assert status()[0]["state"] == "LOADING"
        release.set()
        assert wait_until(lambda: client.get("/readyz").status_code == 200)
        assert post(client, "/v1/recommendations", BODY).status_code == 200


def test_logs_carry_no_personal_data(built: dict[str, Path]) -> None:
    secrets = {"full_name": "Иванов Пётр Сергеевич", "email": "petr.ivanov@example.ru", "phone": "+7 916 123-45-67"}
    body = {
        "stage": "demo",
        "organization": {"industry": "it", "name": "ООО Секретная Ромашка", "inn": "7701234567"},
        "contact": {"position": "ceo", "contact_id": "c-42", **secrets},
    }
    with serve(settings_for(built["fixed"].parent), "pii") as (client, log):
        assert post(client, "/v1/recommendations", body).status_code == 200
        assert post(client, "/v1/recommendations", {**body, "stage": "Петров"}).status_code == 400
        assert post(client, "/v1/recommendations", {**body, "organization": {"industry": "Петров"}}).status_code == 200
    text = log.getvalue()
    for value in [*secrets.values(), "Иванов", "Петров", "Ромашка", "7701234567", "example.ru"]:
        assert value not in text
    lines = [json.loads(line) for line in text.splitlines()]
    requests = [line for line in lines if line["event"] == "request" and line["endpoint"] == "recommendations"]
    assert [(r["status"], r["outcome"]) for r in requests] == [(200, "ok"), (400, "bad_request"), (200, "ok")]
    assert all(r["model_version"] == 1 and r["latency_ms"] >= 0 for r in requests)
    assert requests[2]["warnings"] == 1
    assert any(line["event"] == "model_loaded" and line["version"] == 1 for line in lines)


def _metric(client: TestClient, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_prometheus_counters_move(client: TestClient) -> None:
    before = _metric(client, "needs_rec_requests_total", endpoint="recommendations", status="200")
    unknown_before = _metric(client, "needs_rec_unknown_codes_total", field="region")
    bad_before = _metric(client, "needs_rec_requests_total", endpoint="recommendations", status="400")
    post(client, "/v1/recommendations", BODY)
    post(client, "/v1/recommendations", {**BODY, "organization": {"industry": "it", "region": "mars"}})
    post(client, "/v1/recommendations", {**BODY, "stage": "nope"})
    assert _metric(client, "needs_rec_requests_total", endpoint="recommendations", status="200") == before + 2
    assert _metric(client, "needs_rec_requests_total", endpoint="recommendations", status="400") == bad_before + 1
    assert _metric(client, "needs_rec_unknown_codes_total", field="region") == unknown_before + 1
    assert _metric(client, "needs_rec_request_duration_seconds_count", endpoint="recommendations", status="200") > 0
    assert _metric(client, "needs_rec_model_version") == 1


def test_json_answers_are_utf8(client: TestClient) -> None:
    response = post(client, "/v1/recommendations", BODY)
    assert response.headers["content-type"].startswith("application/json")
    assert "Дешевле аналогов." in response.content.decode("utf-8")
    assert orjson.loads(response.content) == response.json()


def test_queue_delay_shedding_sees_a_loop_stuck_now(built: dict[str, Path], tmp_path: Path) -> None:
    """Once a queue has formed (the loop busy past the limit and QUEUED_BEFORE_SHEDDING requests let
    through in that stretch), the next request is shed at once (503 + Retry-After), before the lag
    watcher has run again; a free loop, or the few requests a stall held up, shed nothing."""
    import time

    from serving.service import QUEUED_BEFORE_SHEDDING, Service

    service = Service(settings_for(models_dir_with(tmp_path, built["fixed"]), max_queue_delay_ms=10))
    scope = {"type": "http", "method": "POST", "path": "/v1/recommendations", "headers": []}

    async def scenario() -> tuple[Any, float, Any]:
        await service.start_lag_watch()
        await asyncio.sleep(0.05)  # the watcher runs a few times on a free loop
        free = service._refusal(scope, scoring=True)
        time.sleep(0.03)  # the loop stuck for 30 ms: a stall, or a queue of requests each running to completion
        stuck_for = service.queue_delay()
        after_a_stall = [service._refusal(scope, scoring=True) for _ in range(QUEUED_BEFORE_SHEDDING - 1)]
        stuck = service._refusal(scope, scoring=True)
        await service.stop_lag_watch()
        return free, stuck_for, after_a_stall, stuck

    free, stuck_for, after_a_stall, stuck = asyncio.run(scenario())
    assert free is None
    assert after_a_stall == [None] * (QUEUED_BEFORE_SHEDDING - 1)  # the few a stall held up still go through
    assert stuck_for >= 0.02
    assert stuck is not None and stuck[0] == 503 and stuck[2] == "shed" and stuck[3] == {"Retry-After": "1"}


def test_head_is_answered_wherever_get_is(client: TestClient) -> None:
    """HEAD was a 405 everywhere: uptime monitors that ask `HEAD /healthz` saw the service down."""
    for path in ("/healthz", "/readyz", "/v1/models/needs_rec", "/", "/analyst", "/openapi.json"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"], path
    assert client.head("/no/such/path").status_code == 404
    refused = client.head("/v1/recommendations")  # POST only
    assert refused.status_code == 405 and refused.content == b"" and "POST" in refused.headers["allow"]


def test_metadata_names_validation_warnings_without_the_crms_ids_and_values() -> None:
    """`/metadata` is open to any client; a warning's examples and message quote CRM ids (org_id ORG-0054 …)."""
    from serving.registry import public_data

    warning = {"kind": "missing_value", "file": "organizations.csv", "column": "region", "count": 52,
               "examples": ["ORG-0054"], "message": "… 52 rows with no value (org_id ORG-0054 …)"}
    data = {"validation": {"rows": {"organizations": 3}, "warnings": [warning]}, "fingerprint": "abc"}
    shown = public_data(data)
    assert shown["validation"]["warnings"] == [
        {"kind": "missing_value", "file": "organizations.csv", "column": "region", "count": 52}]
    assert shown["validation"]["rows"] == {"organizations": 3} and shown["fingerprint"] == "abc"
    assert "ORG-0054" not in json.dumps(shown) and data["validation"]["warnings"][0]["examples"]  # a copy
    assert public_data({"split": {}}) == {"split": {}}


def test_a_client_gone_mid_body_is_499_not_a_400_it_never_received() -> None:
    """A truncated body was logged and counted as status 400, among the callers' real bad requests."""
    import asyncio

    from starlette.requests import Request

    from serving.service import ApiError, read_body

    messages = [{"type": "http.request", "body": b'{"stage"', "more_body": True}, {"type": "http.disconnect"}]

    async def receive() -> dict:
        return messages.pop(0)

    request = Request({"type": "http", "method": "POST", "path": "/v1/recommendations", "headers": []}, receive)
    with pytest.raises(ApiError) as caught:
        asyncio.run(read_body(request, 1000))
    assert caught.value.status == 499 and caught.value.outcome == "disconnected"
