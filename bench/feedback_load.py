"""Feedback under load, and nothing lost (issue 9): concurrent POST /v1/feedback against a real service.

    python bench/feedback_load.py --model models --crm sqlite:///crm.db
    python bench/feedback_load.py --model models --crm postgresql+psycopg://user@127.0.0.1:5432/db
    python bench/feedback_load.py --model models --crm sqlite:///crm.db --kill-after 300

Starts `python -m serving --model M --crm D` on a free loopback port, then `--clients` threads
(default 8) each post `--posts` feedback events (default 250); `--retries` of them (default 10%)
re-send an earlier event of the same client with its feedback_id, as a caller retrying would.
Every event is valid (a contact of D, a characteristic offered at its stage). Then it reads the
`feedback` table and prints: events committed per second, the answers by status, and the check
that the table holds exactly the unique events sent (each once).

`--kill-after N` sends SIGKILL to the service once N posts have been acknowledged (2xx) and checks
instead that every acknowledged event is in the table: a 2xx means committed.
Feedback ids carry a random run prefix, so the bench can run against a database that already holds
feedback. Prints figures; asserts nothing (tests/serving/test_feedback_load.py asserts).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class LoadResult:
    """What one load run did and what the table holds afterwards."""

    sent: int = 0  # posts sent, retries included
    unique: set[str] = field(default_factory=set)  # feedback ids sent at least once
    acknowledged: set[str] = field(default_factory=set)  # ids that got a 2xx
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0  # posts that got no answer (connection refused or reset)
    seconds: float = 0.0
    stored: list[str] = field(default_factory=list)  # this run's ids found in the table (with repeats, if any)

    @property
    def stored_set(self) -> set[str]:
        return set(self.stored)

    def summary(self) -> str:
        per_s = len(self.acknowledged) / self.seconds if self.seconds else 0.0
        return (
            f"{self.sent} posts ({len(self.unique)} unique events) in {self.seconds:.1f} s: "
            f"{per_s:.0f} events committed/s; answers {dict(sorted(self.statuses.items()))}, "
            f"no answer {self.errors}; table: {len(self.stored)} rows of this run, "
            f"{len(self.stored_set)} distinct, acknowledged missing {len(self.acknowledged - self.stored_set)}"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(model: Path, crm: str, port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`python -m serving --model M --crm D` on 127.0.0.1:port, returned once /readyz is 200."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving", "--model", str(model), "--crm", crm, "--port", str(port),
             "--log-level", "warning", "--poll-interval-s", "0"],
            cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=log,
        )
        try:
            return _wait_ready(process, port)
        except RuntimeError as exc:
            log.seek(0)
            raise RuntimeError(f"{exc}: {log.read().decode(errors='replace')[-2000:]}") from None


def _wait_ready(process: subprocess.Popen[bytes], port: int) -> subprocess.Popen[bytes]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("service not ready within 120 s")


def events_for(model: Path, crm: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Contact ids of the CRM, and (stage, characteristic) pairs offered by the model's dictionaries."""
    sys.path.insert(0, str(ROOT))
    import crm as crm_source
    from needs_rec import dictionaries
    from serving.batch import resolve_version

    dicts = dictionaries.load(resolve_version(model) / "dictionaries")
    offered = dicts.offered()
    pairs = [(s, c) for i, s in enumerate(dicts.stage_codes) for j, c in enumerate(dicts.characteristic_codes)
             if offered[i, j]]
    with crm_source.open_source(crm) as source:
        contacts = sorted(source.read_table("contacts")["contact_id"].str.strip())
    return contacts, pairs


