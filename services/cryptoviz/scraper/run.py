"""One scrape (what the CronJob runs) and the local loop, as a library `cryptoviz dev` can reuse.

    result = run_once(Settings(provider="replay", market_base_url=url, nats_url=nats))
    result.exit_code  # 0 ok, 1 provider failure, 2 config error, 3 NATS unavailable

A scrape connects to NATS first (so an unreachable NATS costs no provider credits), fetches each
provider in use, validates every record, and publishes the contract messages. Then it closes the
holes coverage shows in the last GAP_FILL_LOOKBACK from candles, within GAP_FILL_BUDGET seconds
(a stopped scraper's hole is closed by its next run); the local market also sends each coin's
newest candle, so replayed data keeps its open, high, low and close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import requests

from cryptoviz.core.config import ConfigError, ScraperConfig, TrackedCoin, load_config
from cryptoviz.core.contract import encode_scrape
from cryptoviz.core.quote import LOCAL_PROVIDERS, Quote
from cryptoviz.scraper.coverage import CoverageClient
from cryptoviz.scraper.fill import Filler, ProviderHistory, ask_coverage, gap_ranges, targets_of
from cryptoviz.scraper.history import Span
from cryptoviz.scraper.http import USER_AGENT, HttpClient, ProviderError
from cryptoviz.scraper.providers import build_provider, spec
from cryptoviz.scraper.providers.base import Provider, Target
from cryptoviz.scraper.publish import NatsUnavailable, Publisher
from cryptoviz.scraper.settings import ScraperSettings, ScrapeSettings, Settings, checked_key

__all__ = ["EXIT_CODES", "Settings", "run_loop", "run_once", "scrape_once"]

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
LOCAL_CANDLE = timedelta(minutes=5)
"""The local market's candles (replayed CSV rows, the simulator's): each scrape sends the one before its quote."""


def exit_code(config_error: str | None, nats_error: str | None, failed: bool, config_problems: bool) -> int:
    """What a run exits with, worst first: a config it cannot use, NATS, a provider, a config problem met on the way."""
    if config_error:
        return EXIT_CONFIG
    if nats_error:
        return EXIT_NATS
    if failed:
        return EXIT_PROVIDER
    return EXIT_CONFIG if config_problems else EXIT_OK


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
    candles: int = 0
    """Candles fetched to fill holes (and, for the local market, the newest ones)."""
    candles_stored: int = 0
    rate_limited: int = 0
    """Rate-limit answers (HTTP 429/418, CMC 1008–1011, CoinGecko's 429 body, Kraken's rate-limit errors)."""
    rate_limit_wait: float = 0.0
    """Seconds waited out for them (Retry-After, else the backoff) before retrying."""

    def summary(self) -> str:
        rejected = ",".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "0"
        text = (
            f"scrape provider={self.provider} quotes={self.quotes} rejected={rejected} "
            f"messages={self.messages} published={self.stored} duplicates={self.duplicates}"
        )
        if self.candles:
            text += f" candles={self.candles} candles_published={self.candles_stored}"
        if self.rate_limited:
            text += f" rate_limited={self.rate_limited} rate_limit_wait={self.rate_limit_wait:.1f}s"
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
        failed = any(p.failure for p in self.providers)
        return exit_code(self.config_error, self.nats_error, failed, any(p.config_errors for p in self.providers))

    @property
    def quotes(self) -> int:
        return sum(p.quotes for p in self.providers)

    @property
    def error(self) -> str | None:
        """One message for people (the CLI prints it), or None when all went well."""
        problems = [self.config_error, self.nats_error]
        problems += [p.failure for p in self.providers] + [e for p in self.providers for e in p.config_errors]
        return "; ".join(p for p in problems if p) or None


def plan(settings: ScraperSettings, config: ScraperConfig) -> list[tuple[str, list[TrackedCoin]]]:
    """Which providers this run scrapes, each with its tracked coins (empty = its top N).

    `demo`/`replay` scrape every configured coin; otherwise each coin goes to its `providers`
    (default: the config's `provider`, else SCRAPE_PROVIDER, else coinmarketcap with a key / coingecko).
    """
    if settings.provider in LOCAL_PROVIDERS:
        return [(settings.provider, list(config.coins))]
    default = config.provider or settings.default_provider()
    return [(p, config.coins_for(p, default)) for p in config.providers_in_use(default)]


def adapter_for(
    label: str, settings: ScraperSettings, session: requests.Session, *, sleep: Callable[[float], None] = time.sleep
) -> Provider:
    """The provider's adapter with its key header, pacing, timeouts and retries (its waits go through `sleep`)."""
    unit = spec(label)
    headers, secrets = {"Accept": "application/json", "User-Agent": USER_AGENT}, []
    if unit.key is not None:
        key = settings.key(label)
        if unit.key.required and not key:
            file_hint = f" (or {unit.key.file_env})" if unit.key.file_env else ""
            raise ConfigError(f"provider {label} needs {unit.key.env}{file_hint}")
        if key:
            headers[unit.key.header] = checked_key(unit.key.env, key) or ""
            secrets.append(key)
    http = HttpClient(
        label,
        session,
        connect_timeout=min(5.0, settings.scrape_timeout),
        read_timeout=settings.scrape_timeout,
        retries=settings.scrape_retries,
        backoff=settings.scrape_backoff,
        max_retry_after=settings.scrape_max_retry_after,
        min_interval=unit.min_interval,
        headers=headers,
        secrets=secrets,
        sleep=sleep,
    )
    return build_provider(label, settings.base_url(label), http)


async def scrape_once(
    settings: ScrapeSettings, publisher: Publisher | None = None, *, sleep: Callable[[float], None] = time.sleep
) -> ScrapeResult:
    """One scrape of every provider in use; never raises for provider, config or NATS trouble.

    Pass a connected `publisher` to reuse one NATS connection across scrapes (the loop does); `sleep`
    is what the HTTP waits (backoff, Retry-After, pacing) call, for tests that do not want to wait.
    """
    started = time.monotonic()
    result = ScrapeResult()
    session = requests.Session()
    try:
        config = load_config(settings.scraper_config)
        work = [(adapter_for(label, settings, session, sleep=sleep), coins) for label, coins in plan(settings, config)]
    except ConfigError as exc:
        session.close()
        result.config_error = str(exc)
        log.error("scrape: %s", exc)
        return result
    own = publisher is None
    publisher = publisher or Publisher(settings.nats_url, settings.publish_deadline)
    coverage = CoverageClient(settings.ingester_url)
    deadline = started + settings.gap_fill_budget
    try:
        await publisher.connect()
        for adapter, coins in work:
            outcome, quotes = await _scrape_provider(adapter, coins, config.top_n, publisher)
            if quotes:
                await _fill(adapter, quotes, settings, coverage, publisher, deadline, outcome)
            outcome.rate_limited, outcome.rate_limit_wait = (
                adapter.http.rate_limits.answers,
                adapter.http.rate_limits.waited,
            )
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
) -> tuple[ProviderResult, list[Quote]]:
    outcome = ProviderResult(adapter.label)
    try:
        fetched = await asyncio.to_thread(adapter.fetch, coins, top_n)
    except ProviderError as exc:
        outcome.failure = str(exc)
        return outcome, []
    except Exception as exc:  # an answer shaped in a way no adapter foresaw: fail this provider only
        trace = adapter.http.redact("".join(traceback.format_exception(exc)))
        log.error("%s: unexpected error while scraping\n%s", adapter.label, trace.rstrip())
        outcome.failure = f"{adapter.label}: unexpected {type(exc).__name__}: {adapter.http.redact(str(exc))[:200]}"
        return outcome, []
    outcome.quotes = len(fetched.quotes)
    outcome.rejected = dict(fetched.rejected)
    outcome.missing = fetched.missing
    outcome.config_errors = fetched.errors
    if not fetched.quotes:
        if not fetched.errors:
            outcome.failure = f"{adapter.label}: no valid quote in the answer"
        return outcome, []
    messages = encode_scrape(adapter.label, fetched.quotes, datetime.now(UTC))
    report = await publisher.publish(messages)
    outcome.messages, outcome.stored, outcome.duplicates = report.messages, report.stored, report.duplicates
    return outcome, fetched.quotes


