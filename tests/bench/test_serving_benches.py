"""bench/serving_latency.py's service-side figures and bench/answer_cost.py: they read what the service
really exposes, and the in-process bench runs end to end on a tiny version."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from model_factory import build_version

from serving.observability import Metrics
from serving.service import endpoint_of

ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


serving_latency = load("serving_latency")
answer_cost = load("answer_cost")


def test_service_side_reads_the_scoring_answers_from_the_services_own_metrics_page() -> None:
    """The label the guard gives `POST /v1/recommendations` and the page `Metrics.render` writes: a
    renamed label or metric would silently drop the bench's service-side column, so this pins them."""
    metrics = Metrics()
    endpoint = endpoint_of("POST", "/v1/recommendations")
    metrics.observe_request(endpoint, 200, 0.0004)
    metrics.observe_request(endpoint, 200, 0.0006)
    metrics.observe_request(endpoint, 422, 0.5)  # an error is not an answer
    metrics.observe_request(endpoint_of("POST", "/v1/recommendations:batch"), 200, 2.0)
    text = metrics.render()[0].decode()

    answers, inside = serving_latency.ServiceSide.answered(text)

    assert answers == 2
    assert inside == pytest.approx(0.001)


def test_service_side_per_answer_divides_the_runs_differences() -> None:
    before, after = (10.0, 0.004, 1.50), (110.0, 0.054, 1.56)
    figures = serving_latency.ServiceSide.per_answer(before, after)
    assert figures["inside_us"] == pytest.approx(500.0)
    assert figures["cpu_us"] == pytest.approx(600.0)
    assert serving_latency.ServiceSide.per_answer(after, after) == {}  # no answers: no figures, not a division by 0


def test_service_side_counts_the_cpu_of_the_process_and_its_children() -> None:
    side = serving_latency.ServiceSide(port=0, pid=os.getpid())
    start = side._cpu_seconds()
    total = 0
    for i in range(3_000_000):  # burn a little CPU in this process
        total += i
    assert total > 0
    assert side._cpu_seconds() > start


def test_the_row_shows_the_service_side_only_when_measured() -> None:
    base = {"rps": 200.0, "p50": 1.0, "p90": 1.5, "p99": 2.0, "failed": 0}
    assert "in the service" not in serving_latency.row("paced", base)
    text = serving_latency.row("paced", {**base, "inside_us": 480.0, "cpu_us": 560.0})
    assert "in the service  480 µs/answer, its CPU  560 µs/answer" in text


def test_answer_cost_runs_on_a_version_and_prints_each_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    version = build_version(tmp_path / "models", ROOT / "dictionaries", hidden=(8,), seed=2, top_k=3)

    assert answer_cost.main(["--model", str(version.parent), "--rounds", "2", "--requests", "30",
                             "--gaps", "0,0.2"]) == 0  # fmt: skip

    out = capsys.readouterr().out
    assert re.search(r"^hot loop: \d+ µs per answer \(median of 2 rounds of 30", out, re.M)
    for gap in ("0", "0.2"):
        assert re.search(rf"^after {gap} ms idle: p50 \d+ µs   mean \d+ µs   p99 \d+ µs   \(200 answers\)", out, re.M)


def test_answer_cost_stops_on_an_answer_that_is_not_200() -> None:
    async def refusing(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 422, "headers": []})
        await send({"type": "http.response.body", "body": b'{"error": "field stage is required"}'})

    with pytest.raises(SystemExit, match=r"422.*field stage is required"):
        asyncio.run(answer_cost.Caller(refusing)(b"{}"))
