"""The settings of `cryptoviz ingest` and `cryptoviz backup`, declared once (core/settings.py makes the
flags, env vars and the tables in docs/ingester.md from them)."""

from __future__ import annotations

from pydantic import SecretStr, model_validator

from cryptoviz.core.nats import DEFAULT_NATS_URL
from cryptoviz.core.settings import ServiceSettings, setting
from cryptoviz.ingester.admin_token import AdminToken
from cryptoviz.ingester.serving import ServerLimits

DEFAULT_LIMITS = ServerLimits()
DEFAULT_INGESTER_URL = "http://127.0.0.1:8000"


class IngestSettings(ServiceSettings):
    """`cryptoviz ingest`: the one process that owns the DuckDB file and serves the API."""

    nats_url: str = setting(DEFAULT_NATS_URL, "NATS server with JetStream (credentials in it are never logged).")
    duckdb_path: str = setting(
        "data/cryptoviz.duckdb", "The DuckDB file (only this process opens it; its directory is created if missing)."
    )
    api_host: str = setting("0.0.0.0", "Address the HTTP API listens on.")
    api_port: int = setting(8000, "Port of the HTTP API.", ge=0, le=65535)
    batch_size: int = setting(10_000, "Most quotes per commit.", ge=1, le=1_000_000)
    candle_batch_size: int = setting(
        50_000, "Most candles per commit (history arrives in bulk: larger batches store it faster).", ge=1, le=1_000_000
    )
    batch_timeout: float = setting(
        0.25, "Seconds a batch waits for more quotes after its first one (fractions allowed).", ge=0, le=60
    )
    retention_days: float = setting(
        30.0, "Raw quotes older than this are rolled up hourly and deleted; 0 keeps them forever.", ge=0
    )
    scraper_config: str | None = setting(
        None, "Scraper config file whose coins[].alerts are evaluated (re-read when it changes)."
    )
    ack_wait: float = setting(
        5.0,
        "Seconds before JetStream redelivers the messages a crashed ingester held (a live one reports them in"
        " progress every ACK_WAIT/3, however long a commit takes).",
        ge=1,
        le=3600,
    )
    metrics_port: int = setting(
        0,
        "Port of the Prometheus /metrics endpoint, apart from the API's (0: not served; chart 9466).",
        env="INGESTER_METRICS_PORT",
        ge=0,
        le=65535,
    )
    api_max_connections: int = setting(
        DEFAULT_LIMITS.max_connections, "Open API connections at most; beyond it requests get 503.", ge=1, le=100_000
    )
    api_header_timeout: float = setting(
        DEFAULT_LIMITS.head_timeout,
        "Seconds to receive a whole request head, from the connection opening or the previous response"
        " (else 408 and the connection is closed).",
        ge=0.1,
        le=300,
    )
    api_keepalive_timeout: float = setting(
        DEFAULT_LIMITS.keepalive_timeout, "Seconds an idle keep-alive connection is kept open.", ge=0.1, le=300
    )
    admin_token: SecretStr | None = setting(
        None,
        "Bearer token of /api/v1/admin/* (at least 16 characters; unset: admin endpoints answer 503). "
        "Better ADMIN_TOKEN_FILE: a flag is visible to other users. Never logged.",
    )
    admin_token_file: str | None = setting(
        None, "File holding the admin token (a mounted Secret), re-read on each admin request."
    )
    backup_timeout: float = setting(
        600.0,
        "Seconds a backup may take, export and transfer, before the ingester stops it.",
        env="API_BACKUP_TIMEOUT",
        ge=1,
    )

    @model_validator(mode="after")
    def _token_usable(self) -> IngestSettings:
        self.admin  # noqa: B018 - a bad token or an unreadable file stops the start with a clear message
        return self

    @property
    def admin(self) -> AdminToken:
        return AdminToken.of(self.admin_token.get_secret_value() if self.admin_token else None, self.admin_token_file)

    @property
    def limits(self) -> ServerLimits:
        return ServerLimits(
            max_connections=self.api_max_connections,
            head_timeout=self.api_header_timeout,
            keepalive_timeout=self.api_keepalive_timeout,
        )


class BackupSettings(ServiceSettings):
    """`cryptoviz backup DIR`: asks the running ingester for a snapshot."""

    ingester_url: str = setting(DEFAULT_INGESTER_URL, "The running ingester's API.")
    timeout: float = setting(600.0, "Seconds to wait for the snapshot.", env="BACKUP_TIMEOUT", ge=1)
    admin_token: SecretStr | None = setting(
        None, "The ingester's admin token (better ADMIN_TOKEN_FILE: a flag is visible to other users)."
    )
    admin_token_file: str | None = setting(None, "File holding the ingester's admin token.")

    @property
    def admin(self) -> AdminToken:
        return AdminToken.of(self.admin_token.get_secret_value() if self.admin_token else None, self.admin_token_file)
