"""Rows stamped in the future are moved out of the way: into `quarantined_quotes` / `quarantined_candles`.

Ingest refuses times past receive time + MAX_CLOCK_SKEW (core.quote.bounded_ts), but a file can hold
such rows anyway: written before that check existed, or while the host's clock was wrong. One such row
would be its coin's latest quote, `/stats.last_update` and the end of every default chart window for as
long as it is stored, and retention (which deletes what is old) would never remove it. So at start and
then hourly the ingester moves every quote or candle whose time (or receive time) lies past now +
MAX_CLOCK_SKEW into quarantine, with the reason and when, and rebuilds the `coins` rows they touched
from what remains (newest raw quote, else newest candle, else the hourly rollups; a series with nothing
left loses its row). All in one transaction. Quarantined rows are kept for RETENTION_DAYS, for a look.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb

from cryptoviz.core.quote import max_clock_skew
from cryptoviz.ingester.schema import LATEST_FIELDS
from cryptoviz.ingester.store import StorageError, Store

log = logging.getLogger(__name__)

_FUTURE_QUOTE = "(timestamp > $cutoff OR received_at > $cutoff)"
_FUTURE_CANDLE = "(open_time > $cutoff OR received_at > $cutoff)"
_FUTURE_COIN = "(coins.timestamp > $cutoff OR coins.received_at > $cutoff)"
_SERIES = "coins.provider = n.provider AND coins.coin_id = n.coin_id"


def _set(values: dict[str, str]) -> str:
    """SET clause of every latest field: from `values` (column → expression of n), else NULL."""
    return ", ".join(f"{c} = {values.get(c, 'NULL')}" for c in LATEST_FIELDS)


_FROM_QUOTE_ROLLUP = {
    "name": "n.name",
    "symbol": "n.symbol",
    "price": "n.close",
    "timestamp": "n.last_ts",
    "volume_24h": "n.volume_24h",
}
_FROM_CANDLE_ROLLUP = {"name": "n.name", "symbol": "n.symbol", "price": "n.close", "timestamp": "n.last_open"}

_COUNT_SQL = f"""
SELECT (SELECT count(*) FROM crypto_prices WHERE {_FUTURE_QUOTE}),
       (SELECT count(*) FROM candles WHERE {_FUTURE_CANDLE}),
       (SELECT count(*) FROM coins WHERE {_FUTURE_COIN})
"""

_QUARANTINE_SQL = f"""
CREATE OR REPLACE TEMP TABLE future_quotes AS SELECT * FROM crypto_prices WHERE {_FUTURE_QUOTE};
CREATE OR REPLACE TEMP TABLE future_candles AS SELECT * FROM candles WHERE {_FUTURE_CANDLE};
INSERT INTO quarantined_quotes BY NAME
SELECT *, $now AS quarantined_at,
       CASE WHEN timestamp > $cutoff THEN 'future_timestamp' ELSE 'future_received_at' END AS reason
FROM future_quotes;
DELETE FROM crypto_prices WHERE {_FUTURE_QUOTE};
INSERT INTO quarantined_candles BY NAME
SELECT *, $now AS quarantined_at,
       CASE WHEN open_time > $cutoff THEN 'future_open_time' ELSE 'future_received_at' END AS reason
