"""What time each stored series covers, and its holes: `GET /api/v1/coverage` (what the scraper
backfills and gap-fills from).

Covered time is the union of quote timestamps (points), hourly rollups ([hour, hour + 1 h)) and
candles ([open_time, open_time + interval)). A gap is a hole longer than `min_gap` strictly between
a series' first and last covered time inside [since, until].

Cost is bounded without reading every quote into Python: spans are first folded into cells
`min_gap` wide (first start, last end per cell, which hides only holes shorter than `min_gap`, never
reported anyway), then one window over the cells finds the holes. At most `MAX_GAPS` gaps per series
are listed (the earliest), and `gaps_truncated` says when there were more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import orjson

from cryptoviz.core.api_contract import MAX_GAPS, MAX_SERIES, SeriesCoverage
from cryptoviz.ingester.formats import BadRequest

MAX_SPAN = timedelta(days=400)
MAX_CELLS = 200_000
"""`(until - since) / min_gap` at most: the folded cells per series and source."""
DEFAULT_SPAN = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Window:
    since: datetime
    until: datetime
    min_gap: int

    @classmethod
    def of(cls, since: datetime | None, until: datetime | None, min_gap: int, now: datetime) -> Window:
        """Defaults (until = now, since = until - 30 d) and limits, as 400s a person can act on."""
        end = until or now
        start = since or end - DEFAULT_SPAN
        if start >= end:
            raise BadRequest("since must be before until")
        if end - start > MAX_SPAN:
            raise BadRequest(f"since..until may span at most {MAX_SPAN.days} days")
        if (end - start).total_seconds() / min_gap > MAX_CELLS:
            raise BadRequest(
                f"min_gap={min_gap} is too fine for {end - start}: at most {MAX_CELLS:,} gaps of min_gap fit; "
                "raise min_gap or shorten the range"
            )
        return cls(start, end, min_gap)


_SPANS = """
    SELECT provider, coin_id, timestamp AS s, timestamp AS e, 1 AS quotes, 0 AS candles
    FROM crypto_prices WHERE timestamp >= $since AND timestamp <= $until AND {where}
    UNION ALL
    SELECT provider, coin_id, hour, hour + INTERVAL 1 HOUR, samples, 0
    FROM crypto_prices_hourly WHERE hour > $early_hour AND hour <= $until AND {where}
    UNION ALL
    SELECT provider, coin_id, open_time, open_time + to_seconds(interval), 0, 1
    FROM candles WHERE open_time > $early_day AND open_time <= $until AND {where}
    UNION ALL
    SELECT provider, coin_id, hour, hour + INTERVAL 1 HOUR, 0, candles
    FROM candles_hourly WHERE hour > $early_hour AND hour <= $until AND {where}
