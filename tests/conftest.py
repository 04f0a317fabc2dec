"""Shared fixtures: a tiny valid dictionary set. CRM test data: `crm_factory.write_crm`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so tests can `from crm_factory import ...`

from crm_factory import write_dictionaries

from needs_rec import dictionaries


@pytest.fixture
def tiny_dictionaries_dir(tmp_path: Path) -> Path:
    """A directory holding the minimal valid dictionary set of crm_factory.TINY_DICTIONARIES."""
    return write_dictionaries(tmp_path / "dictionaries")


@pytest.fixture
def tiny_dictionaries(tiny_dictionaries_dir: Path) -> dictionaries.Dictionaries:
    """The tiny dictionary set, loaded."""
    return dictionaries.load(tiny_dictionaries_dir)
