"""`cryptoviz ingest`: the consumer, the API and housekeeping in one asyncio loop, one process.

One process because DuckDB allows one writer process or many readers, never both: the
ingester is the only process that opens the file, everyone else reads through its API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from cryptoviz.core.nats import connect, redact_url
from cryptoviz.ingester import metrics
from cryptoviz.ingester.alerts import STALE_CHECK_MAX_SECONDS, AlertEngine
from cryptoviz.ingester.api import create_app
from cryptoviz.ingester.backup import snapshot_tar
from cryptoviz.ingester.candle_writes import CandleCommit
from cryptoviz.ingester.consumer import CandleConsumer, Consumer, QuoteConsumer
from cryptoviz.ingester.outbox import Outbox, ReceiptConsumer, insert_alerts
from cryptoviz.ingester.quarantine import quarantine_future, report
from cryptoviz.ingester.retention import Housekeeper
from cryptoviz.ingester.store import CommitResult, Store

log = logging.getLogger("cryptoviz.ingester")

RATE_WINDOW = 60.0
LAG_REFRESH_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Settings:
    nats_url: str
    duckdb_path: str
    api_host: str
    api_port: int
    batch_size: int
    candle_batch_size: int
    batch_timeout: float
    retention_days: float
    scraper_config: str | None
    ack_wait: float


class EventHub:
    """Fan-out of commit events to SSE clients; a slow client loses old events, never blocks."""

    def __init__(self, depth: int = 100) -> None:
        self.depth = depth
        self._queues: set[asyncio.Queue] = set()

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(self.depth)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._queues.discard(queue)

    def publish(self, event: dict) -> None:
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)


class Runtime:
    """What the API needs to know about the running ingester."""

    def __init__(self, settings: Settings, store: Store) -> None:
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

    def snapshot_tar(self) -> Path:
        return snapshot_tar(self.store)

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
        if self.outbox is not None:
            task = asyncio.create_task(self.outbox.publish(fired), name="alert-publish")
            self._publishing.add(task)
            task.add_done_callback(self._published)

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


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the ingester shuts everything down in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _check_port(host: str, port: int) -> None:
    """Fail before touching NATS or DuckDB when the API port is taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise RuntimeError(f"cannot serve the API on {host}:{port}: {exc.strerror}") from None


async def run(settings: Settings) -> None:
    _check_port(settings.api_host, settings.api_port)
    store = await asyncio.to_thread(Store, settings.duckdb_path)
    log.info("opened %s (schema version %d)", settings.duckdb_path, store.version)
    report(await store.write(quarantine_future, store))  # before anything reads or writes
    runtime = Runtime(settings, store)
    config = uvicorn.Config(
        create_app(runtime),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    server = _Server(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    api_task = asyncio.create_task(_serve(server), name="api")
    nc = None
    tasks: list[asyncio.Task] = []
    try:
        log.info("connecting to NATS at %s", redact_url(settings.nats_url))
        connect_task = asyncio.create_task(connect(settings.nats_url, name="cryptoviz-ingester", deadline=3600))
        stop_task = asyncio.create_task(stopping.wait())
        await asyncio.wait({connect_task, stop_task, api_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        if not connect_task.done():
            # nats-py can swallow a cancel in its retry loop: never wait on it for long.
            connect_task.cancel()
            await asyncio.wait({connect_task}, timeout=2)
        if api_task.done():
            _raise_api_failure(api_task, settings)
        if not connect_task.done() or connect_task.cancelled():
            return
        nc = connect_task.result()
        runtime.alerts = await asyncio.to_thread(AlertEngine, settings.scraper_config, store)
        runtime.outbox = Outbox(store, nc)
        common = {"batch_timeout": settings.batch_timeout, "ack_wait": settings.ack_wait}
        runtime.consumers = [
            QuoteConsumer(
                nc,
                store,
                batch_size=settings.batch_size,
                on_commit=runtime.on_commit,
                alert_rules=runtime.alerts.due,
                **common,
            ),
            CandleConsumer(nc, store, batch_size=settings.candle_batch_size, on_commit=runtime.on_candles, **common),
        ]
        loops = [asyncio.create_task(c.run(), name=c.durable) for c in runtime.consumers]
        tasks = [
            *loops,
            asyncio.create_task(_refresh_lag(runtime.consumers), name="lag"),
            asyncio.create_task(Housekeeper(store, settings.retention_days).run(), name="retention"),
            asyncio.create_task(runtime.outbox.run(), name="outbox"),
            asyncio.create_task(ReceiptConsumer(store, nc).run(), name="receipts"),
            asyncio.create_task(runtime.check_stale(), name="stale"),
        ]
        done, _ = await asyncio.wait(
            {api_task, *loops, asyncio.create_task(stopping.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if api_task in done:
            _raise_api_failure(api_task, settings)
        for consumer in runtime.consumers:
            consumer.stop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*loops, return_exceptions=True), 10)
    finally:
        log.info("shutting down")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if runtime._publishing:  # stored alerts being published: let them land (else the next start's sweep does)
            await asyncio.wait(runtime._publishing, timeout=5)
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(api_task, 5)
        if nc is not None:
            with contextlib.suppress(Exception):  # acks are flushed; drain() can hang on pull subscriptions
                await asyncio.wait_for(nc.flush(), 2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 2)
        runtime._closed = True
        log.debug("closing DuckDB")
        await asyncio.to_thread(store.close)
        log.info("stopped")


async def _serve(server: uvicorn.Server) -> None:
    """uvicorn calls sys.exit when it cannot bind; make that an ordinary, reportable error."""
    try:
        await server.serve()
    except SystemExit:
        raise RuntimeError("uvicorn could not start") from None


async def _refresh_lag(consumers: list[Consumer]) -> None:
    while True:
        for consumer in consumers:
            with contextlib.suppress(Exception):
                metrics.LAG.labels(consumer=consumer.durable).set(await consumer.refresh_lag())
        await asyncio.sleep(LAG_REFRESH_SECONDS)


def _raise_api_failure(api_task: asyncio.Task, settings: Settings) -> None:
    """The API stopped on its own: in practice it could not bind its port."""
    raise RuntimeError(
        f"the API server could not serve on {settings.api_host}:{settings.api_port} (is the port already in use?)"
    )
