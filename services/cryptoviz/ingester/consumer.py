"""The durable JetStream pull consumers: fetch, decode, batch, commit, then ack.

Messages are acked only after their batch is committed; a crash in between means a
redelivery, which the store's anti-join turns into counted duplicates, never double rows.
Messages that can never be stored (unknown schema, malformed) are republished to
`cryptoviz.deadletter.<reason>` in the same stream, counted, logged and acked, so they are not
redelivered forever. Each consumer filters its own subjects, so none reads the dead letters back.

Two durable consumers share the loop below: `cryptoviz-ingester` on `cryptoviz.quotes.>` and
`cryptoviz-ingester-candles` on `cryptoviz.candles.>`. A backfill publishing a million candles
only queues behind its own consumer: live quotes keep being fetched and committed in between.
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
from typing import Any, ClassVar

import pyarrow as pa
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError

from cryptoviz.core import contract
from cryptoviz.core.nats import ensure_stream
from cryptoviz.ingester import metrics
from cryptoviz.ingester.candle_decode import decode_candles
from cryptoviz.ingester.candle_writes import CandleCommit
from cryptoviz.ingester.fastdecode import MAX_RANK, decode_canonical
from cryptoviz.ingester.store import AlertRules, CommitResult, Store, quotes_to_arrow

log = logging.getLogger(__name__)

DURABLE_NAME = "cryptoviz-ingester"
FILTER_SUBJECT = f"{contract.SUBJECT_PREFIX}.>"
CANDLES_DURABLE_NAME = "cryptoviz-ingester-candles"
CANDLES_FILTER_SUBJECT = f"{contract.CANDLES_PREFIX}.>"
MAX_FETCH = 256
CRASH_AFTER_COMMIT = int(os.environ.get("CRYPTOVIZ_CRASH_AFTER_COMMIT") or 0)
"""Fault injection for tests: SIGKILL this process right after the N-th commit, before its acks."""


@dataclass(slots=True)
class Decoded:
    """One message's storable rows as Arrow (the store's layout), and how many were rejected, why."""

    table: pa.Table
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Pending:
    """A fetched batch awaiting commit: its messages (to ack) and their rows."""

    messages: list[Msg] = field(default_factory=list)
    tables: list[pa.Table] = field(default_factory=list)
    count: int = 0
    rejected: int = 0

    def table(self) -> pa.Table:
        return pa.concat_tables(self.tables) if len(self.tables) > 1 else self.tables[0]


class Consumer:
    """The loop of one durable consumer; subclasses say what they read and how they store it.

    Runs until `stop()`; `attached` is true while the durable consumer is bound.
    """

    durable: ClassVar[str]
    subject: ClassVar[str]
    items_per_message: ClassVar[int]
    """The contract's chunk size: the first guess of rows per message."""

    def __init__(
        self,
        nc: Client,
        store: Store,
        *,
        batch_size: int,
        batch_timeout: float,
        ack_wait: float,
        on_commit: Callable[[Any], Awaitable[None]],
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.store = store
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.ack_wait = ack_wait
        self.on_commit = on_commit
        self.attached = False
        self.lag = 0
        self._stopping = asyncio.Event()
        self._sub = None
        self._commits = 0
        self._rows_per_message = float(self.items_per_message)
        """Recent mean, so a fetch does not overshoot the batch size by much."""

    async def decode(self, messages: list[Msg]) -> list[Decoded | contract.ContractError]:
        """Each message's rows, or the contract error that makes it a dead letter."""
        raise NotImplementedError

    def write(self, pending: Pending) -> Any:
        """Commit a batch (on the store's writer thread); the result goes to `on_commit`."""
        raise NotImplementedError

    def account(self, result: Any) -> None:
        """Metrics of a committed batch."""

    def stop(self) -> None:
        self._stopping.set()

    async def _attach(self) -> None:
        await ensure_stream(self.js)
        config = ConsumerConfig(
            durable_name=self.durable,
            filter_subject=self.subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_ack_pending=max(MAX_FETCH * 8, 4096),
        )
        self._sub = await self.js.pull_subscribe(
            self.subject, durable=self.durable, stream=contract.STREAM_NAME, config=config
        )
        self.attached = True
        log.info("attached durable consumer %s on %s", self.durable, self.subject)

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
        """Fetch until the batch size in rows or BATCH_TIMEOUT after the first message."""
        pending = Pending()
        deadline: float | None = None
        while pending.count < self.batch_size and not self._stopping.is_set():
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                wanted = (self.batch_size - pending.count) / self._rows_per_message
                msgs = await self._sub.fetch(max(1, min(MAX_FETCH, int(wanted))), timeout=max(remaining, 0.01))
            except (TimeoutError, FetchTimeoutError):
                if deadline is None:
                    continue
                break
            if deadline is None:
                deadline = time.monotonic() + self.batch_timeout
            for msg, decoded in zip(msgs, await self.decode(msgs), strict=True):
                if isinstance(decoded, contract.ContractError):
                    await self._dead_letter(msg, decoded.reason, str(decoded))
                else:
                    self._add(pending, msg, decoded)
        return pending

    def _add(self, pending: Pending, msg: Msg, decoded: Decoded) -> None:
        if decoded.rejected:
            for reason, count in decoded.rejected.items():
                metrics.REJECTED.labels(reason=reason).inc(count)
            log.warning(
                "rejected %d invalid records in message",
                sum(decoded.rejected.values()),
                extra={"reasons": decoded.rejected, "subject": msg.subject},
            )
            pending.rejected += sum(decoded.rejected.values())
        rows = decoded.table.num_rows
        pending.messages.append(msg)
        pending.tables.append(decoded.table)
        pending.count += rows
        self._rows_per_message = 0.5 * self._rows_per_message + 0.5 * max(1, rows)

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
        result = await self.store.write(self.write, pending)
        self._commits += 1
        if self._commits == CRASH_AFTER_COMMIT:
            os.kill(os.getpid(), signal.SIGKILL)
        for msg in pending.messages:
            await msg.ack()
        elapsed = time.perf_counter() - started
        metrics.BATCH_SECONDS.observe(elapsed)
        self.account(result)
        log.debug(
            "committed batch",
            extra={
                "consumer": self.durable,
                "messages": len(pending.messages),
                "inserted": result.inserted,
                "duplicates": result.duplicates,
            },
        )
        await self.on_commit(result)

    async def refresh_lag(self) -> int:
        """Messages not yet acked by this consumer (pending + in flight), for /stats and /metrics."""
        if self._sub is None:
            return self.lag
        info = await self._sub.consumer_info()
        self.lag = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        return self.lag


class QuoteConsumer(Consumer):
    """Live quotes → `crypto_prices`, with the alerts they fire in the same transaction."""

    durable = DURABLE_NAME
    subject = FILTER_SUBJECT
    items_per_message = contract.MAX_QUOTES_PER_MESSAGE

    def __init__(self, *args: Any, alert_rules: AlertRules | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.alert_rules = alert_rules

    async def decode(self, messages: list[Msg]) -> list[Decoded | contract.ContractError]:
        return [decode_quotes(msg.data) for msg in messages]

    def write(self, pending: Pending) -> CommitResult:
        return self.store.write_batch(pending.table(), pending.rejected, self.alert_rules)

    def account(self, result: CommitResult) -> None:
        metrics.INGESTED.inc(result.inserted)
        metrics.DUPLICATES.inc(result.duplicates)


def decode_quotes(payload: bytes) -> Decoded | contract.ContractError:
    """The columnar fast path for canonical messages, else the contract's exact decoder."""
    table = decode_canonical(payload)
    if table is not None:
        return Decoded(table)
    try:
        batch = contract.decode_message(payload)
    except contract.ContractError as exc:
        return exc
    quotes = [q for q in batch.quotes if q.rank is None or q.rank <= MAX_RANK]
    rejected = dict(batch.rejected)
    if len(quotes) < len(batch.quotes):  # the rank column is a 32-bit INTEGER
        rejected["out_of_range_rank"] = len(batch.quotes) - len(quotes)
    return Decoded(quotes_to_arrow(quotes), rejected)


class CandleConsumer(Consumer):
    """Provider history → `candles`: large batches, decoded off the event loop."""

    durable = CANDLES_DURABLE_NAME
    subject = CANDLES_FILTER_SUBJECT
    items_per_message = contract.MAX_CANDLES_PER_MESSAGE

    async def decode(self, messages: list[Msg]) -> list[Decoded | contract.ContractError]:
        payloads = [msg.data for msg in messages]
        return await asyncio.to_thread(lambda: [_decode_candles(p) for p in payloads])

    def write(self, pending: Pending) -> CandleCommit:
        return self.store.write_candles(pending.table(), pending.rejected)

    def account(self, result: CandleCommit) -> None:
        metrics.CANDLES_INGESTED.inc(result.inserted)
        metrics.CANDLE_DUPLICATES.inc(result.duplicates)


def _decode_candles(payload: bytes) -> Decoded | contract.ContractError:
    try:
        batch = decode_candles(payload)
    except contract.ContractError as exc:
        return exc
    return Decoded(batch.table, batch.rejected)
