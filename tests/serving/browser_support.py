"""Real-browser helpers for the page tests: Debian's chromium + chromium-driver through Selenium, a live server.

Nothing is downloaded: the driver path is given explicitly, so Selenium Manager never runs. When
chromium or chromedriver is missing, browser tests skip with the reason — except under CI=true,
where `.ci/run` installs both and a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

BROWSER_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
WINDOW = (1280, 1800)


def _first(paths: tuple[str, ...], name: str) -> str | None:
    for path in paths:
        if Path(path).is_file() and os.access(path, os.X_OK):
            return path
    return shutil.which(name)


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) executables of Debian's chromium and chromium-driver, or None."""
    browser = _first(BROWSER_CANDIDATES, "chromium")
    driver = _first(DRIVER_CANDIDATES, "chromedriver")
    return (browser, driver) if browser and driver else None


def require_chromium() -> tuple[str, str]:
    """The paths, or skip (fail under CI=true) naming what is missing and how to install it."""
    paths = chromium_paths()
    if paths is None:
        reason = "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the browser tests")
        pytest.skip(reason)
    return paths


def start_chromium(paths: tuple[str, str]) -> Any:
    """A headless Chromium driven by chromedriver at the given paths (no Selenium Manager, no downloads)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService

    browser, driver = paths
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--no-first-run",
        "--lang=ru-RU",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=ChromeService(executable_path=driver), options=options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def live_server(app: Any, ready_path: str = "/readyz", timeout: float = 120.0) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yield its base URL once `ready_path` is 200."""
    import urllib.error
    import urllib.request

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with urllib.request.urlopen(base + ready_path, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the live server did not become ready on {base}{ready_path}")
            time.sleep(0.1)
        yield base
    finally:
        server.should_exit = True
        thread.join(30)


def output_dir() -> Path:
    """Where browser tests leave screenshots: $NEEDS_REC_TEST_OUTPUT, else test-output/ at the repository root."""
    root = os.environ.get("NEEDS_REC_TEST_OUTPUT") or str(Path(__file__).resolve().parents[2] / "test-output")
    path = Path(root) / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def severe_console_messages(driver: Any) -> list[str]:
    """Browser console errors since the last call (CSP violations, failed loads, script errors)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def full_page_screenshot(driver: Any, path: Path) -> Path:
    """Resize the window to the page's height and save a PNG of all of it."""
    driver.execute_script("window.scrollTo(0, 0)")
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(WINDOW[0], min(max(height + 40, 600), 8000))
    driver.save_screenshot(str(path))
    driver.set_window_size(*WINDOW)
    return path