"""


def _iso(column: str) -> str:
    """The text orjson writes for this naive UTC timestamp (`2025-01-13T00:05:00Z`, microseconds when
    there are any), written by DuckDB: no `datetime` is made per gap."""
    return (
        f"CASE WHEN epoch_us({column}) % 1000000 = 0 THEN strftime({column}, '%Y-%m-%dT%H:%M:%SZ')"
        f" ELSE strftime({column}, '%Y-%m-%dT%H:%M:%S.%fZ') END"
    )


_COVERAGE_SQL = f"""
WITH spans AS (
    SELECT provider, coin_id, greatest(s, $since) AS s, least(e, $until) AS e, quotes, candles
    FROM ({_SPANS}) WHERE e >= $since
),
cells AS (
    SELECT provider, coin_id, min(s) AS s, max(e) AS e
    FROM spans GROUP BY provider, coin_id, epoch(s)::BIGINT // $min_gap
),
holes AS (
    SELECT provider, coin_id, s,
           max(e) OVER (PARTITION BY provider, coin_id ORDER BY s ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
               AS covered_until
    FROM cells
),
gaps AS (
    SELECT provider, coin_id,
           list({{'start': {_iso("covered_until")}, 'end': {_iso("s")},
                 'seconds': (epoch_us(s) - epoch_us(covered_until))::DOUBLE / 1e6::DOUBLE}} ORDER BY s) AS gaps
    FROM holes WHERE epoch(s) - epoch(covered_until) > $min_gap GROUP BY provider, coin_id
),
totals AS (
    SELECT provider, coin_id, min(s) AS first, max(e) AS last,
           sum(quotes)::BIGINT AS quotes, sum(candles)::BIGINT AS candles
    FROM spans GROUP BY provider, coin_id
)
SELECT t.provider, t.coin_id, {_iso("t.first")}, {_iso("t.last")}, t.quotes, t.candles,
       coalesce(to_json(g.gaps[:{MAX_GAPS}])::VARCHAR, '[]'), coalesce(len(g.gaps) > {MAX_GAPS}, false)
FROM totals t LEFT JOIN gaps g USING (provider, coin_id)
"""


def stored_series(
    cur: duckdb.DuckDBPyConnection, symbols: Sequence[str] | None, provider: str | None
) -> list[tuple[str, str, str]]:
    """(symbol, provider, coin_id) of every stored series of these symbols (all when None), of every
    provider unless one is given."""
    return cur.execute(
        """SELECT symbol, provider, coin_id FROM coins
           WHERE ($symbols IS NULL OR list_contains($symbols, symbol)) AND ($provider IS NULL OR provider = $provider)
           ORDER BY symbol, provider, coin_id LIMIT $limit""",
        {"symbols": list(symbols) if symbols is not None else None, "provider": provider, "limit": MAX_SERIES + 1},
    ).fetchall()


def coverage(cur: duckdb.DuckDBPyConnection, series: list[tuple[str, str, str]], window: Window) -> list[dict]:
    """First/last covered time, counts and gaps of each (symbol, provider, coin_id) over `window`: rows
    for orjson in `SeriesCoverage`'s shape, times as orjson writes them, each series' gaps as JSON
    text written by DuckDB (an `orjson.Fragment`).

    Not models, nor a Python object per gap: the worker thread holds the GIL for every object it
    makes (DuckDB's `fetchall` of nested values too, in one long call), and the event loop, with
    `/healthz`, waits behind it; a model and two `datetime`s per gap made a large answer cost the loop
    tens of milliseconds, more on a loaded machine (a thread holding the GIL can be descheduled).
    """
    if not series:
        return []
    by_provider: dict[str, list[str]] = {}
    for _, provider, coin_id in series:
        by_provider.setdefault(provider, []).append(coin_id)
    clauses = [f"(provider = $p{i} AND list_contains($c{i}, coin_id))" for i in range(len(by_provider))]
    params: dict = {
        "since": window.since,
        "until": window.until,
        "early_hour": window.since - timedelta(hours=1),
        "early_day": window.since - timedelta(days=1),
        "min_gap": window.min_gap,
    }
    for i, (provider, coin_ids) in enumerate(by_provider.items()):
        params[f"p{i}"], params[f"c{i}"] = provider, coin_ids
    rows = cur.execute(_COVERAGE_SQL.replace("{where}", f"({' OR '.join(clauses)})"), params).fetchall()
    found = {
        (p, c): (first, last, quotes, candles, orjson.Fragment(gaps), truncated)
        for p, c, first, last, quotes, candles, gaps, truncated in rows
    }
    return [
        dict(
            zip(
                _SERIES_FIELDS,
                (symbol, provider, coin_id, *found.get((provider, coin_id), (None, None, 0, 0, _NO_GAPS, False))),
                strict=True,
            )
        )
        for symbol, provider, coin_id in series
    ]


_SERIES_FIELDS = tuple(SeriesCoverage.model_fields)
_NO_GAPS = orjson.Fragment(b"[]")


def answer(cur: duckdb.DuckDBPyConnection, symbols: Sequence[str] | None, provider: str | None, window: Window) -> dict:
    """The whole `/api/v1/coverage` answer, in `CoverageResponse`'s shape (see `coverage`)."""
    series = stored_series(cur, symbols, provider)
    truncated = len(series) > MAX_SERIES
    series = series[:MAX_SERIES]
    return {
        "since": utc(window.since),
        "until": utc(window.until),
        "min_gap_seconds": window.min_gap,
        "data": coverage(cur, series, window),
        "unknown_symbols": [] if truncated else sorted(set(symbols or []) - {s[0] for s in series}),
        "series_truncated": truncated,
    }


def utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
