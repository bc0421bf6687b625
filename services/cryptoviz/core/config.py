"""The scraper configuration file (`SCRAPER_CONFIG`): what to scrape, from where.

The operator renders it from TrackedCrypto resources; `cryptoviz dev` writes a local one;
people may write it by hand. YAML or JSON, validated here with messages that name the field.
`cryptoviz config-schema` prints its JSON Schema.

    version: 1
    provider: coingecko        # default provider for coins that name none
    top_n: 20                  # tracked when `coins` is empty: the provider's top N by rank
    coins:
      - symbol: BTC
        name: Bitcoin          # optional display name
        ids: {coingecko: bitcoin, coinmarketcap: "1", binance: BTCUSDT}
        providers: [coingecko] # optional; default: [provider]
        alerts:
          - {above: 100000, cooldown: 1h}
          - {change_above: {percent: 5, window: 1h}, cooldown: 2h}
          - {stale_after: 15m}
        notify: [team-telegram]  # named targets of `cryptoviz notify` (NOTIFY_TARGETS_FILE)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cryptoviz.core.providers import PROVIDERS, ProviderName

SYMBOL_PATTERN = r"^[A-Z0-9][A-Z0-9.\-]{0,19}$"
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
TARGET_NAME_PATTERN = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"
"""A notification target's name (NOTIFY_TARGETS_FILE, `notify:`): lower case, digits, - and _."""
ALERT_CONDITIONS: tuple[str, ...] = (
    "above",
    "below",
    "change_24h_above",
    "change_above",
    "change_below",
    "stale_after",
)


class ConfigError(ValueError):
    """An unusable configuration file; the message says which field and why."""


