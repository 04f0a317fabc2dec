"""What one answer of `POST /v1/recommendations` costs the service, in-process (no HTTP, no wrk).

    .venv/bin/python bench/answer_cost.py [--model M] [--rounds 7] [--requests 2000] [--gaps 0,0.5,2,5]

The app (`serving.app.create_app`, with its lifespan, guard, log line and metrics) is called as an
ASGI callable, so what is measured is the service's own work per answer: parsing, encoding, the
NumPy twin, the selection, the model-based reasons, the JSON answer, the log line.

Two figures:
- **hot loop**: `--requests` answers back to back, `--rounds` times; the median round's µs per answer.
  This is the CPU an answer needs when the process never sleeps (a saturated worker);
- **after an idle gap**: each answer timed alone after the process slept `gap` ms (as a worker does
  between requests at a moderate rate). On a virtual machine a core that slept comes back with cold
  caches (and possibly on another physical core), so the same answer costs more: this is what
  separates the hot-loop figure from the CPU per answer a live service shows (`serving_latency.py`
  prints the latter per paced rate).

The bodies are `serving_latency.request_bodies` (varied, realistic, some unknown codes). Figures are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PATH = "/v1/recommendations"


class Caller:
    """Calls an ASGI app with one POST body, as uvicorn would, and checks the answer is a 200."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, body: bytes) -> None:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)  # the client stays connected until the answer is sent
            return {"type": "http.disconnect"}

        messages: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        headers = [(b"host", b"localhost"), (b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": PATH, "raw_path": PATH.encode(), "query_string": b"", "root_path": "",
                 "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
        await self.app(scope, receive, send)
        if messages[0]["status"] != 200:
            raise SystemExit(f"the service answered {messages[0]['status']}: {messages[-1].get('body', b'')[:300]!r}")


async def measure(model: Path, rounds: int, requests: int, gaps_ms: list[float]) -> None:
    from serving_latency import request_bodies

    from needs_rec import versions
    from serving.app import create_app
    from serving.settings import load_settings

    bodies = [b.encode() for b in request_bodies(versions.resolve_serving(model) / "dictionaries")]
    settings = load_settings(model=model, log_level="info")
    app = create_app(settings)
    service = app.state.service
    with open(os.devnull, "w", encoding="utf-8") as sink:
        for handler in service.logger.handlers:  # the log line is written, to nowhere (its cost stays in)
            if hasattr(handler, "setStream"):
                handler.setStream(sink)
        call = Caller(app)
        async with app.router.lifespan_context(app):
            while service.registry.current is None:
                await asyncio.sleep(0.05)
            for body in bodies * 10:  # warm: every body's codes, dates and phrases seen once
                await call(body)
            per_round = []
            for _ in range(rounds):
                started = time.perf_counter()
                for i in range(requests):
                    await call(bodies[i % len(bodies)])
                per_round.append((time.perf_counter() - started) / requests * 1e6)
            print(f"model: {model}   {len(bodies)} bodies   {os.cpu_count()} cores")
            print(f"hot loop: {statistics.median(per_round):.0f} µs per answer (median of {rounds} rounds of "
                  f"{requests}; rounds {', '.join(f'{x:.0f}' for x in sorted(per_round))})")
            count = max(200, requests // 4)
            for gap in gaps_ms:
                times = []
                for i in range(count):
                    if gap:
                        time.sleep(gap / 1000)  # the process sleeps, as a worker does between requests
                    started = time.perf_counter()
                    await call(bodies[i % len(bodies)])
                    times.append((time.perf_counter() - started) * 1e6)
                p50, p99 = np.percentile(times, [50, 99])
                print(f"after {gap:g} ms idle: p50 {p50:.0f} µs   mean {statistics.fmean(times):.0f} µs   "
                      f"p99 {p99:.0f} µs   ({count} answers)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="models directory or version (default: build the bench's version)")
    parser.add_argument("--dictionaries", type=Path, default=REPO / "dictionaries")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=2000, help="answers per hot-loop round")
    parser.add_argument("--gaps", default="0,0.5,2,5", help="idle gaps in ms before each timed answer")
    args = parser.parse_args(argv)
    gaps = [float(g) for g in args.gaps.split(",") if g.strip()]
    with tempfile.TemporaryDirectory(prefix="answer-cost-") as work:
        if args.model is None:
            from serving_latency import build_model

            model = build_model(Path(work) / "models", args.dictionaries).parent
        else:
            model = args.model
        asyncio.run(measure(model, args.rounds, args.requests, gaps))
    return 0


if __name__ == "__main__":
    from needs_rec import native_log

    native_log.quiet_command_line()  # no TensorFlow start-up chatter above the figures
    raise SystemExit(main())
