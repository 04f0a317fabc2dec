"""Hot reload: a new version is swapped in; a corrupted one is refused once and never served."""

from __future__ import annotations

import json
import shutil
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from model_factory import copy_version, corrupt_copy
from serving_support import LOCAL, capture_logger, models_dir_with, settings_for, wait_until

from needs_rec import versions
from needs_rec.errors import ModelError
from serving.app import create_app
from serving.registry import Registry, ServingModel, load_version

BODY = {"stage": "lead", "organization": {"industry": "it"}, "contact": {"position": "ceo"}}


def counting(calls: Counter[int]) -> Callable[[Path], ServingModel]:
    """`load_version`, counting the loads of each version number in `calls`."""

    def loader(path: Path) -> ServingModel:
        calls[int(path.name)] += 1
        return load_version(path)

    return loader


def version_of(client: TestClient) -> int | None:
    response = client.get("/readyz")
    return response.json().get("model_version") if response.status_code == 200 else None


def test_hot_reload_swaps_in_new_version_and_refuses_a_corrupted_one(built: dict[str, Path], tmp_path: Path) -> None:
    models = models_dir_with(tmp_path, built["fixed"])
    settings = settings_for(models)
    logger, log = capture_logger("reload")
    calls: Counter[int] = Counter()
    counting_loader = counting(calls)
    registry = Registry(models, poll_interval_s=0.1, warmup_rounds=1, max_rows=8, logger=logger, loader=counting_loader)
    with TestClient(create_app(settings, registry=registry, logger=logger), base_url=LOCAL) as client:
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
        refusal = status["3"]["status"]["error_message"]
        assert status["3"]["state"] == "END" and "checksums" in refusal
        assert refusal.startswith("version 3:") and str(tmp_path) not in refusal and "/tmp" not in refusal
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


def test_a_copied_directory_is_served_under_its_own_name_and_idle_polls_do_nothing(
    built: dict[str, Path], tmp_path: Path
) -> None:
    """`cp -r models/1 models/2` while serving: version 2 is served once, not reloaded every poll."""
    models = models_dir_with(tmp_path, built["fixed"])
    logger, log = capture_logger("copied")
    calls: Counter[int] = Counter()
    counting_loader = counting(calls)
    registry = Registry(models, poll_interval_s=0, warmup_rounds=0, logger=logger, loader=counting_loader)
    assert registry.poll_once() and registry.current.version == 1
    copy_version(models / "1", models, 2)  # the manifest inside still says version 1
    assert registry.poll_once() and registry.current.version == 2
    lines = len(log.getvalue().splitlines())
    for _ in range(5):
        assert registry.poll_once() is False
    assert calls == Counter({1: 1, 2: 1})
    assert len(log.getvalue().splitlines()) == lines  # an idle poll writes nothing
    assert {e["version"]: e["state"] for e in registry.status()} == {"2": "AVAILABLE", "1": "END"}


def test_labels_decide_what_serves_and_promotion_and_rollback_follow(built: dict[str, Path], tmp_path: Path) -> None:
    models = models_dir_with(tmp_path, built["fixed"], built["random"])
    versions.write_labels(models, versions.Labels(stable=1))
    logger, _ = capture_logger("labels")
    registry = Registry(models, poll_interval_s=0.1, warmup_rounds=1, max_rows=8, logger=logger)
    instances = {"instances": [{"stage": "lead", "industry": "it", "position": "ceo"}]}
    with TestClient(create_app(settings_for(models), registry=registry, logger=logger), base_url=LOCAL) as client:
        assert wait_until(lambda: version_of(client) == 1)
        wait_until(lambda: False, timeout=0.4)
        assert version_of(client) == 1  # version 2 is a candidate: never served while labels exist
        stable = client.get("/v1/models/needs_rec/labels/stable").json()["model_version_status"]
        assert stable == [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]
        answer = client.post("/v1/models/needs_rec/labels/stable:predict", json=instances)
        assert answer.status_code == 200 and answer.json()["model_version"] == 1
        first_answer = answer.json()["predictions"]

        assert versions.promote(models, 2) == versions.Labels(stable=2, previous=1)
        assert wait_until(lambda: version_of(client) == 2)
        assert client.post("/v1/models/needs_rec/labels/stable:predict", json=instances).json()["model_version"] == 2
        # `previous` is held loaded beside `stable` (a rollback is a swap), so it answers as itself
        previous = client.post("/v1/models/needs_rec/labels/previous:predict", json=instances)
        assert previous.status_code == 200 and previous.json()["model_version"] == 1
        assert previous.json()["predictions"] == first_answer
        assert client.post("/v1/models/needs_rec/labels/stable:predict", json=instances).json()["predictions"] \
            != first_answer
        status = client.get("/v1/models/needs_rec/labels/previous").json()["model_version_status"]
        assert status == [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]
        # by its number too, as TF Serving addresses every loaded version, and the same in every status form
        by_number = client.post("/v1/models/needs_rec/versions/1:predict", json=instances)
        assert by_number.status_code == 200 and by_number.json()["predictions"] == first_answer
        assert client.get("/v1/models/needs_rec/versions/1/metadata").json()["version"] == 1
        every = {e["version"]: e["state"] for e in client.get("/v1/models/needs_rec").json()["model_version_status"]}
        assert every == {"2": "AVAILABLE", "1": "AVAILABLE"}
        assert client.get("/v1/models/needs_rec/versions/01").json()["model_version_status"][0]["version"] == "1"
        missing = client.get("/v1/models/needs_rec/labels/canary")
        assert missing.status_code == 404 and "labels: stable=2, previous=1" in missing.json()["error"]

        versions.rollback(models)
        assert wait_until(lambda: version_of(client) == 1)


