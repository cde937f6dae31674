"""The process settings: where the config file and the store are, and the server's limits.

Each setting can be set by an environment variable ``BASGUARD_<NAME>``; all are validated at
start-up, so a bad value fails the start. The gateway's config file (tenants, models) is
:mod:`proxy.runtime.config`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from policies.schema import MIN_API_KEY_LENGTH

if TYPE_CHECKING:
    from proxy.store.location import StoreLocation

__all__ = ["ServerSettings"]


class ServerSettings(BaseSettings):
    """Process settings; each can be set by an environment variable ``BASGUARD_<NAME>``."""

    # Errors never quote an input: one of them is a key.
    model_config = SettingsConfigDict(env_prefix="BASGUARD_", extra="forbid",
                                      hide_input_in_errors=True)

    config: Path = Field(description="The gateway config file (BASGUARD_CONFIG).")
    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to listen on.")
    reload_interval_seconds: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description="How often to check the config and calibrator files for changes (0: never; "
        "SIGHUP still reloads).",
    )
    store: str = Field(
        default="basguard-decisions.sqlite3",
        description="The decision store: every decision and its feedback label "
        "(BASGUARD_STORE). A path or sqlite:///PATH: a SQLite file, which the worker processes "
        "of one machine may share. postgresql://USER@HOST/DB: a PostgreSQL database, which "
        "replicas on several machines share; the password comes from the URL only when this "
        "is set in the environment (a Secret), or from PGPASSWORD and the other libpq "
        "variables, and is never logged.",
    )
    store_journal_dir: Path | None = Field(
        default=None,
        description="Where the crash journal lives (BASGUARD_STORE_JOURNAL_DIR). Default: "
        "beside a SQLite store (<store>.basguard-journal/); for PostgreSQL, "
        "./basguard-journal/ (in Kubernetes, an emptyDir: it outlives a killed container).",
    )
    retention_days: float = Field(
        default=30.0,
        gt=0,
        le=36500,
        description="Decisions older than this are deleted from the store; feedback totals are "
        "kept.",
    )
    store_max_prompt_chars: int = Field(
        default=8_000,
        ge=100,
        le=10_000_000,
        description="The longest prompt the store keeps with an abstained decision, in "
        "characters; the rest is cut and a marker says how many characters were cut.",
    )
    store_max_answer_chars: int = Field(
        default=16_000,
        ge=100,
        le=10_000_000,
        description="The longest withheld answer the store keeps, per choice, in characters; "
        "the rest is cut and a marker says how many characters were cut.",
    )
    store_max_queued_bytes: int = Field(
        default=64 * 1_048_576,
        ge=1_048_576,
        le=16 * 1_073_741_824,
        description="Memory for decisions waiting to be written (about: their texts plus 256 "
        "bytes per choice); beyond it, or beyond 100,000 decisions, decisions are dropped and "
        "counted in basguard_store_lost_decisions_total{reason=\"dropped\"}.",
    )
    store_journal: bool = Field(
        default=True,
        description="Append each decision to a crash journal beside the store "
        "(<store>.basguard-journal/) before queueing it, so that a process killed before its "
        "writer commits (SIGKILL, OOM) loses no acknowledged decision: the next start replays "
        "it. Costs a write() per decision; no fsync, so power loss is not covered.",
    )
    risk_watch_interval_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="How often each worker reads the audit sample's labels to decide whether a "
        "tenant's risk limit is proven breached (the live bound); a tenant with `on_breach: "
        "abstain` withholds its answers from the next look after a breach on. The metrics "
        "compute the bound at each scrape.",
    )
    drift_window: int = Field(
        default=500,
        ge=10,
        le=1_000_000,
        description="How many of the latest labelled decisions the drift gauge averages over.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Worker processes; above 1, Prometheus metrics use multiprocess mode.",
    )
    worker_healthcheck_timeout_seconds: int = Field(
        default=30,
        ge=1,
        le=600,
        description="With several workers: how long a worker may take to answer the supervisor's "
        "health check (start-up included) before it is killed and replaced.",
    )
    max_header_bytes: int = Field(
        default=65_536,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest request line plus headers, in bytes; a larger head gets 431 and "
        "the connection is closed before the rest is read.",
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="A connection must deliver a complete request head this soon after it opens "
        "(or after its previous response); else it gets 408 (or is closed, if it sent nothing). "
        "Stops slowloris clients from holding sockets.",
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="A request body must arrive whole within this many seconds of the end of "
        "its head (time the server itself spends not reading, because the request is waiting on "
        "the upstream, does not count); else 408 body_timeout and the connection is closed. "
        "A request waiting for its body holds no request slot: it reaches the app once its body "
        "is complete or its first 64 KiB have arrived.",
    )
    body_min_rate_bytes_per_second: int = Field(
        default=1024,
        ge=0,
        le=1_073_741_824,
        description="A request body must arrive at least this fast, averaged over each "
        "body_rate_window_seconds (the first window is the allowance a body starts with); "
        "slower gets 408 body_timeout before body_timeout_seconds is up. 0: no rate check.",
    )
    body_rate_window_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="The window over which body_min_rate_bytes_per_second is measured; at most "
        "body_timeout_seconds.",
    )
    keep_alive_timeout_seconds: int = Field(
        default=5,
        ge=1,
        le=3600,
        description="An idle keep-alive connection is closed after this long without a request.",
    )
    max_concurrent_requests: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="Requests handled at once per worker; beyond it, 503 server_busy. Health, "
        "readiness and metrics endpoints are exempt, so probes still answer under overload.",
    )
    max_connections: int = Field(
        default=4096,
        ge=16,
        le=1_000_000,
        description="Open client connections per worker; a connection beyond it gets 503 "
        "server_busy and is closed, so idle sockets cannot use up the file descriptors. Keep it "
        "below the open-file limit (the soft limit is raised to the hard limit at start).",
    )
    websocket_max_message_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        le=1_073_741_824,
        description="Largest message of a relayed WebSocket (the Realtime API), either way; a "
        "client's larger message closes its session with 1009, an upstream's with 1014. "
        "Realtime audio arrives in base64 chunks far below the default.",
    )
    access_log: Literal["plain", "json", "off"] = Field(
        default="plain",
        description="One line per request on stdout, when its response ends: time, client, "
        "method and path, status, duration, bytes, and the tenant, decision and decision id "
        "(or the error code). `plain` (default), `json` (one JSON object a line) or `off` "
        "(`true` and `false` read as `plain` and `off`). Its cost is in the benchmarks.",
    )
    shutdown_grace_seconds: float = Field(
        default=20.0,
        ge=0,
        le=3600,
        description="On SIGTERM: how long in-flight requests and open streams may run on after "
        "the listening socket closes. Streams still open then get one shutting_down error event "
        "and [DONE]; then the decision store is flushed and the process exits.",
    )
    offload_processes: int = Field(
        default=1,
        ge=0,
        le=16,
        description="Processes per worker that parse, judge and encode non-streamed replies "
        "larger than offload_reply_bytes, so that such a reply never pauses the worker's event "
        "loop (orjson holds the GIL, so a thread cannot help). Started with the first large "
        "reply, 70-80 MiB each (benchmarks/bench_large_reply.py); a process that dies fails "
        "its replies with 500 and is replaced. 0: large replies are parsed and encoded on the "
        "event loop.",
    )
    offload_reply_bytes: int = Field(
        default=131_072,
        ge=1024,
        le=1_073_741_824,
        description="Non-streamed replies from OpenAI-compatible upstreams larger than this go "
        "to the offload processes (see offload_processes). Below about 128 KiB a reply costs "
        "the event loop under 5-10 ms and the hand-over (2-4 ms) is not worth it; above, the "
        "process is as fast or faster (benchmarks/bench_large_reply.py --sizes).",
    )
    metrics_key: SecretStr | None = Field(
        default=None,
        # Never serialised: serve --workers hands its settings down by dumping them, and the
        # workers read this one from the same BASGUARD_METRICS_KEY instead.
        exclude=True,
        description="Bearer key that /metrics requires, and that shows /readyz's detail "
        "(BASGUARD_METRICS_KEY, at least 16 characters). Unset: /metrics is open (a warning "
        "is logged at start) and /readyz shows only its status.",
    )

    admin_session_secret: SecretStr | None = Field(
        default=None,
        exclude=True,
        description="The key that signs the ops console's session cookies "
        "(BASGUARD_ADMIN_SESSION_SECRET, at least 32 characters). Unset: each start makes one "
        "(shared by its workers), so a restart logs every browser out; replicas behind one "
        "load balancer need the same value, or a session opened on one is refused by another.",
    )

    @field_validator("store", mode="before")
    @classmethod
    def _path_as_text(cls, store: object) -> object:
        return str(store) if isinstance(store, Path) else store

    @field_validator("store")
    @classmethod
    def _known_store(cls, store: str) -> str:
        from proxy.store.location import parse_store_location

        parse_store_location(store)  # a StoreLocationError (a ValueError) names no password
        return store

    @property
    def store_location(self) -> StoreLocation:
        from proxy.store.location import parse_store_location

        return parse_store_location(self.store)

    def journal_directory(self) -> Path | None:
        """The crash journal's directory, or None when it is turned off."""
        if not self.store_journal:
            return None
        if self.store_journal_dir is not None:
            return self.store_journal_dir
        from proxy.store.journal import journal_dir

        location = self.store_location
        return Path("basguard-journal") if location.path is None else journal_dir(location.path)

    @model_validator(mode="after")
    def _rate_window_within_the_body_deadline(self) -> ServerSettings:
        if self.body_rate_window_seconds > self.body_timeout_seconds:
            raise ValueError(
                f"body_rate_window_seconds ({self.body_rate_window_seconds:g}) must not exceed "
                f"body_timeout_seconds ({self.body_timeout_seconds:g}): the rate would never be "
                "checked"
            )
        return self

    @field_validator("access_log", mode="before")
    @classmethod
    def _access_log_switch(cls, value: object) -> object:
        # It was a yes/no setting: BASGUARD_ACCESS_LOG=true keeps meaning a log.
        if isinstance(value, bool):
            return "plain" if value else "off"
        if isinstance(value, str):
            word = value.strip().lower()
            return {"true": "plain", "1": "plain", "yes": "plain", "on": "plain",
                    "false": "off", "0": "off", "no": "off"}.get(word, word)
        return value

    @field_validator("admin_session_secret")
    @classmethod
    def _secret_long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value()) < 32:
            raise ValueError("the admin session secret needs at least 32 characters "
                             "(e.g. `openssl rand -hex 32`)")
        return secret

    @field_validator("metrics_key")
    @classmethod
    def _long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and len(key.get_secret_value().strip()) < MIN_API_KEY_LENGTH:
            raise ValueError(f"the metrics key needs at least {MIN_API_KEY_LENGTH} characters")
        return key
