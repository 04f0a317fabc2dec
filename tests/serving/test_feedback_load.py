"""Nothing lost (issue 9): 8 concurrent clients × 250 feedback posts with 10% retries store exactly
the unique events, on SQLite and PostgreSQL; after SIGKILL of the service mid-load every event that
got a 2xx is in the table. A real `python -m serving --crm` process, through bench/feedback_load.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from crm_factory import write_crm_database
from serving_support import models_dir_with

from needs_rec import dictionaries

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("feedback_load", ROOT / "bench" / "feedback_load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["feedback_load"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def service_inputs(built: dict[str, Path], database_url: str, dictionaries_dir: Path, tmp_path: Path):
    models = models_dir_with(tmp_path, built["fixed"])
    return models, write_crm_database(database_url, dictionaries.load(dictionaries_dir))


def test_concurrent_posts_with_retries_store_exactly_the_unique_events(service_inputs) -> None:
    models, crm = service_inputs
    result = bench().load_and_check(models, crm, clients=8, posts=250, retries=0.1)
    assert result.sent == 2000 and result.errors == 0
    assert set(result.statuses) <= {200, 201}, result.statuses  # never a 409, 5xx or 4xx for a valid retry
    assert result.statuses[201] == len(result.unique) and result.statuses[200] == 2000 - len(result.unique)
    assert 1700 <= len(result.unique) < 2000  # about 10% retries
    assert sorted(result.stored) == sorted(result.unique)  # each unique event once, nothing else


def test_sigkill_mid_load_keeps_every_acknowledged_event(service_inputs) -> None:
    models, crm = service_inputs
    result = bench().load_and_check(models, crm, clients=8, posts=250, retries=0.1, kill_after=300)
    assert len(result.acknowledged) >= 300 and result.errors > 0  # the service really died mid-load
    assert result.acknowledged <= result.stored_set  # a 2xx means committed
    assert len(result.stored) == len(result.stored_set)  # and nothing stored twice
