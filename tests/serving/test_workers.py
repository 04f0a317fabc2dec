"""`python -m serving --workers 2`: one port, two worker processes, metrics and drift for the whole service.

The subprocess test starts a real supervisor with two workers and checks what ops rely on: both
workers answer (the kernel spreads connections over their SO_REUSEPORT sockets), any worker's
/metrics counts every worker's requests and judges drift over all of them, a killed worker is
replaced without losing its counters, and SIGTERM drops readiness at once, drains and exits.
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_factory import build_version, sample_frame
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from serving_support import wait_until

from needs_rec import dictionaries, schema
from needs_rec.errors import ConfigError
from serving import lifecycle
from serving.observability import is_alive
from serving.settings import Settings, load_settings
from serving.workers import listening_socket, port_lock, settings_environment

REPO = Path(__file__).resolve().parents[2]


def test_settings_travel_to_a_worker_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(model=tmp_path, port=9001, workers=3, drift_threshold=0.25, crm="sqlite:///x.db",
                        auth_token=SecretStr("a-token-long-enough"), log_level="warning")
    env = settings_environment(settings)
    assert env["NEEDS_REC_WORKERS"] == "3" and env["NEEDS_REC_AUTH_TOKEN"] == "a-token-long-enough"
    assert "NEEDS_REC_BASIC_AUTH" not in env  # unset stays unset
    for key in [k for k in os.environ if k.startswith("NEEDS_REC_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert load_settings() == settings


def test_each_worker_socket_shares_the_port() -> None:
    first = listening_socket("127.0.0.1", 0)
    second = listening_socket("127.0.0.1", first.getsockname()[1])  # SO_REUSEPORT: a second bind succeeds
    try:
        assert second.getsockname() == first.getsockname()
    finally:
        first.close()
        second.close()


def test_a_port_another_program_holds_is_a_one_line_error() -> None:
    with socket.socket() as taken:  # a listener without SO_REUSEPORT: the port is really in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1:\d+: Address already in use"):
            listening_socket("127.0.0.1", taken.getsockname()[1])


def test_a_second_supervisor_on_the_same_port_is_refused() -> None:
    """SO_REUSEPORT let a second --workers service bind the port beside the first without a word; the
    kernel then spread connections over both, and /metrics alternated between them."""
    holder = listening_socket("127.0.0.1", 0)
    port = holder.getsockname()[1]
    lock = port_lock("127.0.0.1", port)
    try:
        listening_socket("127.0.0.1", port).close()  # the port itself is still shared, for the workers ...
        with pytest.raises(ConfigError, match=rf"cannot listen on 127\.0\.0\.1:{port}: another needs_rec service"):
            port_lock("127.0.0.1", port)  # ... but not with another supervisor
    finally:
        lock.close()
        holder.close()
    port_lock("127.0.0.1", port).close()  # released with its holder


def test_the_readiness_drop_runs_before_uvicorn_and_waits_out_the_delay() -> None:
    calls: list[str] = []
    drop = lifecycle.ReadinessDrop(lambda: calls.append("ready_off"), 0.2,
                                   {signal.SIGTERM: lambda sig, frame: calls.append("uvicorn")})
    drop(signal.SIGTERM, None)
    assert calls == ["ready_off"]  # readiness drops at once; uvicorn's handler only after the delay
    assert wait_until(lambda: calls == ["ready_off", "uvicorn"], timeout=5)
    drop(signal.SIGTERM, None)  # a second signal does not wait again
    assert calls == ["ready_off", "uvicorn", "ready_off", "uvicorn"]


def test_no_handler_is_installed_outside_uvicorn() -> None:
    before = signal.getsignal(signal.SIGTERM)
    assert lifecycle.drop_readiness_on_signals(object(), object()) is False
    assert signal.getsignal(signal.SIGTERM) is before


# -- a real supervisor with two workers -----------------------------------------------------------


def _env() -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("NEEDS_REC_", "TF_CPP", "PROMETHEUS"))}
    return {**keep, "PYTHONPATH": str(REPO)}


def _call(port: int, method: str, path: str, body: Any = None) -> tuple[int | None, Any]:
    """One request on a new connection (so the kernel picks a worker each time)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=json.dumps(body) if body is not None else None,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if path != "/metrics" else raw.decode())
    except OSError:
        return None, None
    finally:
        connection.close()


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name]


