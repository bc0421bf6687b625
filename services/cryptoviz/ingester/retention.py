"""Retention: raw quotes older than RETENTION_DAYS become hourly OHLC rows, then are deleted.

Both happen in one transaction, so a quote is always either raw or rolled up, never both or
neither, and /history can union the two without double counting. An hour that already has a
rollup row (late quotes arriving for it) is merged, not overwritten. The identities of the
quotes rolled up are kept (`rolled_up_quotes`, three compressed columns), so a redelivery or
replay of one is refused as a duplicate at insert instead of being merged into its hour again.

Candles shorter than an hour (1m, 5m, 15m) are rolled up the same way, in their own transaction:
into `candles_hourly` (merged with an existing row of the hour), their identities into
`rolled_up_candles`, then deleted. Where an hour holds candles of several such intervals, only the
finest is rolled up (the others say the same thing coarser; adding them would count volume twice).
Hourly and longer candles are kept as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta

import duckdb

from cryptoviz.ingester.quarantine import prune_quarantine, quarantine_future, report
from cryptoviz.ingester.rejections import prune_counted
from cryptoviz.ingester.store import StorageError, Store

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 3600.0
HOUR = 3600
FIRST_RUN_DELAY = 30.0

_ROLLUP_SQL = """
CREATE OR REPLACE TEMP TABLE expired AS
SELECT provider, coin_id, date_trunc('hour', timestamp) AS hour,
       arg_max(symbol, timestamp) AS symbol, arg_max(name, timestamp) AS name,
       arg_min(price, timestamp) AS open, max(price) AS high, min(price) AS low,
       arg_max(price, timestamp) AS close, arg_max(volume_24h, timestamp) AS volume_24h,
       count(*) AS samples, min(timestamp) AS first_ts, max(timestamp) AS last_ts
FROM crypto_prices WHERE timestamp < $cutoff
GROUP BY provider, coin_id, hour;

INSERT INTO crypto_prices_hourly BY NAME
SELECT provider, coin_id, hour,
       arg_max(symbol, last_ts) AS symbol, arg_max(name, last_ts) AS name,
       arg_min(open, first_ts) AS open, max(high) AS high, min(low) AS low,
       arg_max(close, last_ts) AS close, arg_max(volume_24h, last_ts) AS volume_24h,
       sum(samples)::BIGINT AS samples, min(first_ts) AS first_ts, max(last_ts) AS last_ts
FROM (
    SELECT * FROM expired
    UNION ALL BY NAME
    SELECT h.* FROM crypto_prices_hourly h SEMI JOIN expired e
        ON h.provider = e.provider AND h.coin_id = e.coin_id AND h.hour = e.hour
)
GROUP BY provider, coin_id, hour
ON CONFLICT (provider, coin_id, hour) DO UPDATE SET
    symbol = excluded.symbol, name = excluded.name, open = excluded.open, high = excluded.high,
    low = excluded.low, close = excluded.close, volume_24h = excluded.volume_24h,
    samples = excluded.samples, first_ts = excluded.first_ts, last_ts = excluded.last_ts;

INSERT INTO rolled_up_quotes
SELECT provider, coin_id, timestamp FROM crypto_prices WHERE timestamp < $cutoff ORDER BY timestamp;

UPDATE coins SET records = coins.records - gone.n
FROM (SELECT provider, coin_id, sum(samples) AS n FROM expired GROUP BY provider, coin_id) gone
WHERE coins.provider = gone.provider AND coins.coin_id = gone.coin_id;
"""


_EXPIRED_CANDLES = f"candles WHERE interval < {HOUR} AND open_time < $cutoff"

_CANDLE_ROLLUP_SQL = f"""
CREATE OR REPLACE TEMP TABLE expired_candles AS
SELECT provider, coin_id, date_trunc('hour', open_time) AS hour,
       arg_max(symbol, open_time) AS symbol, arg_max(name, open_time) AS name,
       arg_min(open, open_time) AS open, max(high) AS high, min(low) AS low,
       arg_max(close, open_time) AS close, sum(volume) AS volume,
       count(*) AS candles, min(open_time) AS first_open, max(open_time) AS last_open,
       min(interval) AS interval
FROM (
    SELECT * FROM {_EXPIRED_CANDLES}
    QUALIFY interval = min(interval) OVER (PARTITION BY provider, coin_id, date_trunc('hour', open_time))
)
GROUP BY provider, coin_id, hour;

