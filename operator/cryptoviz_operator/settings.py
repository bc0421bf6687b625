"""Operator settings from the environment (the operator runs under `kopf run`, so no flags of its own)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptoviz.core.config import parse_duration

from cryptoviz_operator.tenancy import MIN_INTERVAL_SECONDS, Limits

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_NAMESPACE_PATTERN = re.compile(r"^[a-z0-9*?]([-a-z0-9*?]{0,61}[a-z0-9*?])?$")
"""A namespace name, or a glob of one (`team-*`)."""


class SettingsError(ValueError):
    """A bad environment variable; the message names it."""


def _namespace_default() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name} must be true or false, not {value!r}")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, not {value}")
    return value


def _namespaces(raw: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    bad = [n for n in names if not _NAMESPACE_PATTERN.match(n)]
    if bad:
        raise SettingsError(f"ALLOWED_NAMESPACES must list namespace names or globs (team-*), not {bad[0]!r}")
    return names


def _floor(raw: str) -> int:
    try:
        seconds = int(raw) if raw.strip().isdigit() else int(parse_duration(raw))
    except ValueError:
        raise SettingsError(f"SCHEDULE_FLOOR must be a duration such as 5m (or seconds), not {raw!r}") from None
    if not MIN_INTERVAL_SECONDS <= seconds <= 86400:
        raise SettingsError(f"SCHEDULE_FLOOR must be between 1m and 24h, not {raw!r}")
    return seconds


@dataclass(frozen=True)
class Settings:
    ingester_url: str = "http://127.0.0.1:8000"
    configmap_name: str = "cryptoviz-scraper-config"
    cronjob_name: str = "cryptoviz-scraper"
    manage_schedule: bool = False
    pod_namespace: str = "default"
    status_refresh_interval: float = 60.0
    backfill_days: int = 0
    """Depth of the backfill Job for a TrackedCrypto without `spec.backfill` (0: none)."""
    backfill_ttl_seconds: int = 86400
    backfill_active_deadline_seconds: int = 3600
    backfill_backoff_limit: int = 2
    backfill_concurrency: int = 2
    """Backfill Jobs running at once at most."""
    allowed_namespaces: tuple[str, ...] = ()
    """Namespaces (or globs) whose TrackedCryptos are rendered; () for every watched namespace."""
    max_tracked_cryptos: int = 1000
    """TrackedCryptos rendered at most, oldest first; newer ones are `TooManyTrackedCryptos`."""
    schedule_floor_seconds: int = 300
    """The shared CronJob never runs more often than this, whatever a `spec.interval` asks."""

    @property
    def limits(self) -> Limits:
        return Limits(
            allowed_namespaces=self.allowed_namespaces,
            max_objects=self.max_tracked_cryptos,
            schedule_floor_seconds=self.schedule_floor_seconds,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        raw_interval = env.get("STATUS_REFRESH_INTERVAL", str(cls.status_refresh_interval))
        try:
            interval = float(raw_interval)
        except ValueError:
            raise SettingsError(f"STATUS_REFRESH_INTERVAL must be seconds, not {raw_interval!r}") from None
        if interval <= 0:
            raise SettingsError("STATUS_REFRESH_INTERVAL must be positive")
        return cls(
            ingester_url=env.get("INGESTER_URL", cls.ingester_url).rstrip("/"),
            configmap_name=env.get("CONFIGMAP_NAME", cls.configmap_name),
            cronjob_name=env.get("CRONJOB_NAME", cls.cronjob_name),
            manage_schedule=_bool("MANAGE_SCHEDULE", env.get("MANAGE_SCHEDULE", "false")),
            pod_namespace=env.get("POD_NAMESPACE") or _namespace_default(),
            status_refresh_interval=interval,
            backfill_days=_int(env, "BACKFILL_DAYS", cls.backfill_days, 0, 365),
            backfill_ttl_seconds=_int(env, "BACKFILL_TTL_SECONDS", cls.backfill_ttl_seconds, 0, 90 * 86400),
            backfill_active_deadline_seconds=_int(
                env, "BACKFILL_ACTIVE_DEADLINE_SECONDS", cls.backfill_active_deadline_seconds, 60, 7 * 86400
            ),
            backfill_backoff_limit=_int(env, "BACKFILL_BACKOFF_LIMIT", cls.backfill_backoff_limit, 0, 20),
            backfill_concurrency=_int(env, "BACKFILL_CONCURRENCY", cls.backfill_concurrency, 1, 100),
            allowed_namespaces=_namespaces(env.get("ALLOWED_NAMESPACES", "")),
            max_tracked_cryptos=_int(env, "MAX_TRACKED_CRYPTOS", cls.max_tracked_cryptos, 1, 100_000),
            schedule_floor_seconds=_floor(env.get("SCHEDULE_FLOOR", str(cls.schedule_floor_seconds))),
        )
