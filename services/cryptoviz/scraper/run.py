"""One scrape (what the CronJob runs) and the local loop, as a library `cryptoviz dev` can reuse.

    result = run_once(Settings(provider="replay", market_base_url=url, nats_url=nats))
    result.exit_code  # 0 ok, 1 provider failure, 2 config error, 3 NATS unavailable

A scrape connects to NATS first (so an unreachable NATS costs no provider credits), fetches each
provider in use, validates every record, and publishes the contract messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests

from cryptoviz.core.config import ConfigError, ScraperConfig, TrackedCoin, load_config
from cryptoviz.core.contract import encode_scrape
from cryptoviz.core.nats import DEFAULT_NATS_URL
from cryptoviz.core.quote import LOCAL_PROVIDERS
from cryptoviz.scraper.http import USER_AGENT, HttpClient, ProviderError
from cryptoviz.scraper.providers import DEFAULT_BASE_URLS, MIN_INTERVAL, Provider, build_provider
from cryptoviz.scraper.publish import NatsUnavailable, Publisher

log = logging.getLogger("cryptoviz.scraper")

EXIT_OK = 0
EXIT_PROVIDER = 1
EXIT_CONFIG = 2
EXIT_NATS = 3
EXIT_CODES = {
    EXIT_OK: "every provider scraped and every quote acknowledged by JetStream",
    EXIT_PROVIDER: "a provider failed (unreachable, rate limited, key rejected) or returned no valid quote",
    EXIT_CONFIG: "configuration error (bad SCRAPER_CONFIG, missing or malformed key, ambiguous symbol, unknown pair)",
    EXIT_NATS: "NATS/JetStream did not acknowledge the quotes within PUBLISH_DEADLINE",
}


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
    cmc_api_key: str | None = field(default=None, repr=False)
    cmc_api_key_file: str | None = None
    coingecko_api_key: str | None = field(default=None, repr=False)
    cmc_base_url: str = DEFAULT_BASE_URLS["coinmarketcap"]
    coingecko_base_url: str = DEFAULT_BASE_URLS["coingecko"]
    binance_base_url: str = DEFAULT_BASE_URLS["binance"]
    kraken_base_url: str = DEFAULT_BASE_URLS["kraken"]
    coinbase_base_url: str = DEFAULT_BASE_URLS["coinbase"]
    market_base_url: str | None = None
    scraper_config: str | None = None
    scrape_interval: float = 300.0
    publish_deadline: float = 60.0
    scrape_timeout: float = 15.0
    scrape_retries: int = 3
    scrape_backoff: float = 1.0
    scrape_max_retry_after: float = 60.0

    def cmc_key(self) -> str | None:
        """The key from CMC_API_KEY, else from the mounted file CMC_API_KEY_FILE."""
        if self.cmc_api_key:
            return checked_key("CMC_API_KEY", self.cmc_api_key.strip())
        if self.cmc_api_key_file:
            try:
                key = Path(self.cmc_api_key_file).read_text(encoding="utf-8").strip() or None
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or "not UTF-8 text"
                raise ConfigError(f"cannot read CMC_API_KEY_FILE {self.cmc_api_key_file}: {reason}") from None
            return checked_key("CMC_API_KEY_FILE", key)
        return None

    def default_provider(self) -> str:
        if self.provider:
            return self.provider
        return "coinmarketcap" if self.cmc_key() else "coingecko"

    def base_url(self, provider: str) -> str:
        if provider in LOCAL_PROVIDERS:
            if not self.market_base_url:
                raise ConfigError(f"provider {provider} needs MARKET_BASE_URL (the local market server)")
            return self.market_base_url
        return {
            "coinmarketcap": self.cmc_base_url,
            "coingecko": self.coingecko_base_url,
            "binance": self.binance_base_url,
            "kraken": self.kraken_base_url,
            "coinbase": self.coinbase_base_url,
        }[provider]


@dataclass(slots=True)
class ProviderResult:
    provider: str
    quotes: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    config_errors: list[str] = field(default_factory=list)
    failure: str | None = None
    messages: int = 0
    stored: int = 0
    duplicates: int = 0

    def summary(self) -> str:
        rejected = ",".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "0"
        text = (
            f"scrape provider={self.provider} quotes={self.quotes} rejected={rejected} "
            f"messages={self.messages} published={self.stored} duplicates={self.duplicates}"
        )
        if self.missing:
            text += f" missing={','.join(self.missing)}"
        if self.failure:
            text += f" failed: {self.failure}"
        return text


@dataclass(slots=True)
class ScrapeResult:
    providers: list[ProviderResult] = field(default_factory=list)
    config_error: str | None = None
    nats_error: str | None = None
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.config_error:
            return EXIT_CONFIG
        if self.nats_error:
            return EXIT_NATS
        if any(p.failure for p in self.providers):
            return EXIT_PROVIDER
        if any(p.config_errors for p in self.providers):
            return EXIT_CONFIG
        return EXIT_OK

    @property
    def quotes(self) -> int:
        return sum(p.quotes for p in self.providers)

    @property
    def error(self) -> str | None:
        """One message for people (the CLI prints it), or None when all went well."""
        problems = [self.config_error, self.nats_error]
        problems += [p.failure for p in self.providers] + [e for p in self.providers for e in p.config_errors]
        return "; ".join(p for p in problems if p) or None


def plan(settings: Settings, config: ScraperConfig) -> list[tuple[str, list[TrackedCoin]]]:
    """Which providers this run scrapes, each with its tracked coins (empty = its top N).

    `demo`/`replay` scrape every configured coin; otherwise each coin goes to its `providers`
    (default: the config's `provider`, else SCRAPE_PROVIDER, else coinmarketcap with a key / coingecko).
    """
    if settings.provider in LOCAL_PROVIDERS:
        return [(settings.provider, list(config.coins))]
    default = config.provider or settings.default_provider()
    return [(p, config.coins_for(p, default)) for p in config.providers_in_use(default)]


def _adapter(label: str, settings: Settings, session: requests.Session) -> Provider:
    headers, secrets = {"Accept": "application/json", "User-Agent": USER_AGENT}, []
    if label == "coinmarketcap":
        key = settings.cmc_key()
        if not key:
            raise ConfigError("provider coinmarketcap needs CMC_API_KEY (or CMC_API_KEY_FILE)")
        headers["X-CMC_PRO_API_KEY"] = key
        secrets.append(key)
    demo_key = checked_key("COINGECKO_API_KEY", (settings.coingecko_api_key or "").strip())
    if label == "coingecko" and demo_key:
        headers["x-cg-demo-api-key"] = demo_key
        secrets.append(demo_key)
    http = HttpClient(
        label,
        session,
        connect_timeout=min(5.0, settings.scrape_timeout),
        read_timeout=settings.scrape_timeout,
        retries=settings.scrape_retries,
        backoff=settings.scrape_backoff,
        max_retry_after=settings.scrape_max_retry_after,
        min_interval=MIN_INTERVAL.get(label, 0.0),
        headers=headers,
        secrets=secrets,
    )
    return build_provider(label, settings.base_url(label), http)


async def scrape_once(settings: Settings, publisher: Publisher | None = None) -> ScrapeResult:
    """One scrape of every provider in use; never raises for provider, config or NATS trouble.

    Pass a connected `publisher` to reuse one NATS connection across scrapes (the loop does).
    """
    started = time.monotonic()
    result = ScrapeResult()
    session = requests.Session()
    try:
        config = load_config(settings.scraper_config)
        work = [(_adapter(label, settings, session), coins) for label, coins in plan(settings, config)]
    except ConfigError as exc:
        session.close()
        result.config_error = str(exc)
        log.error("scrape: %s", exc)
        return result
    own = publisher is None
    publisher = publisher or Publisher(settings.nats_url, settings.publish_deadline)
    try:
        await publisher.connect()
        for adapter, coins in work:
            outcome = await _scrape_provider(adapter, coins, config.top_n, publisher)
            result.providers.append(outcome)
            log.log(logging.ERROR if outcome.failure else logging.INFO, outcome.summary())
            for problem in outcome.config_errors:
                log.error("scrape: %s", problem)
    except NatsUnavailable as exc:
        result.nats_error = str(exc)
        log.error("scrape: %s", exc)
    finally:
        session.close()
        if own:
            await publisher.close()
    result.seconds = time.monotonic() - started
    return result


async def _scrape_provider(
    adapter: Provider, coins: list[TrackedCoin], top_n: int, publisher: Publisher
) -> ProviderResult:
    outcome = ProviderResult(adapter.label)
    try:
        fetched = await asyncio.to_thread(adapter.fetch, coins, top_n)
    except ProviderError as exc:
        outcome.failure = str(exc)
        return outcome
    except Exception as exc:  # an answer shaped in a way no adapter foresaw: fail this provider only
        trace = adapter.http.redact("".join(traceback.format_exception(exc)))
        log.error("%s: unexpected error while scraping\n%s", adapter.label, trace.rstrip())
        outcome.failure = f"{adapter.label}: unexpected {type(exc).__name__}: {adapter.http.redact(str(exc))[:200]}"
        return outcome
    outcome.quotes = len(fetched.quotes)
    outcome.rejected = dict(fetched.rejected)
    outcome.missing = fetched.missing
    outcome.config_errors = fetched.errors
    if not fetched.quotes:
        if not fetched.errors:
            outcome.failure = f"{adapter.label}: no valid quote in the answer"
        return outcome
    messages = encode_scrape(adapter.label, fetched.quotes, datetime.now(UTC))
    report = await publisher.publish(messages)
    outcome.messages, outcome.stored, outcome.duplicates = report.messages, report.stored, report.duplicates
    return outcome


def run_once(settings: Settings) -> ScrapeResult:
    """Synchronous `scrape_once` for callers without an event loop (the CLI, subprocess users)."""
    return asyncio.run(scrape_once(settings))


async def run_loop(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Scrape every `scrape_interval` seconds (measured start to start) until `stop` is set.

    A failed scrape is logged and the loop carries on: the next one may well succeed.
    """
    stop = stop or asyncio.Event()
    publisher = Publisher(settings.nats_url, settings.publish_deadline)
    loop = asyncio.get_running_loop()
    try:
        while not stop.is_set():
            started = loop.time()
            try:
                result = await scrape_once(settings, publisher)
            except Exception:  # a bug must not stop the loop: the next scrape may well work
                log.exception("scrape: unexpected error")
                result = ScrapeResult(nats_error="unexpected error")
            if result.exit_code == EXIT_NATS:
                await publisher.close()
            wait = max(settings.scrape_interval - (loop.time() - started), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
    finally:
        await publisher.close()
