"""Operator settings from the environment (the operator runs under `kopf run`, so no flags of its own),
declared once: core/settings.py reads them with pydantic-settings and makes the table in docs/operator.md."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from cryptoviz.core.config import parse_duration
from cryptoviz.core.settings import CommaList, ServiceSettings, describe, from_env, setting
from pydantic import ValidationError, field_validator
from pydantic_settings import SettingsConfigDict

from cryptoviz_operator.tenancy import MIN_INTERVAL_SECONDS, Limits

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_NAMESPACE_PATTERN = re.compile(r"^[a-z0-9*?]([-a-z0-9*?]{0,61}[a-z0-9*?])?$")
"""A namespace name, or a glob of one (`team-*`)."""
MAX_SCHEDULE_FLOOR = 86400


class SettingsError(ValueError):
    """A bad environment variable; the message names it."""


def _namespace_default() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


class Settings(ServiceSettings):
    """The operator's environment (the Deployment's env in the chart), read by `Settings.from_env()`.
    Only the docs table shows the descriptions (no --help), so they are Markdown."""

    model_config = SettingsConfigDict(validate_default=True)  # POD_NAMESPACE's default is looked up
    cli = False

    ingester_url: str = setting("http://127.0.0.1:8000", "Ingester API read for `status.price` etc. and fired alerts.")
    configmap_name: str = setting(
        "cryptoviz-scraper-config", "ConfigMap the operator writes (data key `scraper.yaml`)."
    )
    cronjob_name: str = setting("cryptoviz-scraper", "Scraper CronJob whose `spec.schedule` it sets.")
    manage_schedule: bool = setting(False, "`true`: set the CronJob schedule from the smallest `spec.interval`.")
    pod_namespace: str = setting(
        "", "Where the ConfigMap and CronJob live.", shown="the service account's namespace, else `default`"
    )
    status_refresh_interval: float = setting(
        60.0, "Seconds between status refreshes from the ingester (and self-healing re-checks).", gt=0
    )
    backfill_days: int = setting(
        0,
        "Depth of the backfill Job of a TrackedCrypto without `spec.backfill` (the chart: `backfill.days`,"
        " or 0 with `backfill.enabled=false`).",
        ge=0,
        le=365,
    )
    backfill_ttl_seconds: int = setting(86400, "`ttlSecondsAfterFinished` of backfill Jobs.", ge=0, le=90 * 86400)
    backfill_active_deadline_seconds: int = setting(
        3600, "`activeDeadlineSeconds` of backfill Jobs.", ge=60, le=7 * 86400
    )
    backfill_backoff_limit: int = setting(2, "`backoffLimit` of backfill Jobs.", ge=0, le=20)
    backfill_concurrency: int = setting(
        2, "Backfill Jobs running at once at most; the others are `Queued`, oldest TrackedCrypto first.", ge=1, le=100
    )
    allowed_namespaces: CommaList = setting(
        (),
        "Comma-separated namespaces or globs (`team-*`) whose TrackedCryptos are rendered; the others are"
        " `NamespaceNotAllowed` ([Tenancy](#tenancy-the-trust-model)).",
        shown="empty: all watched",
    )
    max_tracked_cryptos: int = setting(
        1000, "TrackedCryptos rendered at most, oldest first; newer ones are `TooManyTrackedCryptos`.", ge=1, le=100_000
    )
    schedule_floor_seconds: int = setting(
        300,
        "The CronJob never runs more often than this (`90s`, `5m`, `1h`, or seconds; 1m … 24h), whatever"
        " `spec.interval` asks.",
        env="SCHEDULE_FLOOR",
        shown="`5m`",
    )

    @field_validator("ingester_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("pod_namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return value or _namespace_default()

    @field_validator("allowed_namespaces")
    @classmethod
    def _namespaces(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        bad = [n for n in names if not _NAMESPACE_PATTERN.match(n)]
        if bad:
            raise ValueError(f"must list namespace names or globs (team-*), not {bad[0]!r}")
        return names

    @field_validator("schedule_floor_seconds", mode="before")
    @classmethod
    def _floor(cls, raw: object) -> int:
        try:
            text = str(raw).strip()
            seconds = int(text) if text.isdigit() else int(parse_duration(text))
        except ValueError:
            raise ValueError(f"must be a duration such as 5m (or seconds), not {raw!r}") from None
        if not MIN_INTERVAL_SECONDS <= seconds <= MAX_SCHEDULE_FLOOR:
            raise ValueError(f"must be between 1m and 24h, not {raw!r}")
        return seconds

    @property
    def limits(self) -> Limits:
        return Limits(
            allowed_namespaces=self.allowed_namespaces,
            max_objects=self.max_tracked_cryptos,
            schedule_floor_seconds=self.schedule_floor_seconds,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """From os.environ (pydantic-settings), or from `env` alone; a bad value is a SettingsError naming it."""
        try:
            return cls() if env is None else from_env(cls, env)
        except ValidationError as exc:
            raise SettingsError(describe(cls, exc)) from None
