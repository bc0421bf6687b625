"""What the local market serves: the `Feed` protocol and the CSV replay of the shared market data.

A feed gives the coins now (`snapshot`), moves on (`advance`), tells its clock (`now`) and, if it
has history, its candles (`candles`, up to now: the newest one may still be in progress, as at a
real provider). Candles of any interval are made from the 5-minute ones (daily ones from the daily
files when given), aligned to UTC like the exchanges'.
"""

from __future__ import annotations

import bisect
import csv
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from cryptoviz.dev.market.coins import KNOWN_COINS
from cryptoviz.scraper.providers.wire import CandleRow, CoinRow

CANDLE = timedelta(minutes=5)
DAY = 86_400


class Feed(Protocol):
    """What the server serves: the coins now, a way to move on, and the feed's clock."""

    def snapshot(self) -> list[CoinRow]: ...

    def advance(self) -> bool:
        """Move one tick on; False when there is nothing more (the feed stays on its last tick)."""
        ...

    def now(self) -> datetime: ...


class HistoryFeed(Feed, Protocol):
    def candles(self, symbol: str, interval: int, start: datetime, end: datetime) -> list[CandleRow]:
        """Candles of `symbol` opening in [start, end) and not after now, oldest first."""
        ...


@dataclass(slots=True)
class _Series:
    times: list[datetime]
    opens: list[float]
    highs: list[float]
    lows: list[float]
    closes: list[float]
    volumes: list[float]
    volume_prefix: list[float]
    index: dict[datetime, int]


def _load(file: Path) -> _Series:
    times: list[datetime] = []
    columns: dict[str, list[float]] = {"Open": [], "High": [], "Low": [], "Close": [], "Volume": []}
    with file.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            stamp = datetime.fromisoformat(row["Date"])
            times.append(stamp.astimezone(UTC) if stamp.tzinfo else stamp.replace(tzinfo=UTC))
            for name, values in columns.items():
                values.append(float(row[name] or 0))
    prefix = [0.0]
    for volume in columns["Volume"]:
        prefix.append(prefix[-1] + volume)
    return _Series(
        times,
        columns["Open"],
        columns["High"],
        columns["Low"],
        columns["Close"],
        columns["Volume"],
        prefix,
        {t: i for i, t in enumerate(times)},
    )


def _symbol(file: Path) -> str:
    return file.name.split("-")[0].split("_")[0].upper()


def aggregate(rows: list[CandleRow], interval: int) -> list[CandleRow]:
    """Candles of `interval` seconds (UTC-aligned) from finer ones in time order: first open, extremes, last close."""
    out: list[CandleRow] = []
    bucket_of = None
    group: list[CandleRow] = []
    for row in rows:
        bucket = int(row.open_time.timestamp()) // interval
        if bucket != bucket_of and group:
            out.append(_merge(group, bucket_of, interval))
            group = []
        bucket_of = bucket
        group.append(row)
    if group:
        out.append(_merge(group, bucket_of, interval))
    return out


def _merge(group: list[CandleRow], bucket: int | None, interval: int) -> CandleRow:
    return CandleRow(
        open_time=datetime.fromtimestamp((bucket or 0) * interval, UTC),
        open=group[0].open,
        high=max(r.high for r in group),
        low=min(r.low for r in group),
        close=group[-1].close,
        volume=sum(r.volume for r in group),
    )


