"""The scraper's settings (`cryptoviz scrape` and `cryptoviz backfill`), with the provider ones built from the registry.

Every setting is an env var and the click flag of the same name. The per-provider ones (base URL,
key, key file) are declared once, in each provider's `SPEC`; `provider_fields` maps env-var names
to them, for the CLI and for `cryptoviz dev`'s probe alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptoviz.core.config import ConfigError
from cryptoviz.core.nats import DEFAULT_NATS_URL
from cryptoviz.scraper.providers import default_provider, live_specs, spec

DEFAULT_INGESTER_URL = "http://127.0.0.1:8000"


def checked_key(name: str, key: str | None) -> str | None:
    """Refuse a key that cannot go into an HTTP header, without showing it (HTTP libraries quote it in errors)."""
    if key and not (key.isascii() and key.isprintable() and not any(c.isspace() for c in key)):
        raise ConfigError(
            f"{name} contains whitespace, control or non-ASCII characters (e.g. two lines in a key file); "
            "the key is not shown"
        )
    return key


@dataclass(slots=True)
class Settings:
    """Every scraper setting; the CLI fills it from flags / env vars of the same names."""

    nats_url: str = DEFAULT_NATS_URL
    provider: str | None = None
    api_keys: dict[str, str] = field(default_factory=dict, repr=False)
    """Provider name → key (from the provider's key variable, e.g. CMC_API_KEY)."""
    api_key_files: dict[str, str] = field(default_factory=dict)
    """Provider name → file holding its key (e.g. CMC_API_KEY_FILE), read when the key itself is empty."""
    base_urls: dict[str, str] = field(default_factory=dict)
    """Provider name → base URL, where it differs from the provider's default (e.g. BINANCE_BASE_URL)."""
    market_base_url: str | None = None
    scraper_config: str | None = None
    scrape_interval: float = 300.0
    publish_deadline: float = 60.0
    scrape_timeout: float = 15.0
    scrape_retries: int = 3
    scrape_backoff: float = 1.0
    scrape_max_retry_after: float = 60.0
    ingester_url: str = DEFAULT_INGESTER_URL
    gap_fill_lookback: float = 86_400.0
    """Seconds back from now in which each scrape fills holes from candles (0: off)."""
    gap_fill_budget: float = 60.0
    """Most seconds a scrape spends filling holes; what is left is filled by the next runs."""
    backfill_days: float = 30.0
    backfill_symbols: tuple[str, ...] = ()
    """Only these tracked symbols (`cryptoviz backfill`); empty: all."""

    def key(self, provider: str) -> str | None:
        """The provider's key from its variable, else from its key file; None without one."""
        declared = spec(provider).key
        if declared is None:
            return None
        if self.api_keys.get(provider, "").strip():
            return checked_key(declared.env, self.api_keys[provider].strip())
        path = self.api_key_files.get(provider)
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
        keyed = {
            s.name for s in live_specs() if s.key and (self.api_keys.get(s.name) or self.api_key_files.get(s.name))
        }
        return default_provider(keyed)

    def base_url(self, provider: str) -> str:
        unit = spec(provider)
        if unit.base_url is None:
            if not self.market_base_url:
                raise ConfigError(f"provider {provider} needs MARKET_BASE_URL (the local market server)")
            return self.market_base_url
        return (self.base_urls.get(provider) or unit.base_url).rstrip("/")


def provider_fields(values: Mapping[str, str | None]) -> dict[str, object]:
    """Settings fields from env-var names (any case): base URLs, keys and key files of every provider.

    Unset and empty values are left out, so each provider's default applies.
    """
    upper = {name.upper(): value for name, value in values.items() if value}
    fields: dict[str, dict[str, str]] = {"api_keys": {}, "api_key_files": {}, "base_urls": {}}
    for unit in live_specs():
        if unit.base_url_env in upper:
            fields["base_urls"][unit.name] = str(upper[unit.base_url_env])
        if unit.key and unit.key.env in upper:
            fields["api_keys"][unit.name] = str(upper[unit.key.env])
        if unit.key and unit.key.file_env and unit.key.file_env in upper:
            fields["api_key_files"][unit.name] = str(upper[unit.key.file_env])
    out: dict[str, object] = dict(fields)
    if upper.get("MARKET_BASE_URL"):
        out["market_base_url"] = upper["MARKET_BASE_URL"]
    if upper.get("SCRAPE_PROVIDER"):
        out["provider"] = upper["SCRAPE_PROVIDER"]
    return out


def provider_env_names() -> set[str]:
    """The env-var names `provider_fields` reads (the CLI declares one option for each)."""
    names = {"MARKET_BASE_URL", "SCRAPE_PROVIDER"}
    for unit in live_specs():
        names.add(unit.base_url_env)
        if unit.key:
            names |= {unit.key.env, *([unit.key.file_env] if unit.key.file_env else [])}
    return names


def provider_key_env_names() -> set[str]:
    """The env-var names of every provider's key and key file (`cryptoviz dev` gives them to the scraper only)."""
    return {name for unit in live_specs() if unit.key for name in (unit.key.env, unit.key.file_env) if name}
