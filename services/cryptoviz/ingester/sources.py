"""Where stored prices come from, as the one union every read (history, coverage, extent) goes through.

Four tables hold prices: raw quotes (`crypto_prices`), hourly rollups of quotes past retention
(`crypto_prices_hourly`), provider candles (`candles`) and hourly rollups of sub-hour candles past
retention (`candles_hourly`). Each row becomes a *sample*: a time span with OHLC, a count and a
`rank` saying which source it is, so overlapping sources can be told apart:

- rank 0: quotes, raw or rolled up. A quote lives in exactly one of the two, so they add up.
- rank 1 + interval: candles of that interval (61 for 1-minute ... 86401 for daily), raw or rolled
  up (a rolled-up hour keeps the interval of the candles it was made of), so they add up too.

Sources of different ranks describe the same market twice (a backfill overlapping live quotes,
a replay sending each tick's quote and candle, 5-minute and hourly candles of one range): `/history`
takes, per bucket, only one: candles no longer than the bucket (the finest first: they carry the
market's real OHLC), else quotes, else coarser candles (queries._PREFERENCE). Nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

LONGEST_CANDLE = timedelta(days=1)
"""A candle may open this long before a window and still reach into it."""

QUOTES_RANK = 0


def candle_rank(column: str = "interval") -> str:
    return f"(1 + {column})"


@dataclass(frozen=True, slots=True)
class Present:
    """Which optional sources hold rows in a window (each absent one is left out of the union)."""

    quote_rollups: bool
    candles: bool
    candle_rollups: bool

    @property
    def ranked(self) -> bool:
        """Whether several ranks can meet in a bucket (else the plain quotes query answers)."""
        return self.candles or self.candle_rollups


def present(cur: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> Present:
    """One cheap query (zone maps) instead of unioning empty tables on every request."""
    hour_start = start.replace(minute=0, second=0, microsecond=0)
    row = cur.execute(
        """SELECT EXISTS (SELECT 1 FROM crypto_prices_hourly WHERE hour >= $h AND hour <= $end),
                  EXISTS (SELECT 1 FROM candles WHERE open_time > $c AND open_time <= $end),
                  EXISTS (SELECT 1 FROM candles_hourly WHERE hour >= $h AND hour <= $end)""",
        {"h": hour_start, "c": start - LONGEST_CANDLE, "end": end},
    ).fetchall()[0]
    return Present(*map(bool, row))


_QUOTES = """
    SELECT provider, coin_id, timestamp AS first_ts, timestamp AS last_ts, price AS open, price AS high,
           price AS low, price AS close, volume_24h, 1 AS n, epoch_us(timestamp) AS us{rank}
    FROM crypto_prices WHERE timestamp >= ? AND timestamp <= ? AND {where}
"""
_QUOTE_ROLLUPS = """
    SELECT provider, coin_id, first_ts, last_ts, open, high, low, close, volume_24h, samples, epoch_us(hour){rank}
    FROM crypto_prices_hourly WHERE hour >= ? AND hour <= ? AND {where}
"""
_CANDLES = f"""
    SELECT provider, coin_id, open_time, open_time, open, high, low, close, NULL::DOUBLE, 1,
           epoch_us(open_time), {candle_rank()}
    FROM candles
    WHERE open_time > ? AND open_time <= ? AND open_time + to_seconds(interval) > ? AND {{where}}
"""
_CANDLE_ROLLUPS = f"""
    SELECT provider, coin_id, first_open, last_open, open, high, low, close, NULL::DOUBLE, candles,
           epoch_us(hour), {candle_rank()}
    FROM candles_hourly WHERE hour >= ? AND hour <= ? AND {{where}}
"""


def samples_sql(where: str, params: Sequence, start: datetime, end: datetime, found: Present) -> tuple[str, list]:
    """The union of samples of the series selected by `where` (with its `params`) in [start, end].

    Columns: provider, coin_id, first_ts, last_ts, open, high, low, close, volume_24h (quotes
    only: a candle's volume covers its own interval, not 24 hours), n (quotes or candles), us
    (epoch µs of the sample's start), and `rank` when `found.ranked`.
    """
    hour_start = start.replace(minute=0, second=0, microsecond=0)
    rank = f", {QUOTES_RANK} AS rank" if found.ranked else ""
    parts = [_QUOTES.format(rank=rank, where=where)]
    bound = [start, end, *params]
    if found.quote_rollups:
        parts.append(_QUOTE_ROLLUPS.format(rank=f", {QUOTES_RANK}" if found.ranked else "", where=where))
        bound += [hour_start, end, *params]
    if found.candles:
        parts.append(_CANDLES.format(where=where))
        bound += [start - LONGEST_CANDLE, end, start, *params]
    if found.candle_rollups:
        parts.append(_CANDLE_ROLLUPS.format(where=where))
        bound += [hour_start, end, *params]
    return "\nUNION ALL\n".join(parts), bound


def data_bounds(
    cur: duckdb.DuckDBPyConnection, where: str, params: Sequence, start: datetime, end: datetime
) -> dict[tuple[str, str], tuple[datetime, datetime]]:
    """Per (provider, coin_id): the first and last sample time in [start, end] over every source,
    i.e. where `/history` can draw points (for spreading them over the part of a window with data)."""
    found = present(cur, start, end)
    union, bound = samples_sql(where, params, start, end, found)
    rows = cur.execute(
        f"""SELECT provider, coin_id, greatest(make_timestamp(min(us)), ?), least(make_timestamp(max(us)), ?)
            FROM ({union}) GROUP BY provider, coin_id""",
        [start, end, *bound],
    ).fetchall()
    return {(provider, coin_id): (first, last) for provider, coin_id, first, last in rows}
