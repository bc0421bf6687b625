"""The local market behind providers `demo` and `replay`: a MarketServer fed by the simulator or the CSVs.

The feed is moved on by a pacer instead of a free-running clock: a tick advances only after
the scraper has fetched it *and* come back for more (its loop is sequential, so the earlier
scrape has finished publishing by then). A slow or restarted scraper therefore never skips a
candle, which is what lets the end-to-end tests and the fault drills count rows exactly.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptoviz.dev.market import CoinRow, CsvReplayFeed, Feed, MarketServer, ids_for
from cryptoviz.dev.simulator import MarketSimulator

log = logging.getLogger(__name__)

SCRAPE_PROVIDER_PATH = "coingecko"
"""`demo` and `replay` speak CoinGecko's wire format, so their requests are recorded under it."""


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

    def advance(self) -> bool:
        quotes = self.simulator.tick()
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
                ids=ids_for(q.symbol, q.coin_id),
            )
            for q in quotes
        ]
        return True


class LocalMarket:
    """A started MarketServer plus the pacer thread that advances its feed."""

    def __init__(self, feed: Feed, period: float, *, limit: int | None = None, on_end=None) -> None:
        self.feed = feed
        self.server = MarketServer(feed).start()
        self.period = period
        self.limit = limit
        self.ticks = 1
        self.finished = False
        self._on_end = on_end
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pace, name="market-pacer", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return self.server.url

    def _requests(self) -> int:
        return len(self.server.requests_for(SCRAPE_PROVIDER_PATH))

    def _pace(self) -> None:
        seen_at_advance = self._requests()
        advanced_at = time.monotonic()
        while not self._stop.wait(min(self.period / 4, 0.25)):
            if self.limit is not None and self.ticks >= self.limit:
                self._finish()
                return
            # Two requests since the last advance: the first fetched this tick, the second
            # proves that scrape finished (published or failed and retried).
            if time.monotonic() - advanced_at < self.period or self._requests() < seen_at_advance + 2:
                continue
            if not self.server.advance():
                self._finish()
                return
            self.ticks += 1
            seen_at_advance, advanced_at = self._requests(), time.monotonic()

    def _finish(self) -> None:
        self.finished = True
        if self._on_end:
            self._on_end(self)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.server.stop()


def start_market(
    provider: str,
    *,
    period: float,
    replay_dir: Path | None = None,
    limit: int | None = None,
    start_prices: dict[str, float] | None = None,
    on_end=None,
) -> LocalMarket:
    """A running local market for `demo` (the simulator) or `replay` (CSV candles from `replay_dir`)."""
    if provider == "replay":
        assert replay_dir is not None
        return LocalMarket(CsvReplayFeed(replay_dir), period, limit=limit, on_end=on_end)
    return LocalMarket(SimulatorFeed(MarketSimulator(start_prices=start_prices)), period, on_end=on_end)