class CsvReplayFeed:
    """Replays `<SYMBOL>-USD_5m.csv` candles (Date,Close,High,Low,Open,Volume): one candle per coin per tick.

    A tick is a candle time present in any file; a coin without a candle at that time is absent
    from that tick (the data's real gaps are preserved). Price = Close, timestamp = Date; the
    1h/24h/7d changes and the 24 h volume (sum of the candles' Volume) come from the files
    themselves and are None where the files do not reach back far enough. `daily` (a directory of
    `<SYMBOL>-USD_1d.csv`) gives daily candles further back than the 5-minute files reach.
    """

    def __init__(self, directory: str | Path, *, start: int = 0, daily: str | Path | None = None) -> None:
        self.directory = Path(directory)
        self.series: dict[str, _Series] = {}
        for file in sorted(self.directory.glob("*.csv")):
            self.series[_symbol(file)] = _load(file)
        if not self.series:
            raise FileNotFoundError(f"no *.csv market files in {self.directory}")
        self.daily = {_symbol(f): _load(f) for f in sorted(Path(daily).glob("*.csv"))} if daily else {}
        self.ticks: list[datetime] = sorted({t for s in self.series.values() for t in s.times})
        self.position = min(max(start, 0), len(self.ticks) - 1)

    def now(self) -> datetime:
        return self.ticks[self.position]

    def advance(self) -> bool:
        if self.position + 1 >= len(self.ticks):
            return False
        self.position += 1
        return True

    def snapshot(self) -> list[CoinRow]:
        rows = [row for symbol in self.series if (row := self.row(symbol, self.now())) is not None]
        return sorted(rows, key=lambda r: (r.rank or 10**9, r.symbol))

    def row(self, symbol: str, when: datetime) -> CoinRow | None:
        """The coin row the feed serves for `symbol` at `when`, or None in a gap."""
        series = self.series[symbol]
        i = series.index.get(when)
        if i is None:
            return None
        close = series.closes[i]
        first = bisect.bisect_right(series.times, when - timedelta(hours=24))
        name, rank = KNOWN_COINS.get(symbol, (symbol, None))
        return CoinRow(
            symbol=symbol,
            name=name,
            price=close,
            timestamp=when,
            volume_24h=series.volume_prefix[i + 1] - series.volume_prefix[first],
            percent_change_1h=self._change(series, close, when - timedelta(hours=1)),
            percent_change_24h=self._change(series, close, when - timedelta(hours=24)),
            percent_change_7d=self._change(series, close, when - timedelta(days=7)),
            rank=rank,
        )

    @staticmethod
    def _change(series: _Series, close: float, then: datetime) -> float | None:
        j = series.index.get(then)
        if j is None or series.closes[j] <= 0:
            return None
        return (close / series.closes[j] - 1.0) * 100.0

    def candles(self, symbol: str, interval: int, start: datetime, end: datetime) -> list[CandleRow]:
        """The replay's candles up to the current tick (whose own candle is the one in progress)."""
        until = min(end, self.now() + timedelta(seconds=1))
        if until <= start or symbol not in self.series:
            return []
        if interval >= DAY and symbol in self.daily:
            return self._daily(symbol, interval, start, until)
        if interval < 300 or interval % 300:
            return []
        first = datetime.fromtimestamp(int(start.timestamp()) // interval * interval, UTC)
        rows = _rows(self.series[symbol], first, until)
        return [c for c in (rows if interval == 300 else aggregate(rows, interval)) if c.open_time >= start]

    def _daily(self, symbol: str, interval: int, start: datetime, until: datetime) -> list[CandleRow]:
        """Daily files for finished days; today (in progress) from the 5-minute candles so far."""
        today = datetime.fromtimestamp(int(self.now().timestamp()) // DAY * DAY, UTC)
        first = datetime.fromtimestamp(int(start.timestamp()) // interval * interval, UTC)
        days = [c for c in _rows(self.daily[symbol], first, min(until, today)) if c.open_time < today]
        if until > today:
            days += aggregate(_rows(self.series[symbol], today, until), DAY)
        rows = days if interval == DAY else aggregate(days, interval)
        return [c for c in rows if c.open_time >= start]


def _rows(series: _Series, start: datetime, end: datetime) -> list[CandleRow]:
    lo, hi = bisect.bisect_left(series.times, start), bisect.bisect_left(series.times, end)
    return [
        CandleRow(
            series.times[i], series.opens[i], series.highs[i], series.lows[i], series.closes[i], series.volumes[i]
        )
        for i in range(lo, hi)
    ]
