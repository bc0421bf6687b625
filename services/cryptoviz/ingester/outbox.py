"""Fired alerts out to JetStream, delivery receipts back into DuckDB.

The outbox: an alert row is committed first (with its batch, or alone for a stale rule), then
published on `cryptoviz.alerts.<SYMBOL>` with `Nats-Msg-Id` = its alert id, then marked published.
A crash in between leaves it unpublished: it is published again at start and by the periodic
sweep, and JetStream drops the copy if the first one had arrived. So every stored alert reaches
the stream exactly once, however the ingester stops.

Receipts: the notifier's `cryptoviz.receipts.<alert id>` messages are consumed by a durable pull
consumer into `alert_deliveries` (one row per alert and target, a final state never overwritten
by a late `retrying`), acked after the commit. A receipt that does not parse (or was delivered
MAX_DELIVER times) is a dead letter like any other message (`cryptoviz.deadletter.bad_receipt`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson
import pyarrow as pa
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError
from pydantic import ValidationError

from cryptoviz.core import alert_contract as ac
from cryptoviz.core import contract
from cryptoviz.core.deadletter import JETSTREAM_MAX_DELIVER, MAX_DELIVER, deliveries
from cryptoviz.core.nats import bind_durable
from cryptoviz.ingester import metrics
from cryptoviz.ingester.consumer import dead_letter
from cryptoviz.ingester.formats import JSON_OPTIONS
from cryptoviz.ingester.store import ALERTS_SCHEMA, Store

log = logging.getLogger(__name__)

SWEEP_SECONDS = 5.0
SWEEP_LIMIT = 5000
RECEIPTS_DURABLE = ac.RECEIPTS_CONSUMER
_ALERT_FIELDS = ", ".join(ALERTS_SCHEMA.names)
_DELIVERIES = pa.schema(
    [
        ("alert_id", pa.string()),
        ("target", pa.string()),
        ("status", pa.string()),
        ("attempts", pa.int32()),
        ("reason", pa.string()),
        ("updated_at", pa.timestamp("us")),
        ("delivered_at", pa.timestamp("us")),
        ("latency_seconds", pa.float64()),
        ("targets", pa.int32()),
    ]
)
_UPSERT_DELIVERIES = """
INSERT INTO alert_deliveries BY NAME SELECT * FROM receipts_in
ON CONFLICT (alert_id, target) DO UPDATE SET
    status = excluded.status, attempts = excluded.attempts, reason = excluded.reason,
    updated_at = excluded.updated_at, delivered_at = coalesce(excluded.delivered_at, alert_deliveries.delivered_at),
    latency_seconds = coalesce(excluded.latency_seconds, alert_deliveries.latency_seconds),
    targets = coalesce(excluded.targets, alert_deliveries.targets)
WHERE (CASE WHEN excluded.status = 'retrying' THEN 0 ELSE 1 END, excluded.attempts)
   >= (CASE WHEN alert_deliveries.status = 'retrying' THEN 0 ELSE 1 END, alert_deliveries.attempts)
