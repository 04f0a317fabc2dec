"""`python -m serving --model M [--host H] [--port P] [...]`: run the HTTP service with uvicorn.

Every flag mirrors a field of `serving.settings.Settings` (`--max-body-bytes` ↔ `max_body_bytes` ↔
`NEEDS_REC_MAX_BODY_BYTES`); a flag given wins over the environment. On SIGTERM/SIGINT readiness
drops at once, new connections are refused and in-flight requests finish (up to
`--shutdown-timeout-s`; `serving.lifecycle`). `--workers N` runs N such processes on the port
(`serving.workers`). A bad setting, a model path or `--crm` file or directory that does not exist,
or a port another program listens on, exits 2 with one line.
"""

from __future__ import annotations

import argparse
import logging
import socket
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from needs_rec.cli import ArgumentParser, run_cli
from needs_rec.errors import ConfigError, ModelError
from serving.settings import Settings, load_settings


def build_parser() -> argparse.ArgumentParser:
    """One flag per settings field, typed and documented from the field itself."""
    parser = ArgumentParser(
        prog="python -m serving",
        description="needs_rec HTTP service. Every flag also reads from NEEDS_REC_<FLAG NAME> (e.g. NEEDS_REC_PORT).",
    )
    for name, info in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        annotation = info.annotation
        kwargs: dict[str, Any] = {"dest": name, "default": None}
        if typing.get_origin(annotation) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(annotation))
        elif annotation in (int, float):
            kwargs["type"] = annotation
        elif annotation is Path:
            kwargs["type"] = Path
        env = "NEEDS_REC_" + name.upper()
        default = "" if info.is_required() else f"; default {info.default!r}"
        kwargs["help"] = f"{info.description} (env {env}{default})"
        if "choices" not in kwargs:
            kwargs["metavar"] = _metavar(name, annotation)
        parser.add_argument(flag, **kwargs)
    return parser


def _metavar(name: str, annotation: Any) -> str:
    """The placeholder of a flag's value in --help: by its unit suffix (_s, _ms), else by its type."""
    if annotation is float:
        return "SECONDS" if name.endswith("_s") else "MS" if name.endswith("_ms") else "X"
    return {int: "N", Path: "M"}.get(annotation, name.upper())


def configure_tensorflow(settings: Settings, logger: logging.Logger) -> None:
    """Thread pools sized for a small machine; must run before TensorFlow executes its first op."""
    import tensorflow as tf

    try:
        if settings.tf_intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(settings.tf_intra_op_threads)
        if settings.tf_inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(settings.tf_inter_op_threads)
    except RuntimeError as exc:  # TensorFlow already initialised (e.g. imported and used by a host process)
        logger.warning("tensorflow_threads_not_set", extra={"fields": {"reason": str(exc)}})


def check_port(host: str, port: int) -> None:
    """Refuse a port another program already listens on, before the model loads.

    uvicorn binds only after the app's start-up: a taken port cost a model load, a page of JSON log
    lines and exit 3, where `--workers` (which binds first, `serving.workers.listening_socket`) said it
    in one line with exit 2. This binds each address uvicorn would (asyncio's `create_server`:
    every address of the name, SO_REUSEADDR, IPv6 only on IPv6) and lets go at once."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                from serving.workers import port_error

                raise port_error(host, port, exc) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, check the model path, and serve until SIGTERM."""
    args = build_parser().parse_args(argv)
    settings = load_settings(**vars(args))
    if not settings.model.exists():
        raise ModelError(
            f"model path {str(settings.model)!r} does not exist; expected a models directory or a version in it"
        )
    if settings.crm:  # a missing CRM file or directory: one line now, not a ready service that fails every lookup
        import crm

        crm.check_location(settings.crm, flag="--crm")
        crm.check_tables(settings.crm, flag="--crm")  # names only; a database that is down now may come up later

    from serving import lifecycle
    from serving.http_protocol import PROTOCOL
    from serving.observability import configure_logging, wrap_native_log

    logger = configure_logging(settings.log_level)
    lifecycle.quiet_record_lookups()
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
        "http": PROTOCOL,  # a request uvicorn cannot parse still gets {"error": ...}
        "timeout_graceful_shutdown": int(settings.shutdown_timeout_s) or None,
    }
    if settings.workers > 1:  # the parent supervises; each worker sets up its own log and TensorFlow
        from serving.workers import serve_workers

        serve_workers(settings, options, logger)
        return 0

    check_port(settings.host, settings.port)
    wrap_native_log(logger)  # before TensorFlow is imported: its C++ lines become JSON records too
    import uvicorn

    from serving.app import create_app

    configure_tensorflow(settings, logger)
    app = create_app(settings, logger=logger)
    uvicorn.Server(uvicorn.Config(app, **options)).run()
    return 0


if __name__ == "__main__":
    run_cli(main, sigterm_cleans_up=False)  # uvicorn and serving.lifecycle handle SIGTERM
