"""Rejections are counted once per stored message, however often JetStream delivers it.

A message is redelivered whenever its ack did not arrive: the ingester was killed between its commit
and its acks, or dead-lettered it and died before acking. Counting its rejected records (or the dead
letter itself) on every delivery would count them again each time; counting only deliveries with
`num_delivered == 1` would never count a message whose first delivery died before its count was
committed. So each count is keyed by the message's place in JetStream — stream, stream sequence and
the time the stream stored it (a recreated stream reuses sequences, never with the same time) — and
recorded in `counted_rejections` in the same transaction that adds it to `ingest_counters.rejected`
(`Store._count_rejections`):
a delivery whose key is already there counts nothing. The Prometheus counter is raised only by what
such a transaction newly counted, so the increments of all the ingester's processes add up to
`/stats.rejected` (what a process counted after its last scrape dies with it; the file keeps it).

A key is needed only while its message can come back: keys older than the stream's MAX_AGE are pruned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
from nats.aio.msg import Msg

from cryptoviz.core.contract import MAX_AGE
from cryptoviz.ingester import metrics

_KEYS_SCHEMA = pa.schema(
    [("stream", pa.string()), ("seq", pa.int64()), ("stored_at", pa.timestamp("us")), ("records", pa.int64())]
)

_COUNT_NEW_SQL = """
INSERT INTO counted_rejections
SELECT n.* FROM (
    SELECT * FROM new_rejections QUALIFY row_number() OVER (PARTITION BY stream, seq, stored_at) = 1
) n
ANTI JOIN (
    SELECT stream, seq, stored_at FROM counted_rejections WHERE seq BETWEEN $lo AND $hi
) c ON n.stream = c.stream AND n.seq = c.seq AND n.stored_at = c.stored_at
RETURNING stream, seq, stored_at
"""


@dataclass(frozen=True, slots=True)
class Rejection:
    """The records (or the whole message, as a dead letter) one JetStream message had rejected, by reason."""

    stream: str
    seq: int
    stored_at: datetime
    """Naive UTC, the stream's own time for the message (the same on every delivery)."""
    reasons: dict[str, int] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def of(cls, msg: Msg, reasons: dict[str, int]) -> Rejection:
        meta = msg.metadata
        stored_at = meta.timestamp.astimezone(UTC).replace(tzinfo=None)
        return cls(meta.stream, int(meta.sequence.stream), stored_at, dict(reasons))

    @property
    def records(self) -> int:
        return sum(self.reasons.values())

    @property
    def key(self) -> tuple[str, int, datetime]:
        return self.stream, self.seq, self.stored_at


def count_once(conn: duckdb.DuckDBPyConnection, rejections: Sequence[Rejection]) -> list[Rejection]:
    """Inside the caller's open transaction: record the rejections whose message was never counted and
    return those (the others were counted before); the caller adds their records to the counters."""
    if not rejections:
        return []
    rows = [{"stream": r.stream, "seq": r.seq, "stored_at": r.stored_at, "records": r.records} for r in rejections]
    conn.register("new_rejections", pa.Table.from_pylist(rows, schema=_KEYS_SCHEMA))
    try:
        bounds = {"lo": min(r.seq for r in rejections), "hi": max(r.seq for r in rejections)}
        fresh = {tuple(row) for row in conn.execute(_COUNT_NEW_SQL, bounds).fetchall()}
    finally:
        conn.unregister("new_rejections")
    return list({r.key: r for r in rejections if r.key in fresh}.values())  # a message twice in one batch: once


def observe(counted: Sequence[Rejection]) -> None:
    """Raise `cryptoviz_rejected_total{reason}` by what a commit newly counted."""
    for rejection in counted:
        for reason, count in rejection.reasons.items():
            metrics.REJECTED.labels(reason=reason).inc(count)


def prune_counted(conn: duckdb.DuckDBPyConnection, now: datetime | None = None) -> int:
    """Forget the keys of messages the stream no longer holds (older than MAX_AGE); how many."""
    cutoff = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None) - MAX_AGE
    return int(conn.execute("DELETE FROM counted_rejections WHERE stored_at < ?", [cutoff]).fetchall()[0][0])
