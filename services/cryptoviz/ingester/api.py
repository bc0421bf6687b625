"""The read API (FastAPI), served by the ingester process itself, the only one that opens DuckDB.

Every DuckDB read runs on a worker thread with that thread's own cursor, so the event loop
(and with it the JetStream consumer) never waits on a query.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import duckdb
import orjson
from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse

from cryptoviz import __version__
from cryptoviz.ingester import alerts_api, coverage, metrics, params, queries
from cryptoviz.ingester.cache import AnswerCache
from cryptoviz.ingester.formats import (
    FORMATS,
    JSON_OPTIONS,
    BadRequest,
    json_response,
    json_rows_response,
    negotiate,
    table_response,
)

if TYPE_CHECKING:
    from cryptoviz.ingester.service import Runtime

KEEPALIVE_SECONDS = 15.0
DEFAULT_WINDOW = timedelta(days=1)
_ERROR = {"description": "Bad parameter", "content": {"application/json": {"example": {"error": "message"}}}}
_TABLE_MEDIA = {
    "description": "OK (JSON, or the data table as CSV / Arrow IPC / Parquet)",
    "content": {
        "application/json": {},
        "text/csv": {},
        "application/vnd.apache.arrow.stream": {},
        "application/vnd.apache.parquet": {},
    },
}
RESPONSES = {200: _TABLE_MEDIA, 400: _ERROR}

FormatQ = Query(None, description=f"Answer format: {', '.join(FORMATS)} (else by Accept; default json).")
SymbolsQ = Query(None, description="Comma-separated tickers, e.g. BTC,ETH (default: all).")
ProviderQ = Query(None, description="Only this provider's data (default: one preferred provider per symbol).")


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def create_app(runtime: Runtime) -> FastAPI:
    # /docs and /redoc with Swagger UI and ReDoc served from the package's own files: no CDN, so they
    # work offline and behind a NetworkPolicy that allows no egress
    app = FastAPIOffline(
        title="CryptoViz ingester API",
        version=__version__,
        description="Read-only snapshots of the quotes stored by the ingester (DuckDB).",
    )

    history_cache = AnswerCache()

    async def read(fn, *args):
        """Run a query function on a worker thread with that thread's cursor."""

        def call():
            return fn(runtime.store.reader(), *args)

        return await asyncio.to_thread(call)

    @app.exception_handler(BadRequest)
    async def _bad_request(_: Request, exc: BadRequest) -> Response:
        return json_response({"error": str(exc)}, 400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return json_response({"error": problems or "invalid request"}, 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return json_response({"error": str(exc.detail)}, exc.status_code)

    @app.exception_handler(duckdb.Error)
    async def _db(_: Request, exc: duckdb.Error) -> Response:
        runtime.log.error("query failed: %s", exc)
        return json_response({"error": "database unavailable, try again"}, 503)

    @app.get("/healthz", tags=["probes"])
    async def healthz() -> Response:
        """The process is alive and its event loop answers."""
        return json_response({"status": "ok"})

    @app.get("/readyz", tags=["probes"], responses={503: {"description": "Not ready"}})
    async def readyz() -> Response:
        """DuckDB is open and the JetStream consumer is attached."""
        checks = {"duckdb": runtime.store_open(), "consumer": runtime.consumer_attached()}
        ready = all(checks.values())
        return json_response({"status": "ready" if ready else "not ready", **checks}, 200 if ready else 503)

    @app.get("/metrics", tags=["probes"])
    async def prometheus_metrics() -> Response:
        metrics.DB_BYTES.set(runtime.store.db_bytes())
        metrics.RECORDS.set((await read(queries.stats))["records"])
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/coins", responses=RESPONSES, tags=["data"])
    async def coins(request: Request, format: str | None = FormatQ) -> Response:
        """Every (provider, coin) stored, with record counts and the last price."""
        fmt = negotiate(format, request.headers.get("accept"))
        return table_response(await read(queries.coins), fmt)

    @app.get("/api/v1/latest", responses=RESPONSES, tags=["data"])
    async def latest(
        request: Request,
        symbols: str | None = SymbolsQ,
        provider: str | None = ProviderQ,
        format: str | None = FormatQ,
    ) -> Response:
        """The newest quote per symbol (one provider per symbol unless `provider` is given)."""
        fmt = negotiate(format, request.headers.get("accept"))
        wanted, source = params.symbols(symbols), params.provider(provider)

        def run(cur):
            return queries.latest(cur, queries.select_series(cur, wanted, source))

        return table_response(await read(run), fmt)

    @app.get("/api/v1/history", responses=RESPONSES, tags=["data"])
    async def history(
        request: Request,
        symbols: str | None = SymbolsQ,
        start: str | None = Query(None, description="ISO-8601 or epoch seconds (default: end minus 1 day)."),
        end: str | None = Query(None, description="ISO-8601 or epoch seconds (default: newest data)."),
        points: str | None = Query(None, description=f"Most buckets per series, 1..{params.MAX_POINTS} (1000)."),
        provider: str | None = ProviderQ,
        format: str | None = FormatQ,
    ) -> Response:
        """OHLC buckets per symbol over [start, end], at most `points` per series, spread over the part of
        the window that holds each series' data (from its first sample on); `bucket_seconds` is the widest."""
        fmt = negotiate(format, request.headers.get("accept"))
        wanted, source = params.symbols(symbols), params.provider(provider)
        start_ts, end_ts = params.timestamp(start, "start"), params.timestamp(end, "end")
        count = params.integer(points, "points", 1000, 1, params.MAX_POINTS)
        if start_ts and end_ts and start_ts >= end_ts:
            raise BadRequest("start must be before end")

        key = (fmt, tuple(sorted(set(wanted))) if wanted else None, source, start_ts, end_ts, count)

        def run(cur) -> Response:
            generation = runtime.store.generation  # before the query: a later commit only makes it fresher
            cached = history_cache.get(key, generation)
            if cached is not None:
                return cached.response()
            series = queries.select_series(cur, wanted, source)
            unknown = sorted(set(wanted or []) - {s.symbol for s in series})
            if wanted and not series:
                where = f" for provider {source}" if source else ""
                raise BadRequest(f"unknown symbol(s){where}: {', '.join(unknown)}; see /api/v1/coins")
            stop = end_ts or queries.default_range(cur, series) or datetime.now(UTC).replace(tzinfo=None)
            begin = start_ts or stop - DEFAULT_WINDOW
            if begin >= stop:
                raise BadRequest("start must be before end (the default end is the newest data)")
            # Encoded here, off the event loop; JSON text written by DuckDB itself.
            query = queries.history_json if fmt == "json" else queries.history
            step, rows = query(cur, series, begin, stop, count)
            meta = {"bucket_seconds": step, "start": _utc(begin), "end": _utc(stop)}
            if unknown:
                meta["unknown_symbols"] = unknown
            response = json_rows_response(meta, rows) if fmt == "json" else table_response(rows, fmt, meta)
            if series:  # without data the default end is "now", which a cache would freeze
                history_cache.put(key, generation, response)
            return response

        return await read(run)

    @app.get("/api/v1/coverage", response_model=coverage.CoverageResponse, responses={400: _ERROR}, tags=["data"])
    async def coverage_of(
        symbols: str | None = Query(None, description="Comma-separated tickers, e.g. BTC,ETH (default: all)."),
        provider: str | None = Query(None, description="Only this provider's series (default: every provider)."),
        since: str | None = Query(None, description="ISO-8601 or epoch seconds (default: until minus 30 days)."),
        until: str | None = Query(None, description="ISO-8601 or epoch seconds (default: now)."),
        min_gap: str | None = Query(
            None,
            description=f"Seconds a hole must exceed to be a gap, {'..'.join(map(str, coverage.MIN_GAP_RANGE))}"
            f" (default {coverage.DEFAULT_MIN_GAP}).",
        ),
    ) -> coverage.CoverageResponse:
        """Per stored (provider, coin) series of these symbols: first and last covered time, quote and
        candle counts, and the gaps (holes longer than min_gap between first and last) in [since, until]:
        what backfill and gap filling fetch."""
        wanted, source = params.symbols(symbols), params.provider(provider)
        gap = params.integer(min_gap, "min_gap", coverage.DEFAULT_MIN_GAP, *coverage.MIN_GAP_RANGE)
        now = datetime.now(UTC).replace(tzinfo=None)
        window = coverage.Window.of(params.timestamp(since, "since"), params.timestamp(until, "until"), gap, now)

        return await read(coverage.answer, wanted, source, window)

    @app.get("/api/v1/stats", responses={400: _ERROR}, tags=["data"])
    async def stats() -> Response:
        """Totals, freshness, ingest rate and consumer lag."""
        body = await read(queries.stats)
        counters = await asyncio.to_thread(runtime.store.counters)
        last_received = body.pop("last_received")
        body.update(
            seconds_since_last_data=(
                max(0.0, (datetime.now(UTC) - _utc(last_received)).total_seconds()) if last_received else None
            ),
            ingest_rate=runtime.ingest_rate(),
            consumer_lag=runtime.consumer_lag(),
            candle_lag=runtime.candle_lag(),
            db_bytes=runtime.store.db_bytes(),
            rejected=counters.get("rejected", 0),
            duplicates=counters.get("duplicates", 0),
            candle_duplicates=counters.get("candle_duplicates", 0),
        )
        return json_response(body)

    @app.get(
        "/api/v1/events",
        tags=["data"],
        responses={200: {"description": "Server-Sent Events", "content": {"text/event-stream": {}}}},
    )
    async def events(request: Request) -> StreamingResponse:
        """`event: commit` with {records, last_update, symbols} within 1 s of each commit."""
        queue = runtime.events.subscribe()

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 2000\n: connected\n\n"
                while not await request.is_disconnected():
                    try:
                        event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    yield b"event: commit\ndata: " + orjson.dumps(event, option=JSON_OPTIONS) + b"\n\n"
            finally:
                runtime.events.unsubscribe(queue)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @app.post(
        "/api/v1/admin/backup",
        tags=["admin"],
        responses={200: {"description": "tar of EXPORT DATABASE (Parquet)", "content": {"application/x-tar": {}}}},
    )
    async def backup() -> FileResponse:
        """A consistent snapshot (one read transaction) of every table, as a tar of Parquet files."""
        started = time.monotonic()
        tar_path = await asyncio.to_thread(runtime.snapshot_tar)
        runtime.log.info("backup snapshot written", extra={"seconds": round(time.monotonic() - started, 3)})
        return FileResponse(
            tar_path,
            media_type="application/x-tar",
            filename="cryptoviz-backup.tar",
            background=BackgroundTask(tar_path.unlink, missing_ok=True),
        )

    app.include_router(alerts_api.router(runtime, RESPONSES))
    return app
