"""What the API needs to know about the running ingester, and what its consumers tell it.

Kept apart from `service` (which starts everything) so the API depends on this and nothing
depends on the API: no import cycle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from cryptoviz.ingester.alerts import STALE_CHECK_MAX_SECONDS, AlertEngine
from cryptoviz.ingester.candle_writes import CandleCommit
from cryptoviz.ingester.consumer import CandleConsumer, Consumer
from cryptoviz.ingester.outbox import Outbox, insert_alerts
from cryptoviz.ingester.settings import IngestSettings
from cryptoviz.ingester.store import CommitResult, Store

log = logging.getLogger("cryptoviz.ingester")

RATE_WINDOW = 60.0


class EventHub:
    """Fan-out of commit events to SSE clients; a slow client loses old events, never blocks."""

    def __init__(self, depth: int = 100) -> None:
        self.depth = depth
        self._queues: set[asyncio.Queue] = set()

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(self.depth)
        self._queues.add(queue)
        return queue

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._queues.discard(queue)

    def publish(self, event: dict) -> None:
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)


class Runtime:
    """What the API needs to know about the running ingester."""

    def __init__(self, settings: IngestSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.log = log
        self.events = EventHub()
        self.consumers: list[Consumer] = []
        self.alerts: AlertEngine | None = None
        self.outbox: Outbox | None = None
        self._publishing: set[asyncio.Task] = set()
        self._commits: deque[tuple[float, int]] = deque()
        self._closed = False

    def store_open(self) -> bool:
        return not self._closed

    def consumer_attached(self) -> bool:
        return bool(self.consumers) and all(c.attached and c.nc.is_connected for c in self.consumers)

    def consumer_lag(self) -> int | None:
        """Messages not yet acked by the ingester, quotes and candles together."""
        return sum(c.lag for c in self.consumers) if self.consumers else None

    def candle_lag(self) -> int | None:
        return sum(c.lag for c in self.consumers if isinstance(c, CandleConsumer)) if self.consumers else None

    def ingest_rate(self) -> float:
        """Quotes stored per second over the last minute."""
        cutoff = time.monotonic() - RATE_WINDOW
        while self._commits and self._commits[0][0] < cutoff:
            self._commits.popleft()
        return round(sum(n for _, n in self._commits) / RATE_WINDOW, 3)

    async def on_commit(self, result: CommitResult) -> None:
        if result.inserted:
            self._commits.append((time.monotonic(), result.inserted))
            self.events.publish(
                {"records": result.inserted, "last_update": result.last_update, "symbols": result.symbols}
            )
            if self.alerts and result.alerts:
                self.announce(result.alerts)

    def announce(self, fired: list[dict]) -> None:
        """Stored alerts: start their cooldowns and hand them to the outbox without holding up ingest
        (a failed publish is retried by the outbox's sweep)."""
        self.alerts.committed(fired)
        if self.outbox is None:
            self.alerts.log_fired(fired)
            return
        task = asyncio.create_task(self._publish(self.outbox, fired), name="alert-publish")
        self._publishing.add(task)
        task.add_done_callback(self._published)

    async def _publish(self, outbox: Outbox, fired: list[dict]) -> None:
        """Published, then logged: a thousand log lines take tens of milliseconds that every alert of
        the batch would otherwise wait for before reaching the stream."""
        try:
            await outbox.publish(fired)
        finally:
            self.alerts.log_fired(fired)

    def _published(self, task: asyncio.Task) -> None:
        self._publishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("alert publication failed (%s); the outbox retries", task.exception())

    async def check_stale(self) -> None:
        """Clock-driven: stale rules have no batch to ride on."""
        while True:
            await asyncio.sleep(self.alerts.stale_check_seconds or STALE_CHECK_MAX_SECONDS)
            try:
                fired = await asyncio.to_thread(self.alerts.stale_due)
                if fired:
                    await self.store.write(insert_alerts, self.store, fired)
                    self.announce(fired)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an alert problem must never stop ingest
                log.error("stale check failed: %s", exc)

    async def on_candles(self, result: CandleCommit) -> None:
        """History arrived: dashboards refresh (`records` counts quotes, so it stays 0 here)."""
        if result.inserted or result.replaced:
            self.events.publish(
                {
                    "records": 0,
                    "candles": result.inserted + result.replaced,
                    "last_update": result.last_update,
                    "symbols": result.symbols,
                }
            )
