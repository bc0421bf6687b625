"""The settings of `cryptoviz scrape` and `cryptoviz backfill`, declared once (core/settings.py makes the
flags, env vars and the tables in docs/scraper.md from them).

The per-provider settings (base URL, key, key file) are declared in each provider's `SPEC` only:
`ProviderSettings` gets one field for each from the registry, named as its env var (`CMC_API_KEY` is
`cmc_api_key`), so adding a provider adds its options, env vars and docs rows by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr, create_model, field_validator
from pydantic_core.core_schema import ValidationInfo

from cryptoviz.core.config import ConfigError
from cryptoviz.core.nats import DEFAULT_NATS_URL
from cryptoviz.core.providers import ALL_PROVIDERS, LOCAL_PROVIDERS
from cryptoviz.core.settings import CommaList, ServiceSettings, setting
from cryptoviz.scraper.providers import default_provider, live_specs, spec

DEFAULT_INGESTER_URL = "http://127.0.0.1:8000"
MIN_INTERVAL_LIVE = 1.0
"""Live providers are never polled faster than once a second (their rate limits are per minute anyway)."""
MIN_INTERVAL_LOCAL = 0.05
"""`demo`/`replay` read the local market server, so fast replays can poll it up to 20 times a second."""


def checked_key(name: str, key: str | None) -> str | None:
    """Refuse a key that cannot go into an HTTP header, without showing it (HTTP libraries quote it in errors)."""
    if key and not (key.isascii() and key.isprintable() and not any(c.isspace() for c in key)):
        raise ConfigError(
            f"{name} contains whitespace, control or non-ASCII characters (e.g. two lines in a key file); "
            "the key is not shown"
        )
    return key


class _ProviderChoice(ServiceSettings):
    """Which provider, and (with the registry's fields below) how to reach each one."""

    provider: Literal[ALL_PROVIDERS] | None = setting(  # type: ignore[valid-type]
        None,
        "Default provider, or the local market (`demo`, `replay`: they read MARKET_BASE_URL); the config"
        " file's `provider` wins over it.",
        env="SCRAPE_PROVIDER",
        flag="--scrape-provider",
        shown="`coinmarketcap` if a CMC key is set, else `coingecko`",
    )

    def _given(self, env: str | None) -> Any:
        """The value of the registry-made field of that env var (None: unset)."""
        value = getattr(self, env.lower()) if env else None
        return value.get_secret_value().strip() or None if isinstance(value, SecretStr) else value

    def key(self, provider: str) -> str | None:
        """The provider's key from its variable, else from its key file; None without one."""
        declared = spec(provider).key
        if declared is None:
            return None
        if key := self._given(declared.env):
            return checked_key(declared.env, key)
        path = self._given(declared.file_env)
        if path and declared.file_env:
            try:
                key = Path(path).read_text(encoding="utf-8").strip() or None
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or "not UTF-8 text"
                raise ConfigError(f"cannot read {declared.file_env} {path}: {reason}") from None
            return checked_key(declared.file_env, key)
        return None

    def default_provider(self) -> str:
        if self.provider:
            return self.provider
        keyed = {s.name for s in live_specs() if s.key and (self._given(s.key.env) or self._given(s.key.file_env))}
        return default_provider(keyed)

    def base_url(self, provider: str) -> str:
        unit = spec(provider)
        if unit.base_url is None:
            if not self.market_base_url:
                raise ConfigError(f"provider {provider} needs MARKET_BASE_URL (the local market server)")
            return str(self.market_base_url)
        return str(self._given(unit.base_url_env) or unit.base_url).rstrip("/")


def _registry_fields() -> dict[str, Any]:
    """Key, key file and base URL of every live provider, from its spec, in registry order."""
    fields: dict[str, Any] = {}
    for unit in live_specs():
        if unit.key:
            fields[unit.key.env.lower()] = (
                SecretStr | None,
                setting(None, f"{unit.key.help} Sent as header `{unit.key.header}`, to its base URL only."),
            )
            if unit.key.file_env:
                held = (
                    f"File holding the {unit.display_name} key (a mounted Secret), read when {unit.key.env} is empty."
                )
                fields[unit.key.file_env.lower()] = (str | None, setting(None, held))
        fields[unit.base_url_env.lower()] = (
            str,
            setting(unit.base_url, f"{unit.display_name} API (another value: a proxy, or the local market in tests)."),
        )
    local = "Local market server (`cryptoviz.dev.market.MarketServer`) of `demo` / `replay`; required for them."
    fields["market_base_url"] = (str | None, setting(None, local))
    return fields


if TYPE_CHECKING:
    ProviderSettings = _ProviderChoice
else:
    ProviderSettings = create_model(
        "ProviderSettings", __base__=_ProviderChoice, __module__=__name__, **_registry_fields()
    )
    ProviderSettings.__doc__ = "The provider settings of scrape and backfill: the choice, then one group per provider."


class ScraperSettings(ProviderSettings):
    """What `cryptoviz scrape` and `cryptoviz backfill` share."""

    nats_url: str = setting(DEFAULT_NATS_URL, "NATS server with JetStream.")
    ingester_url: str = setting(
        DEFAULT_INGESTER_URL,
        "The ingester's API, asked what is stored (`GET /api/v1/coverage`) before history is fetched; unreachable"
        ' means "nothing known" (a warning, never a failure).',
    )
    scraper_config: str | None = setting(
        None, "YAML/JSON config file (check it with `cryptoviz check-config`); without it: the provider's top 20."
    )
    publish_deadline: float = setting(
        60.0, "Seconds to keep (re)connecting to NATS and re-publishing before exit code 3.", ge=0.5
    )
    scrape_timeout: float = setting(15.0, "HTTP read timeout, seconds (connect timeout: min(5, this)).", ge=0.1)
    scrape_retries: int = setting(3, "Retries per HTTP call for transient failures.", ge=0)
    scrape_backoff: float = setting(
        1.0, "First retry delay, seconds; doubles per retry (cap 30 s), ×0.5–1.5 jitter.", ge=0
    )
    scrape_max_retry_after: float = setting(
        60.0,
        "The longest `Retry-After` (seconds) waited out within one run, for every provider; a longer one fails"
        " that provider's run at once (exit 1). 60 s covers the per-minute limits of every provider, and stays"
        " well inside a 5-minute schedule.",
        ge=0,
    )


class ScrapeOnly(ServiceSettings):
    """The settings of `cryptoviz scrape` that `backfill` has not."""

    scrape_interval: float = setting(
        300.0,
        f"Seconds between scrape starts with --loop; at least {MIN_INTERVAL_LIVE:g}, or {MIN_INTERVAL_LOCAL:g} for"
        " `demo` / `replay` (the local market of `cryptoviz dev`; a sub-second value with another provider"
        " exits 2).",
        ge=MIN_INTERVAL_LOCAL,
    )
    gap_fill_lookback: float = setting(
        86_400.0, "Seconds back from now in which each scrape closes holes from candles (0: off).", ge=0
    )
    gap_fill_budget: float = setting(
        60.0, "Most seconds a scrape spends closing them; coins not reached are done by the next runs.", ge=0
    )


class BackfillOnly(ServiceSettings):
    """The settings of `cryptoviz backfill` that `scrape` has not."""

    backfill_days: float = setting(30.0, "How far back to fill, in days (more than 0).", gt=0, le=3650)
    backfill_symbols: CommaList = setting(
        (),
        "Comma-separated tracked symbols to fill (`BTC,ETH`); one not tracked is skipped with a warning.",
        shown="every tracked coin",
    )

    @field_validator("backfill_symbols")
    @classmethod
    def _symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.upper() for s in value))


class ScrapeSettings(ScrapeOnly, ScraperSettings):
    """`cryptoviz scrape`: the shared settings and scrape's own."""

    @field_validator("scrape_interval")
    @classmethod
    def _live_interval(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("provider") not in LOCAL_PROVIDERS and value < MIN_INTERVAL_LIVE:
            raise ValueError(
                f"{value:g} s is below {MIN_INTERVAL_LIVE:g} s, allowed only for SCRAPE_PROVIDER=demo|replay"
            )
        return value


class BackfillSettings(BackfillOnly, ScraperSettings):
    """`cryptoviz backfill`: the shared settings and backfill's own."""


Settings = ScrapeSettings
"""The library's name for a scrape's settings (`run_once(Settings(provider="replay", ...))`)."""


def provider_key_env_names() -> set[str]:
    """The env-var names of every provider's key and key file (`cryptoviz dev` gives them to the scraper only)."""
    return {name for unit in live_specs() if unit.key for name in (unit.key.env, unit.key.file_env) if name}
