"""DuckDB storage: one writer connection, batch inserts with de-duplication, and read cursors.

Only the ingester process opens the file. Writes are serialised on one connection (called
from one worker thread); every read takes its own `cursor()`, i.e. its own MVCC snapshot, so
reads never see half a batch and never block the writer for long.

Exactly-once: a quote's identity is (provider, coin_id, timestamp). Each batch is inserted
with an anti-join against the rows already stored in the batch's timestamp range (zone maps
prune everything else), raw or already rolled up by retention (`rolled_up_quotes`), in the
same transaction as the insert, and the messages are acked
only after the commit. So a redelivery after a crash, a duplicate publish outside JetStream's
duplicate window, or a replay stores nothing twice, without a 50M-entry unique index. Candles
(identity: provider, coin_id, interval, open_time) are stored the same way (candle_writes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from cryptoviz.core.quote import Quote
from cryptoviz.ingester.candle_writes import CandleCommit, insert_candles
from cryptoviz.ingester.rejections import Rejection, count_once
from cryptoviz.ingester.schema import ALERT_COLUMNS, CANDLE_COLUMNS, LATEST_FIELDS, QUOTE_COLUMNS, migrate

log = logging.getLogger(__name__)
T = TypeVar("T")

_ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "DOUBLE": pa.float64(),
    "TIMESTAMP": pa.timestamp("us"),
    "INTEGER": pa.int32(),
    "VARCHAR[]": pa.list_(pa.string()),
}
ARROW_SCHEMA = pa.schema([(name, _ARROW_TYPES[sql_type]) for name, sql_type in QUOTE_COLUMNS])
CANDLE_ARROW_SCHEMA = pa.schema([(name, _ARROW_TYPES[sql_type]) for name, sql_type in CANDLE_COLUMNS])
ALERTS_SCHEMA = pa.schema([(name, _ARROW_TYPES[sql_type]) for name, sql_type in ALERT_COLUMNS])


class StorageError(RuntimeError):
    """The database cannot be opened or written; the message says where and why."""


def naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def quotes_to_arrow(quotes: list[Quote]) -> pa.Table:
    """Columnar form of a batch, in crypto_prices' column order (timestamps naive UTC)."""
    columns = {}
    for name, _ in QUOTE_COLUMNS:
        if name in ("timestamp", "received_at"):
            columns[name] = [naive_utc(getattr(q, name)) for q in quotes]
        else:
            columns[name] = [getattr(q, name) for q in quotes]
    return pa.Table.from_pydict(columns, schema=ARROW_SCHEMA)


@dataclass(slots=True)
class CommitResult:
    """What one committed batch changed; feeds metrics, events and alerts."""

    received: int
    inserted: int
    duplicates: int
    symbols: list[str] = field(default_factory=list)
    latest: list[dict] = field(default_factory=list)
    """The newest inserted quote per (provider, coin_id) of this batch."""
    last_update: datetime | None = None
    alerts: list[dict] = field(default_factory=list)
    """Alerts fired by this batch, committed with it."""
    rejections: list[Rejection] = field(default_factory=list)
    """The batch's rejections counted for the first time (not those of a redelivered message)."""


AlertRules = Callable[[list[dict], duckdb.DuckDBPyConnection], list[dict]]
"""Given the newest inserted quote per coin of a batch (and the connection, inside the batch's
transaction, for price windows), the `alerts` rows it fires."""


_NEW_ROWS_SQL = """
CREATE OR REPLACE TEMP TABLE fresh AS
SELECT i.* FROM (
    SELECT * FROM incoming
    QUALIFY row_number() OVER (PARTITION BY provider, coin_id, timestamp ORDER BY received_at) = 1
) i
ANTI JOIN (
    SELECT provider, coin_id, timestamp FROM crypto_prices WHERE timestamp BETWEEN $lo AND $hi
    UNION ALL
    SELECT provider, coin_id, timestamp FROM rolled_up_quotes WHERE timestamp BETWEEN $lo AND $hi
) s ON i.provider = s.provider AND i.coin_id = s.coin_id AND i.timestamp = s.timestamp
"""

