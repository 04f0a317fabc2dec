"""One selection rule (cut, top_k cap, min_selected floor, stage offer) on every path: HTTP, batch, the rule itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from crm_factory import write_crm
from model_factory import reseal_manifest
from serving_support import FIXED_PROBABILITIES, VOCABULARY, models_dir_with, serve, settings_for

from needs_rec import dictionaries, thresholds
from needs_rec.talking_points import TalkingPoints
from serving import batch

BODY = {"organization": {"industry": "it"}, "contact": {"position": "ceo", "interests": ["save_money"]}}


def _http(client, stage: str) -> list[str]:
    content = json.dumps({**BODY, "stage": stage}).encode()
    answer = client.post("/v1/recommendations", content=content, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    return [t["characteristic"] for t in answer.json()["talking_points"]]


def _batch(models: Path, crm: Path, tmp_path: Path, stage: str) -> list[str]:
    requests = tmp_path / f"requests_{stage}.csv"
    pd.DataFrame({"contact_id": ["c1"], "stage": [stage]}).to_csv(requests, index=False)
    output = tmp_path / f"scores_{stage}.parquet"
    assert batch.main(["--model", str(models), "--data", str(crm), "--requests", str(requests),
                       "--output", str(output)]) == 0  # fmt: skip
    scores = pd.read_parquet(output)
    return list(scores.loc[scores["selected"], "characteristic"].astype(str))


@pytest.mark.parametrize(
    ("top_k", "min_selected", "expected"),
    [
        # cut 0.5 passes ch_price (0.9) and ch_integration (0.7, offered at lead only); the cap keeps one
        (1, 0, {"lead": ["ch_price"], "demo": ["ch_price"]}),
        # the floor fills up to 3 with the most probable offered ones — never ch_integration at demo
        (3, 3, {"lead": ["ch_price", "ch_integration", "ch_support"], "demo": ["ch_price", "ch_support", "ch_cloud"]}),
    ],
)
def test_the_cap_and_the_floor_apply_on_http_and_batch_alike(
    built: dict[str, Path], dictionaries_dir: Path, tmp_path: Path, top_k: int, min_selected: int, expected: dict
) -> None:
    models = models_dir_with(tmp_path, built["fixed"])
    reseal_manifest(models / "1", top_k=top_k, min_selected=min_selected)
    dicts = dictionaries.load(dictionaries_dir)
    crm = write_crm(tmp_path / "crm", dicts)
    talking = TalkingPoints(dicts, VOCABULARY)
    p = np.array(FIXED_PROBABILITIES)
    with serve(settings_for(models), "rule") as (client, _):
        for stage, want in expected.items():
            offered = talking.offered(stage)
            rule = thresholds.select(p[None] * offered, np.full(4, 0.5), top_k, min_selected, offered)[0]
            assert [VOCABULARY[j] for j in np.argsort(-p * rule, kind="stable") if rule[j]] == want
            assert _http(client, stage) == want
            assert sorted(_batch(models, crm, tmp_path, stage)) == sorted(want)


def test_selected_marks_the_rules_pick_on_http_and_batch_alike_whatever_top_k_asks(
    built: dict[str, Path], dictionaries_dir: Path, tmp_path: Path
) -> None:
    """With top_k 4 over a cap of 1, HTTP marked every item past the cut selected (ch_integration at 0.7)
    while batch marked the one the cap keeps: 116 of 400 flags differed on a sample CRM."""
    models = models_dir_with(tmp_path, built["fixed"])
    reseal_manifest(models / "1", top_k=1, min_selected=0)
    crm = write_crm(tmp_path / "crm", dictionaries.load(dictionaries_dir))
    with serve(settings_for(models), "flags") as (client, _):
        for top_k in (None, 4):
            body = {**BODY, "stage": "lead", **({"top_k": top_k} if top_k else {})}
            points = client.post("/v1/recommendations", json=body).json()["talking_points"]
            assert [t["characteristic"] for t in points if t["selected"]] == ["ch_price"], (top_k, points)
        assert len(points) == 4 and {t["characteristic"] for t in points if not t["selected"]} == {
            "ch_integration", "ch_support", "ch_cloud"}
    assert _batch(models, crm, tmp_path, "lead") == ["ch_price"]
