"""Hot reload: a new version is swapped in; a corrupted one is refused once and never served."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from model_factory import copy_version, corrupt_copy
from serving_support import capture_logger, models_dir_with, settings_for, wait_until

from needs_rec.errors import ModelError
from serving.app import create_app
from serving.registry import Registry, ServingModel, load_version

BODY = {"stage": "lead", "organization": {"industry": "it"}, "contact": {"position": "ceo"}}


def version_of(client: TestClient) -> int | None:
    response = client.get("/readyz")
    return response.json().get("model_version") if response.status_code == 200 else None


def test_hot_reload_swaps_in_new_version_and_refuses_a_corrupted_one(built: dict[str, Path], tmp_path: Path) -> None:
    models = models_dir_with(tmp_path, built["fixed"])
    settings = settings_for(models)
    logger, log = capture_logger("reload")
    calls: Counter[int] = Counter()

    def counting_loader(path: Path) -> ServingModel:
        calls[int(path.name)] += 1
        return load_version(path)

    registry = Registry(models, poll_interval_s=0.1, warmup_rounds=1, max_rows=8, logger=logger, loader=counting_loader)
    with TestClient(create_app(settings, registry=registry, logger=logger)) as client:
        assert wait_until(lambda: version_of(client) == 1)
        old = registry.current
        assert old is not None

        # A request in flight on version 1 while version 2 is swapped in finishes on version 1.
        entered, release = threading.Event(), threading.Event()
        original = old.predict_rows

        def held(rows: Any) -> Any:
            entered.set()
            release.wait(30)
            return original(rows)

        old.predict_rows = held  # type: ignore[method-assign]
        old.twin = None  # hold the call in TensorFlow's thread (the NumPy twin would answer inline at once)
        answers: list[Any] = []
        in_flight = threading.Thread(target=lambda: answers.append(client.post("/v1/recommendations", json=BODY)))
        in_flight.start()
        assert entered.wait(30)
        copy_version(built["random"], models, 2)
        assert wait_until(lambda: registry.current is not None and registry.current.version == 2, timeout=60)
        release.set()
        in_flight.join(30)
        assert answers[0].status_code == 200 and answers[0].json()["model_version"] == 1
        assert client.post("/v1/recommendations", json=BODY).json()["model_version"] == 2

        corrupt_copy(built["random"], models, 3)
        assert wait_until(lambda: 3 in registry.refused, timeout=30)
        wait_until(lambda: False, timeout=0.6)  # a few more polls: the refused version is not retried
        assert calls[3] == 1
        assert version_of(client) == 2
        assert client.post("/v1/recommendations", json=BODY).json()["model_version"] == 2
        status = {e["version"]: e for e in client.get("/v1/models/needs_rec").json()["model_version_status"]}
        assert status["2"]["state"] == "AVAILABLE"
        assert status["1"]["state"] == "END"
        assert status["3"]["state"] == "END" and "checksums" in status["3"]["status"]["error_message"]
        assert client.get("/v1/models/needs_rec/versions/3").status_code == 200
        assert client.get("/v1/models/needs_rec/versions/4").status_code == 404

    events = [json.loads(line) for line in log.getvalue().splitlines()]
    assert any(e["event"] == "model_switched" and e["version"] == 2 and e["previous"] == 1 for e in events)
    assert any(e["event"] == "model_refused" and e["version"] == 3 and e["serving"] == 2 for e in events)


def test_startup_falls_back_past_a_broken_newest_version(built: dict[str, Path], tmp_path: Path) -> None:
    models = models_dir_with(tmp_path, built["fixed"])
    corrupt_copy(built["fixed"], models, 2)
    logger, _ = capture_logger("fallback")
    registry = Registry(models, poll_interval_s=0, warmup_rounds=0, logger=logger)
    assert registry.poll_once() is True
    assert registry.current is not None and registry.current.version == 1
    assert 2 in registry.refused


def test_dictionary_checksums_are_verified(built: dict[str, Path], tmp_path: Path) -> None:
    models = models_dir_with(tmp_path, built["fixed"])
    (models / "1" / "dictionaries" / "products.yaml").write_text("items: [{code: crm, name: CRM}]\n", encoding="utf-8")
    with pytest.raises(ModelError, match=r"dictionary checksums: products\.yaml"):
        load_version(models / "1")


def test_a_version_directory_is_served_as_is(built: dict[str, Path]) -> None:
    logger, _ = capture_logger("fixed")
    registry = Registry(built["random"], poll_interval_s=0.1, warmup_rounds=0, logger=logger)
    assert registry.fixed and registry.poll_once()
    assert registry.current is not None and registry.current.version == 1
    assert registry.candidates() == []  # nothing newer is looked for
