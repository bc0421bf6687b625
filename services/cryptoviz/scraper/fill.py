"""Filling the history the ingester is missing: used by `cryptoviz backfill` and by every scrape.

For each coin: ask coverage what is stored, fetch candles for the rest (paged, paced, at the finest
interval the provider has for each part), publish them with `encode_candles`, one coin at a time,
so a crash loses at most the coin in hand and the next run resumes from what coverage then shows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter

from cryptoviz.core.contract import MAX_CANDLES_PER_MESSAGE, OutgoingMessage, encode_candles
from cryptoviz.core.quote import Quote
from cryptoviz.scraper.coverage import MIN_GAP, Coverage, CoverageClient, spans
from cryptoviz.scraper.history import CoinHistory, Span, fetch_history, missing_ranges
from cryptoviz.scraper.http import ProviderError
from cryptoviz.scraper.progress import Progress
from cryptoviz.scraper.providers.base import HistoryUnavailable, Provider, ProviderSpec, Target
from cryptoviz.scraper.publish import Publisher

log = logging.getLogger("cryptoviz.scraper.fill")

Ranges = Callable[[Target], list[Span]]
FETCHERS = 2
"""Coins fetched at once from a provider not paced by the clock (more gains nothing on two cores)."""


@dataclass(slots=True)
class ProviderHistory:
    """What one provider's history gave in one run."""

    provider: str
    coins: list[CoinHistory] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    """Symbol → why its history was not fetched (no history at this provider, budget spent, …)."""
    failure: str | None = None
    """What stopped this provider's history (rate limited, unreachable)."""
    config_errors: list[str] = field(default_factory=list)
    """Configuration problems met on the way (an unknown pair, an ambiguous symbol)."""

    @property
    def candles(self) -> int:
        return sum(c.count for c in self.coins)

    @property
    def stored(self) -> int:
        return sum(c.stored for c in self.coins)


def _chunk_sizes(history: CoinHistory) -> list[int]:
    """How many candles each message of `encode_candles` holds (one coin: per interval, chunks of the maximum)."""
    per_interval = Counter(map(attrgetter("interval"), history.candles))
    return [
        min(MAX_CANDLES_PER_MESSAGE, n - start)
        for _, n in sorted(per_interval.items())
        for start in range(0, n, MAX_CANDLES_PER_MESSAGE)
    ]


def targets_of(quotes: list[Quote]) -> list[Target]:
    """One target per coin the provider answered for (its id, and the symbol and name the config gives it)."""
    seen: dict[str, Target] = {}
    for quote in quotes:
        seen.setdefault(quote.coin_id, Target(quote.coin_id, quote.symbol, quote.name))
    return list(seen.values())


def gap_ranges(coverage: Coverage | None, provider: str, since: datetime, now: datetime, *, past: bool) -> Ranges:
    """What coverage shows missing of each target in [since, now] (with `past`: all of it for a series not stored)."""

    def ranges(target: Target) -> list[Span]:
        series = (coverage or {}).get((provider, target.coin_id))
        if series is None:
            return missing_ranges(None, None, (), since, now, MIN_GAP, past=past)
        return missing_ranges(series.first, series.last, spans(series), since, now, MIN_GAP, past=past)

    return ranges


def ask_coverage(
    client: CoverageClient, provider: str, targets: list[Target], since: datetime, now: datetime
) -> Coverage | None:
    return client.fetch([t.symbol for t in targets], provider, since, now)


