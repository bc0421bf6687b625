"""Publishing contract messages to JetStream: asynchronously, idempotently, within a deadline.

All messages of a scrape go out with `publish_async` and are acknowledged together
(`publish_async_completed`), which is several times faster than awaiting each publish. Anything
not acknowledged (NATS down, restarted, slow) is published again with backoff until the deadline;
the `Nats-Msg-Id` of each message makes those re-publishes harmless. What is still unacknowledged
at the deadline stays in the publisher's backlog and goes out first with the next publish, so a
long-running loop loses no scraped quote to a NATS outage (a `--once` process exits 3 instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.js import JetStreamContext

from cryptoviz.core.contract import OutgoingMessage
from cryptoviz.core.nats import connect, ensure_stream, redact_url

log = logging.getLogger(__name__)

ACK_TIMEOUT = 5.0
MAX_BACKLOG = 1000
"""Messages (of ≤ 500 quotes) kept for the next publish; beyond that the oldest are dropped, with a warning."""


class NatsUnavailable(Exception):
    """NATS could not take the messages before the deadline."""


@dataclass(slots=True)
class PublishReport:
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    """Messages JetStream already had (same Nats-Msg-Id within the duplicate window)."""
    duplicate_ids: set[str] = field(default_factory=set)


class Publisher:
    """One NATS connection for one run (or one loop), with the stream ensured once."""

    def __init__(self, url: str, deadline: float) -> None:
        self.url = url
        self.deadline = deadline
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self._stream_ready = False
        self.backlog: list[OutgoingMessage] = []
        """Messages of earlier publishes that NATS did not acknowledge by their deadline."""

    async def connect(self, deadline: float | None = None) -> None:
        """Connect unless connected; give up after `deadline` seconds (default PUBLISH_DEADLINE)."""
        if self.nc is not None and not self.nc.is_closed:
            return
        try:
            self.nc = await connect(self.url, name="cryptoviz-scraper", deadline=deadline or self.deadline)
        except ConnectionError as exc:
            raise NatsUnavailable(f"{exc} (PUBLISH_DEADLINE={self.deadline:g}s)") from None
        self.js = self.nc.jetstream()
        self._stream_ready = False

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), timeout=2)
        self.nc = self.js = None

    async def publish(self, messages: list[OutgoingMessage]) -> PublishReport:
        """Publish the backlog and `messages` until all are acknowledged, or raise NatsUnavailable at the deadline."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.deadline
        if self.backlog:
            log.info("NATS: publishing %d messages held back from earlier scrapes", len(self.backlog))
        pending = self.backlog + list(messages)
        report = PublishReport(messages=len(pending))
        delay = 0.2
        while pending:
            remaining = max(give_up - loop.time(), 0.1)
            try:
                await self.connect(remaining)
            except NatsUnavailable:
                self._hold(pending)
                raise
            assert self.js is not None
            problem = ""
            try:
                if not self._stream_ready:
                    await asyncio.wait_for(ensure_stream(self.js, update=False), timeout=min(ACK_TIMEOUT, remaining))
                    self._stream_ready = True
                pending, problem = await self._round(pending, report, min(ACK_TIMEOUT, remaining))
            except Exception as exc:  # nats-py raises many types while the server is away
                problem = f"{type(exc).__name__}: {exc}".strip(": ")
            if not pending:
                break
            if loop.time() + delay > give_up:
                self._hold(pending)
                raise NatsUnavailable(
                    f"NATS at {redact_url(self.url)} did not acknowledge {len(pending)} of {report.messages} "
                    f"messages within PUBLISH_DEADLINE={self.deadline:g}s ({problem or 'no answer'})"
                )
            log.warning("NATS: %d messages not acknowledged (%s); retrying in %.1fs", len(pending), problem, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        self.backlog = []
        return report

    def _hold(self, pending: list[OutgoingMessage]) -> None:
        """Keep what NATS did not take for the next publish (bounded: a loop must not grow without end)."""
        dropped = len(pending) - MAX_BACKLOG
        if dropped > 0:
            log.warning("NATS: backlog full; dropping the %d oldest unpublished messages", dropped)
        self.backlog = pending[-MAX_BACKLOG:]

    async def _round(
        self, messages: list[OutgoingMessage], report: PublishReport, timeout: float
    ) -> tuple[list[OutgoingMessage], str]:
        """Publish once and wait for the acks; return the messages still unacknowledged and why."""
        assert self.js is not None
        futures: list[asyncio.Future] = []
        try:
            for message in messages:
                headers = dict(message.headers)
                futures.append(await self.js.publish_async(message.subject, message.payload, headers=headers))
        except BaseException:
            for future in futures:  # a pending future would keep publish_async_completed waiting forever
                future.cancel()
            raise
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.js.publish_async_completed(), timeout=timeout)
        unacked, problem = [], ""
        for message, future in zip(messages, futures, strict=True):
            if future.done() and not future.cancelled() and future.exception() is None:
                ack = future.result()
                if ack.duplicate:
                    report.duplicates += 1
                    report.duplicate_ids.add(message.msg_id)
                else:
                    report.stored += 1
                continue
            if future.done() and not future.cancelled():
                problem = f"{type(future.exception()).__name__}: {future.exception()}"
            else:
                future.cancel()
                problem = problem or f"no acknowledgement within {timeout:.1f}s"
            unacked.append(message)
        return unacked, problem
