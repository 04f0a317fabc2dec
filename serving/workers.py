"""Several serving processes on one port (`--workers N`): uvicorn's supervisor, one model copy per worker.

One event loop answers with about one core (the per-answer work is Python: encoding, the NumPy twin,
explanations), so on a machine with more cores `--workers N` runs N copies of the service behind one
port. Each worker listens on its own SO_REUSEPORT socket, and the kernel spreads new connections
evenly over them. The parent is uvicorn's `Multiprocess` supervisor (`Supervisor`): it never imports
TensorFlow, restarts a worker that dies, and on SIGTERM/SIGINT passes the signal to every worker,
each of which drops its readiness at once, keeps serving through `--shutdown-delay-s` and drains its
in-flight requests (the same path as a single process, `serving.lifecycle`).

What is shared and what is not:
- settings travel to the workers as `NEEDS_REC_*` variables (a spawned worker reads them again);
- metrics: prometheus_client's multiprocess mode in a private folder (`SHARED_DIR_ENV`), so any
  worker's /metrics answers for all; drift counts are shared through the same folder once a second;
- each worker polls the models directory and switches versions itself (within `--poll-interval-s` of
  each other); it keeps its own CRM lookup cache and exposure buffer, and every limit (concurrency,
  queue delay, buffers) holds per worker.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
import types
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import SecretStr
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from needs_rec import native_log
from needs_rec.errors import ConfigError
from serving.observability import SHARED_DIR_ENV, log_event
from serving.settings import Settings

logger = logging.getLogger("uvicorn.error")

#: The import string of the worker's app factory (a spawned process rebuilds the app from it).
WORKER_APP = "serving.workers:worker_app"


def settings_environment(settings: Settings) -> dict[str, str]:
    """Every setting as its `NEEDS_REC_*` variable, so a spawned worker rebuilds exactly these settings."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env["NEEDS_REC_" + name.upper()] = str(value)
    return env


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket on (host, port) with SO_REUSEPORT: every worker gets its own, and the kernel spreads new
    connections evenly over them (one shared socket lets whichever worker wakes first take a burst of
    connections: 154 against 86 of 240 in a measured run, one worker saturated while the other idled)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise port_error(host, port, exc) from None
    return sock


def port_error(host: str, port: int, exc: OSError) -> ConfigError:
    """The one line for a port that cannot be listened on (here and in `serving.__main__.check_port`)."""
    return ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; another program holds the port: "
                       "give another with --port / NEEDS_REC_PORT")


def port_lock(host: str, port: int) -> socket.socket:
    """An abstract Unix socket named after (host, port), held by a supervisor while it runs.

    SO_REUSEPORT lets any process of the same user bind the port beside ours: a second `--workers`
    service started on a taken port came up without a word, and the kernel then spread connections
    over two unrelated services (their /metrics alternating). The abstract name is exclusive and
    goes with the process, however it ends. Anything else on the port already fails to bind."""
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(f"\0needs_rec-serving:{host}:{port}")
    except OSError:
        lock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: another needs_rec service with --workers holds it"
                          ) from None
    return lock


