"""The durable JetStream pull consumer: fetch, decode, batch, commit, then ack.

Messages are acked only after their batch is committed; a crash in between means a
redelivery, which the store's anti-join turns into counted duplicates, never double rows.
Messages that can never be stored (unknown schema, malformed) are republished to
`cryptoviz.deadletter.<reason>` in the same stream, counted, logged and acked, so they are not
redelivered forever. The consumer filters `cryptoviz.quotes.>` so it never reads them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pyarrow as pa
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError

from cryptoviz.core import contract
from cryptoviz.core.nats import ensure_stream
from cryptoviz.core.quote import Quote
from cryptoviz.ingester import metrics
from cryptoviz.ingester.fastdecode import MAX_RANK, decode_canonical
from cryptoviz.ingester.store import AlertRules, CommitResult, Store, quotes_to_arrow

log = logging.getLogger(__name__)

DURABLE_NAME = "cryptoviz-ingester"
FILTER_SUBJECT = f"{contract.SUBJECT_PREFIX}.>"
MAX_FETCH = 256
CRASH_AFTER_COMMIT = int(os.environ.get("CRYPTOVIZ_CRASH_AFTER_COMMIT") or 0)
"""Fault injection for tests: SIGKILL this process right after the N-th commit, before its acks."""


@dataclass(slots=True)
class Pending:
    """A fetched batch awaiting commit: its messages (to ack), and their quotes as Arrow tables
    (canonical messages) or as `Quote`s (decoded the slow, exact way)."""

    messages: list[Msg] = field(default_factory=list)
    tables: list[pa.Table] = field(default_factory=list)
    quotes: list[Quote] = field(default_factory=list)
    count: int = 0
    rejected: int = 0

    def table(self) -> pa.Table:
        tables = [*self.tables, quotes_to_arrow(self.quotes)] if self.quotes or not self.tables else self.tables
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


class Consumer:
    """Runs until `stop()`; `attached` is true while the durable consumer is bound."""

    def __init__(
        self,
        nc: Client,
        store: Store,
        *,
        batch_size: int,
        batch_timeout: float,
        ack_wait: float,
        on_commit: Callable[[CommitResult], Awaitable[None]],
        alert_rules: AlertRules | None = None,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.store = store
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.ack_wait = ack_wait
        self.on_commit = on_commit
        self.alert_rules = alert_rules
        self.attached = False
        self.lag = 0
        self._stopping = asyncio.Event()
        self._sub = None
        self._commits = 0
        self._quotes_per_message = float(contract.MAX_QUOTES_PER_MESSAGE)
        """Recent mean, so a fetch does not overshoot BATCH_SIZE by much."""

    def stop(self) -> None:
        self._stopping.set()

    async def _attach(self) -> None:
        await ensure_stream(self.js)
        config = ConsumerConfig(
            durable_name=DURABLE_NAME,
            filter_subject=FILTER_SUBJECT,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_ack_pending=max(MAX_FETCH * 8, 4096),
        )
        self._sub = await self.js.pull_subscribe(
            FILTER_SUBJECT, durable=DURABLE_NAME, stream=contract.STREAM_NAME, config=config
        )
        self.attached = True
        log.info("attached durable consumer %s on %s", DURABLE_NAME, FILTER_SUBJECT)

    async def run(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                if self._sub is None:
                    await self._attach()
                pending = await self._collect()
                if pending.messages:
                    await self._commit(pending)
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS down, stream gone, disk full: log and retry, never crash-loop
                self.attached = False
                await self._detach()
                metrics.ERRORS.labels(kind=type(exc).__name__).inc()
                log.warning("consumer error: %s; retrying in %.1fs", exc or type(exc).__name__, delay)
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _detach(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may be gone; the server forgets the interest anyway
                log.debug("unsubscribe failed: %s", exc)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _collect(self) -> Pending:
        """Fetch until BATCH_SIZE quotes or BATCH_TIMEOUT after the first message."""
        pending = Pending()
        deadline: float | None = None
        while pending.count < self.batch_size and not self._stopping.is_set():
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                wanted = (self.batch_size - pending.count) / self._quotes_per_message
                msgs = await self._sub.fetch(max(1, min(MAX_FETCH, int(wanted))), timeout=max(remaining, 0.01))
            except (TimeoutError, FetchTimeoutError):
                if deadline is None:
                    continue
                break
            if deadline is None:
                deadline = time.monotonic() + self.batch_timeout
            for msg in msgs:
                await self._decode(msg, pending)
        return pending

    async def _decode(self, msg: Msg, pending: Pending) -> None:
        table = decode_canonical(msg.data)
        if table is not None:
            pending.messages.append(msg)
            pending.tables.append(table)
            self._account(pending, table.num_rows)
            return
        try:
            batch = contract.decode_message(msg.data)
        except contract.ContractError as exc:
            await self._dead_letter(msg, exc.reason, str(exc))
            return
        if batch.rejected:
            for reason, count in batch.rejected.items():
                metrics.REJECTED.labels(reason=reason).inc(count)
            log.warning(
                "rejected %d invalid quotes in message",
                sum(batch.rejected.values()),
                extra={"reasons": batch.rejected, "subject": msg.subject},
            )
            pending.rejected += sum(batch.rejected.values())
        quotes = [q for q in batch.quotes if q.rank is None or q.rank <= MAX_RANK]
        if len(quotes) < len(batch.quotes):  # the rank column is a 32-bit INTEGER
            metrics.REJECTED.labels(reason="out_of_range_rank").inc(len(batch.quotes) - len(quotes))
            pending.rejected += len(batch.quotes) - len(quotes)
        pending.messages.append(msg)
        pending.quotes.extend(quotes)
        self._account(pending, len(quotes))

    def _account(self, pending: Pending, quotes: int) -> None:
        pending.count += quotes
        self._quotes_per_message = 0.5 * self._quotes_per_message + 0.5 * max(1, quotes)

    async def _dead_letter(self, msg: Msg, reason: str, detail: str) -> None:
        """Park an unusable message (original payload and headers) and ack it."""
        metrics.REJECTED.labels(reason=reason).inc()
        log.warning("dead-lettering message: %s", detail, extra={"reason": reason, "subject": msg.subject})
        headers = {k: v for k, v in (msg.headers or {}).items() if k != contract.MSG_ID_HEADER}
        headers["Cryptoviz-Reason"] = reason
        headers["Cryptoviz-Original-Subject"] = msg.subject
        if msg.headers and contract.MSG_ID_HEADER in msg.headers:
            headers[contract.MSG_ID_HEADER] = f"dl-{msg.headers[contract.MSG_ID_HEADER]}"
        await self.js.publish(f"{contract.DEADLETTER_PREFIX}.{reason}", msg.data, headers=headers)
        await self.store.write(self.store.count_rejected, 1)
        await msg.ack()

    async def _commit(self, pending: Pending) -> None:
        started = time.perf_counter()
        result = await self.store.write(self.store.write_batch, pending.table(), pending.rejected, self.alert_rules)
        self._commits += 1
        if self._commits == CRASH_AFTER_COMMIT:
            os.kill(os.getpid(), signal.SIGKILL)
        for msg in pending.messages:
            await msg.ack()
        elapsed = time.perf_counter() - started
        metrics.BATCH_SECONDS.observe(elapsed)
        metrics.INGESTED.inc(result.inserted)
        metrics.DUPLICATES.inc(result.duplicates)
        log.debug(
            "committed batch",
            extra={"messages": len(pending.messages), "inserted": result.inserted, "duplicates": result.duplicates},
        )
        await self.on_commit(result)

    async def refresh_lag(self) -> int:
        """Messages not yet acked by this consumer (pending + in flight), for /stats and /metrics."""
        if self._sub is None:
            return self.lag
        info = await self._sub.consumer_info()
        self.lag = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        metrics.LAG.set(self.lag)
        return self.lag
