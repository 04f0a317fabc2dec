"""Server time of the manager's contact card page on a SQLite CRM at a steady request rate.

    .venv/bin/python bench/page_latency.py [--rate 20] [--requests 600] [--orgs 1500] [--model M]

Builds a realistic version (the repo's dictionaries, a 256→128 network; untrained weights cost the
same as trained ones) unless --model is given, writes the synthetic CRM (`training.sample`,
`--orgs` organizations) into a SQLite database, starts `python -m serving --model M --crm
sqlite:///…` as a subprocess and requests contact cards at a steady `--rate` (requests/s, paced
by a clock, one request at a time: at 20/s each takes far less than the 50 ms between them), for
random contacts and stages: the full page `GET /?contact=ID&stage=S` and the fragment the stage
selector swaps in, `GET /contacts/card?contact=ID&stage=S`. Server time is what the service logs
for each request (`latency_ms` of its `request` log line: from the first byte in to the last byte
out, inside the process); the client's round trip is printed beside it. Figures are printed,
never asserted. Target (issue 11): page p50 ≤ 20 ms. It also prints what the access middleware
in front of the pages adds to a JSON API request (an unprotected path: one prefix test).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

TARGET_P50_MS = 20.0


def build_model(out: Path, dictionaries: Path) -> Path:
    from model_factory import build_version

    return build_version(out, dictionaries, seed=0, hidden=(256, 128), n_rows=2000, thresholds=0.5)


def write_crm(url: str, dictionaries: Path, orgs: int, seed: int) -> list[str]:
    """The synthetic CRM in a SQLite database; returns its contact ids."""
    from crm.write import write_tables
    from needs_rec.dictionaries import load
    from training.sample import generate

    sample = generate(load(dictionaries), n_orgs=orgs, seed=seed)
    write_tables(url, {name: getattr(sample, name) for name in ("organizations", "contacts", "outcomes")})
    return [str(c) for c in sample.contacts["contact_id"]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> str:
    return (f"p50 {percentile(values, 50):6.2f}  p90 {percentile(values, 90):6.2f}  "
            f"p99 {percentile(values, 99):6.2f}  max {max(values):6.2f} ms  (n={len(values)})")


def access_check_cost(n: int = 200_000) -> float:
    """Microseconds the access middleware adds to a request for an unprotected JSON path (the scoring API)."""
    import asyncio

    from serving.access import AccessMiddleware
    from serving.settings import Settings

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        return None

    async def measure() -> float:
        guarded = AccessMiddleware(inner, Settings(model=Path("."), auth_token="x" * 24))
        scope = {"type": "http", "path": "/v1/recommendations", "method": "POST", "headers": []}
        started = time.perf_counter()
        for _ in range(n):
            await guarded(scope, None, None)
        through = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(n):
            await inner(scope, None, None)
        return (through - (time.perf_counter() - started)) / n * 1e6

    return asyncio.run(measure())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second (default 20)")
    parser.add_argument("--requests", type=int, default=600, help="requests per kind of page (default 600)")
    parser.add_argument("--orgs", type=int, default=1500, help="organizations in the synthetic CRM (default 1500)")
    parser.add_argument("--model", type=Path, help="a models directory (default: build one)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    dictionaries = REPO / "dictionaries"
    work = Path(tempfile.mkdtemp(prefix="page-bench-"))
    models = args.model or build_model(work / "models", dictionaries).parent
    url = f"sqlite:///{work / 'crm.db'}"
    contacts = write_crm(url, dictionaries, args.orgs, args.seed)
    from needs_rec.dictionaries import load

    stages = load(dictionaries).stage_codes
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEEDS_REC_")}
    env.update(PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    server = subprocess.Popen(
        [sys.executable, "-m", "serving", "--model", str(models), "--crm", url, "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(server.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        rng = random.Random(args.seed)
        client: dict[str, list[float]] = {"page_manager": [], "page_card": []}
        errors = 0
        for _ in range(20):  # warm-up: first lookups, template compilation
            urllib.request.urlopen(f"{base}/?contact={urllib.parse.quote(rng.choice(contacts))}", timeout=10).read()
        warm_lines = len(lines)
        interval = 1.0 / args.rate
        started = time.perf_counter()
        for i in range(2 * args.requests):
            kind = "page_manager" if i % 2 == 0 else "page_card"
            query = urllib.parse.urlencode({"contact": rng.choice(contacts), "stage": rng.choice(stages)})
            path = f"/?{query}" if kind == "page_manager" else f"/contacts/card?{query}"
            due = started + i * interval
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(base + path, timeout=10) as response:
                    response.read()
                    if response.status != 200:
                        errors += 1
            except OSError:
                errors += 1
            client[kind].append((time.perf_counter() - t0) * 1000)
        elapsed = time.perf_counter() - started
        time.sleep(0.5)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        reader.join(5)
    served: dict[str, list[float]] = {"page_manager": [], "page_card": []}
    for line in lines[warm_lines:]:
        if not line.startswith("{"):
            continue
        event: dict[str, Any] = json.loads(line)
        if event.get("event") == "request" and event.get("endpoint") in served and event.get("status") == 200:
            served[event["endpoint"]].append(float(event["latency_ms"]))
    print(f"contact card pages on SQLite ({len(contacts)} contacts, {args.orgs} organizations), "
          f"{2 * args.requests} requests in {elapsed:.1f} s = {2 * args.requests / elapsed:.1f} req/s, errors {errors}")
    for kind, label in (("page_manager", "GET /?contact=…&stage=…   "), ("page_card", "GET /contacts/card?…      ")):
        print(f"  {label} server {summary(served[kind])}")
        print(f"  {'':26} client {summary(client[kind])}")
    print(f"access check added to each JSON API request: {access_check_cost():.2f} µs")
    p50 = percentile(served["page_manager"], 50)
    verdict = "meets" if p50 <= TARGET_P50_MS else "misses"
    print(f"server p50 of the card page {p50:.2f} ms {verdict} the target of {TARGET_P50_MS:g} ms")


if __name__ == "__main__":
    from needs_rec import native_log

    native_log.quiet_command_line()  # no TensorFlow start-up chatter above the figures
    main()
