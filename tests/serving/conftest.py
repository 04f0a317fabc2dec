"""Fixtures for the service tests: real model versions, built once per session with tests/model_factory.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so tests can `from serving_support import ...`

from crm_factory import write_dictionaries
from model_factory import build_version
from serving_support import FIXED_PROBABILITIES


@pytest.fixture(scope="session")
def dictionaries_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dictionary set of tests/crm_factory.py (stages lead, demo, deal; 4 characteristics)."""
    return write_dictionaries(tmp_path_factory.mktemp("dictionaries"))


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, dictionaries_dir: Path) -> dict[str, Path]:
    """Two exported versions: 'fixed' (constant outputs FIXED_PROBABILITIES, cuts 0.5) and 'random' (untrained)."""
    root = tmp_path_factory.mktemp("built")
    return {
        "fixed": build_version(root / "fixed", dictionaries_dir, probabilities=FIXED_PROBABILITIES, thresholds=0.5),
        "random": build_version(root / "random", dictionaries_dir, seed=1, thresholds=0.3),
    }
