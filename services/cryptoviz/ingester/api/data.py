"""The data routes: coins, latest, history, coverage, stats and the commit events.

List answers keep their fast paths (tables encoded column by column, `/history` rows written as
JSON by DuckDB and cached per commit): the response models document them and the tests check
that every answer matches its model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from cryptoviz.core import api_contract as contract
from cryptoviz.ingester import coverage, queries
from cryptoviz.ingester.api.deps import (
    AnswerFormat,
    CoverageProvider,
    End,
    MinGap,
    Points,
    Provider,
    ReaderDep,
    RuntimeDep,
    Since,
    Start,
    Symbols,
    Until,
)
from cryptoviz.ingester.api.responses import PROBLEM, TABLE_MEDIA
from cryptoviz.ingester.cache import AnswerCache
from cryptoviz.ingester.formats import JSON_OPTIONS, BadRequest, json_response, json_rows_response, table_response
from cryptoviz.ingester.runtime import Runtime

KEEPALIVE_SECONDS = 15.0
DEFAULT_WINDOW = timedelta(days=1)
MAX_EVENT_SUBSCRIBERS = 100
"""Open `/events` streams at most (each dashboard process holds one)."""

router = APIRouter(prefix="/api/v1", tags=["data"], responses={400: PROBLEM})


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@router.get("/coins", response_model=contract.CoinsAnswer, responses=TABLE_MEDIA)
async def coins(read: ReaderDep, fmt: AnswerFormat) -> Response:
    """Every (provider, coin) stored, with record counts and the last price."""
    return await read(lambda cur: table_response(queries.coins(cur), fmt))


@router.get("/latest", response_model=contract.LatestAnswer, responses=TABLE_MEDIA)
async def latest(read: ReaderDep, fmt: AnswerFormat, symbols: Symbols, provider: Provider = None) -> Response:
    """The newest quote per symbol (one provider per symbol unless `provider` is given)."""

    def run(cur: duckdb.DuckDBPyConnection) -> Response:  # encoded off the event loop too
        return table_response(queries.latest(cur, queries.select_series(cur, symbols, provider)), fmt)

    return await read(run)


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    fmt: str
    symbols: list[str] | None
    provider: str | None
    start: datetime | None
    end: datetime | None
    points: int

    @property
    def key(self) -> tuple[Any, ...]:
        wanted = tuple(sorted(self.symbols)) if self.symbols else None
        return (self.fmt, wanted, self.provider, self.start, self.end, self.points)


def history_answer(
    cur: duckdb.DuckDBPyConnection, query: HistoryQuery, runtime: Runtime, cache: AnswerCache
) -> Response:
    """The encoded answer, from the cache while no commit has changed the data."""
    generation = runtime.store.generation  # before the query: a later commit only makes it fresher
    cached = cache.get(query.key, generation)
    if cached is not None:
        return cached.response()
    series = queries.select_series(cur, query.symbols, query.provider)
    unknown = sorted(set(query.symbols or []) - {s.symbol for s in series})
    if query.symbols and not series:
        where = f" for provider {query.provider}" if query.provider else ""
        raise BadRequest(f"unknown symbol(s){where}: {', '.join(unknown)}; see /api/v1/coins")
    stop = query.end or queries.default_range(cur, series) or datetime.now(UTC).replace(tzinfo=None)
    begin = query.start or stop - DEFAULT_WINDOW
    if begin >= stop:
        raise BadRequest("start must be before end (the default end is the newest data)")
    # Encoded here, off the event loop; JSON text written by DuckDB itself.
    run = queries.history_json if query.fmt == "json" else queries.history
    step, rows = run(cur, series, begin, stop, query.points)
    meta: dict[str, Any] = {"bucket_seconds": step, "start": _utc(begin), "end": _utc(stop)}
    if unknown:
        meta["unknown_symbols"] = unknown
    response = json_rows_response(meta, rows) if query.fmt == "json" else table_response(rows, query.fmt, meta)
    if series:  # without data the default end is "now", which a cache would freeze
        cache.put(query.key, generation, response)
    return response


@router.get("/history", response_model=contract.HistoryAnswer, responses=TABLE_MEDIA)
async def history(
    request: Request,
    runtime: RuntimeDep,
    read: ReaderDep,
    fmt: AnswerFormat,
    symbols: Symbols,
    start: Start = None,
    end: End = None,
    points: Points = contract.DEFAULT_POINTS,
    provider: Provider = None,
) -> Response:
    """OHLC buckets per symbol over [start, end], at most `points` per series, spread over the part of
    the window that holds each series' data (from its first sample on); `bucket_seconds` is the widest."""
    if start and end and start >= end:
        raise BadRequest("start must be before end")
    query = HistoryQuery(fmt, symbols, provider, start, end, points)
    return await read(history_answer, query, runtime, request.app.state.history_cache)


@router.get("/coverage", response_model=contract.CoverageResponse)
async def coverage_of(
    read: ReaderDep,
    symbols: Symbols,
    provider: CoverageProvider = None,
    since: Since = None,
    until: Until = None,
    min_gap: MinGap = contract.DEFAULT_MIN_GAP,
) -> contract.CoverageResponse:
    """Per stored (provider, coin) series of these symbols: first and last covered time, quote and
    candle counts, and the gaps (holes longer than min_gap between first and last) in [since, until]:
    what backfill and gap filling fetch."""
    now = datetime.now(UTC).replace(tzinfo=None)
    window = coverage.Window.of(since, until, min_gap, now)

    def run(cur: duckdb.DuckDBPyConnection) -> Response:
        return json_response(coverage.answer(cur, symbols, provider, window))

    return await read(run)


@router.get("/stats", response_model=contract.Stats)
async def stats(runtime: RuntimeDep, read: ReaderDep) -> Response:
    """Totals, freshness, ingest rate and consumer lag."""
    body = await read(queries.stats)
    counters = await asyncio.to_thread(runtime.store.counters)
    last_received = _utc(body.pop("last_received"))
    body.update(
        seconds_since_last_data=(
            max(0.0, (datetime.now(UTC) - last_received).total_seconds()) if last_received else None
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


_EVENTS = {
    200: {
        "description": "Server-Sent Events: `event: commit` with a CommitEvent as data; `: keep-alive` every 15 s.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    503: PROBLEM,
}


@router.get("/events", responses=_EVENTS, response_class=StreamingResponse)
async def events(request: Request, runtime: RuntimeDep) -> Response:
    """`event: commit` with {records, last_update, symbols} within 1 s of each commit."""
    if runtime.events.subscribers >= MAX_EVENT_SUBSCRIBERS:
        return json_response({"error": f"at most {MAX_EVENT_SUBSCRIBERS} event streams are open at once"}, 503)
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
