"""`python -m serving`: settings from flags and NEEDS_REC_* variables, start-up errors, a real uvicorn and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from needs_rec.errors import ConfigError
from serving.__main__ import build_parser
from serving.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_settings_from_environment_and_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEEDS_REC_MODEL", str(tmp_path))
    monkeypatch.setenv("NEEDS_REC_PORT", "9123")
    monkeypatch.setenv("NEEDS_REC_MAX_BODY_BYTES", "2048")
    settings = load_settings()
    assert settings.model == tmp_path and settings.port == 9123 and settings.max_body_bytes == 2048
    assert load_settings(port=8000).port == 8000  # a flag wins over the environment
    monkeypatch.setenv("NEEDS_REC_MAX_BATCH", "0")
    with pytest.raises(ConfigError, match="NEEDS_REC_MAX_BATCH"):
        load_settings()


def test_model_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEEDS_REC_MODEL", raising=False)
    with pytest.raises(ConfigError, match="pass --model or set NEEDS_REC_MODEL"):
        load_settings()


def test_every_setting_has_a_flag() -> None:
    parser = build_parser()
    flags = {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}
    assert flags == set(Settings.model_fields)
    args = parser.parse_args(["--model", "m", "--max-concurrency", "7", "--request-timeout-s", "2.5", "--log-level",
                              "debug"])
    assert (args.max_concurrency, args.request_timeout_s, args.log_level) == (7, 2.5, "debug")


def test_help_placeholders_say_the_unit() -> None:
    metavars = {a.dest: a.metavar for a in build_parser()._actions if a.option_strings}
    assert metavars["request_timeout_s"] == "SECONDS" and metavars["max_queue_delay_ms"] == "MS"
    assert metavars["drift_threshold"] == "X" and metavars["max_concurrency"] == "N"


def _env() -> dict[str, str]:
    """The environment without NEEDS_REC_* and without TensorFlow's log settings: the service quiets it itself."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("NEEDS_REC_", "TF_CPP", "GLOG", "GRPC"))}
    return {**keep, "PYTHONPATH": str(REPO)}


@pytest.mark.parametrize(("argv", "message"), [(["--model", "/no/such/models"], "does not exist"),
                                               ([], "model is required"),
                                               (["--model", ".", "--port", "-1"], "port"),
                                               (["--model", ".", "--crm", "sqlite:///no/such/crm.db"],
                                                "--crm: SQLite database 'no/such/crm.db' does not exist"),
                                               (["--model", ".", "--crm", "/no/such/crm"],
                                                "--crm: CRM data directory '/no/such/crm' does not exist"),
                                               (["--model", ".", "--crm", "mysql://u:pw@h/db"],
                                                "unsupported database 'mysql'"),
                                               # a window of 100 never holds 500 rows: drift was never judged
                                               (["--model", ".", "--drift-window", "100", "--drift-min-rows", "500"],
                                                "drift_min_rows 500 is more than drift_window 100"),
                                               # a bad flag value: one line, not argparse's usage dump
                                               (["--model", ".", "--max-batch", "abc"],
                                                "argument --max-batch: invalid int value: 'abc' (see python -m serving "
                                                "--help)")])
def test_start_up_errors_exit_2_with_one_line(argv: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "serving", *argv], capture_output=True, text=True, cwd=REPO,
                            env=_env(), timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_another_program_holds_is_one_line_before_the_model_loads(built: dict[str, Path], workers: str) -> None:
    with socket.socket() as taken:  # a listener of another program
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "serving", "--model", str(built["fixed"].parent),
                                 "--port", str(port), "--workers", workers],
                                capture_output=True, text=True, cwd=REPO, env=_env(), timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use; another "
                                          "program holds the port: give another with --port / NEEDS_REC_PORT"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _call(port: int, method: str, path: str, body: Any = None) -> tuple[int | None, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return None, None


def _csrf_cookie(port: int, headers: dict[str, str]) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Accept": "text/html", **headers})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Set-Cookie"]


