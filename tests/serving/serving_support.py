"""Helpers for the service tests: settings, a running app with captured logs, polling."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from model_factory import copy_version

from serving.app import create_app
from serving.observability import JsonFormatter
from serving.settings import Settings

#: The constant outputs of the "fixed" version, in vocabulary order (ch_price, ch_cloud, ch_integration, ch_support).
FIXED_PROBABILITIES = [0.9, 0.2, 0.7, 0.4]
VOCABULARY = ["ch_price", "ch_cloud", "ch_integration", "ch_support"]
#: The base URL of in-process test clients: a loopback name, as a browser on this machine sends it (the
#: service answers only loopback names in its Host header while no credential is configured).
LOCAL = "http://localhost"


def models_dir_with(tmp_path: Path, *versions: Path) -> Path:
    """A fresh models directory holding copies of `versions` as 1, 2, ..."""
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    for number, version in enumerate(versions, start=1):
        copy_version(version, models, number)
    return models


def settings_for(model: Path, **overrides: Any) -> Settings:
    """Settings for tests: fast polling, cheap warm-up."""
    values: dict[str, Any] = {"poll_interval_s": 0.2, "warmup_rounds": 1, "max_rows_per_call": 8}
    values.update(overrides)
    return Settings(model=model, **values)


def capture_logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    """A logger writing JSON lines into a StringIO (what the service would write to stderr)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"needs_rec.serving.test.{name}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


def wait_until(predicate: Any, timeout: float = 60.0, interval: float = 0.05) -> bool:
    """Poll `predicate()` until true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@contextmanager
def serve(settings: Settings, name: str = "app", **kwargs: Any) -> Iterator[tuple[TestClient, io.StringIO]]:
    """Start the app in a TestClient, wait until /readyz is 200, yield (client, captured log)."""
    logger, stream = capture_logger(name)
    app = create_app(settings, logger=logger, **kwargs)
    with TestClient(app, base_url=LOCAL) as client:
        assert wait_until(lambda: client.get("/readyz").status_code == 200), stream.getvalue()[-2000:]
        yield client, stream
