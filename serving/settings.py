"""The service's settings: one object, filled from command-line flags, else `NEEDS_REC_*` environment variables.

Every field is also an environment variable named `NEEDS_REC_<FIELD>` (e.g. `NEEDS_REC_MODEL`,
`NEEDS_REC_PORT`, `NEEDS_REC_MAX_BODY_BYTES`); a flag given on the command line wins over the
environment. docs/serving.md lists them all.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from needs_rec.errors import ConfigError

LogLevel = Literal["debug", "info", "warning", "error"]


class Settings(BaseSettings):
    """Where the model is, where to listen, and the protective limits of the HTTP service."""

    model_config = SettingsConfigDict(env_prefix="NEEDS_REC_", extra="forbid", frozen=True)

    model: Path = Field(description="models directory (its stable version, else the newest) or one version directory")
    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0 = any free port)")
    log_level: LogLevel = Field("info", description="level of the JSON log lines on stderr")
    max_body_bytes: int = Field(1_048_576, ge=1, description="largest request body; larger ones get 413 unparsed")
    max_batch: int = Field(100, ge=1, description="most requests in one :batch call / instances in one :predict call")
    max_concurrency: int = Field(128, ge=1, description="scoring requests in flight before new ones get 503")
    max_queue_delay_ms: float = Field(
        0.0, ge=0, description="new scoring requests get 503 while the event loop runs this far behind "
        "(requests queue there before any route sees them); 0 = off. Set it (10) where the service has its "
        "CPUs to itself: on a shared machine a starved process also runs behind"
    )
    request_timeout_s: float = Field(10.0, gt=0, description="a scoring request still running after this gets 503")
    retry_after_s: int = Field(1, ge=0, description="Retry-After seconds sent with 503 answers")
    poll_interval_s: float = Field(5.0, ge=0, description="how often to look for a new version (0 = never)")
    warmup_rounds: int = Field(3, ge=0, description="warm-up passes over batch sizes 1..max_rows before ready")
    max_rows_per_call: int = Field(256, ge=1, description="micro-batching: most rows merged into one model call")
    fast_path_max_rows: int = Field(
        8, ge=0, description="calls of at most this many rows use the verified NumPy twin inline (0 = TensorFlow only)"
    )
    workers: int = Field(
        1, ge=1, le=32, description="serving processes sharing the port, each with its own copy of the model (one "
        "event loop uses about one core: 2 on a 2-core machine doubles throughput); /metrics and drift add every "
        "worker's requests up, and each limit below (concurrency, queue delay, buffers) holds per worker"
    )
    model_workers: int = Field(1, ge=1, le=8, description="model calls running at the same time (threads)")
    tf_intra_op_threads: int = Field(1, ge=0, description="TensorFlow intra-op threads (0 = TensorFlow's default)")
    tf_inter_op_threads: int = Field(1, ge=0, description="TensorFlow inter-op threads (0 = TensorFlow's default)")
    drift_threshold: float = Field(
        0.1, gt=0, le=1, description="a code field is flagged as drifting when the L-infinity distance of its live "
        "shares to training reaches this"
    )
    drift_js_threshold: float = Field(
        0.01, gt=0, le=1, description="a number is flagged as drifting when the Jensen-Shannon divergence of its live "
        "bins to training reaches this"
    )
    drift_window: int = Field(5000, ge=10, description="live requests per drift block (the window is 1-2 blocks)")
    drift_min_rows: int = Field(200, ge=1, description="live requests needed before drift is judged")
    shutdown_timeout_s: float = Field(20.0, ge=0, description="on SIGTERM, how long in-flight requests may finish")
    shutdown_delay_s: float = Field(0.0, ge=0, description="on SIGTERM, keep serving this long with /readyz at 503")
    crm: str | None = Field(
        None,
        description="CRM source for contact_id lookups, /v1/feedback, exposures and the pages: a directory of "
        "CSV/Parquet files or a database URL (sqlite:///crm.db, postgresql+psycopg://user:password@host/db)",
    )
    crm_cache_s: float = Field(
        60.0, ge=0, description="a looked-up contact is reused this many seconds: CRM edits show within this (0 = none)"
    )
    queries_max_age_s: float = Field(
        900.0, gt=0, description="the audience and similar-organization answers come from a snapshot of the CRM "
        "scored at most this long ago (an older one answers while a new one is built; scored_at says when): "
        "lower it for fresher lists, at the cost of re-reading and re-scoring the whole CRM that often",
    )
    crm_cache_size: int = Field(100_000, ge=1, description="most contacts held in the lookup cache")
    crm_workers: int = Field(4, ge=1, le=32, description="threads for CRM calls (lookups, feedback, exposure writes)")
    exposure_buffer: int = Field(
        10_000, ge=1, description="exposure rows waiting to be written; beyond it rows are dropped and counted"
    )
    auth_token: SecretStr | None = Field(
        None,
        description="token for the pages and /v1/feedback: 'Authorization: Bearer <token>', or as the password of "
        "HTTP Basic auth with any user name; required beyond loopback unless basic_auth is set (prefer the env var)",
    )
    basic_auth: SecretStr | None = Field(
        None,
        description="'user:password' for HTTP Basic auth on the pages and /v1/feedback, the password at least 16 "
        "characters (prefer the env var)",
    )
    allowed_hosts: str = Field(
        "",
        description="names the Host header may carry, comma-separated ('*' = any; a port is ignored); default: "
        "localhost, 127.0.0.1 and ::1 while no credential is configured (a foreign web page whose name is made to "
        "resolve to this machine, DNS rebinding, gets 400), any name once one is",
    )

    @field_validator("basic_auth")
    @classmethod
    def _user_and_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            user, colon, password = value.get_secret_value().partition(":")
            if not (user and colon and password):
                raise ValueError("expected 'user:password' with neither part empty")
            if len(password.strip()) < MIN_TOKEN_LENGTH:  # a guessable password is no protection either
                raise ValueError(f"the password needs at least {MIN_TOKEN_LENGTH} characters")
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",")]
        if value.strip() and not all(names):
            raise ValueError("expected host names separated by commas, none empty (or '*' for any)")
        return value

    @field_validator("auth_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_TOKEN_LENGTH:
            raise ValueError(f"a token needs at least {MIN_TOKEN_LENGTH} characters")
        return value

    @model_validator(mode="after")
    def _credential_beyond_loopback(self) -> Settings:
        if not is_loopback(self.host) and self.auth_token is None and self.basic_auth is None:
            raise ValueError(
                f"host {self.host!r} listens beyond loopback, where the pages and /v1/feedback need a credential: "
                "set NEEDS_REC_AUTH_TOKEN or NEEDS_REC_BASIC_AUTH (or --auth-token / --basic-auth)"
            )
        return self

    @model_validator(mode="after")
    def _drift_judged(self) -> Settings:
        if self.drift_min_rows > self.drift_window:  # a window may hold as few as one block's rows
            raise ValueError(f"drift_min_rows {self.drift_min_rows} is more than drift_window {self.drift_window}: "
                             "drift would never be judged; lower --drift-min-rows or raise --drift-window")
        return self

    @property
    def credential_required(self) -> bool:
        """True when a credential is configured: the pages and /v1/feedback then refuse requests without it."""
        return self.auth_token is not None or self.basic_auth is not None

    @property
    def host_names(self) -> frozenset[str] | None:
        """The names a request's Host header may carry (lower case, without a port), or None for any.

        Without a credential the service trusts that only this machine can reach it; a web page whose
        own name is made to resolve to 127.0.0.1 (DNS rebinding) would otherwise read the pages and
        answers as a same-origin script, so then only the loopback names are answered."""
        names = {name.strip().strip("[]").lower() for name in self.allowed_hosts.split(",") if name.strip()}
        if "*" in names or (not names and self.credential_required):
            return None
        return frozenset(names or LOOPBACK_NAMES)


#: Shortest accepted token or Basic-auth password (a guessable one is no protection).
MIN_TOKEN_LENGTH = 16
#: The Host names of this machine's loopback interface, answered without a credential.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: Settings whose values are never echoed in an error message.
SECRET_FIELDS = frozenset({"auth_token", "basic_auth", "crm"})  # a database URL may hold a password


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach: 127.0.0.0/8, ::1 or `localhost`.

    Anything else — 0.0.0.0, a LAN address, a host name that is not `localhost` — counts as beyond
    loopback (a name could resolve to anything, so it is not trusted to be local).
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment with `overrides` (flags given) on top; errors become ConfigError."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors())
        raise ConfigError(f"invalid serving settings: {problems} (flags or NEEDS_REC_* environment variables)") from exc


def _describe(err: Any) -> str:
    name = ".".join(str(p) for p in err["loc"])
    if not name:  # a rule across fields (model validator): its message says everything
        return str(err["msg"]).removeprefix("Value error, ")
    flag, env = "--" + name.replace("_", "-"), "NEEDS_REC_" + name.upper()
    if err["type"] == "missing":
        return f"{name} is required: pass {flag} or set {env}"
    if name in SECRET_FIELDS:  # never echo a secret, not even a malformed one
        return f"{name} ({flag} / {env}): {err['msg']}"
    return f"{name} ({flag} / {env}): {err['msg']}, got {err.get('input')!r}"
