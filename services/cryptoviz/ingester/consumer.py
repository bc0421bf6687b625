"""The durable JetStream pull consumers: fetch, decode, batch, commit, then ack.

Messages are acked only after their batch is committed; a crash in between means a
redelivery, which the store's anti-join turns into counted duplicates, never double rows.
While a batch is collected and committed its messages are reported in progress every third of
ACK_WAIT, so ACK_WAIT can be short (5 s): only a dead ingester's messages wait for it, never a
slow commit's. A commit that fails (a full disk) is retried in place, still in progress, so an
outage does not use up the messages' deliveries.

Messages that can never be stored (unknown schema, malformed, any error while decoding one,
or delivered MAX_DELIVER times) are republished to `cryptoviz.deadletter.<reason>` in the same
stream, counted, logged and acked (core.deadletter), so they are not redelivered forever and
the rest of their batch is stored. Each consumer filters its own subjects, so none reads the
dead letters back.

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
from datetime import UTC, datetime
from typing import Any, ClassVar

import pyarrow as pa
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError

from cryptoviz.core import contract
from cryptoviz.core.deadletter import JETSTREAM_MAX_DELIVER, MAX_DELIVER, deliveries, republish
from cryptoviz.core.nats import bind_durable, ensure_stream
from cryptoviz.ingester import metrics
from cryptoviz.ingester.candle_decode import decode_candles
from cryptoviz.ingester.candle_writes import CandleCommit
from cryptoviz.ingester.fastdecode import MAX_RANK, decode_canonical
from cryptoviz.ingester.rejections import Rejection, observe
from cryptoviz.ingester.store import AlertRules, CommitResult, StorageError, Store, quotes_to_arrow

log = logging.getLogger(__name__)

DURABLE_NAME = contract.QUOTES_CONSUMER
FILTER_SUBJECT = f"{contract.SUBJECT_PREFIX}.>"
CANDLES_DURABLE_NAME = contract.CANDLES_CONSUMER
CANDLES_FILTER_SUBJECT = f"{contract.CANDLES_PREFIX}.>"
MAX_FETCH = 256
FETCH_WAIT = 0.25
"""The shortest wait for a pull's messages: shorter, and on a busy host they arrive after the fetch gave up."""
CRASH_AFTER_COMMIT = int(os.environ.get("CRYPTOVIZ_CRASH_AFTER_COMMIT") or 0)
"""Fault injection for tests: SIGKILL this process right after the N-th commit, before its acks."""
COMMIT_DELAY = float(os.environ.get("CRYPTOVIZ_COMMIT_DELAY") or 0)
"""Fault injection for tests: hold every commit this many seconds (a slow disk)."""


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
    rejections: list[Rejection] = field(default_factory=list)

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
        self._carried = Pending()
        """Messages fetched while the previous batch committed: the start of the next batch."""
        self._rows_per_message = float(self.items_per_message)
        """Recent mean, so a fetch does not overshoot the batch size by much."""

    def decode_one(self, payload: bytes, now: datetime) -> Decoded | contract.ContractError:
        """One message's rows (times judged against `now`), or the contract error that makes it a dead letter."""
        raise NotImplementedError

    def decode_all(self, payloads: list[bytes]) -> list[Decoded | contract.ContractError]:
        now = datetime.now(UTC)
        return [guarded(self.decode_one, payload, now) for payload in payloads]

    async def decode(self, messages: list[Msg]) -> list[Decoded | contract.ContractError]:
        return self.decode_all([msg.data for msg in messages])

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
            max_deliver=JETSTREAM_MAX_DELIVER,
            max_ack_pending=max(MAX_FETCH * 8, 4096),
        )
        self._sub = await bind_durable(self.js, contract.STREAM_NAME, config)
        self.attached = True
        log.info("attached durable consumer %s on %s", self.durable, self.subject)

    async def run(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                if self._sub is None:
                    await self._attach()
                await self._cycle()
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS down, stream gone, disk full: log and retry, never crash-loop
                self.attached = False
                self._carried = Pending()  # unacked, they come back to whoever binds next
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

    async def _cycle(self) -> None:
        """Collect one batch and commit it, its messages in progress all along.

        While it commits, the next batch is fetched (and kept in progress too): a pull request's
        messages that arrive after its fetch returned would otherwise wait unheard-of in the client's
        queue for the whole commit and come back as redeliveries when it outlasts ACK_WAIT.
        """
        pending, self._carried = self._carried, Pending()
        heartbeat = asyncio.create_task(self._in_progress([pending, self._carried]))
        try:
            await self._collect(pending)
            if pending.messages:
                commit = asyncio.create_task(self._commit(pending))
                try:
                    await self._collect(self._carried, until=commit)
                finally:
                    await commit
        finally:
            heartbeat.cancel()

    async def _in_progress(self, batches: list[Pending]) -> None:
        """Every third of ACK_WAIT, tell JetStream the held messages are being worked on."""
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            for msg in [msg for batch in batches for msg in batch.messages]:
                with contextlib.suppress(Exception):  # the connection may be gone: then they come back anyway
                    await msg.in_progress()

    async def _collect(self, pending: Pending, until: asyncio.Task[None] | None = None) -> None:
        """Fetch until the batch size in rows, or BATCH_TIMEOUT after its first message, or (while the
        previous batch commits) until that commit is done."""
        deadline = time.monotonic() + self.batch_timeout if pending.messages else None
        while pending.count < self.batch_size and not self._stopping.is_set():
            if until is not None:
                if until.done():
                    break
                remaining = FETCH_WAIT
            else:
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    break
            try:
                wanted = (self.batch_size - pending.count) / self._rows_per_message
                msgs = await self._sub.fetch(max(1, min(MAX_FETCH, int(wanted))), timeout=max(remaining, FETCH_WAIT))
            except (TimeoutError, FetchTimeoutError):
                if deadline is None or until is not None:
                    continue
                break
            if deadline is None:
                deadline = time.monotonic() + self.batch_timeout
            usable = []
            for msg in msgs:
                if deliveries(msg) >= MAX_DELIVER:  # it crashed or stalled us that often: do not even decode it
                    await self._dead_letter(msg, "max_deliveries", f"delivered {deliveries(msg)} times, never stored")
                else:
                    usable.append(msg)
            for msg, decoded in zip(usable, await self.decode(usable), strict=True):
                if isinstance(decoded, contract.ContractError):
                    await self._dead_letter(msg, decoded.reason, str(decoded))
                else:
                    self._add(pending, msg, decoded)

    def _add(self, pending: Pending, msg: Msg, decoded: Decoded) -> None:
        if decoded.rejected:
            log.warning(
                "rejected %d invalid records in message",
                sum(decoded.rejected.values()),
                extra={"reasons": decoded.rejected, "subject": msg.subject, "delivery": deliveries(msg)},
            )
            pending.rejections.append(Rejection.of(msg, decoded.rejected))  # counted by the commit, once
        rows = decoded.table.num_rows
        pending.messages.append(msg)
        pending.tables.append(decoded.table)
        pending.count += rows
        self._rows_per_message = 0.5 * self._rows_per_message + 0.5 * max(1, rows)

    async def _dead_letter(self, msg: Msg, reason: str, detail: str) -> None:
        await dead_letter(self.js, self.store, msg, reason, detail)

    async def _commit(self, pending: Pending) -> None:
        started = time.perf_counter()
        result = await self._write(pending)
        if result is None:
            return  # stopping: the messages stay unacked for the next ingester
        self._commits += 1
        if self._commits == CRASH_AFTER_COMMIT:
            os.kill(os.getpid(), signal.SIGKILL)
        for msg in pending.messages:
            await msg.ack()
        elapsed = time.perf_counter() - started
        metrics.BATCH_SECONDS.observe(elapsed)
        observe(result.rejections)
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

    async def _write(self, pending: Pending) -> Any:
        """The batch's commit, retried in place while the store fails (its messages stay in progress);
        None when asked to stop meanwhile."""
        delay = 0.5
        log.debug("committing batch", extra={"consumer": self.durable, "messages": len(pending.messages)})
        while True:
            try:
                return await self.store.write(self._timed_write, pending)
            except StorageError as exc:
                metrics.ERRORS.labels(kind="StorageError").inc()
                log.warning("%s; retrying the batch in %.1fs", exc, delay, extra={"consumer": self.durable})
                await self._sleep(delay)
                if self._stopping.is_set():
                    return None
                delay = min(delay * 2, 5.0)

    def _timed_write(self, pending: Pending) -> Any:
        if COMMIT_DELAY:
            time.sleep(COMMIT_DELAY)
        return self.write(pending)

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

    def decode_one(self, payload: bytes, now: datetime) -> Decoded | contract.ContractError:
        return decode_quotes(payload, now)

    def write(self, pending: Pending) -> CommitResult:
        return self.store.write_batch(pending.table(), pending.rejections, self.alert_rules)

    def account(self, result: CommitResult) -> None:
        metrics.INGESTED.inc(result.inserted)
        metrics.DUPLICATES.inc(result.duplicates)


async def dead_letter(js: JetStreamContext, store: Store, msg: Msg, reason: str, detail: str) -> None:
    """Park an unusable message on `cryptoviz.deadletter.<reason>`, count it (/metrics, /stats.rejected)
    unless a delivery of it did already, one log line; acked only once counted, so a crash in between
    leaves a redelivery that parks it again (the same dead letter id) and counts it if it was not."""
    if not await republish(js, msg, f"{contract.DEADLETTER_PREFIX}.{reason}", reason):
        return
    log.warning("dead-lettering message: %s", detail, extra={"reason": reason, "subject": msg.subject})
    rejection = Rejection.of(msg, {reason: 1})
    if await store.write(store.count_rejected, rejection):
        observe([rejection])
    await msg.ack()


def guarded(
    decode: Callable[[bytes, datetime], Decoded | contract.ContractError], payload: bytes, now: datetime
) -> Decoded | contract.ContractError:
    """Whatever goes wrong decoding one message makes that message a dead letter, never its batch's failure."""
    try:
        return decode(payload, now)
    except contract.ContractError as exc:
        return exc
    except Exception as exc:
        return contract.ContractError("decode_error", f"{type(exc).__name__}: {exc}"[:200])


def decode_quotes(payload: bytes, now: datetime | None = None) -> Decoded | contract.ContractError:
    """The columnar fast path for canonical messages, else the contract's exact decoder (times judged
    against `now`, the ingester's clock)."""
    now = now or datetime.now(UTC)
    table = decode_canonical(payload, now)
    if table is not None:
        return Decoded(table)
    try:
        batch = contract.decode_message(payload, now=now)
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

    def decode_one(self, payload: bytes, now: datetime) -> Decoded | contract.ContractError:
        batch = decode_candles(payload, now)
        return Decoded(batch.table, batch.rejected)

    async def decode(self, messages: list[Msg]) -> list[Decoded | contract.ContractError]:
        return await asyncio.to_thread(self.decode_all, [msg.data for msg in messages])

    def write(self, pending: Pending) -> CandleCommit:
        return self.store.write_candles(pending.table(), pending.rejections)

    def account(self, result: CandleCommit) -> None:
        metrics.CANDLES_INGESTED.inc(result.inserted)
        metrics.CANDLE_DUPLICATES.inc(result.duplicates)
