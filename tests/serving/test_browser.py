"""The pages in a real headless browser (Debian chromium + chromedriver through Selenium, no downloads).

Skipped with a reason when chromium or chromedriver is missing, except under CI=true (where
`.ci/run` installs them), where a missing browser fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import live_server, require_chromium, severe_console_messages, start_chromium
from serving_support import capture_logger, models_dir_with, settings_for

from serving.app import create_app

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8ff"
    "ff3f0005fe02fea7d6a4c50000000049454e44ae426082"
)


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    """One headless Chromium for the module's tests."""
    driver = start_chromium(require_chromium())
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_analyst_page_shows_the_report_with_its_charts(
    chrome: Any, built: dict[str, Path], tmp_path: Path
) -> None:
    models = models_dir_with(tmp_path, built["fixed"])
    (models / "1" / "report.md").write_text("# Отчёт\n\n![Калибровка](report_calibration.png)\n", encoding="utf-8")
    (models / "1" / "report_calibration.png").write_bytes(PNG)
    logger, _ = capture_logger("browser-analyst")
    with live_server(create_app(settings_for(models), logger=logger)) as base:
        chrome.get(base + "/analyst")
        assert chrome.title.startswith("Модели и отзывы")
        image = chrome.find_element("css selector", ".report img")
        assert chrome.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 1
        assert chrome.find_element("css selector", 'th[data-version="1"]').text.startswith("v1")
        assert severe_console_messages(chrome) == []  # no CSP violation, no failed asset
