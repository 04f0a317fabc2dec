"""End to end: raw CSV → training.fit → exported version → HTTP service and batch scoring.

The HTTP answers and the batch output must equal the in-process prediction of the exported
version (`needs_rec.artifact.load(...).predict`) on the same contacts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent / "serving"))

from serving_support import serve, settings_for

from needs_rec import artifact, dictionaries, features, schema
from needs_rec.thresholds import select
from serving import batch
from training import fit as fit_mod
from training import sample

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = """
network: {hidden_units: [32], dropout: 0.1}
training: {batch_size: 128, max_epochs: 4, patience: 2}
"""
DATE = "2025-06-01"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(CRM directory as CSV, models directory with the version training.fit wrote)."""
    root = tmp_path_factory.mktemp("e2e")
    crm = sample.write(sample.generate(dictionaries.load(REPO / "dictionaries"), n_orgs=150, seed=11), root / "crm")
    (root / "tiny.yaml").write_text(TINY_CONFIG, encoding="utf-8")
    argv = ["--data", str(crm), "--dictionaries", str(REPO / "dictionaries"), "--output", str(root / "models"),
            "--config", str(root / "tiny.yaml"), "--seed", "2", "--no-baselines", "--quiet"]
    fit_mod.fit(fit_mod.parse_args(argv))
    return crm, root / "models"


def contacts_frame(crm: Path, n: int, stage: str) -> pd.DataFrame:
    """The first `n` contacts joined to their organizations, straight from the CSV files."""
    contacts = pd.read_csv(crm / "contacts.csv", dtype=str, keep_default_na=False).head(n)
    orgs = pd.read_csv(crm / "organizations.csv", dtype=str, keep_default_na=False)
    frame = contacts.merge(orgs, on="org_id", how="left")
    frame["stage"] = stage
    frame["occurred_on"] = DATE
    return frame


def instance(row: pd.Series) -> dict:
    """One TF-Serving instance from a CSV row: numbers as JSON numbers, multi fields as lists."""
    out: dict = {}
    for column in schema.MODEL_INPUTS:
        value = row[column.name]
        if value == "":
            continue
        if column.name in schema.NUMERIC_INPUTS:
            out[column.name] = float(value)
        elif column.kind is schema.Kind.MULTI:
            out[column.name] = value.split(";")
        else:
            out[column.name] = value
    return out


def test_http_answers_equal_in_process_prediction(trained: tuple[Path, Path]) -> None:
    crm, models = trained
    version = artifact.load(models)
    dicts = dictionaries.load(version.path / "dictionaries")
    stage = dicts.stage_codes[2]
    frame = contacts_frame(crm, 12, stage)
    expected = version.predict(features.frame_to_inputs(frame[list(schema.MODEL_INPUT_NAMES)]))

    with serve(settings_for(models), "e2e") as (client, _):
        client: TestClient
        instances = [instance(row) for _, row in frame.iterrows()]
        response = client.post("/v1/models/needs_rec:predict", json={"instances": instances})
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(np.asarray(response.json()["predictions"]), expected, atol=1e-6)

        names = {ch.code: ch for ch in dicts.characteristics}
        reasons = []
        for i, inst in enumerate(instances[:6]):
            organization = {k: v for k, v in inst.items() if k in {c.name for c in schema.ORGANIZATIONS.columns}}
            contact = {k: v for k, v in inst.items() if k in {c.name for c in schema.CONTACTS.columns}}
            body = {"stage": stage, "organization": organization, "contact": contact, "occurred_on": DATE, "top_k": 5}
            answer = client.post("/v1/recommendations", json=body).json()
            assert answer["model_version"] == version.version and answer["warnings"] == []
            points = answer["talking_points"]
            assert len(points) == 5
            probabilities = [p["probability"] for p in points]
            assert probabilities == sorted(probabilities, reverse=True)
            for point in points:
                j = version.vocabulary.index(point["characteristic"])
                assert point["probability"] == pytest.approx(float(expected[i, j]), abs=1e-4)
                assert point["text"] == names[point["characteristic"]].talking_point(stage)
                assert point["reasons"]
                reasons += point["reasons"]
    # resonance statistics (explicit negatives: "Отозвалось у …, когда это предлагали") or the model's own factors
    assert any(r.startswith(("Отозвалось у", "Модель: выше всего")) for r in reasons)
    assert not any("100%" in r for r in reasons)


