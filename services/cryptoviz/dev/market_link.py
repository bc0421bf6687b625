"""The local market behind providers `demo` and `replay`: a MarketServer fed by the simulator or the CSVs.

The feed is moved on by a pacer instead of a free-running clock: a tick advances only once its
period is up, the scraper has fetched it, and the ingester's API shows it stored. A slow
scraper, a provider fault, or an ingester or NATS restart therefore pauses the replay instead
of skipping candles, which is what lets the end-to-end tests and the fault drills count rows
exactly; `--speed` is the pace when nothing is in the way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptoviz.core.api_client import IngesterClient, IngesterError
from cryptoviz.dev.market import CandleRow, CoinRow, CsvReplayFeed, Feed, MarketServer
from cryptoviz.dev.simulator import MarketSimulator

log = logging.getLogger(__name__)

STALL_SECONDS = 30.0
"""A tick some coin of which never gets stored (a provider that keeps sending it invalid) is left after this."""
QUOTES_PATH = "/api/v3/coins/markets"
"""`demo` and `replay` speak CoinGecko's wire format: a scrape has fetched a tick once it asked this
(their candle requests, which follow, do not count)."""


class SimulatorFeed:
    """The `Feed` protocol over `MarketSimulator`: every advance moves the market to the wall clock."""

    def __init__(self, simulator: MarketSimulator) -> None:
        self.simulator = simulator
        self._rows: list[CoinRow] = []
        self._now = datetime.now(UTC)
        self.advance()

    def snapshot(self) -> list[CoinRow]:
        return list(self._rows)

    def now(self) -> datetime:
        return self._now

    def candles(self, symbol: str, interval: int, start: datetime, end: datetime) -> list[CandleRow]:
        return self.simulator.candles(symbol, interval, start, end)

    def advance(self) -> bool:
        quotes = self.simulator.tick(datetime.now(UTC).replace(microsecond=0))
        self._now = quotes[0].timestamp
        self._rows = [
            CoinRow(
                symbol=q.symbol,
                name=q.name,
                price=q.price,
                timestamp=q.timestamp,
                volume_24h=q.volume_24h,
                market_cap=q.market_cap,
                percent_change_1h=q.percent_change_1h,
                percent_change_24h=q.percent_change_24h,
                percent_change_7d=q.percent_change_7d,
                rank=q.rank,
                ids={"coingecko": q.coin_id},
            )
            for q in quotes
        ]
        return True


class LocalMarket:
    """A started MarketServer plus the pacer thread that advances its feed.

    `window` ticks may be fetched but not yet stored: 1 (the default) waits for each tick to be
    stored before the next; more pipelines the replay (the scraper fetches tick N while the
    ingester commits N-1), for soaks. Every tick is still fetched once; a tick lost in flight
    (NATS down with `window` > 1) is only noticed after the stall patience.
    """

    def __init__(
        self,
        feed: Feed,
        period: float,
        *,
        provider: str,
        api_url: str,
        limit: int | None = None,
        window: int = 1,
        on_end: Callable[[LocalMarket], None] | None = None,
    ) -> None:
        self.feed = feed
        self.provider = provider
        self.api_url = api_url
        self.period = period
        self.limit = limit
        self.window = max(1, window)
        self.ticks = 1
        self._on_end = on_end
        self._ingester = IngesterClient(api_url)
        self._stop = threading.Event()
        self.server = MarketServer(feed, keep_requests=1000).start()
        self._thread = threading.Thread(target=self._pace, name="market-pacer", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return self.server.url

    def _requests(self) -> int:
        return self.server.path_counts[QUOTES_PATH]

    def _stored(self, tick: datetime, symbols: set[str]) -> bool:
        """Has the ingester committed this tick for every coin in it? (Its API is the only DuckDB reader.)"""
        try:
            rows = self._ingester.latest(provider=self.provider).data
        except IngesterError:
            return False  # ingester restarting: wait for it, skip nothing
        wanted = tick.replace(microsecond=0)  # wire timestamps carry whole seconds
        return symbols <= {row.symbol for row in rows if row.timestamp is not None and row.timestamp >= wanted}

    def _pace(self) -> None:
        seen_at_advance = self._requests()
        advanced_at = time.monotonic()
        patience = max(STALL_SECONDS, 10 * self.period)
        in_flight: deque[tuple[datetime, set[str], float]] = deque()  # fetched, not yet seen stored
        while not self._stop.wait(min(max(self.period / 4, 0.01), 0.25)):
            # Advance when the period is up, the scraper has fetched this tick, and the ingester
            # has stored all but `window - 1` of the fetched ticks (a repeated replay finds them
            # stored already: the fetch still counts).
            if time.monotonic() - advanced_at < self.period or self._requests() <= seen_at_advance:
                continue
            now = self.feed.now()
            if not in_flight or in_flight[-1][0] != now:
                in_flight.append((now, {row.symbol for row in self.feed.snapshot()}, time.monotonic()))
            if len(in_flight) >= self.window:
                tick, symbols, fetched_at = in_flight[0]
                if not self._stored(tick, symbols):
                    waited = time.monotonic() - fetched_at
                    if waited < patience:
                        continue
                    log.warning("market: moving past %s after %.0fs although not every coin was stored", tick, waited)
                in_flight.popleft()
            if (self.limit is not None and self.ticks >= self.limit) or not self.server.advance():
                self._drain(in_flight, patience)
                if self._on_end:
                    self._on_end(self)
                return
            self.ticks += 1
            seen_at_advance, advanced_at = self._requests(), time.monotonic()

    def _drain(self, in_flight: deque[tuple[datetime, set[str], float]], patience: float) -> None:
        """Wait (up to the patience) until the last fetched tick is stored, so "finished" means stored."""
        if not in_flight:
            return
        tick, symbols, fetched_at = in_flight[-1]
        while not self._stored(tick, symbols) and time.monotonic() - fetched_at < patience:
            if self._stop.wait(0.05):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=6)
        self.server.stop()


def start_market(
    provider: str,
    *,
    period: float,
    api_url: str,
    replay_dir: Path | None = None,
    limit: int | None = None,
    window: int = 1,
    start_prices: dict[str, float] | None = None,
    on_end: Callable[[LocalMarket], None] | None = None,
) -> LocalMarket:
    """A running local market for `demo` (the simulator) or `replay` (CSV candles from `replay_dir`)."""
    if provider == "replay":
        if replay_dir is None:
            raise ValueError("replay needs a directory of CSV candles")
        daily = replay_dir.parent / "1d"  # the shared data's daily candles beside the 5-minute ones
        feed: Feed = CsvReplayFeed(replay_dir, daily=daily if daily.is_dir() else None)
    else:
        feed = SimulatorFeed(MarketSimulator(start_prices=start_prices))
    return LocalMarket(feed, period, provider=provider, api_url=api_url, limit=limit, window=window, on_end=on_end)