async def _fill(
    adapter: Provider,
    quotes: list[Quote],
    settings: ScrapeSettings,
    coverage: CoverageClient,
    publisher: Publisher,
    deadline: float,
    outcome: ProviderResult,
) -> None:
    """Close the holes of the scraped coins (and send the local market's newest candles); never fails the scrape."""
    unit = spec(adapter.label)
    gap_fill = settings.gap_fill_lookback > 0 and not unit.local  # a local market's pacer skips no tick
    if unit.history is None or not (gap_fill or unit.candles_with_quotes):
        return
    targets, now = targets_of(quotes), adapter.clock()
    histories: list[ProviderHistory] = []
    filler = Filler(adapter, unit, publisher, deadline=deadline)
    try:
        if unit.candles_with_quotes:
            histories.append(await filler.run_batch(targets, _newest(quotes), now))
        if gap_fill:
            since = now - timedelta(seconds=settings.gap_fill_lookback)
            stored = await asyncio.to_thread(ask_coverage, coverage, adapter.label, targets, since, now)
            if stored is not None:  # unknown: holes cannot be told from a scrape's own times; the next run asks again
                histories.append(
                    await filler.run(targets, gap_ranges(stored, adapter.label, since, now, past=False), now)
                )
    except Exception as exc:
        if isinstance(exc, NatsUnavailable):
            raise
        log.exception("%s: filling history failed", adapter.label)
    for history in histories:
        outcome.candles += history.candles
        outcome.candles_stored += history.stored
        if history.failure:
            log.warning("%s: holes left for the next run: %s", adapter.label, history.failure)
        for coin in history.coins:
            if coin.error:
                log.warning("%s %s: history: %s", adapter.label, coin.target.symbol, coin.error)


def _newest(quotes: list[Quote]) -> Callable[[Target], list[Span]]:
    """The candle that ended at each coin's quote time: the replayed tick before, the simulator's last full slot.

    A replay tick's own candle is still in progress by the market's clock (the quote is its close),
    so it goes out with the next tick; a repeated candle has the same Nats-Msg-Id and is stored once.
    """
    at = {q.coin_id: q.timestamp for q in quotes}

    def ranges(target: Target) -> list[Span]:
        end = at[target.coin_id]
        return [Span(end - LOCAL_CANDLE, end)]

    return ranges


def run_once(settings: ScrapeSettings, *, sleep: Callable[[float], None] = time.sleep) -> ScrapeResult:
    """Synchronous `scrape_once` for callers without an event loop (the CLI, subprocess users)."""
    return asyncio.run(scrape_once(settings, sleep=sleep))


async def run_loop(settings: ScrapeSettings, stop: asyncio.Event | None = None) -> None:
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