def parse_duration(text: str | int | float) -> float:
    """Seconds from `90`, `"90s"`, `"5m"`, `"1h30m"`, `"1d"`."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    match = _DURATION.match(str(text).strip())
    if not match or not any(match.groups()):
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 5m, 1h30m, 1d")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(days * 86400 + hours * 3600 + minutes * 60 + seconds)


def format_duration(seconds: float | None) -> str:
    """The shortest whole unit: 3600 → `1h`, 5400 → `90m`, 86400 → `1d`, 45 → `45s`."""
    seconds = int(seconds or 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Move(_Strict):
    """A move of at least `percent` within `window` (from the window's low for a rise, its high for a fall)."""

    percent: float = Field(gt=0, le=1_000_000, description="Least move in percent, e.g. 5.")
    window: str = Field(description="Duration the move happens within, e.g. 1h (at least 1m, at most 30d).")

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        seconds = parse_duration(value)
        if not 60 <= seconds <= 30 * 86400:
            raise ValueError("window must be between 1m and 30d")
        return value

    @property
    def window_seconds(self) -> float:
        return parse_duration(self.window)


class Alert(_Strict):
    """Exactly one condition; `cooldown` is the least time between two firings."""

    above: float | None = Field(None, gt=0, description="Fire when the price rises above this (USD).")
    below: float | None = Field(None, gt=0, description="Fire when the price falls below this (USD).")
    change_24h_above: float | None = Field(None, gt=0, description="Fire when |24h change| exceeds this percentage.")
    change_above: Move | None = Field(None, description="Fire when the price rose `percent` within `window`.")
    change_below: Move | None = Field(None, description="Fire when the price fell `percent` within `window`.")
    stale_after: str | None = Field(None, description="Fire when no new quote arrived for this long, e.g. 15m.")
    cooldown: str = Field("1h", description="Duration such as 15m, 1h, 1d.")

    @field_validator("cooldown")
    @classmethod
    def _cooldown(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("stale_after")
    @classmethod
    def _stale_after(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) < 60:
            raise ValueError("stale_after must be at least 1m")
        return value

    @model_validator(mode="after")
    def _one_condition(self) -> Alert:
        set_conditions = [n for n in ALERT_CONDITIONS if getattr(self, n) is not None]
        if len(set_conditions) != 1:
            raise ValueError(f"an alert sets exactly one of {', '.join(ALERT_CONDITIONS)}")
        return self

    @property
    def condition(self) -> str:
        return next(n for n in ALERT_CONDITIONS if getattr(self, n) is not None)

    @property
    def cooldown_seconds(self) -> float:
        return parse_duration(self.cooldown)


class TrackedCoin(_Strict):
    symbol: Annotated[str, Field(pattern=SYMBOL_PATTERN, description="Upper-case ticker, e.g. BTC.")]
    name: str | None = Field(None, max_length=100, description="Display name; defaults to the provider's.")
    ids: dict[ProviderName, str] = Field(
        default_factory=dict, description="Provider's own coin id, to settle symbol collisions."
    )
    providers: list[ProviderName] | None = Field(
        None, min_length=1, description="Providers to scrape this coin from; default: the config's provider."
    )
    alerts: list[Alert] = Field(default_factory=list)
    notify: list[Annotated[str, Field(pattern=TARGET_NAME_PATTERN)]] = Field(
        default_factory=list, description="Named notification targets of this coin's alerts (besides NOTIFY_URLS)."
    )

    @field_validator("ids")
    @classmethod
    def _ids_not_blank(cls, ids: dict[str, str]) -> dict[str, str]:
        for provider, coin_id in ids.items():
            if not str(coin_id).strip():
                raise ValueError(f"ids.{provider} is empty")
        return ids

    def providers_or(self, default: str) -> list[str]:
        return list(self.providers) if self.providers else [default]


class ScraperConfig(_Strict):
    version: Literal[1] = 1
    provider: ProviderName | None = Field(
        None, description="Default provider; when absent, SCRAPE_PROVIDER (or its default) decides."
    )
    top_n: int = Field(20, ge=1, le=5000, description="Coins tracked by rank when `coins` is empty.")
    coins: list[TrackedCoin] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_symbols(self) -> ScraperConfig:
        seen: set[str] = set()
        for coin in self.coins:
            if coin.symbol in seen:
                raise ValueError(f"symbol {coin.symbol} is listed twice")
            seen.add(coin.symbol)
        return self

    def coins_for(self, provider: str, default_provider: str) -> list[TrackedCoin]:
        """The tracked coins that `provider` should scrape."""
        return [c for c in self.coins if provider in c.providers_or(default_provider)]

    def providers_in_use(self, default_provider: str) -> list[str]:
        if not self.coins:
            return [self.provider or default_provider]
        wanted = {p for c in self.coins for p in c.providers_or(self.provider or default_provider)}
        return [p for p in PROVIDERS if p in wanted]


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def parse_config(data: object, source: str = "config") -> ScraperConfig:
    if data is None:
        data = {}
    try:
        return ScraperConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid scraper config {source}:\n{_format_errors(exc)}") from None


def load_config(path: str | Path | None) -> ScraperConfig:
    """Read and validate a YAML or JSON config file; no path means the defaults (top N)."""
    if not path:
        return ScraperConfig()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read scraper config {file}: {exc.strerror}") from None
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"scraper config {file} is not valid YAML/JSON: {exc}") from None
    return parse_config(data, str(file))


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
"""libyaml's emitter when PyYAML has it (2-3x faster for the operator's thousands of coins). It may wrap a
long escaped string differently from the pure-Python one; both read back as the same config."""
_COINS_PER_DUMP = 200
"""libyaml holds the GIL for a whole dump: in chunks, a worker thread rendering 10,000 coins never stalls
the operator's event loop for long."""


def dump_config(config: ScraperConfig) -> str:
    """Deterministic YAML (sorted keys, no nulls) so equal configs are byte-identical.

    Coins are dumped `_COINS_PER_DUMP` at a time and joined: `coins` sorts first and PyYAML writes a
    mapping's block sequence unindented, so the joined text is byte for byte the whole document's
    (tests/test_operator_scale.py checks it on generated configs).
    """
    rest = yaml.dump(
        config.model_dump(mode="json", exclude_none=True, exclude={"coins"}), Dumper=_DUMPER, sort_keys=True
    )
    if not config.coins:
        return "coins: []\n" + rest
    coins = [coin.model_dump(mode="json", exclude_none=True) for coin in config.coins]
    chunks = (coins[start : start + _COINS_PER_DUMP] for start in range(0, len(coins), _COINS_PER_DUMP))
    return "coins:\n" + "".join(yaml.dump(chunk, Dumper=_DUMPER, sort_keys=True) for chunk in chunks) + rest


def config_json_schema() -> dict[str, Any]:
    return ScraperConfig.model_json_schema()