class Supervisor(Multiprocess):
    """uvicorn's supervisor, each worker on its own SO_REUSEPORT socket (see `listening_socket`).

    The parent holds one bound, never listening, socket on the port (it keeps the port, and makes
    port 0 one port for all), and closes its copy of each worker's socket once the worker has it: a
    worker that dies takes its socket, and its queue, out of the kernel's spread at once.
    SIGHUP/SIGTTIN/SIGTTOU (restart, one worker more or less) are not offered: restart the service.
    """

    def __init__(self, config: uvicorn.Config, host: str, port: int) -> None:
        self.holder = listening_socket(host, port)
        self.host, self.port = host, self.holder.getsockname()[1]
        self.lock = port_lock(self.holder.getsockname()[0], self.port)  # before a worker binds beside it
        super().__init__(config, sockets=[])
        self.signalled: set[int] = set()  # workers already sent SIGTERM by `on_stop_signal`
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.on_stop_signal)

    def on_stop_signal(self, sig: int, frame: types.FrameType | None) -> None:
        """Pass SIGTERM/SIGINT on to the workers now (so readiness drops at once), then stop as uvicorn does.

        uvicorn's own handler only queues the signal for its loop, which looks every 0.5 s; each worker
        must get the signal exactly once, or a second one would cut its `--shutdown-delay-s` short.
        """
        self.signal_queue.append(sig)
        for process in self.processes:
            pid = process.pid
            if pid is not None and pid not in self.signalled and process.exitcode is None:
                self.signalled.add(pid)
                os.kill(pid, signal.SIGTERM)

    def terminate_all(self) -> None:
        """uvicorn's terminate, less the SIGTERM a worker already got from `on_stop_signal` (a worker started
        after the signal, while the others were starting, still gets its one)."""
        for process in self.processes:
            if process.pid in self.signalled:
                process.parent_conn.close()
                process.child_conn.close()
            else:
                process.terminate()

    def start_worker(self) -> Process:
        sock = listening_socket(self.host, self.port)
        process = Process(self.config, [sock])
        process.start()
        sock.close()  # the worker has its own descriptor now
        return process

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            self.processes.append(self.start_worker())

    def keep_subprocess_alive(self) -> None:
        """Replace a worker that died or stopped answering its health ping (uvicorn's rule, own sockets)."""
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # the app cannot start: every restart would fail alike
                logger.error("worker %s failed to start, stopping", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.warning("worker %s died (exit code %s), starting another", process.pid, process.exitcode)
            self.processes[index] = self.start_worker()

    def handle_hup(self) -> None:
        logger.warning("SIGHUP ignored: restart the service to restart its workers")

    def handle_ttin(self) -> None:
        logger.warning("SIGTTIN ignored: the number of workers is --workers")

    def handle_ttou(self) -> None:
        logger.warning("SIGTTOU ignored: the number of workers is --workers")

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.holder.close()


def serve_workers(settings: Settings, config_options: dict[str, Any], logger: logging.Logger) -> None:
    """Start `settings.workers` workers on the port under the supervisor and wait until they stop."""
    native_log.release_native_stderr()  # each worker wraps its own TensorFlow log (serving.__main__)
    shared = Path(tempfile.mkdtemp(prefix="needs-rec-metrics-"))
    environment = settings_environment(settings)
    previous = {k: os.environ.get(k) for k in (SHARED_DIR_ENV, *environment)}
    os.environ.update(environment)
    os.environ[SHARED_DIR_ENV] = str(shared)
    try:
        options = {k: v for k, v in config_options.items() if k not in ("host", "port")}
        config = uvicorn.Config(WORKER_APP, factory=True, workers=settings.workers, **options)
        supervisor = Supervisor(config, settings.host, settings.port)
        log_event(logger, "workers_starting", workers=settings.workers, host=settings.host, port=supervisor.port)
        supervisor.run()
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def worker_app() -> object:
    """One worker's app (uvicorn calls this in the spawned process): settings from the environment, the JSON
    log, and TensorFlow's native log wrapped, as `python -m serving` does for a single process."""
    from serving import lifecycle
    from serving.observability import configure_logging, wrap_native_log
    from serving.settings import load_settings

    native_log.quiet_tensorflow_environment()
    lifecycle.stop_when_orphaned()  # a SIGKILLed supervisor must not leave its workers serving
    settings = load_settings()
    logger = configure_logging(settings.log_level)
    lifecycle.quiet_record_lookups()
    wrap_native_log(logger)  # before TensorFlow is imported (by serving.app), as in a single process
    from serving.__main__ import configure_tensorflow
    from serving.app import create_app

    configure_tensorflow(settings, logger)
    return create_app(settings, logger=logger)
