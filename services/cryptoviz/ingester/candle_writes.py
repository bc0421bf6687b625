"""Storing a batch of candles exactly once, inside the caller's transaction.

A candle's identity is (provider, coin_id, interval, open_time). Like quotes (see store.py), a
batch is de-duplicated within itself and left-joined against the candles already stored in its
open-time range (zone maps prune the rest), raw or rolled up by retention (`rolled_up_candles`):
new identities are inserted, known ones are duplicates. One exception keeps history right: a
candle received before it closed (a provider's still-forming newest candle) is *provisional*, and
a later-received delivery of the same identity replaces its values; a closed candle is final.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import duckdb

from cryptoviz.ingester.rejections import Rejection
from cryptoviz.ingester.schema import CANDLE_COLUMNS, LATEST_FIELDS

IDENTITY = ("provider", "coin_id", "interval", "open_time")
_VALUES = tuple(c for c, _ in CANDLE_COLUMNS if c not in IDENTITY)
_ON_IDENTITY = " AND ".join(f"i.{c} = s.{c}" for c in IDENTITY)

_MATCH_SQL = f"""
CREATE OR REPLACE TEMP TABLE candle_batch AS
SELECT i.*, s.open_time IS NOT NULL AS stored,
       coalesce(s.provisional AND i.received_at > s.received_at, false) AS replaces
FROM (
    SELECT * FROM incoming_candles
    QUALIFY row_number() OVER (PARTITION BY {", ".join(IDENTITY)} ORDER BY received_at DESC) = 1
) i
LEFT JOIN (
    SELECT {", ".join(IDENTITY)}, received_at, received_at < open_time + to_seconds(interval) AS provisional
    FROM candles WHERE open_time BETWEEN $lo AND $hi AND coin_id IN (SELECT DISTINCT coin_id FROM incoming_candles)
    UNION ALL
    SELECT {", ".join(IDENTITY)}, NULL, false FROM rolled_up_candles
    WHERE open_time BETWEEN $lo AND $hi AND coin_id IN (SELECT DISTINCT coin_id FROM incoming_candles)
) s ON {_ON_IDENTITY}
"""

_INSERT_SQL = f"""
INSERT INTO candles BY NAME
SELECT {", ".join(c for c, _ in CANDLE_COLUMNS)} FROM candle_batch WHERE NOT stored
"""

_REPLACE_SQL = f"""
UPDATE candles SET {", ".join(f"{c} = i.{c}" for c in _VALUES)}
FROM (SELECT * FROM candle_batch WHERE replaces) i
WHERE candles.open_time BETWEEN $lo AND $hi AND {_ON_IDENTITY.replace("s.", "candles.")}
"""

_AS_OF = "least(open_time + to_seconds(interval), received_at)"
"""The time a candle's close price stands for: its close, or when it was received if still forming."""

_FROM_CANDLE = {
    "name": "name",
    "symbol": "symbol",
    "price": "close",
    "timestamp": "as_of",
    "received_at": "received_at",
}
_TAKE = "(coins.records = 0 AND excluded.timestamp >= coins.timestamp)"
_LATEST_FROM_CANDLES = ",\n    ".join(
    f"{c} = CASE WHEN {_TAKE} THEN {'excluded.' + c if c in _FROM_CANDLE else 'NULL'} ELSE coins.{c} END"
    for c in LATEST_FIELDS
    if c != "timestamp"
)

_UPSERT_COINS_SQL = f"""
INSERT INTO coins BY NAME
SELECT provider, coin_id, 0 AS records, min(open_time) AS first_timestamp,
       count(*) FILTER (WHERE NOT stored) AS candles,
       {", ".join(f"arg_max({source}, as_of) AS {target}" for target, source in _FROM_CANDLE.items())}
FROM (SELECT *, {_AS_OF} AS as_of FROM candle_batch WHERE NOT stored OR replaces)
GROUP BY provider, coin_id
ON CONFLICT (provider, coin_id) DO UPDATE SET
    candles = coalesce(coins.candles, 0) + excluded.candles,
    first_timestamp = least(coins.first_timestamp, excluded.first_timestamp),
    {_LATEST_FROM_CANDLES},
    timestamp = CASE WHEN {_TAKE} THEN excluded.timestamp ELSE coins.timestamp END
"""
"""A series known only from candles gets a `coins` row (so it is listed and selectable); its latest
price is its newest candle's close only while it has no raw quote: live quotes own the latest fields."""

_SUMMARY_SQL = f"""
SELECT count(*) FILTER (WHERE NOT stored), count(*) FILTER (WHERE replaces),
       list(DISTINCT symbol ORDER BY symbol) FILTER (WHERE NOT stored OR replaces),
       max({_AS_OF}) FILTER (WHERE NOT stored OR replaces)
FROM candle_batch
"""


@dataclass(slots=True)
class CandleCommit:
    """What one committed batch of candles changed."""

    received: int
    inserted: int
    replaced: int
    duplicates: int
    symbols: list[str] = field(default_factory=list)
    last_update: datetime | None = None
    rejections: list[Rejection] = field(default_factory=list)
    """The batch's rejections counted for the first time (set by the store)."""


def insert_candles(conn: duckdb.DuckDBPyConnection, received: int) -> CandleCommit:
    """Store the registered `incoming_candles` table (in the open transaction)."""
    if not received:
        return CandleCommit(0, 0, 0, 0)
    lo, hi = conn.execute("SELECT min(open_time), max(open_time) FROM incoming_candles").fetchall()[0]
    bounds = {"lo": lo, "hi": hi}
    conn.execute(_MATCH_SQL, bounds)
    inserted, replaced, symbols, last_update = conn.execute(_SUMMARY_SQL).fetchall()[0]
    if inserted:
        conn.execute(_INSERT_SQL)
    if replaced:
        conn.execute(_REPLACE_SQL, bounds)
    if inserted or replaced:
        conn.execute(_UPSERT_COINS_SQL)
    conn.execute("DROP TABLE candle_batch")
    return CandleCommit(
        received=received,
        inserted=inserted,
        replaced=replaced,
        duplicates=received - inserted - replaced,
        symbols=list(symbols or []),
        last_update=last_update,
    )
