"""The service's settings: one object, filled from command-line flags, else `NEEDS_REC_*` environment variables.

Every field is also an environment variable named `NEEDS_REC_<FIELD>` (e.g. `NEEDS_REC_MODEL`,
`NEEDS_REC_PORT`, `NEEDS_REC_MAX_BODY_BYTES`); a flag given on the command line wins over the
environment. docs/serving.md lists them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from needs_rec.errors import ConfigError

LogLevel = Literal["debug", "info", "warning", "error"]


class Settings(BaseSettings):
    """Where the model is, where to listen, and the protective limits of the HTTP service."""

    model_config = SettingsConfigDict(env_prefix="NEEDS_REC_", extra="forbid", frozen=True)

    model: Path = Field(description="models directory (newest numeric version is served) or one version directory")
    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0 = any free port)")
    log_level: LogLevel = Field("info", description="level of the JSON log lines on stderr")
    max_body_bytes: int = Field(1_048_576, ge=1, description="largest request body; larger ones get 413 unparsed")
    max_batch: int = Field(100, ge=1, description="most requests in one :batch call / instances in one :predict call")
    max_concurrency: int = Field(128, ge=1, description="scoring requests in flight before new ones get 503")
    request_timeout_s: float = Field(10.0, gt=0, description="a scoring request still running after this gets 503")
    retry_after_s: int = Field(1, ge=0, description="Retry-After seconds sent with 503 answers")
    poll_interval_s: float = Field(5.0, ge=0, description="how often to look for a new version (0 = never)")
    warmup_rounds: int = Field(3, ge=0, description="warm-up passes over batch sizes 1..max_rows before ready")
    max_rows_per_call: int = Field(256, ge=1, description="micro-batching: most rows merged into one model call")
    fast_path_max_rows: int = Field(
        8, ge=0, description="calls of at most this many rows use the verified NumPy twin inline (0 = TensorFlow only)"
    )
    model_workers: int = Field(1, ge=1, le=8, description="model calls running at the same time (threads)")
    tf_intra_op_threads: int = Field(1, ge=0, description="TensorFlow intra-op threads (0 = TensorFlow's default)")
    tf_inter_op_threads: int = Field(1, ge=0, description="TensorFlow inter-op threads (0 = TensorFlow's default)")
    shutdown_timeout_s: float = Field(20.0, ge=0, description="on SIGTERM, how long in-flight requests may finish")
    shutdown_delay_s: float = Field(0.0, ge=0, description="on SIGTERM, keep serving this long with /readyz at 503")


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment with `overrides` (flags given) on top; errors become ConfigError."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors())
        raise ConfigError(f"invalid serving settings: {problems} (flags or NEEDS_REC_* environment variables)") from exc


def _describe(err: Any) -> str:
    name = ".".join(str(p) for p in err["loc"]) or "settings"
    flag, env = "--" + name.replace("_", "-"), "NEEDS_REC_" + name.upper()
    if err["type"] == "missing":
        return f"{name} is required: pass {flag} or set {env}"
    return f"{name} ({flag} / {env}): {err['msg']}, got {err.get('input')!r}"