def test_batch_output_equals_in_process_prediction(trained: tuple[Path, Path], tmp_path: Path) -> None:
    crm, models = trained
    version = artifact.load(models)
    stage = version.manifest["stages"][0]
    frame = contacts_frame(crm, 8, stage)
    frame["occurred_on"] = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")  # batch scores as of today
    expected = version.predict(features.frame_to_inputs(frame[list(schema.MODEL_INPUT_NAMES)]))
    requests = tmp_path / "requests.csv"
    frame[["contact_id", "stage"]].to_csv(requests, index=False)
    output = tmp_path / "scores.parquet"
    assert batch.main(["--model", str(models), "--data", str(crm), "--requests", str(requests),
                       "--output", str(output)]) == 0
    scores = pd.read_parquet(output)
    assert len(scores) == 8 * len(version.vocabulary)
    got = scores.pivot(index="contact_id", columns="characteristic", values="probability")
    got = got.loc[frame["contact_id"], version.vocabulary].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    selected = scores.pivot(index="contact_id", columns="characteristic", values="selected")
    # the one selection rule: cut, cap, floor, only what the stage offers (the model gives the others 0)
    want = select(expected, version.thresholds, version.manifest.get("top_k"), version.manifest.get("min_selected", 0),
                  expected > 0)  # fmt: skip
    assert (selected.loc[frame["contact_id"], version.vocabulary].to_numpy() == want).all()


def test_another_firms_dictionaries_train_and_serve_without_code_change(tmp_path: Path) -> None:
    """tests/fixtures/other_firm: 4 stages, other codes, characteristics not offered at some stages."""
    other = REPO / "tests" / "fixtures" / "other_firm"
    dicts = dictionaries.load(other)
    crm = sample.write(sample.generate(dicts, n_orgs=120, seed=5), tmp_path / "crm")
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG, encoding="utf-8")
    fit_mod.fit(fit_mod.parse_args([
        "--data", str(crm), "--dictionaries", str(other), "--output", str(tmp_path / "models"),
        "--config", str(tmp_path / "tiny.yaml"), "--seed", "3", "--no-baselines", "--quiet",
    ]))  # fmt: skip
    version = artifact.load(tmp_path / "models")
    assert version.vocabulary == dicts.characteristic_codes
    offered = dicts.offered()
    stage_index = int(np.argmin(offered.sum(axis=1)))  # the stage with the fewest talking points
    stage = dicts.stage_codes[stage_index]
    assert not offered[stage_index].all()
    frame = contacts_frame(crm, 10, stage)
    expected = version.predict(features.frame_to_inputs(frame[list(schema.MODEL_INPUT_NAMES)]))
    assert (expected[:, ~offered[stage_index]] == 0).all()

    with serve(settings_for(tmp_path / "models"), "other-firm") as (client, _):
        model = client.app.state.service.registry.current
        assert model.twin is not None and model.twin_note.startswith("verified")
        instances = [instance(row) for _, row in frame.iterrows()]
        batch_answer = client.post("/v1/models/needs_rec:predict", json={"instances": instances})
        np.testing.assert_allclose(np.asarray(batch_answer.json()["predictions"]), expected, atol=1e-6)
        names = {ch.code: ch for ch in dicts.characteristics}
        for i, inst in enumerate(instances[:4]):
            organization = {k: v for k, v in inst.items() if k in {c.name for c in schema.ORGANIZATIONS.columns}}
            contact = {k: v for k, v in inst.items() if k in {c.name for c in schema.CONTACTS.columns}}
            body = {"stage": stage, "organization": organization, "contact": contact, "occurred_on": DATE, "top_k": 3}
            answer = client.post("/v1/recommendations", json=body)
            assert answer.status_code == 200, answer.text
            for point in answer.json()["talking_points"]:
                j = version.vocabulary.index(point["characteristic"])
                assert offered[stage_index, j]  # never a characteristic without a talking point at this stage
                assert point["text"] == names[point["characteristic"]].talking_point(stage)
                assert point["probability"] == pytest.approx(float(expected[i, j]), abs=1e-4)
