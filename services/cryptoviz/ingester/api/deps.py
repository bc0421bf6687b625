"""Dependencies of the API's routes: the runtime, a worker-thread reader, format negotiation, and the
typed query parameters.

Each parameter is declared once, as a type: its OpenAPI schema (integer with bounds, enum, ISO-8601
string) and its parsing by `params` (which checks the length before any per-item work and answers
with a message a person can act on). A value `params` refuses becomes a 400 `{"error": message}`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import duckdb
from fastapi import Depends, Query, Request
from pydantic import BeforeValidator, WithJsonSchema

from cryptoviz.core import api_contract as contract
from cryptoviz.core.quote import ALL_PROVIDERS
from cryptoviz.ingester import params
from cryptoviz.ingester.formats import negotiate
from cryptoviz.ingester.runtime import Runtime

T = TypeVar("T")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


QUERY_SLOTS = max(2, os.cpu_count() or 2)
"""Queries run at once at most; more wait their turn on the event loop (which costs nothing), so a
flood of large questions cannot starve the loop of CPU nor hold dozens of answers in memory."""


class Reader:
    """Runs a query function on a worker thread with that thread's own cursor (one snapshot), so
    the event loop, and with it the JetStream consumer, never waits on DuckDB."""

    def __init__(self, runtime: Runtime, slots: asyncio.Semaphore) -> None:
        self.runtime = runtime
        self.slots = slots

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        def call() -> T:
            cursor: duckdb.DuckDBPyConnection = self.runtime.store.reader()
            return fn(cursor, *args)

        async with self.slots:
            return await asyncio.to_thread(call)


def get_reader(request: Request, runtime: RuntimeDep) -> Reader:
    return Reader(runtime, request.app.state.query_slots)


ReaderDep = Annotated[Reader, Depends(get_reader)]


def _text_schema(**extra: Any) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "maxLength": contract.TEXT_MAX_CHARS, **extra})


def _timestamp(name: str) -> BeforeValidator:
    return BeforeValidator(lambda value: params.timestamp(value, name))


def _integer(name: str, default: int, low: int, high: int) -> BeforeValidator:
    return BeforeValidator(lambda value: params.integer(value, name, default, low, high))


_TIMESTAMP = _text_schema(examples=["2025-01-13T00:00:00Z", "1736726400"])
_ISO_OR_EPOCH = "ISO-8601 (naive = UTC) or epoch seconds"

Format = Annotated[
    str | None,
    Query(description=f"Answer format: {', '.join(contract.FORMATS)} (else by Accept; default json)."),
    _text_schema(enum=list(contract.FORMATS)),
]
Provider = Annotated[
    str | None,
    Query(description="Only this provider's data (default: one preferred provider per symbol)."),
    BeforeValidator(params.provider),
    _text_schema(enum=list(ALL_PROVIDERS)),
]
CoverageProvider = Annotated[
    str | None,
    Query(description="Only this provider's series (default: every provider)."),
    BeforeValidator(params.provider),
    _text_schema(enum=list(ALL_PROVIDERS)),
]
Start = Annotated[
    datetime | None,
    Query(description=f"{_ISO_OR_EPOCH} (default: end minus 1 day)."),
    _timestamp("start"),
    _TIMESTAMP,
]
End = Annotated[
    datetime | None, Query(description=f"{_ISO_OR_EPOCH} (default: newest data)."), _timestamp("end"), _TIMESTAMP
]
Since = Annotated[
    datetime | None,
    Query(description=f"{_ISO_OR_EPOCH} (default: until minus 30 days)."),
    _timestamp("since"),
    _TIMESTAMP,
]
Until = Annotated[
    datetime | None, Query(description=f"{_ISO_OR_EPOCH} (default: now)."), _timestamp("until"), _TIMESTAMP
]
AlertsSince = Annotated[
    datetime | None,
    Query(description=f"Only alerts fired at or after this ({_ISO_OR_EPOCH})."),
    _timestamp("since"),
    _TIMESTAMP,
]
Points = Annotated[
    int,
    Query(ge=1, le=contract.MAX_POINTS, description="Most buckets per series."),
    _integer("points", contract.DEFAULT_POINTS, 1, contract.MAX_POINTS),
]
MinGap = Annotated[
    int,
    Query(
        ge=contract.MIN_GAP_RANGE[0],
        le=contract.MIN_GAP_RANGE[1],
        description="Seconds a hole must exceed to be a gap.",
    ),
    _integer("min_gap", contract.DEFAULT_MIN_GAP, *contract.MIN_GAP_RANGE),
]
Limit = Annotated[
    int,
    Query(ge=contract.ALERTS_LIMIT[0], le=contract.ALERTS_LIMIT[1], description="Most rows, newest first."),
    _integer("limit", contract.DEFAULT_ALERTS_LIMIT, *contract.ALERTS_LIMIT),
]


def wanted_symbols(
    symbols: Annotated[
        str | None,
        Query(
            max_length=contract.SYMBOLS_MAX_CHARS,
            description=f"Comma-separated tickers, e.g. BTC,ETH, at most {contract.MAX_SYMBOLS} (default: all).",
        ),
    ] = None,
) -> list[str] | None:
    """A comma-separated list is one string on the wire: its length is capped (by the schema,
    before any work) and it is parsed here."""
    return params.symbols(symbols)


Symbols = Annotated[list[str] | None, Depends(wanted_symbols)]


def answer_format(request: Request, format: Format = None) -> str:
    """`format=` wins, then the first known media type in Accept, then JSON."""
    return negotiate(format, request.headers.get("accept"))


AnswerFormat = Annotated[str, Depends(answer_format)]
