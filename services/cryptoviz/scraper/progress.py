"""Progress of a backfill: a bar on a terminal (tqdm), plain log lines in a container, a summary per coin."""

from __future__ import annotations

import logging
import sys
import time
from typing import IO

from tqdm import tqdm

from cryptoviz.core.quote import format_ts
from cryptoviz.scraper.history import CoinHistory

log = logging.getLogger("cryptoviz.scraper.backfill")

LOG_EVERY = 10.0
"""Seconds between two plain progress lines (without a terminal)."""


class Progress:
    """Coins done of `total`, candles fetched; a tqdm bar when `stream` is a terminal, else a log line now and then."""

    def __init__(self, total: int = 0, stream: IO[str] | None = None, bar: bool | None = None) -> None:
        stream = stream or sys.stderr
        self.total = total
        self.done = 0
        self.candles = 0
        self._logged_at = time.monotonic()
        use_bar = stream.isatty() if bar is None else bar
        self._bar = tqdm(total=total, unit="coin", file=stream, dynamic_ncols=True) if use_bar else None

    def expect(self, coins: int) -> None:
        """More coins to go (a provider's list is known once it answered)."""
        self.total += coins
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def coin(self, provider: str, symbol: str) -> None:
        if self._bar is not None:
            self._bar.set_description(f"{provider} {symbol}")

    def add_candles(self, count: int) -> None:
        self.candles += count
        if self._bar is not None:
            self._bar.set_postfix(candles=f"{self.candles:,}", refresh=False)

    def coin_done(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
        elif time.monotonic() - self._logged_at >= LOG_EVERY or self.done == self.total:
            self._logged_at = time.monotonic()
            log.info("backfill: %d/%d coins, %s candles fetched", self.done, self.total, f"{self.candles:,}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def summary(history: CoinHistory) -> str:
    """One line per coin: how many candles, stored or already there, over which range, and what was left out."""
    text = f"backfill {history.target.symbol} {history.provider}: "
    if history.count:
        first, last = history.first, history.last
        assert first is not None and last is not None
        text += (
            f"{history.count:,} candles ({history.stored:,} new, {history.duplicates:,} duplicates) "
            f"{format_ts(first)} → {format_ts(last)}"
        )
    elif history.asked:
        text += "nothing new"
    else:
        text += "nothing missing"
    if history.rejected:
        text += " rejected=" + ",".join(f"{k}={v}" for k, v in sorted(history.rejected.items()))
    if history.unreached:
        text += f"; no history before {format_ts(history.unreached[-1].end)} at {history.provider}"
    if history.error:
        text += f"; failed: {history.error}"
    return text
