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

from cryptoviz.core.nats import connect, redact_url
from cryptoviz.ingester import metrics
from cryptoviz.ingester.alerts import AlertEngine
from cryptoviz.ingester.api import create_app, create_metrics_app
from cryptoviz.ingester.consumer import CandleConsumer, Consumer, QuoteConsumer
from cryptoviz.ingester.outbox import Outbox, ReceiptConsumer
from cryptoviz.ingester.quarantine import quarantine_future, report
from cryptoviz.ingester.retention import Housekeeper
from cryptoviz.ingester.runtime import Runtime
from cryptoviz.ingester.serving import ApiConfig, Server
from cryptoviz.ingester.settings import IngestSettings
from cryptoviz.ingester.store import Store

log = logging.getLogger("cryptoviz.ingester")

LAG_REFRESH_SECONDS = 2.0


def _check_port(host: str, port: int, what: str) -> None:
    """Fail before touching NATS or DuckDB when a port is taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise RuntimeError(f"cannot serve {what} on {host}:{port}: {exc.strerror}") from None


def _servers(runtime: Runtime) -> list[Server]:
    """The API and, on its own port, /metrics (so Prometheus is let in to nothing else)."""
    s = runtime.settings
    servers = [Server(ApiConfig(create_app(runtime), s.api_host, s.api_port, s.limits))]
    if s.metrics_port:
        servers.append(Server(ApiConfig(create_metrics_app(runtime), s.api_host, s.metrics_port, s.limits)))
    return servers


async def run(settings: IngestSettings) -> None:
    _check_port(settings.api_host, settings.api_port, "the API")
    if settings.metrics_port:
        _check_port(settings.api_host, settings.metrics_port, "the metrics")
    store = await asyncio.to_thread(Store, settings.duckdb_path)
    log.info("opened %s (schema version %d)", settings.duckdb_path, store.version)
    report(await store.write(quarantine_future, store))  # before anything reads or writes
    runtime = Runtime(settings, store)
    servers = _servers(runtime)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    api_task = asyncio.create_task(_serve(servers), name="api")
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
        await _cancel(tasks)
        if runtime._publishing:  # stored alerts being published: let them land (else the next start's sweep does)
            await asyncio.wait(runtime._publishing, timeout=5)
        for server in servers:
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


async def _cancel(tasks: list[asyncio.Task], timeout: float = 5.0) -> None:
    """Cancel the background tasks and wait for them, but not forever: on Python 3.11 a cancel that
    meets a finishing `asyncio.wait_for` (nats-py's fetch) is lost, and the task's loop goes on (an
    ingester once hung for good on SIGTERM after NATS went away). Ask again; then stop without it."""
    for attempt in range(3):
        for task in tasks:
            task.cancel()
        done, pending = await asyncio.wait(tasks, timeout=timeout) if tasks else (set(), set())
        for task in done:  # retrieved, as gather(return_exceptions=True) did: no "never retrieved" at exit
            if not task.cancelled():
                task.exception()
        if not pending:
            return
        log.warning("tasks still running after cancel (attempt %d): %s", attempt + 1, [t.get_name() for t in pending])
        tasks = list(pending)


async def _serve(servers: list[Server]) -> None:
    await asyncio.gather(*(server.serve_until_stopped() for server in servers))


async def _refresh_lag(consumers: list[Consumer]) -> None:
    while True:
        for consumer in consumers:
            with contextlib.suppress(Exception):
                metrics.LAG.labels(consumer=consumer.durable).set(await consumer.refresh_lag())
        await asyncio.sleep(LAG_REFRESH_SECONDS)


def _raise_api_failure(api_task: asyncio.Task, settings: IngestSettings) -> None:
    """The API stopped on its own: in practice it could not bind its port."""
    ports = f"{settings.api_port}" + (f" or {settings.metrics_port}" if settings.metrics_port else "")
    raise RuntimeError(f"the API server could not serve on {settings.api_host}:{ports} (is the port already in use?)")