def test_a_label_naming_a_version_this_service_does_not_hold_answers_404(
    built: dict[str, Path], tmp_path: Path
) -> None:
    models = models_dir_with(tmp_path, built["fixed"], built["random"])
    versions.write_labels(models, versions.Labels(stable=2, previous=1))
    logger, _ = capture_logger("not-held")
    registry = Registry(models, poll_interval_s=0.1, warmup_rounds=0, logger=logger, preload=False)
    instances = {"instances": [{"stage": "lead", "industry": "it", "position": "ceo"}]}
    with TestClient(create_app(settings_for(models), registry=registry, logger=logger), base_url=LOCAL) as client:
        assert wait_until(lambda: version_of(client) == 2)
        previous = client.post("/v1/models/needs_rec/labels/previous:predict", json=instances)
        assert previous.status_code == 404
        assert previous.json() == {"error": "label 'previous' names version 1, which is not loaded; "
                                            "this service serves version 2"}
        assert client.get("/v1/models/needs_rec/labels/previous").json()["model_version_status"][0]["state"] == "END"


def test_any_label_name_is_followed_and_an_unreadable_labels_file_is_said_in_the_status(
    built: dict[str, Path], tmp_path: Path
) -> None:
    """TF Serving allows any label (`canary`): a labels.json with one was refused whole, the service kept its
    old stable and only the log said so; `labels/<L>/metadata` was a 404."""
    models = models_dir_with(tmp_path, built["fixed"], built["random"])
    (models / "labels.json").write_text('{"stable": 1, "canary": 2}')
    logger, _ = capture_logger("canary")
    registry = Registry(models, poll_interval_s=0.05, warmup_rounds=0, logger=logger)
    instances = {"instances": [{"stage": "lead", "industry": "it", "position": "ceo"}]}
    with TestClient(create_app(settings_for(models), registry=registry, logger=logger), base_url=LOCAL) as client:
        assert wait_until(lambda: version_of(client) == 1 and 2 in registry.standby)
        assert client.get("/v1/models/needs_rec/labels/stable/metadata").json()["version"] == 1
        canary = client.get("/v1/models/needs_rec/labels/canary").json()["model_version_status"]
        assert [(e["version"], e["state"]) for e in canary] == [("2", "END")]
        assert "a candidate, held loaded for a fast promotion" in canary[0]["status"]["error_message"]
        every = client.get("/v1/models/needs_rec").json()
        assert [(e["version"], e["state"]) for e in every["model_version_status"]] == [("2", "END"), ("1", "AVAILABLE")]
        assert "warnings" not in every
        refused = client.post("/v1/models/needs_rec/labels/canary:predict", json=instances)
        assert refused.status_code == 404 and "names version 2, which is not loaded" in refused.json()["error"]

        (models / "labels.json").write_text('{"stable": 2, "can ary": 1}')  # unreadable: keep serving 1, say why
        assert wait_until(lambda: registry.labels_error is not None)
        status = client.get("/v1/models/needs_rec/labels/stable").json()
        assert status["warnings"] == ["labels.json: bad label name(s) 'can ary'; a label is 1-64 letters, digits, "
                                      "'_', '-' or '.', starting with a letter or digit; labels.json is not "
                                      "followed until it is fixed (serving version 1)"]
        assert version_of(client) == 1
        versions.write_labels(models, versions.Labels(stable=2, previous=1, others=(("canary", 2),)))
        assert wait_until(lambda: version_of(client) == 2)
        assert "warnings" not in client.get("/v1/models/needs_rec").json()


