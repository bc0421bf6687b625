"""`cryptoviz backfill`: every tracked coin's history, BACKFILL_DAYS deep, from its providers' candles.

    result = run_backfill(BackfillSettings(provider="replay", market_base_url=url, nats_url=nats, backfill_days=30))
    result.exit_code  # as `scrape --once`: 0 ok, 1 provider failure, 2 config error, 3 NATS unavailable

Same settings and provider plan as a scrape. For each provider in use: one quote call finds the
coins' ids (and the top N when no coins are configured), coverage tells what the ingester holds,
and only the rest is fetched, so a re-run publishes nothing and a crashed run resumes. A provider
without history for a coin (CoinMarketCap on a free key) says so once; the coin is then filled by
its other configured providers, or skipped with that reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import requests

from cryptoviz.core.config import ConfigError, TrackedCoin, load_config
from cryptoviz.scraper.coverage import MAX_SPAN, CoverageClient
from cryptoviz.scraper.fill import Filler, ProviderHistory, ask_coverage, gap_ranges, targets_of
from cryptoviz.scraper.history import Span
from cryptoviz.scraper.http import ProviderError
from cryptoviz.scraper.progress import Progress, summary
from cryptoviz.scraper.providers import spec
from cryptoviz.scraper.providers.base import Provider
from cryptoviz.scraper.publish import NatsUnavailable, Publisher
from cryptoviz.scraper.run import adapter_for, exit_code, plan
from cryptoviz.scraper.settings import BackfillSettings

log = logging.getLogger("cryptoviz.scraper.backfill")


@dataclass(slots=True)
class BackfillResult:
    providers: list[ProviderHistory] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    """Symbol → why no provider filled it."""
    config_error: str | None = None
    nats_error: str | None = None
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        failed = any(p.failure for p in self.providers) or any(c.error for p in self.providers for c in p.coins)
        return exit_code(self.config_error, self.nats_error, failed, any(p.config_errors for p in self.providers))

    @property
    def candles(self) -> int:
        return sum(p.candles for p in self.providers)

    @property
    def stored(self) -> int:
        return sum(p.stored for p in self.providers)

    @property
    def error(self) -> str | None:
        problems = [self.config_error, self.nats_error, *(p.failure for p in self.providers)]
        problems += [e for p in self.providers for e in p.config_errors]
        problems += [f"{c.target.symbol}: {c.error}" for p in self.providers for c in p.coins if c.error]
        return "; ".join(p for p in problems if p) or None


def _selected(coins: list[TrackedCoin], symbols: tuple[str, ...], unknown: dict[str, str]) -> list[TrackedCoin]:
    if not symbols:
        return coins
    tracked = {c.symbol for c in coins}
    for symbol in symbols:
        if coins and symbol not in tracked:
            unknown[symbol] = "not a tracked coin (BACKFILL_SYMBOLS names only coins of SCRAPER_CONFIG)"
    return [c for c in coins if c.symbol in symbols]


async def backfill_once(
    settings: BackfillSettings, progress: Progress | None = None, *, sleep: Callable[[float], None] = time.sleep
) -> BackfillResult:
    """Backfill every provider in use; never raises for provider, config or NATS trouble (`sleep`: as scrape_once)."""
    started = time.monotonic()
    result = BackfillResult()
    session = requests.Session()
    try:
        config = load_config(settings.scraper_config)
        work: list[tuple[Provider, list[TrackedCoin]]] = []
        for label, coins in plan(settings, config):
            chosen = _selected(coins, settings.backfill_symbols, result.skipped)
            if chosen or not coins:
                work.append((adapter_for(label, settings, session, sleep=sleep), chosen))
    except ConfigError as exc:
        session.close()
        result.config_error = str(exc)
        log.error("backfill: %s", exc)
        return result
    for symbol, reason in result.skipped.items():
        log.warning("backfill %s: skipped: %s", symbol, reason)
    publisher = Publisher(settings.nats_url, settings.publish_deadline)
    coverage = CoverageClient(settings.ingester_url)
    progress = progress or Progress()
    try:
        await publisher.connect()
        for adapter, coins in work:
            outcome = await _backfill_provider(adapter, coins, config.top_n, settings, coverage, publisher, progress)
            result.providers.append(outcome)
            limits = adapter.http.rate_limits
            if limits.answers:
                log.warning(
                    "backfill %s: rate limited %d times, waited %.1fs", adapter.label, limits.answers, limits.waited
                )
    except NatsUnavailable as exc:
        result.nats_error = str(exc)
        log.error("backfill: %s", exc)
    finally:
        progress.close()
        session.close()
        await publisher.close()
    _settle_skipped(result)
    for provider in result.providers:
        for coin in provider.coins:
            log.log(logging.ERROR if coin.error else logging.INFO, summary(coin))
        for symbol, reason in provider.skipped.items():
            log.warning("backfill %s %s: skipped: %s", symbol, provider.provider, reason)
    result.seconds = time.monotonic() - started
    log.info(
        "backfill: %s candles fetched, %s new, in %.1fs%s",
        f"{result.candles:,}",
        f"{result.stored:,}",
        result.seconds,
        f"; skipped {', '.join(sorted(result.skipped))}" if result.skipped else "",
    )
    return result


async def _backfill_provider(
    adapter: Provider,
    coins: list[TrackedCoin],
    top_n: int,
    settings: BackfillSettings,
    coverage: CoverageClient,
    publisher: Publisher,
    progress: Progress,
) -> ProviderHistory:
    unit = spec(adapter.label)
    out = ProviderHistory(adapter.label)
    if unit.history is None:
        out.skipped = {c.symbol: f"{unit.display_name} publishes no history" for c in coins}
        return out
    try:
        fetched = await asyncio.to_thread(adapter.fetch, coins, top_n)
    except ProviderError as exc:
        out.failure = str(exc)
        log.error("backfill: %s", exc)
        return out
    out.config_errors = fetched.errors
    for problem in fetched.errors:
        log.error("backfill: %s", problem)
    targets = targets_of(fetched.quotes)
    for coin in coins:
        if coin.symbol not in {t.symbol for t in targets} | set(fetched.missing):
            why = [e for e in fetched.errors if f"(for {coin.symbol})" in e or f"symbol {coin.symbol} " in e]
            out.skipped[coin.symbol] = why[0] if why else f"{unit.display_name} did not return it"
    if settings.backfill_symbols and not coins:  # the top N: only the symbols asked for
        targets = [t for t in targets if t.symbol in settings.backfill_symbols]
    out.skipped.update({s: f"{unit.display_name} did not return it" for s in fetched.missing})
    progress.expect(len(targets))
    now = adapter.clock()
    since = now - timedelta(days=settings.backfill_days)
    asked = max(since, now - MAX_SPAN)  # beyond what coverage answers for, fetch without asking
    stored = await asyncio.to_thread(ask_coverage, coverage, adapter.label, targets, asked, now)
    known = gap_ranges(stored, adapter.label, asked, now, past=True)
    ranges = (lambda target: [Span(since, asked), *known(target)]) if asked > since else known
    history = await Filler(adapter, unit, publisher, progress=progress).run(targets, ranges, now)
    history.skipped.update(out.skipped)
    history.config_errors = out.config_errors
    return history


def _settle_skipped(result: BackfillResult) -> None:
    """A coin one provider could not fill is fine when another filled it; otherwise it is skipped, with why."""
    filled = {c.target.symbol: p.provider for p in result.providers for c in p.coins if not c.error}
    for provider in result.providers:
        for symbol in list(provider.skipped):
            if symbol in filled:
                log.info("backfill %s: filled by another provider (%s)", symbol, filled[symbol])
                del provider.skipped[symbol]
            else:
                result.skipped.setdefault(symbol, f"{provider.provider}: {provider.skipped[symbol]}")


def run_backfill(settings: BackfillSettings, *, sleep: Callable[[float], None] = time.sleep) -> BackfillResult:
    return asyncio.run(backfill_once(settings, sleep=sleep))
