"""Short runs of bench/reliability.py's scenarios (slow): shedding, graceful SIGTERM, SIGKILL during export, no PII.

The bench prints the full figures (30 s of overload, 20 kills, 10,000 requests); these runs check
the behaviour on a small scale, never a timing.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench() -> Any:
    sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location("reliability", REPO / "bench" / "reliability.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def models(built: dict[str, Path]) -> Path:
    return built["random"].parent


@pytest.fixture(scope="module")
def bodies() -> list[str]:
    """Valid bodies for the tiny test dictionaries (tests/crm_factory.py)."""
    return [json.dumps({"stage": stage, "organization": {"industry": industry, "employees": 10 * (i + 1)},
                        "contact": {"position": position, "interests": ["speed"]}})
            for i, (stage, industry, position) in enumerate(itertools.product(
                ("lead", "demo", "deal"), ("it", "retail"), ("ceo", "buyer")))]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk (Debian package) drives the overload")
def test_overload_sheds_the_excess_with_503_and_retry_after(bench: Any, models: Path, bodies: list[str],
                                                             tmp_path: Path) -> None:
    figures = bench.overload(models, tmp_path, bodies, seconds=6, max_concurrency=4)
    statuses = {int(k): v for k, v in figures["wrk_statuses"].items()}
    assert statuses.get(503, 0) > 0 and statuses.get(200, 0) > 0, figures
    assert set(statuses) <= {200, 503}, figures  # nothing else: no 500, no timeout answer
    assert figures["wrk_retry_after"] == statuses[503], figures
    assert figures["probe_shed_with_retry_after"] == figures["probe_shed"], figures
    assert figures["recovery_s"] != float("inf"), figures  # normal again once the load stops


def test_sigterm_drains_without_a_failed_request(bench: Any, models: Path, bodies: list[str], tmp_path: Path) -> None:
    figures = bench.sigterm(models, tmp_path, bodies, rate=200, before_s=2)
    assert figures["requests"] > 50 and set(figures["statuses"]) == {200}, figures
    assert figures["connection_errors"] == {}, figures
    assert figures["readyz_503_after_ms"] == figures["readyz_503_after_ms"], figures  # not NaN: it turned 503
    assert figures["exit_code"] in (0, -15), figures


def test_sigkill_during_export_never_leaves_a_broken_version(bench: Any, tmp_path: Path) -> None:
    figures = bench.kills(tmp_path, count=3, seed=1)
    assert figures["versions"] >= 1 and figures["broken_versions"] == [], figures
    assert all(name.startswith(".") or not name[0].isdigit() for name in figures["other_entries"]), figures


def test_personal_fields_never_reach_the_log_or_an_answer(bench: Any, models: Path, bodies: list[str],
                                                          tmp_path: Path) -> None:
    figures = bench.pii(models, tmp_path, bodies, 300)
    assert figures["ok"] == 300 and figures["stored"] == 15 and figures["echoed_in_answers"] == 0, figures
    assert figures["log_lines"] > 300 and figures["log_lines_not_json"] == 0, figures
    assert figures["personal_values_checked"] > 1500 and figures["personal_values_in_log"] == 0, figures
    assert figures["table_rows"]["feedback"] == 15 and figures["table_rows"]["exposures"] > 300, figures
    assert figures["personal_values_in_tables"] == 0, figures
