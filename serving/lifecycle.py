"""Start-up and shutdown of a serving process: readiness drops on SIGTERM, then uvicorn drains.

uvicorn installs its own SIGTERM/SIGINT handlers while it serves; `drop_readiness_on_signals`
(called from the app's lifespan start-up, which runs inside them) puts a handler in front of
uvicorn's: `/readyz` answers 503 from the signal on, the process keeps serving for
`shutdown_delay_s` while load balancers notice, then uvicorn stops accepting, lets in-flight
requests finish (`--shutdown-timeout-s`) and runs the app's shutdown. One path for a single
process and for every worker of several (`serving.workers`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import types
from collections.abc import Callable
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ReadinessDrop:
    """A signal handler: readiness off now, then (after the delay, once) uvicorn's own handler."""

    def __init__(self, begin_shutdown: Callable[[], None], delay_s: float,
                 previous: dict[int, Callable[[int, types.FrameType | None], Any]]):
        self._begin_shutdown = begin_shutdown
        self._delay_s = delay_s
        self._previous = previous
        self._delayed = False

    def __call__(self, sig: int, frame: types.FrameType | None) -> None:
        self._begin_shutdown()
        if self._delay_s > 0 and not self._delayed:
            self._delayed = True  # keep serving while load balancers notice /readyz is 503
            threading.Timer(self._delay_s, self._previous[sig], (sig, frame)).start()
            return
        self._previous[sig](sig, frame)


def drop_readiness_on_signals(service: Any, settings: Any) -> bool:
    """Put `ReadinessDrop` in front of uvicorn's SIGTERM/SIGINT handlers; False where uvicorn's are not installed
    (a test client, an embedding host, a thread other than the main one): nothing is changed there."""
    import uvicorn

    if threading.current_thread() is not threading.main_thread():
        return False
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    if not all(isinstance(getattr(h, "__self__", None), uvicorn.Server) for h in previous.values()):
        return False
    handler = ReadinessDrop(service.begin_shutdown, settings.shutdown_delay_s, previous)  # type: ignore[arg-type]
    for sig in SIGNALS:
        signal.signal(sig, handler)
    return True


def stop_when_orphaned(interval_s: float = 0.5) -> threading.Thread:
    """Send this process SIGTERM once its parent is gone (a worker whose supervisor was SIGKILLed or crashed).

    A worker would otherwise keep serving as an orphan, holding its SO_REUSEPORT share of the port, and a
    restarted service would silently share the port with it. The SIGTERM takes the normal path: readiness
    drops, in-flight requests finish, buffered exposures are written. Checked every `interval_s` seconds.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:  # re-parented: the supervisor is gone
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=watch, name="orphan-watch", daemon=True)
    thread.start()
    return thread


def quiet_record_lookups() -> None:
    """The JSON lines never show a record's caller, thread or process, so the process does not collect them
    (the logging HOWTO's "Optimization" switches: no stack walk and three lookups per request line)."""
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
