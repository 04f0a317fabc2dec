"""The CRM loop end to end on a database (issue 9, README): sample into SQLite or PostgreSQL → train
from it → serve with --crm → recommendations by contact_id → feedback → the next training counts it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "serving"))
from serving_support import serve, settings_for

from crm.write import write_tables
from needs_rec import dictionaries, schema
from training import sample
from training.train import train

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = """
network: {hidden_units: [16], dropout: 0.1}
training: {batch_size: 128, max_epochs: 3, patience: 2}
"""

pytestmark = pytest.mark.slow


def test_feedback_posted_to_the_service_is_learned_from_by_the_next_training(database_url, tmp_path, open_crm):
    dicts = dictionaries.load(REPO / "dictionaries")
    data = sample.generate(dicts, n_orgs=120, seed=11)
    write_tables(database_url, {"organizations": data.organizations, "contacts": data.contacts,
                                "outcomes": data.outcomes})
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG, encoding="utf-8")
    models = tmp_path / "models"
    first = train(database_url, REPO / "dictionaries", models, config=config, seed=3, baselines=False)
    assert first.manifest["data"]["validation"]["files"]["outcomes"] == "table 'outcomes'"

    contact_id = data.contacts["contact_id"].iloc[0]
    stage = dicts.stage_codes[0]
    with serve(settings_for(models, crm=database_url), "loop") as (client, _):
        answer = client.post("/v1/recommendations", json={"contact_id": contact_id, "stage": stage, "top_k": 2})
        assert answer.status_code == 200, answer.text
        shown = answer.json()
        assert shown["contact_id"] == contact_id and shown["request_id"] and len(shown["talking_points"]) == 2
        event = {"feedback_id": "call-1", "contact_id": contact_id, "stage": stage,
                 "characteristic": shown["talking_points"][0]["characteristic"], "outcome": "positive",
                 "occurred_on": "2025-12-31", "request_id": shown["request_id"]}
        stored = client.post("/v1/feedback", content=json.dumps(event), headers={"Content-Type": "application/json"})
        assert stored.status_code == 201, stored.text

    frames = open_crm(database_url).read_crm()
    assert list(frames["feedback"]["feedback_id"]) == ["call-1"]
    second = train(database_url, REPO / "dictionaries", models, config=config, seed=3, baselines=False)
    report = second.manifest["data"]["validation"]
    assert report["rows"]["feedback"] == 1 and report["notes"]["outcome_rows_from_feedback"] == 1
    assert report["outcome_rows_kept"] == first.manifest["data"]["validation"]["outcome_rows_kept"] + 1
    _, again = schema.validate(frames, dicts)
    assert "incl. 1 from feedback" in str(again)
