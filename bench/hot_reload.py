"""Hot reload, promotion and rollback under load: count failed requests, measure p99 during each switch.

    .venv/bin/python bench/hot_reload.py [--duration 30] [--rate 50] [--switch-rate 200] [--phases reload,labels]

Builds two realistic versions (the repo's dictionaries, a 256→128 network, different seeds), starts
`python -m serving` on a models directory holding the first, and while wrk drives
POST /v1/recommendations at a steady rate: adds version 2 (a new model), then version 3 with one
byte of its SavedModel flipped (must be refused; version 2 keeps serving), then version 4. Prints
when each switch was seen, the final model status and wrk's figures; "failed" counts non-2xx
answers and socket errors and should be 0.

Phase `labels` (contract §7): a models directory with labels.json (`stable` 1, candidate 2) served
while wrk paces ~`--switch-rate` requests/s (200 by default); `python -m serving.promote --version 2`
runs one second into an 8-second wrk window, then `--rollback` one second into the next. Each
window spans the whole switch (the new version's load and warm-up in the background, the swap),
so its p99 is the p99 during the switch (target ≤ 10 ms) and its failed count must be 0.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from serving_latency import (  # noqa: E402
    build_model,
    free_port,
    lua_script,
    request_bodies,
    row,
    start_server,
    stop_server,
    wait_ready,
    wrk,
)


def get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def place(source: Path, models: Path, number: int, *, corrupt: bool = False) -> None:
    """Copy a version in as `number` atomically (built beside, then renamed), optionally corrupted."""
    from model_factory import copy_version, corrupt_copy

    if corrupt:
        corrupt_copy(source, models, number)
    else:
        copy_version(source, models, number)


def wait_preloaded(port: int, timeout_s: float = 60.0) -> None:
    """Wait until the service reports a version preloaded beside the served one (`/metrics`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            if 'needs_rec_model_loads_total{result="preloaded"}' in response.read().decode():
                return
        time.sleep(0.2)
    raise RuntimeError("no version was preloaded within 60 s")


def promote(models: Path, *flags: str) -> str:
    """Run `python -m serving.promote --models M <flags>`; its one line of output."""
    done = subprocess.run([sys.executable, "-m", "serving.promote", "--models", str(models), *flags], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def labels_phase(first: Path, second: Path, work: Path, rate: float, window_s: float = 8.0) -> None:
    """Promotion then rollback under ~`rate` requests/s; wrk figures of the window around each switch."""
    from needs_rec import versions

    models = work / "labelled"
    models.mkdir()
    place(first, models, 1)
    place(second, models, 2)
    versions.write_labels(models, versions.Labels(stable=1))
    script = lua_script(request_bodies(first / "dictionaries"), work / "bodies-labels.lua")
    port = free_port()
    server = start_server(models, port, naive=False, extra=["--poll-interval-s", "1"])
    lines = []
    try:
        wait_ready(port, server)
        wait_preloaded(port)  # version 2 loads beside 1 after start: not part of any measured window
        wrk(port, script, duration=2, connections=4)  # warm the path
        connections = max(2, round(rate / 10))
        steady = wrk(port, script, duration=window_s, connections=connections, delay_ms=1000.0 * connections / rate)
        lines.append(row(f"~{rate:g} req/s, no switch (reference)", steady))
        for flags, expected in ((("--version", "2"), 2), (("--rollback",), 1)):
            result: dict[str, float] = {}
            load = threading.Thread(target=lambda out=result: out.update(
                wrk(port, script, duration=window_s, connections=connections, delay_ms=1000.0 * connections / rate)))
            load.start()
            time.sleep(1.0)
            said = promote(models, *flags)
            moved = time.monotonic()
            while get(port, "/readyz").get("model_version") != expected and time.monotonic() < moved + 20:
                time.sleep(0.05)
            seen = time.monotonic() - moved
            load.join()
            stable = get(port, "/v1/models/needs_rec/labels/stable")["model_version_status"][0]["version"]
            lines.append(f"  {' '.join(flags):12s} → {said!r}; serving {expected} after {seen:.1f} s "
                         f"(labels/stable → {stable})")
            lines.append(row(f"~{rate:g} req/s, {window_s:g} s around it", result))
            lines.append(f"    failed requests: {int(result['failed'])}   "
                         f"p99 during the switch: {result['p99']:.2f} ms")
        idle_s = 10.0
        before = cpu_seconds(server.pid)
        time.sleep(idle_s)
        used = cpu_seconds(server.pid) - before
        lines.append(f"  idle, polling every 1 s for {idle_s:g} s: {used:.2f} CPU s "
                     f"({100 * used / idle_s:.1f}% of a core)")
    finally:
        stop_server(server)
    print(f"\npromotion and rollback under ~{rate:g} requests/s (wrk, loopback)")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=30, help="seconds of load (reload phase)")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (reload phase)")
    parser.add_argument("--switch-rate", type=float, default=200.0, help="requests per second (labels phase)")
    parser.add_argument("--phases", default="reload,labels", help="comma-separated: reload, labels")
    parser.add_argument("--dictionaries", type=Path, default=REPO / "dictionaries")
    args = parser.parse_args(argv)
    phases = set(args.phases.split(","))

    work = Path(tempfile.mkdtemp(prefix="reload-bench-"))
    try:
        first = build_model(work / "a", args.dictionaries, seed=0)
        second = build_model(work / "b", args.dictionaries, seed=1)
        if "labels" in phases:
            labels_phase(first, second, work, args.switch_rate)
        if "reload" not in phases:
            return 0
        models = work / "models"
        models.mkdir()
        place(first, models, 1)
        script = lua_script(request_bodies(first / "dictionaries"), work / "bodies.lua")
        port = free_port()
        server = start_server(models, port, naive=False, extra=["--poll-interval-s", "1"])
        try:
            wait_ready(port, server)
            connections = max(2, round(args.rate / 10))
            result: dict[str, float] = {}
            load = threading.Thread(
                target=lambda: result.update(wrk(port, script, duration=args.duration, connections=connections,
                                                 delay_ms=1000.0 * connections / args.rate))
            )
            started = time.monotonic()
            load.start()
            plan = [(0.15, second, 2, False), (0.4, second, 3, True), (0.65, first, 4, False)]
            seen: list[str] = []
            last = 1
            for fraction, source, number, corrupt in plan:
                time.sleep(max(0.0, started + fraction * args.duration - time.monotonic()))
                place(source, models, number, corrupt=corrupt)
                placed = time.monotonic()
                expected = last if corrupt else number
                deadline = placed + 20
                while time.monotonic() < deadline:
                    version = get(port, "/readyz").get("model_version")
                    status = {e["version"]: e for e in get(port, "/v1/models/needs_rec")["model_version_status"]}
                    if version == expected and (not corrupt or status.get(str(number), {}).get("state") == "END"):
                        break
                    time.sleep(0.1)
                what = "refused, still serving" if corrupt else "serving"
                seen.append(f"  version {number} placed at {placed - started:5.1f} s → {what} version {version} "
                            f"after {time.monotonic() - placed:.1f} s")
                last = expected
            load.join()
            final = get(port, "/v1/models/needs_rec")["model_version_status"]
        finally:
            stop_server(server)
        print(f"hot reload under ~{args.rate:g} requests/s for {args.duration} s (wrk, loopback)")
        print("\n".join(seen))
        print("  final status: " + ", ".join(
            f"{e['version']}={e['state']}" + (f" ({e['status']['error_code']})" if e["status"]["error_code"] != "OK"
                                              else "") for e in final))
        print(row("requests during the swaps", result))
        print(f"  failed requests: {int(result['failed'])}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    from needs_rec import native_log

    native_log.quiet_command_line()  # no TensorFlow start-up chatter above the figures
    sys.exit(main())
