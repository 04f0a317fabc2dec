"""TensorFlow Serving parity (contract §4): row and columnar predict, signature_name, metadata's signature_def."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serving_support import VOCABULARY, serve, settings_for

PREDICT = "/v1/models/needs_rec:predict"
ROWS = [
    {"stage": "lead", "industry": "it", "position": "ceo", "occurred_on": "2024-05-01"},
    {"stage": "deal", "industry": "retail", "region": "spb", "employees": 3000, "position": "buyer",
     "interests": ["speed", "scale"], "occurred_on": "2024-06-15"},
]


@pytest.fixture(scope="module")
def client(built: dict[str, Path]) -> Any:
    with serve(settings_for(built["random"]), "tf-serving") as (client, _):
        yield client


def test_columnar_inputs_answer_outputs_equal_to_the_row_form(client: TestClient) -> None:
    rows = client.post(PREDICT, json={"instances": ROWS}).json()["predictions"]
    columns = {name: [row.get(name) for row in ROWS] for name in sorted({k for row in ROWS for k in row})}
    response = client.post(PREDICT, json={"inputs": columns})
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert np.asarray(outputs).shape == (2, len(VOCABULARY)) and "predictions" not in response.json()
    np.testing.assert_allclose(outputs, rows, atol=1e-6)


def test_personal_fields_of_the_columnar_form_are_ignored_never_echoed(client: TestClient) -> None:
    columns = {name: [row.get(name) for row in ROWS] for name in sorted({k for row in ROWS for k in row})}
    plain = client.post(PREDICT, json={"inputs": columns}).json()["outputs"]
    for personal in ("ivan@example.ru", ["ivan@example.ru"], ["a@b.ru", "c@d.ru", "e@f.ru"]):
        response = client.post(PREDICT, json={"inputs": {**columns, "email": personal, "Full_Name": personal}})
        assert response.status_code == 200, response.text  # not checked, not counted as a column of rows
        assert "example.ru" not in response.text and "a@b.ru" not in response.text
        assert response.json()["outputs"] == plain
    only_personal = client.post(PREDICT, json={"inputs": {"email": ["ivan@example.ru"]}})
    assert only_personal.status_code == 400 and "example.ru" not in only_personal.text
    assert only_personal.json()["error"].startswith("field 'inputs' must be an object mapping each input name")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": {"stage": ["lead", "demo"], "industry": ["it"], "position": ["ceo", "ceo"]}},
         "field 'inputs': every input needs the same number of rows, got stage: 2, industry: 1, position: 2"),
        ({"inputs": {"stage": "lead"}}, "field 'inputs.stage' must be an array (one value per row), got string"),
        ({"inputs": [1]}, "field 'inputs' must be an object mapping each input name to a list of values"),
        # named as the caller wrote them (the rows are parsed as inputs[1].employees)
        ({"inputs": {"stage": ["lead"], "position": ["ceo"]}}, "field 'inputs.industry' is required"),
        ({"inputs": {"stage": ["lead", "lead"], "industry": ["it", "it"], "position": ["ceo", "ceo"],
                     "employees": [3, "12"]}}, "field 'inputs.employees[1]' must be a number, got string '12'"),
        ({"inputs": {"stage": ["lead", "nope"], "industry": ["it", "it"], "position": ["ceo", "ceo"]}},
         "field 'inputs.stage[1]': unknown stage 'nope'"),
        ({"inputs": {"stage": ["lead"], "industry": ["it"], "position": ["ceo"], "interests": [[1]]}},
         "field 'inputs.interests[0]' must be an array of strings"),
        ({"instances": ROWS, "inputs": {"stage": ["lead"]}}, "body: give either 'instances' (row form) or 'inputs'"),
        ({"inputs": {"stage": ["lead"] * 101, "industry": ["it"] * 101, "position": ["ceo"] * 101}},
         "field 'inputs' holds 101 rows; at most 100 are allowed per call"),
    ],
)
def test_bad_columnar_bodies_are_400_naming_the_field(client: TestClient, body: Any, message: str) -> None:
    response = client.post(PREDICT, json=body)
    assert response.status_code == 400 and response.json()["error"].startswith(message), response.text


def test_an_unknown_column_is_one_warning_not_one_per_row(client: TestClient) -> None:
    columns = {name: [row.get(name) for row in ROWS] for name in sorted({k for row in ROWS for k in row})}
    answer = client.post(PREDICT, json={"inputs": {**columns, "intrests": [["x"]] * len(ROWS)}}).json()
    assert answer["warnings"] == ["unknown field 'inputs.intrests' ignored (did you mean 'interests'?)"]
    assert answer["outputs"] == client.post(PREDICT, json={"inputs": columns}).json()["outputs"]


def test_signature_name_is_honoured(client: TestClient) -> None:
    for name in ("serving_default", "serve", ""):
        assert client.post(PREDICT, json={"signature_name": name, "instances": ROWS[:1]}).status_code == 200
    for name in ("fast_path", "nope", 3):
        response = client.post(PREDICT, json={"signature_name": name, "instances": ROWS[:1]})
        assert response.status_code == 400
        assert response.json()["error"] == (
            f"field 'signature_name': unknown signature {name!r}; allowed: serve, serving_default "
            "(default serving_default)"
        )


def test_unknown_predict_fields_are_warnings(client: TestClient) -> None:
    body = {"instances": [{**ROWS[0], "intrests": "speed", "email": "a@b.c"}], "signature": "x"}
    answer = client.post(PREDICT, json=body).json()
    assert answer["warnings"] == [
        "unknown field 'signature' ignored (did you mean 'signature_name'?)",
        "instances[0]: unknown field 'intrests' ignored (did you mean 'interests'?)",
    ]


def test_metadata_has_signature_def_in_tf_servings_shape(client: TestClient) -> None:
    meta = client.get("/v1/models/needs_rec/metadata").json()
    assert meta["model_spec"] == {"name": "needs_rec", "signature_name": "", "version": "1"}
    defs = meta["metadata"]["signature_def"]["signature_def"]
    assert set(defs) == {"serve", "serving_default"}
    default = defs["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["industry"] == {
        "dtype": "DT_STRING", "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
        "name": "industry:0",
    }
    assert default["inputs"]["employees"]["dtype"] == "DT_FLOAT"
    (output,) = default["outputs"].values()
    assert output["dtype"] == "DT_FLOAT" and output["tensor_shape"]["dim"] == [
        {"size": "-1", "name": ""}, {"size": str(len(VOCABULARY)), "name": ""}]


def test_a_version_on_disk_that_this_service_does_not_hold_has_a_status(
    built: dict[str, Path], tmp_path: Path
) -> None:
    """Contract §4: 404 only for a version that is not there; a candidate was reported missing."""
    import json

    from serving_support import models_dir_with

    models = models_dir_with(tmp_path, built["fixed"], built["fixed"], built["fixed"])
    (models / "labels.json").write_text(json.dumps({"stable": 2, "previous": 1}))  # 3: a candidate
    with serve(settings_for(models), "status-on-disk") as (client, _):
        answer = client.get("/v1/models/needs_rec/versions/3")
        assert answer.status_code == 200, answer.text
        [entry] = answer.json()["model_version_status"]
        assert entry["version"] == "3" and entry["state"] == "END"
        assert "not loaded by this service" in entry["status"]["error_message"]
        assert client.get("/v1/models/needs_rec/versions/2").json()["model_version_status"][0]["state"] == "AVAILABLE"
        assert client.get("/v1/models/needs_rec/versions/9").status_code == 404


def test_a_version_directory_without_a_manifest_is_named_so(tmp_path: Path) -> None:
    """It read as 'no model version under 'version 3'; train one with `… --output version 3`'."""
    from needs_rec.errors import ModelError
    from serving.registry import load_version

    (tmp_path / "3").mkdir()
    with pytest.raises(ModelError) as raised:
        load_version(tmp_path / "3")
    assert str(raised.value).startswith("version 3: missing manifest.json; not a model version")
