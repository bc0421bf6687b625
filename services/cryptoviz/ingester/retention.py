"""Retention: raw quotes older than RETENTION_DAYS become hourly OHLC rows, then are deleted.

Both happen in one transaction, so a quote is always either raw or rolled up, never both or
neither, and /history can union the two without double counting. An hour that already has a
rollup row (late quotes arriving for it) is merged, not overwritten. The identities of the
quotes rolled up are kept (`rolled_up_quotes`, three compressed columns), so a redelivery or
replay of one is refused as a duplicate at insert instead of being merged into its hour again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta

import duckdb

from cryptoviz.ingester.store import StorageError, Store

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 3600.0
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


def apply_retention(store: Store, days: float, now: datetime | None = None) -> int:
    """Roll up and delete raw quotes older than `days`; return how many were rolled up."""
    cutoff = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None) - timedelta(days=days)
    with store.write_lock:
        conn = store.conn
        try:
            conn.execute("BEGIN TRANSACTION")
            for statement in filter(str.strip, _ROLLUP_SQL.split(";")):
                conn.execute(statement, {"cutoff": cutoff} if "$cutoff" in statement else None)
            deleted = conn.execute("DELETE FROM crypto_prices WHERE timestamp < ?", [cutoff]).fetchall()[0][0]
            conn.execute("DROP TABLE expired")
            conn.execute("COMMIT")
            if deleted:
                store.generation += 1
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):
                conn.execute("ROLLBACK")
            raise StorageError(f"retention failed: {exc}") from None
    return int(deleted)


class Housekeeper:
    """Runs retention shortly after start and then every hour; RETENTION_DAYS=0 disables it."""

    def __init__(self, store: Store, retention_days: float) -> None:
        self.store = store
        self.retention_days = retention_days

    async def run(self) -> None:
        if self.retention_days <= 0:
            log.info("retention disabled (RETENTION_DAYS=0): raw quotes are kept forever")
            return
        await asyncio.sleep(FIRST_RUN_DELAY)
        while True:
            started = time.monotonic()
            try:
                rolled = await self.store.write(apply_retention, self.store, self.retention_days)
                log.info(
                    "retention: rolled up and deleted %d raw quotes older than %g days",
                    rolled,
                    self.retention_days,
                    extra={"seconds": round(time.monotonic() - started, 3)},
                )
            except StorageError as exc:
                log.error("%s", exc)
            await asyncio.sleep(INTERVAL_SECONDS)