FROM future_candles;
DELETE FROM candles WHERE {_FUTURE_CANDLE};
CREATE OR REPLACE TEMP TABLE touched AS
SELECT provider, coin_id, sum(quotes)::BIGINT AS quotes, sum(candles)::BIGINT AS candles FROM (
    SELECT provider, coin_id, count(*) AS quotes, 0 AS candles FROM future_quotes GROUP BY ALL
    UNION ALL SELECT provider, coin_id, 0, count(*) FROM future_candles GROUP BY ALL
    UNION ALL SELECT provider, coin_id, 0, 0 FROM coins WHERE {_FUTURE_COIN}
) GROUP BY provider, coin_id;
UPDATE coins SET records = coins.records - n.quotes, candles = coalesce(coins.candles, 0) - n.candles
FROM touched n WHERE {_SERIES};
UPDATE coins SET {_set({c: f"n.{c}" for c in LATEST_FIELDS})}
FROM (
    SELECT p.* FROM crypto_prices p SEMI JOIN touched t ON p.provider = t.provider AND p.coin_id = t.coin_id
    QUALIFY row_number() OVER (PARTITION BY p.provider, p.coin_id ORDER BY p.timestamp DESC) = 1
) n WHERE {_SERIES} AND {_FUTURE_COIN};
UPDATE coins SET {_set({c: f"n.{c}" for c in ("name", "symbol", "price", "timestamp", "received_at")})}
FROM (
    SELECT provider, coin_id, arg_max(name, as_of) AS name, arg_max(symbol, as_of) AS symbol,
           arg_max(close, as_of) AS price, max(as_of) AS timestamp, arg_max(received_at, as_of) AS received_at
    FROM (
        SELECT c.*, least(c.open_time + to_seconds(c.interval), c.received_at) AS as_of
        FROM candles c SEMI JOIN touched t ON c.provider = t.provider AND c.coin_id = t.coin_id
    ) GROUP BY provider, coin_id
) n WHERE {_SERIES} AND {_FUTURE_COIN};
UPDATE coins SET {_set(_FROM_QUOTE_ROLLUP)}
FROM (
    SELECT h.* FROM crypto_prices_hourly h SEMI JOIN touched t ON h.provider = t.provider AND h.coin_id = t.coin_id
    QUALIFY row_number() OVER (PARTITION BY h.provider, h.coin_id ORDER BY h.last_ts DESC) = 1
) n WHERE {_SERIES} AND {_FUTURE_COIN};
UPDATE coins SET {_set(_FROM_CANDLE_ROLLUP)}
FROM (
    SELECT h.* FROM candles_hourly h SEMI JOIN touched t ON h.provider = t.provider AND h.coin_id = t.coin_id
    QUALIFY row_number() OVER (PARTITION BY h.provider, h.coin_id ORDER BY h.last_open DESC) = 1
) n WHERE {_SERIES} AND {_FUTURE_COIN};
DELETE FROM coins WHERE {_FUTURE_COIN};
DROP TABLE future_quotes;
DROP TABLE future_candles;
DROP TABLE touched
"""


@dataclass(frozen=True, slots=True)
class Quarantined:
    quotes: int
    candles: int
    coins: int
    """`coins` rows whose latest fields were in the future, before the repair."""

    def __bool__(self) -> bool:
        return bool(self.quotes or self.candles or self.coins)


def _naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def quarantine_future(store: Store, now: datetime | None = None) -> Quarantined:
    """Move rows stamped after `now` (default: the wall clock) + MAX_CLOCK_SKEW into quarantine and
    repair `coins`; one transaction, nothing written when there is nothing to move (the usual case)."""
    now = _naive(now or datetime.now(UTC))
    params = {"cutoff": now + max_clock_skew(), "now": now}
    with store.write_lock:
        conn = store.conn
        try:
            found = Quarantined(*conn.execute(_COUNT_SQL, {"cutoff": params["cutoff"]}).fetchall()[0])
            if not found:
                return found
            conn.execute("BEGIN TRANSACTION")
            for statement in filter(str.strip, _QUARANTINE_SQL.split(";")):
                used = {k: v for k, v in params.items() if f"${k}" in statement}
                conn.execute(statement, used or None)
            conn.execute("COMMIT")
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):
                conn.execute("ROLLBACK")
            raise StorageError(f"quarantining future rows failed: {exc}") from None
        store.generation += 1
    return found


def prune_quarantine(store: Store, days: float, now: datetime | None = None) -> int:
    """Delete quarantined rows older than `days` (RETENTION_DAYS); how many."""
    cutoff = _naive(now or datetime.now(UTC)) - timedelta(days=days)
    with store.write_lock:
        deleted = 0
        for table in ("quarantined_quotes", "quarantined_candles"):
            deleted += store.conn.execute(f"DELETE FROM {table} WHERE quarantined_at < ?", [cutoff]).fetchall()[0][0]
    return deleted


def report(found: Quarantined) -> None:
    if found:
        log.warning(
            "moved %d quotes and %d candles stamped later than now + MAX_CLOCK_SKEW (%gs) into quarantine "
            "(tables quarantined_quotes, quarantined_candles); %d coins repaired",
            found.quotes,
            found.candles,
            max_clock_skew().total_seconds(),
            found.coins,
        )
