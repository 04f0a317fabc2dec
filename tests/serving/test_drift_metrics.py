"""Drift in /metrics: a stream with 30% of requests moved to one industry is flagged; an unshifted one is not."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_factory import build_version, sample_frame
from prometheus_client.parser import text_string_to_metric_families
from serving_support import serve, settings_for

from needs_rec import dictionaries, schema


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory, dictionaries_dir: Path) -> Path:
    """A version whose training frame has 3,000 rows (a steady profile to compare with)."""
    return build_version(tmp_path_factory.mktemp("drift") / "models", dictionaries_dir, n_rows=3000, seed=4)


def _instances(frame: Any) -> list[dict[str, Any]]:
    rows = []
    for record in frame[list(schema.MODEL_INPUT_NAMES)].to_dict("records"):
        rows.append({k: v for k, v in record.items()
                     if not (isinstance(v, float) and math.isnan(v)) and v != ""})
    return rows


def _drift(client: Any) -> tuple[dict[str, float], dict[str, float]]:
    distances, flags = {}, {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "needs_rec_drift_distance":
                distances[sample.labels["field"]] = sample.value
            elif sample.name == "needs_rec_drift_flag":
                flags[sample.labels["field"]] = sample.value
    return distances, flags


def _stream(client: Any, instances: list[dict[str, Any]]) -> None:
    for start in range(0, len(instances), 100):
        response = client.post("/v1/models/needs_rec:predict", json={"instances": instances[start:start + 100]})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("shifted", [False, True])
def test_drift_flag_follows_a_shift_to_one_industry(version: Path, dictionaries_dir: Path, shifted: bool) -> None:
    dicts = dictionaries.load(dictionaries_dir)
    live = sample_frame(dicts, 1500, seed=11)  # same generator as training, other draws
    if shifted:
        moved = np.random.default_rng(5).random(len(live)) < 0.3
        live.loc[moved, "industry"] = dicts.codes("industries")[0]
    settings = settings_for(version, drift_window=1000, drift_min_rows=200)
    with serve(settings, f"drift-{shifted}") as (client, _):
        assert _drift(client)[0] == {}  # nothing judged before any request
        _stream(client, _instances(live))
        distances, flags = _drift(client)
    assert set(flags) >= {"stage", "industry", "position", "interests", "employees"}
    assert set(distances) == set(flags)
    if shifted:
        assert flags["industry"] == 1.0 and distances["industry"] > 0.15, distances  # ≈ 0.3 × (1 − its share)
        assert sum(flags.values()) == 1.0, flags  # only the field that moved
    else:
        assert sum(flags.values()) == 0.0, distances
        assert max(distances.values()) < 0.1
