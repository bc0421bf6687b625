"""A local market server speaking the documented wire formats of every provider, quotes and history.

`cryptoviz dev --demo/--replay`, the tests and the benchmarks point the scraper's base URLs at one
`MarketServer`. It serves coin rows and candles from a `Feed` (a CSV replay of the shared market
data, or any object with `snapshot()`/`advance()`/`now()` and optionally `candles()`, e.g. the demo
simulator) in each provider's format, which lives with the provider (`Wire` in
`cryptoviz/scraper/providers/<name>.py`):

- `feed`: the Feed protocol and `CsvReplayFeed` (5-minute files, daily files further back)
- `faults`: `Fault` and its kinds (rate limits, provider errors, broken bodies, bad values, history faults)
- `server`: `MarketServer` (routing to the wire formats, faults, control endpoints)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptoviz.dev.market.coins import KNOWN_COINS, coin_id
from cryptoviz.dev.market.faults import FAULT_KINDS, Fault
from cryptoviz.dev.market.feed import CANDLE, CsvReplayFeed, Feed, HistoryFeed, aggregate
from cryptoviz.dev.market.server import MarketServer, RequestRecord
from cryptoviz.scraper.providers.wire import CandleRow, CoinRow

__all__ = [
    "CANDLE",
    "FAULT_KINDS",
    "KNOWN_COINS",
    "CandleRow",
    "CoinRow",
    "CsvReplayFeed",
    "Fault",
    "Feed",
    "HistoryFeed",
    "MarketServer",
    "RequestRecord",
    "aggregate",
    "coin_id",
    "replay_server",
]


def replay_server(directory: str | Path, daily: str | Path | None = None, **kwargs: Any) -> MarketServer:
    """A (not yet started) server replaying the CSV candles in `directory` (and daily ones in `daily`)."""
    return MarketServer(CsvReplayFeed(directory, daily=daily), **kwargs)