INSERT INTO candles_hourly BY NAME
SELECT provider, coin_id, hour,
       arg_max(symbol, last_open) AS symbol, arg_max(name, last_open) AS name,
       arg_min(open, first_open) AS open, max(high) AS high, min(low) AS low,
       arg_max(close, last_open) AS close, sum(volume) AS volume,
       sum(candles)::BIGINT AS candles, min(first_open) AS first_open, max(last_open) AS last_open,
       min(interval) AS interval
FROM (
    SELECT * FROM expired_candles
    UNION ALL BY NAME
    SELECT h.* FROM candles_hourly h SEMI JOIN expired_candles e
        ON h.provider = e.provider AND h.coin_id = e.coin_id AND h.hour = e.hour
)
GROUP BY provider, coin_id, hour
ON CONFLICT (provider, coin_id, hour) DO UPDATE SET
    symbol = excluded.symbol, name = excluded.name, open = excluded.open, high = excluded.high,
    low = excluded.low, close = excluded.close, volume = excluded.volume,
    candles = excluded.candles, first_open = excluded.first_open, last_open = excluded.last_open,
    interval = excluded.interval;

INSERT INTO rolled_up_candles
SELECT provider, coin_id, interval, open_time FROM {_EXPIRED_CANDLES} ORDER BY open_time;

UPDATE coins SET candles = coins.candles - gone.n
FROM (SELECT provider, coin_id, count(*) AS n FROM {_EXPIRED_CANDLES} GROUP BY provider, coin_id) gone
WHERE coins.provider = gone.provider AND coins.coin_id = gone.coin_id;
"""


def _cutoff(days: float, now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None) - timedelta(days=days)


def _roll_up(store: Store, script: str, delete: str, temp: str, cutoff: datetime) -> int:
    """Run a rollup script and the delete of what it rolled up in one transaction; rows deleted."""
    with store.write_lock:
        conn = store.conn
        try:
            conn.execute("BEGIN TRANSACTION")
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement, {"cutoff": cutoff} if "$cutoff" in statement else None)
            deleted = conn.execute(delete, {"cutoff": cutoff}).fetchall()[0][0]
            conn.execute(f"DROP TABLE {temp}")
            conn.execute("COMMIT")
            if deleted:
                store.generation += 1
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):
                conn.execute("ROLLBACK")
            raise StorageError(f"retention failed: {exc}") from None
    return int(deleted)


def apply_retention(store: Store, days: float, now: datetime | None = None) -> int:
    """Roll up and delete raw quotes older than `days`; return how many were rolled up."""
    delete = "DELETE FROM crypto_prices WHERE timestamp < $cutoff"
    return _roll_up(store, _ROLLUP_SQL, delete, "expired", _cutoff(days, now))


def apply_candle_retention(store: Store, days: float, now: datetime | None = None) -> int:
    """Roll up and delete candles shorter than an hour opened before `days` ago; how many."""
    return _roll_up(store, _CANDLE_ROLLUP_SQL, f"DELETE FROM {_EXPIRED_CANDLES}", "expired_candles", _cutoff(days, now))


class Housekeeper:
    """Every hour (the first time shortly after start): rows stamped in the future go to quarantine
    (quarantine.py), the keys of counted rejections past the stream's MAX_AGE are forgotten
    (rejections.py), then retention runs, unless RETENTION_DAYS=0 keeps raw data forever."""

    def __init__(self, store: Store, retention_days: float) -> None:
        self.store = store
        self.retention_days = retention_days

    async def run(self) -> None:
        if self.retention_days <= 0:
            log.info("retention disabled (RETENTION_DAYS=0): raw quotes are kept forever")
        await asyncio.sleep(FIRST_RUN_DELAY)
        while True:
            try:
                report(await self.store.write(quarantine_future, self.store))
                await self.store.write(self._forget_counted)
                if self.retention_days > 0:
                    await self._retention()
            except StorageError as exc:
                log.error("%s", exc)
            await asyncio.sleep(INTERVAL_SECONDS)

    def _forget_counted(self) -> None:
        with self.store.write_lock:
            try:
                prune_counted(self.store.conn)
            except duckdb.Error as exc:
                raise StorageError(f"pruning counted_rejections failed: {exc}") from None

    async def _retention(self) -> None:
        started = time.monotonic()
        rolled = await self.store.write(apply_retention, self.store, self.retention_days)
        candles = await self.store.write(apply_candle_retention, self.store, self.retention_days)
        await self.store.write(prune_quarantine, self.store, self.retention_days)
        log.info(
            "retention: rolled up and deleted %d raw quotes and %d sub-hour candles older than %g days",
            rolled,
            candles,
            self.retention_days,
            extra={"seconds": round(time.monotonic() - started, 3)},
        )