def _workers(parent: int) -> list[int]:
    """The supervisor's worker processes (children running the service; not multiprocessing's tracker)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            cmdline = Path(stat).with_name("cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"spawn_main" in cmdline:
            found.append(int(Path(stat).parent.name))
    return sorted(found)


def _instances(frame: Any) -> list[dict[str, Any]]:
    rows = []
    for record in frame[list(schema.MODEL_INPUT_NAMES)].to_dict("records"):
        rows.append({k: v for k, v in record.items() if not (isinstance(v, float) and np.isnan(v)) and v != ""})
    return rows


def _requests_by_worker(shared_dir: str) -> dict[int, float]:
    """Scoring requests counted in each worker's own metrics file (prometheus_client's multiprocess files)."""
    counts: dict[int, float] = {}
    for path in glob.glob(os.path.join(shared_dir, "counter_*.db")):
        pid = int(Path(path).stem.rsplit("_", 1)[1])
        for key, value, *_ in MmapedDict.read_all_values_from_file(path):
            _, name, labels, _ = json.loads(key)  # [family, sample name, labels, help]
            if name == "needs_rec_requests_total" and labels.get("endpoint") == "predict":
                counts[pid] = counts.get(pid, 0.0) + value
    return counts


@pytest.mark.slow
def test_two_workers_answer_as_one_service(tmp_path: Path, dictionaries_dir: Path) -> None:
    version = build_version(tmp_path / "models", dictionaries_dir, n_rows=3000, seed=4)
    dicts = dictionaries.load(dictionaries_dir)
    live = sample_frame(dicts, 600, seed=11)
    moved = np.random.default_rng(5).random(len(live)) < 0.3
    live.loc[moved, "industry"] = dicts.codes("industries")[0]  # 30% moved to one industry: drift
    instances = _instances(live)
    port = listening_socket("127.0.0.1", 0)
    number = port.getsockname()[1]
    port.close()
    log = tmp_path / "service.log"  # a file, not a pipe: two workers' request lines would fill a pipe's buffer
    with log.open("w") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "serving", "--model", str(version), "--port", str(number), "--workers", "2",
             "--warmup-rounds", "1", "--shutdown-delay-s", "1.5", "--drift-window", "1000", "--drift-min-rows", "200"],
            cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
        )
    try:
        def both_ready() -> bool:
            status, text = _call(number, "GET", "/metrics")
            versions = _samples(text, "needs_rec_model_version") if status == 200 else []
            return len(versions) == 2 and all(value == 1 for _, value in versions)

        assert wait_until(both_ready, timeout=120, interval=0.3), "two workers never served version 1"
        workers = _workers(server.pid)
        assert len(workers) == 2
        shared = dict(item.split("=", 1) for item in
                      Path(f"/proc/{workers[0]}/environ").read_bytes().decode().split("\0") if "=" in item)
        shared_dir = shared["PROMETHEUS_MULTIPROC_DIR"]

        for start in range(0, len(instances), 5):  # 120 calls of 5 rows, each on a new connection
            status, answer = _call(number, "POST", "/v1/models/needs_rec:predict",
                                   {"instances": instances[start:start + 5]})
            assert status == 200, answer
        # a request is counted just after its answer is sent: wait for the last one
        assert wait_until(lambda: sum(_requests_by_worker(shared_dir).values()) == 120, timeout=10)
        by_worker = _requests_by_worker(shared_dir)
        assert sorted(by_worker) == workers and all(count > 0 for count in by_worker.values()), by_worker

        time.sleep(1.5)  # each worker shares its drift counts once a second
        for _ in range(4):  # whichever worker answers the scrape, it reports the whole service
            text = _call(number, "GET", "/metrics")[1]
            served = sum(v for labels, v in _samples(text, "needs_rec_requests_total")
                         if labels["endpoint"] == "predict" and labels["status"] == "200")
            assert served == 120
            assert _samples(text, "needs_rec_drift_window_requests") == [({}, 600.0)]
            flags = {labels["field"]: value for labels, value in _samples(text, "needs_rec_drift_flag")}
            assert flags["industry"] == 1.0 and flags["region"] == 0.0

        os.kill(workers[0], signal.SIGKILL)  # a worker dies: the other keeps answering, the parent replaces it
        assert wait_until(lambda: not is_alive(workers[0]), timeout=10)  # its socket closes as it exits ...
        time.sleep(0.2)  # ... and leaves the kernel's spread a moment later (one connection then may be reset)
        assert [_call(number, "GET", "/readyz")[0] for _ in range(6)] == [200] * 6
        text = _call(number, "GET", "/metrics")[1]
        assert str(workers[0]) not in {labels["pid"] for labels, _ in _samples(text, "needs_rec_model_version")}
        replaced = wait_until(lambda: len(_workers(server.pid)) == 2 and workers[0] not in _workers(server.pid),
                              timeout=30, interval=0.2)
        assert replaced and wait_until(both_ready, timeout=120, interval=0.3)
        text = _call(number, "GET", "/metrics")[1]
        pids = {int(labels["pid"]) for labels, _ in _samples(text, "needs_rec_model_version")}
        assert pids == set(_workers(server.pid))  # the dead worker's version is gone ...
        assert sum(v for labels, v in _samples(text, "needs_rec_requests_total")
                   if labels["endpoint"] == "predict") == 120  # ... its counts are not
        assert _samples(text, "needs_rec_requests_in_flight") == [({}, 0.0)]

        body = {"stage": "lead", "organization": {"industry": "it"}, "contact": {"position": "ceo"}}
        server.send_signal(signal.SIGTERM)
        time.sleep(0.4)
        assert [_call(number, "GET", "/readyz")[0] for _ in range(4)] == [503] * 4  # every worker, at once
        assert _call(number, "POST", "/v1/recommendations", body)[0] == 200  # still serving through the delay
        started = time.monotonic()
        server.wait(30)
        assert time.monotonic() - started < 10
        assert not os.path.exists(shared_dir)  # the metrics folder goes with the service
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)  # the parent and its workers
            server.wait()
    events = [json.loads(line) for line in log.read_text().splitlines()]  # one JSON object per line, every process
    assert sum(e["event"] == "service_stopped" for e in events) == 2  # both workers' shutdowns ran to the end
    assert all(e["event"] != "native_log" or e["level"] == "debug" for e in events)


@pytest.mark.slow
def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path, built: dict[str, Path]) -> None:
    """SIGKILL of the parent (the OOM killer, kill -9): the workers drain and exit instead of serving on as
    orphans that a restarted service would silently share the port with."""
    probe = listening_socket("127.0.0.1", 0)
    number = probe.getsockname()[1]
    probe.close()
    with (tmp_path / "service.log").open("w") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "serving", "--model", str(built["fixed"]), "--port", str(number), "--workers",
             "2", "--warmup-rounds", "1"],
            cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
        )
    try:
        assert wait_until(lambda: len(_workers(server.pid)) == 2 and _call(number, "GET", "/readyz")[0] == 200,
                          timeout=120, interval=0.3)
        workers = _workers(server.pid)
        server.kill()
        server.wait()
        assert wait_until(lambda: not any(is_alive(pid) for pid in workers), timeout=15, interval=0.2)
        with socket.socket() as plain:  # no SO_REUSEPORT: succeeds only once nobody listens on the port
            plain.bind(("127.0.0.1", number))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
    stopped = [json.loads(line)["event"] for line in (tmp_path / "service.log").read_text().splitlines()]
    assert stopped.count("service_stopped") == 2  # each worker's shutdown ran (readiness, drain, buffers)