@pytest.mark.slow
def test_real_server_answers_and_shuts_down_gracefully(built: dict[str, Path]) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "serving", "--model", str(built["fixed"].parent), "--port", str(port),
         "--shutdown-delay-s", "1.5", "--warmup-rounds", "1"],
        cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while _call(port, "GET", "/readyz")[0] != 200 and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.2)
        assert _call(port, "GET", "/readyz") == (200, {"status": "ready", "model_version": 1})
        body = {"stage": "lead", "organization": {"industry": "it"},
                "contact": {"position": "ceo", "email": "secret.person@example.ru"}}
        status, answer = _call(port, "POST", "/v1/recommendations", body)
        assert status == 200 and answer["talking_points"][0]["characteristic"] == "ch_price"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # one the HTTP parser refuses
            sock.sendall(b"GARBAGE\r\n\r\n")
            refused = sock.makefile("rb").read()
        assert refused.startswith(b"HTTP/1.1 400 ") and refused.endswith(b'"}')
        assert json.loads(refused.partition(b"\r\n\r\n")[2])["error"].startswith("malformed HTTP request")
        # the CSRF cookie is Secure behind a TLS proxy on this host: uvicorn trusts its X-Forwarded-Proto
        assert "Secure" in _csrf_cookie(port, {"X-Forwarded-Proto": "https"})
        assert "Secure" not in _csrf_cookie(port, {})

        server.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert _call(port, "GET", "/readyz")[0] == 503  # readiness drops at once ...
        assert _call(port, "POST", "/v1/recommendations", body)[0] == 200  # ... while requests are still served
        # uvicorn re-raises the signal once it has shut down cleanly, so the exit status says "SIGTERM"
        assert server.wait(30) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
        stderr = server.communicate()[1]
    events = [json.loads(line) for line in stderr.splitlines()]  # one JSON object per line, from the first
    assert events[0]["logger"].startswith("uvicorn") and all(e["event"] != "native_log" for e in events)
    assert "secret.person" not in stderr
    assert [e["status"] for e in events if e.get("endpoint") == "recommendations"] == [200, 200]
    assert [e["event"] for e in events if e["event"] in ("shutdown_started", "service_stopped")] == [
        "shutdown_started", "service_stopped",  # the app's shutdown ran to the end
    ]


def test_a_crm_without_a_required_table_is_refused_at_start_up(tmp_path: Path, tiny_dictionaries: Any) -> None:
    """It started ready, answered lookups and feedback, and failed the queries with a retryable 503."""
    from crm_factory import crm_frames

    from crm.write import write_tables

    frames = crm_frames(tiny_dictionaries)
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    write_tables(url, {"organizations": frames["organizations"], "contacts": frames["contacts"],
                       "outcome": frames["outcomes"]})  # a misspelt table
    result = subprocess.run([sys.executable, "-m", "serving", "--model", ".", "--crm", url], capture_output=True,
                            text=True, cwd=REPO, env=_env(), timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --crm: missing table outcomes in ") and "found: contacts, organizations, " \
        "outcome" in lines[0]


def test_a_firms_own_feedback_table_is_refused_at_start_up(database_url: str, tiny_dictionaries: Any) -> None:
    """A firm's `feedback` table was taken as needs_rec's: the service became ready and answered every
    POST /v1/feedback 503 forever. Now it is one line naming the table and what to do, exit 2."""
    import sqlalchemy as sa
    from crm_factory import write_crm_database

    import crm

    url = write_crm_database(database_url, tiny_dictionaries)
    with crm.open_source(url) as source, source.engine.begin() as conn:
        prefix = f'"{source.schema}".' if source.schema else ""
        conn.execute(sa.text(f"CREATE TABLE {prefix}feedback (id integer PRIMARY KEY, contact_id text, comment text)"))
    result = subprocess.run([sys.executable, "-m", "serving", "--model", ".", "--crm", url], capture_output=True,
                            text=True, cwd=REPO, env=_env(), timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --crm: CRM database ") and "table 'feedback'" in lines[0]
    assert "lacks column(s) feedback_id, occurred_on, stage" in lines[0] and "rename the firm's table" in lines[0]