_LATEST_UPDATE = ", ".join(
    f"{c} = CASE WHEN excluded.timestamp >= coins.timestamp THEN excluded.{c} ELSE coins.{c} END"
    for c in LATEST_FIELDS
    if c != "timestamp"
)

_UPSERT_COINS_SQL = f"""
INSERT INTO coins BY NAME
SELECT provider, coin_id, count(*) OVER w AS records, min(timestamp) OVER w AS first_timestamp,
       {", ".join(LATEST_FIELDS)}
FROM fresh
WINDOW w AS (PARTITION BY provider, coin_id)
QUALIFY row_number() OVER (PARTITION BY provider, coin_id ORDER BY timestamp DESC) = 1
ON CONFLICT (provider, coin_id) DO UPDATE SET
    records = coins.records + excluded.records,
    first_timestamp = least(coins.first_timestamp, excluded.first_timestamp),
    {_LATEST_UPDATE},
    timestamp = greatest(coins.timestamp, excluded.timestamp)
"""

_FRESH_LATEST_SQL = f"""
SELECT provider, coin_id, {", ".join(LATEST_FIELDS)} FROM fresh
QUALIFY row_number() OVER (PARTITION BY provider, coin_id ORDER BY timestamp DESC) = 1
"""


class Store:
    """The ingester's DuckDB file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self.write_lock = threading.Lock()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckdb-writer")
        self.generation = 0
        """Bumped after every commit that changes stored quotes: cached answers are valid within one."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = duckdb.connect(str(self.path))
        except (OSError, duckdb.Error) as exc:
            raise StorageError(f"cannot open DuckDB file {self.path}: {exc}") from None
        try:
            self.version = migrate(self.conn)
        except duckdb.Error as exc:
            self.conn.close()
            raise StorageError(f"cannot migrate DuckDB file {self.path}: {exc}") from None
        self._probe_writable()

    def _probe_writable(self) -> None:
        """Fail at start, not at the first batch, when the file cannot take writes."""
        try:
            self.conn.execute("BEGIN TRANSACTION")
            self.conn.execute(
                "INSERT OR REPLACE INTO ingest_state VALUES ('opened_at', CAST(now() AS VARCHAR))",
            )
            self.conn.execute("COMMIT")
            self.conn.execute("CHECKPOINT")
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):
                self.conn.execute("ROLLBACK")
            raise StorageError(f"DuckDB file {self.path} is not writable: {exc}") from None

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a write on the store's own thread, so busy API readers never delay ingest."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    def close(self) -> None:
        with self.write_lock:
            try:
                self.conn.execute("CHECKPOINT")
            except duckdb.Error as exc:
                log.warning("checkpoint at close failed: %s", exc)
            self.conn.close()
        self._writer.shutdown(wait=False)

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A cursor owned by the calling thread (DuckDB connections are not thread-safe)."""
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self.conn.cursor()
            self._local.cursor = cursor
        return cursor

    def db_bytes(self) -> int:
        total = 0
        for candidate in (self.path, self.path.with_name(self.path.name + ".wal")):
            with contextlib.suppress(OSError):
                total += os.stat(candidate).st_size
        return total

    # -- writes -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(
        self, what: str, name: str | None = None, table: pa.Table | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """The writer connection inside one transaction (with `table` registered as `name`); a DuckDB
        error rolls back and becomes a StorageError (the caller's messages stay unacked)."""
        with self.write_lock:
            conn = self.conn
            if name is not None:
                conn.register(name, table)
            try:
                conn.execute("BEGIN TRANSACTION")
                yield conn
                conn.execute("COMMIT")
            except duckdb.Error as exc:
                with contextlib.suppress(duckdb.Error):
                    conn.execute("ROLLBACK")
                raise StorageError(f"writing {what} to {self.path} failed: {exc}") from None
            finally:
                if name is not None:
                    conn.unregister(name)

    def write_batch(
        self, table: pa.Table, rejections: Sequence[Rejection] = (), alert_rules: AlertRules | None = None
    ) -> CommitResult:
        """Insert a batch in one transaction, skipping quotes already stored, together with the
        alerts its new quotes fire and its messages' rejections (counted once, see rejections.py), so a
        crash cannot commit one without the others; thread-safe."""
        received = table.num_rows
        fired: list[dict] = []
        with self._transaction("batch", "incoming", table) as conn:
            if received:
                lo, hi = conn.execute("SELECT min(timestamp), max(timestamp) FROM incoming").fetchall()[0]
                conn.execute(_NEW_ROWS_SQL, {"lo": lo, "hi": hi})
                inserted = conn.execute("INSERT INTO crypto_prices BY NAME SELECT * FROM fresh").fetchall()[0][0]
                latest_rows = conn.execute(_FRESH_LATEST_SQL)
                names = [d[0] for d in latest_rows.description]
                latest = [dict(zip(names, row, strict=True)) for row in latest_rows.fetchall()]
                if inserted:
                    conn.execute(_UPSERT_COINS_SQL)
                conn.execute("DROP TABLE fresh")
                if inserted and alert_rules is not None:
                    fired = _fired(alert_rules, latest, conn)
                    if fired:
                        _insert_alerts(conn, fired)
            else:
                inserted, latest = 0, []
            duplicates = received - inserted
            self._bump(conn, ingested=inserted, duplicates=duplicates)
            counted = self._count_rejections(conn, rejections)
        if inserted:
            self.generation += 1
        return CommitResult(
            received=received,
            inserted=inserted,
            duplicates=duplicates,
            symbols=sorted({row["symbol"] for row in latest}),
            latest=latest,
            last_update=max((row["timestamp"] for row in latest), default=None),
            alerts=fired,
            rejections=counted,
        )

    def write_candles(self, table: pa.Table, rejections: Sequence[Rejection] = ()) -> CandleCommit:
        """Insert a batch of candles in one transaction, each identity once (see candle_writes), with its
        messages' rejections (counted once)."""
        with self._transaction("candles", "incoming_candles", table) as conn:
            result = insert_candles(conn, table.num_rows)
            self._bump(conn, candles=result.inserted, candle_duplicates=result.duplicates)
            result.rejections = self._count_rejections(conn, rejections)
        if result.inserted or result.replaced:
            self.generation += 1
        return result

    def count_rejected(self, rejection: Rejection) -> bool:
        """Persist the rejection of a message that produced no batch (a dead letter); False when a
        delivery of that message counted it already."""
        with self._transaction("a dead letter's count") as conn:
            return bool(self._count_rejections(conn, [rejection]))

    @classmethod
    def _count_rejections(cls, conn: duckdb.DuckDBPyConnection, rejections: Sequence[Rejection]) -> list[Rejection]:
        """The rejections of messages never counted before, their records added to `rejected`."""
        counted = count_once(conn, rejections)
        cls._bump(conn, rejected=sum(r.records for r in counted))
        return counted

    @staticmethod
    def _bump(conn: duckdb.DuckDBPyConnection, **counts: int) -> None:
        for name, value in counts.items():
            if value:
                conn.execute("UPDATE ingest_counters SET value = value + ? WHERE name = ?", [value, name])

    def counters(self) -> dict[str, int]:
        return dict(self.reader().execute("SELECT name, value FROM ingest_counters").fetchall())


def _fired(alert_rules: AlertRules, latest: list[dict], conn: duckdb.DuckDBPyConnection) -> list[dict]:
    """An alert rule problem must never stop ingest: it is logged and the batch goes on."""
    try:
        return alert_rules(latest, conn)
    except Exception as exc:
        log.error("alert evaluation failed: %s", exc)
        return []


def _insert_alerts(conn: duckdb.DuckDBPyConnection, rows: list[dict]) -> None:
    conn.register("new_alerts", pa.Table.from_pylist(rows, schema=ALERTS_SCHEMA))
    try:
        conn.execute("INSERT INTO alerts BY NAME SELECT * FROM new_alerts")
    finally:
        conn.unregister("new_alerts")