def test_a_vanished_served_directory_keeps_answering_then_moves_on(built: dict[str, Path], tmp_path: Path) -> None:
    models = models_dir_with(tmp_path, built["fixed"], built["random"])
    versions.write_labels(models, versions.Labels(stable=2, previous=1))
    logger, log = capture_logger("vanished")
    registry = Registry(models, poll_interval_s=0, warmup_rounds=0, logger=logger)
    assert registry.poll_once() and registry.current.version == 2
    shutil.rmtree(models / "2")
    (models / "1").rename(models / ".away")  # nothing else loadable yet: answer from memory
    assert registry.poll_once() is False and registry.current.version == 2
    entry = next(e for e in registry.status() if e["version"] == "2")
    assert entry["state"] == "AVAILABLE" and entry["status"]["error_code"] == "NOT_FOUND"
    assert "version 2's directory is gone; answering from memory" in entry["status"]["error_message"]
    (models / ".away").rename(models / "1")
    assert registry.poll_once() and registry.current.version == 1  # `previous`, within one poll
    assert {e["version"]: e["status"]["error_code"] for e in registry.status()} == {"2": "OK", "1": "OK"}
    assert any(json.loads(line)["event"] == "model_directory_gone" for line in log.getvalue().splitlines())


def test_a_hand_edited_manifest_is_refused_and_the_answer_names_no_path(built: dict[str, Path], tmp_path: Path) -> None:
    models = models_dir_with(tmp_path, built["fixed"])
    copy_version(built["random"], models, 2)
    manifest = models / "2" / "manifest.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["thresholds"] = [0.0] * len(data["thresholds"])
    manifest.write_text(json.dumps(data), encoding="utf-8")
    logger, log = capture_logger("edited")
    registry = Registry(models, poll_interval_s=0, warmup_rounds=0, logger=logger)
    assert registry.poll_once() and registry.current.version == 1
    error = registry.refused[2].error
    assert "version 2: manifest.json does not match its checksum" in error and str(tmp_path) not in error
    refused = [json.loads(line) for line in log.getvalue().splitlines() if '"model_refused"' in line]
    assert refused and refused[0]["path"] == str(models / "2")  # the path goes to the log only


def test_a_version_refused_at_start_answers_503_without_a_path(built: dict[str, Path], tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    corrupt_copy(built["fixed"], models, 1)
    logger, _ = capture_logger("refused")
    registry = Registry(models, poll_interval_s=0, warmup_rounds=0, logger=logger)
    with TestClient(create_app(settings_for(models), registry=registry, logger=logger), base_url=LOCAL) as client:
        assert wait_until(lambda: 1 in registry.refused)
        answer = client.post("/v1/recommendations", json=BODY)
        assert answer.status_code == 503 and "version 1 refused" in answer.json()["error"]
        assert str(tmp_path) not in answer.text
        status = client.get("/v1/models/needs_rec/versions/1").text
        assert str(tmp_path) not in status


def test_promotion_and_rollback_swap_versions_held_loaded(built: dict[str, Path], tmp_path: Path) -> None:
    """The newest candidate and `previous` are loaded beside `stable`, so switching to them loads nothing."""
    models = models_dir_with(tmp_path, built["fixed"], built["random"])
    versions.write_labels(models, versions.Labels(stable=1))
    logger, log = capture_logger("standby")
    calls: Counter[int] = Counter()
    counting_loader = counting(calls)
    registry = Registry(models, poll_interval_s=0, warmup_rounds=0, logger=logger, loader=counting_loader)
    assert registry.poll_once() and registry.current.version == 1
    assert registry.poll_once() is False and set(registry.standby) == {2}  # candidate preloaded, not served
    assert registry.current.version == 1
    versions.promote(models, 2)
    assert registry.poll_once() and registry.current.version == 2
    versions.rollback(models)
    assert registry.poll_once() and registry.current.version == 1
    assert calls == Counter({1: 1, 2: 1})  # each loaded once, whatever the switches
    switched = [json.loads(line) for line in log.getvalue().splitlines() if '"model_switched"' in line]
    assert [(e["version"], e["preloaded"], e["load_seconds"] < 0.5) for e in switched] == [(2, True, True),
                                                                                          (1, True, True)]
    shutil.rmtree(models / "2")  # a held version whose directory goes is let go
    registry.poll_once()
    assert registry.standby == {}