class Filler:
    """Fetches and publishes the missing candles of one provider's coins.

    `deadline` (monotonic seconds) bounds a scrape's share: coins not started by then are left to the next run.
    """

    def __init__(
        self,
        adapter: Provider,
        spec: ProviderSpec,
        publisher: Publisher,
        *,
        progress: Progress | None = None,
        deadline: float | None = None,
    ) -> None:
        assert spec.history is not None
        self.adapter = adapter
        self.spec = spec
        self.publisher = publisher
        self.progress = progress
        self.deadline = deadline

    async def run(self, targets: list[Target], ranges: Ranges, now: datetime) -> ProviderHistory:
        """Fetch coins in order, publishing each while the next ones are fetched. Raises NatsUnavailable.

        A provider paced by the clock is asked one call at a time; one paced by its own budget
        (Binance's request weight) or the local market is asked for FETCHERS coins at once, which
        keeps both sides busy while the other parses or renders.
        """
        assert self.spec.history is not None
        out = ProviderHistory(self.adapter.label)
        self.adapter.http.min_interval = max(self.adapter.http.min_interval, self.spec.history.min_interval)
        fetchers = FETCHERS if self.spec.history.min_interval == 0 else 1
        adapters = [self.adapter] + [self.adapter.clone() for _ in range(fetchers - 1)]
        free: asyncio.Queue[Provider] = asyncio.Queue()
        for adapter in adapters:
            free.put_nowait(adapter)
        fetching: deque[asyncio.Task[CoinHistory]] = deque()
        publishing: asyncio.Task[None] | None = None

        async def fetch(target: Target, wanted: list[Span]) -> CoinHistory:
            adapter = await free.get()
            try:
                return await asyncio.to_thread(self._fetch, adapter, target, wanted, now)
            finally:
                free.put_nowait(adapter)

        async def settle(task: asyncio.Task[CoinHistory]) -> None:
            nonlocal publishing
            history = await task
            out.coins.append(history)
            if publishing is not None:
                await publishing
            publishing = asyncio.create_task(self._publish(history))

        try:
            for index, target in enumerate(targets):
                if self.deadline is not None and time.monotonic() > self.deadline:
                    self._skip(out, targets[index:], "time budget of this run spent; the next run goes on")
                    break
                wanted = ranges(target)
                if not wanted:
                    out.coins.append(CoinHistory(self.adapter.label, target))
                    self._done()
                    continue
                if self.progress is not None:
                    self.progress.coin(self.adapter.label, target.symbol)
                fetching.append(asyncio.create_task(fetch(target, wanted)))
                while len(fetching) >= fetchers:
                    await settle(fetching.popleft())
            while fetching:
                await settle(fetching.popleft())
            if publishing is not None:
                await publishing
        except ProviderError as exc:  # the provider is done for this run: say it once
            done = {c.target.symbol for c in out.coins}
            if not isinstance(exc, HistoryUnavailable):
                out.failure = str(exc)
            self._skip(out, [t for t in targets if t.symbol not in done], exc.message)
            level = logging.WARNING if out.failure is None else logging.ERROR
            log.log(level, "%s: history stopped: %s", self.adapter.label, exc)
            await asyncio.gather(*fetching, return_exceptions=True)
            if publishing is not None:
                await publishing
        finally:
            for task in [*fetching, *([publishing] if publishing else [])]:
                task.cancel()
            for adapter in adapters[1:]:
                adapter.http.session.close()
        return out

    def _skip(self, out: ProviderHistory, targets: list[Target], why: str) -> None:
        for target in targets:
            out.skipped[target.symbol] = why
            self._done()

    async def run_batch(self, targets: list[Target], ranges: Ranges, now: datetime) -> ProviderHistory:
        """A few candles of many coins (the local market's newest): fetched in one go, published in one go."""
        assert self.spec.history is not None
        out = ProviderHistory(self.adapter.label)

        def fetch_all() -> None:
            for target in targets:
                out.coins.append(self._fetch(self.adapter, target, ranges(target), now))

        try:
            await asyncio.to_thread(fetch_all)
        except ProviderError as exc:
            out.failure = str(exc)
        messages = [self._messages(history) for history in out.coins]
        report = await self.publisher.publish([m for part in messages for m in part])
        for history, part in zip(out.coins, messages, strict=True):
            self._account(history, part, report.duplicate_ids)
        return out

    def _fetch(self, adapter: Provider, target: Target, wanted: list[Span], now: datetime) -> CoinHistory:
        assert self.spec.history is not None
        on_candles = self.progress.add_candles if self.progress is not None else None
        return fetch_history(adapter, target, wanted, now, self.spec.history.per_call, on_candles)

    async def _publish(self, history: CoinHistory) -> None:
        try:
            messages = self._messages(history)
            if messages:
                report = await self.publisher.publish(messages)
                self._account(history, messages, report.duplicate_ids)
        finally:
            self._done()

    def _messages(self, history: CoinHistory) -> list[OutgoingMessage]:
        return encode_candles(self.adapter.label, history.candles, datetime.now(UTC))  # one coin: by interval

    @staticmethod
    def _account(history: CoinHistory, messages: list[OutgoingMessage], duplicate_ids: set[str]) -> None:
        """Candles JetStream already had (whole messages it recognised by Nats-Msg-Id) and those it took."""
        sizes = _chunk_sizes(history)
        history.duplicates = sum(size for m, size in zip(messages, sizes, strict=True) if m.msg_id in duplicate_ids)
        history.stored = history.count - history.duplicates
        history.candles = []  # published: a long backfill keeps only the counts

    def _done(self) -> None:
        if self.progress is not None:
            self.progress.coin_done()