"""


def _naive(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


# -- DuckDB side (called on the store's writer thread, or with a reader cursor) -------------------


def insert_alerts(store: Store, rows: list[dict]) -> None:
    """Store alerts decided outside a batch (stale rules) in their own transaction."""
    with store.write_lock:
        conn = store.conn
        conn.register("new_alerts", pa.Table.from_pylist(rows, schema=ALERTS_SCHEMA))
        try:
            conn.execute("BEGIN TRANSACTION")
            conn.execute("INSERT INTO alerts BY NAME SELECT * FROM new_alerts")
            conn.execute("COMMIT")
        except Exception:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.unregister("new_alerts")


def unpublished(store: Store, limit: int = SWEEP_LIMIT) -> list[dict]:
    cursor = store.reader()
    result = cursor.execute(
        f"SELECT {_ALERT_FIELDS} FROM alerts WHERE published_at IS NULL ORDER BY fired_at LIMIT ?", [limit]
    )
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def mark_published(store: Store, alert_ids: list[str]) -> None:
    with store.write_lock:
        conn = store.conn
        conn.register("published_ids", pa.table({"alert_id": pa.array(alert_ids, pa.string())}))
        try:
            conn.execute(
                "UPDATE alerts SET published_at = ? "
                "WHERE published_at IS NULL AND alert_id IN (SELECT alert_id FROM published_ids)",
                [datetime.now(UTC).replace(tzinfo=None)],
            )
        finally:
            conn.unregister("published_ids")


def best_receipts(receipts: Iterable[ac.Receipt]) -> list[ac.Receipt]:
    """One receipt per (alert, target): the one that ranks highest (DuckDB updates a row once per statement)."""
    best: dict[tuple[str, str], ac.Receipt] = {}
    for receipt in receipts:
        key = (receipt.alert_id, receipt.target)
        if key not in best or receipt.rank >= best[key].rank:
            best[key] = receipt
    return list(best.values())


def apply_receipts(store: Store, receipts: list[ac.Receipt]) -> None:
    rows = [
        {
            "alert_id": r.alert_id,
            "target": r.target,
            "status": r.status,
            "attempts": r.attempts,
            "reason": r.reason,
            "updated_at": _naive(r.at),
            "delivered_at": _naive(r.at) if r.status == "delivered" else None,
            "latency_seconds": r.latency_seconds,
            "targets": r.targets,
        }
        for r in best_receipts(receipts)
    ]
    with store.write_lock:
        conn = store.conn
        conn.register("receipts_in", pa.Table.from_pylist(rows, schema=_DELIVERIES))
        try:
            conn.execute("BEGIN TRANSACTION")
            conn.execute(_UPSERT_DELIVERIES)
            conn.execute("COMMIT")
        except Exception:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.unregister("receipts_in")


# -- JetStream side -----------------------------------------------------------------------------


def alert_payload(row: dict) -> bytes:
    return orjson.dumps({"schema": ac.SCHEMA_VERSION, **row}, option=JSON_OPTIONS)


class Outbox:
    """Publishes stored alerts and marks them published; `run` sweeps up what a crash left behind."""

    def __init__(self, store: Store, nc: Client) -> None:
        self.store = store
        self.nc = nc
        self.js = nc.jetstream()
        self._lock = asyncio.Lock()
        self._ready = False

    async def publish(self, rows: list[dict]) -> int:
        """Publish these alert rows; return how many are now in the stream (and marked published)."""
        if not rows:
            return 0
        async with self._lock:
            if not self._ready:
                await ac.ensure_alerts_stream(self.js)
                self._ready = True
            futures = []
            for row in rows:
                headers = {contract.MSG_ID_HEADER: row["alert_id"], contract.SCHEMA_HEADER: str(ac.SCHEMA_VERSION)}
                futures.append(
                    await self.js.publish_async(ac.alert_subject(row["symbol"]), alert_payload(row), headers=headers)
                )
            results = await asyncio.gather(*futures, return_exceptions=True)
            done = [r["alert_id"] for r, result in zip(rows, results, strict=True) if not isinstance(result, Exception)]
            failed = len(rows) - len(done)
            if done:
                await self.store.write(mark_published, self.store, done)
            if failed:
                metrics.ERRORS.labels(kind="alert_publish").inc(failed)
                first = next(r for r in results if isinstance(r, Exception))
                reason = str(first) or type(first).__name__
                log.warning("%d alerts not published yet (%s); the outbox retries", failed, reason)
            return len(done)

    async def sweep(self) -> int:
        rows = await asyncio.to_thread(unpublished, self.store)
        return await self.publish(rows)

    async def run(self, interval: float = SWEEP_SECONDS) -> None:
        while True:
            try:
                published = await self.sweep()
                if published:
                    log.info("outbox published %d stored alerts", published)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away: the next sweep tries again
                self._ready = False
                log.warning("alert outbox sweep failed: %s", exc or type(exc).__name__)
            await asyncio.sleep(interval)


class ReceiptConsumer:
    """The notifier's receipts → `alert_deliveries`, acked after the commit."""

    def __init__(self, store: Store, nc: Client, batch: int = 256) -> None:
        self.store = store
        self.js = nc.jetstream()
        self.batch = batch
        self._sub = None

    async def _attach(self) -> None:
        await ac.ensure_alerts_stream(self.js)
        subject = f"{ac.RECEIPTS_PREFIX}.>"
        config = ConsumerConfig(
            durable_name=RECEIPTS_DURABLE,
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=30,
            max_deliver=JETSTREAM_MAX_DELIVER,
        )
        self._sub = await bind_durable(self.js, ac.STREAM_NAME, config)

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                if self._sub is None:
                    await self._attach()
                try:
                    msgs = await self._sub.fetch(self.batch, timeout=1.0)
                except (TimeoutError, FetchTimeoutError):
                    continue
                await self._store(msgs)
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._sub = None
                log.warning("receipt consumer error: %s; retrying in %.1fs", exc or type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _store(self, msgs: list) -> None:
        receipts, kept = [], []
        for msg in msgs:
            if deliveries(msg) >= MAX_DELIVER:
                await dead_letter(self.js, self.store, msg, "max_deliveries", "a receipt delivered too often")
                continue
            try:
                receipts.append(ac.Receipt.model_validate_json(msg.data))
            except Exception as exc:  # any error parsing one receipt spoils only that one
                problem = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else type(exc).__name__
                await dead_letter(self.js, self.store, msg, "bad_receipt", f"malformed delivery receipt: {problem}")
                continue
            kept.append(msg)
        if receipts:
            await self.store.write(apply_receipts, self.store, receipts)
        for msg in kept:
            await msg.ack()
