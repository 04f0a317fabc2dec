"""Shared fixtures: a tiny valid dictionary set; database URLs of each kind (SQLite, PostgreSQL).

CRM test data: `crm_factory.write_crm` (files) and `crm.write.write_tables(database_url, frames)`.

PostgreSQL: the tests use the server named by NEEDS_REC_TEST_POSTGRES_URL (`.ci/run` starts a
throwaway cluster and sets it; by hand: `source .ci/postgres.sh && pg_throwaway_start`). Each test
gets a schema of its own in it, dropped afterwards. Without that variable the PostgreSQL cases
skip with the reason — except under CI=true, where they fail: CI must really test PostgreSQL.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so tests can `from crm_factory import ...`

from crm_factory import write_dictionaries
from databases import postgres_schema

from needs_rec import dictionaries


@pytest.fixture
def tiny_dictionaries_dir(tmp_path: Path) -> Path:
    """A directory holding the minimal valid dictionary set of crm_factory.TINY_DICTIONARIES."""
    return write_dictionaries(tmp_path / "dictionaries")


@pytest.fixture
def tiny_dictionaries(tiny_dictionaries_dir: Path) -> dictionaries.Dictionaries:
    """The tiny dictionary set, loaded."""
    return dictionaries.load(tiny_dictionaries_dir)


#: The database kinds every database test runs against.
DATABASES = ("sqlite", "postgresql")


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind, as a `--data`/`--crm` URL: a new SQLite file (not created
    yet) or a fresh schema (`?schema=`) on the test PostgreSQL server, dropped after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crm.db'}"
        return
    with postgres_schema() as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema on the test PostgreSQL server (see `database_url`)."""
    with postgres_schema() as url:
        yield url


@pytest.fixture
def open_crm() -> Iterator[Any]:
    """`open_crm(location)` → `crm.open_source(location)`, closed after the test (its pooled
    database connections too, so none is left for the garbage collector)."""
    import crm

    opened: list[Any] = []

    def open_source(location: Any) -> Any:
        source = crm.open_source(location)
        opened.append(source)
        return source

    yield open_source
    for source in opened:
        source.close()


@pytest.fixture
def immutable_dir(tmp_path: Path) -> Iterator[Path]:
    """An existing, empty directory nobody — root included — can create entries in (`chattr +i`): how
    an unwritable models directory looks to a process running as root, for which `os.access` says yes.
    Skips where the file system or the container does not allow the attribute."""
    path = tmp_path / "ro" / "models"
    path.mkdir(parents=True)
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        yield path
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)