def run_load(
    base: str,
    contacts: list[str],
    pairs: list[tuple[str, str]],
    *,
    clients: int = 8,
    posts: int = 250,
    retries: float = 0.1,
    seed: int = 0,
    kill: tuple[subprocess.Popen[bytes], int] | None = None,
) -> LoadResult:
    """`clients` threads × `posts` feedback posts (a `retries` share re-sends an earlier event)."""
    result = LoadResult()
    lock = threading.Lock()
    run = uuid.uuid4().hex[:8]
    killed = threading.Event()

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        sent: list[dict[str, Any]] = []
        with httpx.Client(base_url=base, timeout=30) as http:
            for i in range(posts):  # after a kill, each client goes on until its own post finds the service gone
                if sent and rng.random() < retries:
                    body = rng.choice(sent)
                else:
                    stage, characteristic = rng.choice(pairs)
                    body = {
                        "feedback_id": f"{run}-{number}-{i}",
                        "contact_id": rng.choice(contacts),
                        "stage": stage,
                        "characteristic": characteristic,
                        "outcome": rng.choice(("positive", "negative")),
                        "occurred_on": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                        "manager_id": f"m{number}",
                    }
                    sent.append(body)
                with lock:
                    result.sent += 1
                    result.unique.add(body["feedback_id"])
                try:
                    status = http.post("/v1/feedback", json=body).status_code
                except httpx.HTTPError:
                    with lock:
                        result.errors += 1
                    if killed.is_set():
                        return
                    continue
                with lock:
                    result.statuses[status] += 1
                    if 200 <= status < 300:
                        result.acknowledged.add(body["feedback_id"])
                        if kill is not None and len(result.acknowledged) >= kill[1] and not killed.is_set():
                            killed.set()
                            kill[0].send_signal(signal.SIGKILL)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    result.stored = stored_ids(run)
    return result


#: The CRM location the last `run_load` checks (set by `main`/the test before the run).
CRM_LOCATION: dict[str, str] = {}


def stored_ids(run: str) -> list[str]:
    """feedback_ids of this run in the feedback table (every row, so a twice-stored id would show twice)."""
    import sqlalchemy as sa

    import crm as crm_source

    with crm_source.open_source(CRM_LOCATION["crm"]) as source:
        own = source.own()
        table = own.feedback
        with own.engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.feedback_id).where(table.c.feedback_id.like(f"{run}-%"))).all()
    return [r[0] for r in rows]


def load_and_check(
    model: Path, crm: str, *, clients: int, posts: int, retries: float, kill_after: int | None = None
) -> LoadResult:
    """Start the service, run the load (optionally killing the service), stop it, read the table."""
    CRM_LOCATION["crm"] = crm
    contacts, pairs = events_for(model, crm)
    port = free_port()
    process = start_service(model, crm, port)
    try:
        kill = (process, kill_after) if kill_after else None
        return run_load(f"http://127.0.0.1:{port}", contacts, pairs, clients=clients, posts=posts, retries=retries,
                        kill=kill)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="models directory or version")
    parser.add_argument("--crm", required=True, help="CRM directory or database URL (feedback is written there)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--posts", type=int, default=250, help="posts per client")
    parser.add_argument("--retries", type=float, default=0.1, help="share of posts re-sending an earlier event")
    parser.add_argument("--kill-after", type=int, default=None, help="SIGKILL the service after N acknowledged")
    args = parser.parse_args(argv)
    result = load_and_check(args.model, args.crm, clients=args.clients, posts=args.posts, retries=args.retries,
                            kill_after=args.kill_after)
    print(result.summary())
    if args.kill_after:
        missing = result.acknowledged - result.stored_set
        print(f"SIGKILL after {args.kill_after} acknowledged: {len(result.acknowledged)} acknowledged, "
              f"{len(missing)} of them missing from the table, {len(result.stored) - len(result.stored_set)} twice")
    else:
        exact = sorted(result.stored) == sorted(result.unique)
        print(f"exactly the unique events stored, each once: {exact}")
    return 0


if __name__ == "__main__":
    from needs_rec import native_log

    native_log.quiet_command_line()  # no TensorFlow start-up chatter above the figures
    sys.exit(main())
