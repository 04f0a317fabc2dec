"""Databases for tests: the test PostgreSQL server (NEEDS_REC_TEST_POSTGRES_URL) and fresh schemas on it.

`.ci/run` starts a throwaway cluster and sets the variable; by hand:
`source .ci/postgres.sh && pg_throwaway_start`. Without it PostgreSQL cases skip with the reason —
except under CI=true, where they fail: CI must really test PostgreSQL. Fixtures using these
(`database_url`, `postgres_url`) are in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

POSTGRES_ENV = "NEEDS_REC_TEST_POSTGRES_URL"


def postgres_base_url() -> str:
    """The test server's URL, or skip (fail under CI=true) when there is none or it does not answer."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        reason = f"PostgreSQL tests need {POSTGRES_ENV} (source .ci/postgres.sh && pg_throwaway_start)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; under CI=true they must run")
        pytest.skip(reason)
    return url


def postgres_schema() -> contextlib.AbstractContextManager[str]:
    """A context giving `…?schema=t_<random>` on the test server; the schema is dropped at exit."""
    import sqlalchemy as sa

    base = postgres_base_url()
    name = f"t_{uuid.uuid4().hex[:12]}"

    @contextlib.contextmanager
    def schema() -> Iterator[str]:
        engine = sa.create_engine(base)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        except sa.exc.OperationalError as exc:
            engine.dispose()
            if os.environ.get("CI") == "true":
                pytest.fail(f"test PostgreSQL server does not answer: {exc.orig}")
            pytest.skip(f"test PostgreSQL server does not answer ({POSTGRES_ENV})")
        try:
            yield f"{base}?schema={name}"
        finally:
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
            engine.dispose()

    return schema()
