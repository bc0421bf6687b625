"""The settings of `cryptoviz notify`, declared once (core/settings.py makes the flags, env vars and the
table in docs/notify.md from them)."""

from __future__ import annotations

from pydantic import SecretStr, field_validator

from cryptoviz.core.config import parse_duration
from cryptoviz.core.nats import DEFAULT_NATS_URL
from cryptoviz.core.settings import ServiceSettings, setting


class NotifySettings(ServiceSettings):
    """`cryptoviz notify`: where alerts go, how hard to try, and the metrics endpoint."""

    nats_url: str = setting(DEFAULT_NATS_URL, "NATS server with JetStream.")
    notify_urls: SecretStr | None = setting(
        None,
        "Apprise URLs for every alert (the target `default`), comma or space separated. They carry tokens:"
        " better NOTIFY_URLS_FILE (a flag is visible to other users); never logged.",
    )
    notify_urls_file: str | None = setting(None, "A file with more such URLs (a mounted Secret).")
    notify_targets_file: str | None = setting(
        None, "YAML `{name: [url, …]}`: targets that coins choose with `notify: [name]`."
    )
    dashboard_url: str | None = setting(
        None, "Base URL of the dashboard for the link in each message (`cryptoviz dev`: the local dashboard)."
    )
    max_attempts: int = setting(
        8,
        "Tries per target before the alert is given up for it (dead-lettered).",
        env="NOTIFY_MAX_ATTEMPTS",
        ge=1,
        le=1000,
    )
    backoff: float = setting(2.0, "Seconds before the first retry (doubling each time).", env="NOTIFY_BACKOFF", ge=0.01)
    max_backoff: float = setting(300.0, "Longest wait between two retries, seconds.", env="NOTIFY_MAX_BACKOFF", ge=0.01)
    rate_limit: float = setting(
        30.0,
        "Messages per minute per target on average, all replicas together (0: no limit).",
        env="NOTIFY_RATE_LIMIT",
        ge=0,
    )
    rate_burst: int = setting(
        10, "Messages a target may get at once before the rate limit applies.", env="NOTIFY_RATE_BURST", ge=1
    )
    timeout: float = setting(
        10.0,
        "Seconds one send may take to connect, and to wait for each answer (a failed send that took that long"
        " is `timed out`, retried).",
        env="NOTIFY_TIMEOUT",
        ge=0.5,
        le=300,
    )
    concurrency: int = setting(
        8,
        "Sends in parallel, each in a worker thread of the notifier (Apprise's own thread pool is not used).",
        env="NOTIFY_CONCURRENCY",
        ge=1,
        le=256,
    )
    replicas: int = setting(
        1,
        "Notifier processes sharing the alerts (the chart's notify.replicas; a pull consumer hands each alert to"
        " one of them). Each keeps 1/N of every target's rate limit and burst, so together they stay within it.",
        env="NOTIFY_REPLICAS",
        ge=1,
        le=64,
    )
    max_age: str = setting(
        "24h",
        "Alerts older than this when first seen are not sent (recorded as failed, `expired`); 0 sends any."
        " Seconds, or 90s, 5m, 1h30m, 1d.",
        env="NOTIFY_MAX_AGE",
        text=True,
    )
    metrics_host: str = setting(
        "0.0.0.0",
        "Address of /metrics, /healthz and /readyz (ready: the consumer is attached).",
        env="NOTIFY_METRICS_HOST",
    )
    metrics_port: int = setting(9465, "Their port.", env="NOTIFY_METRICS_PORT", ge=0, le=65535)

    @field_validator("max_age")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def max_age_seconds(self) -> float:
        return parse_duration(self.max_age)

    @property
    def urls(self) -> str:
        """NOTIFY_URLS itself (for parsing into targets only)."""
        return self.notify_urls.get_secret_value() if self.notify_urls else ""
