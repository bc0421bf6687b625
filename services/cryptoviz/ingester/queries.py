"""Read queries behind the API. Each runs on the calling thread's own cursor (one snapshot)
with bound parameters only, and returns an Arrow table so every output format is one step away.

Series selection: a symbol may be tracked by several providers (and by the simulated `demo`
source). Unless `provider` is given, each symbol is served from one (provider, coin_id): live
providers before `demo`, then the one with the newest data, so live and simulated data never
mix in one series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from cryptoviz.ingester import sources
from cryptoviz.ingester.schema import LATEST_FIELDS

SIMULATED_PROVIDERS = ("demo",)
"""Providers whose prices are made up; `replay` replays real recorded prices."""


@dataclass(frozen=True, slots=True)
class Series:
    symbol: str
    provider: str
    coin_id: str


def _simulated_sql(column: str = "provider") -> str:
    return f"({column} IN ({', '.join(repr(p) for p in SIMULATED_PROVIDERS)}))"


def coins(cur: duckdb.DuckDBPyConnection) -> pa.Table:
    return cur.sql(
        f"""
        SELECT symbol, name, provider, coin_id, records, first_timestamp, timestamp AS last_timestamp,
               price AS last_price, {_simulated_sql()} AS simulated, coalesce(candles, 0)::BIGINT AS candles
        FROM coins ORDER BY symbol, provider, coin_id
        """
    ).to_arrow_table()


def select_series(cur: duckdb.DuckDBPyConnection, symbols: list[str] | None, provider: str | None) -> list[Series]:
    """One (provider, coin_id) per requested symbol (all symbols when None), see module doc."""
    sql = f"""
        SELECT symbol, provider, coin_id FROM coins
        WHERE ($provider IS NULL OR provider = $provider)
        QUALIFY row_number() OVER (
            PARTITION BY symbol ORDER BY {_simulated_sql()}, timestamp DESC, coin_id
        ) = 1
        ORDER BY symbol
    """
    rows = cur.execute(sql, {"provider": provider}).fetchall()
    wanted = set(symbols) if symbols is not None else None
    return [Series(*row) for row in rows if wanted is None or row[0] in wanted]


def _series_filter(series: list[Series]) -> tuple[str, list]:
    """`(provider = ? AND coin_id IN (?, ...)) OR ...`: one IN list per provider scans fastest."""
    by_provider: dict[str, list[str]] = {}
    for s in series:
        by_provider.setdefault(s.provider, []).append(s.coin_id)
    clauses, params = [], []
    for provider, coin_ids in by_provider.items():
        clauses.append(f"(provider = ? AND coin_id IN ({', '.join('?' for _ in coin_ids)}))")
        params += [provider, *coin_ids]
    return f"({' OR '.join(clauses)})", params


def latest(cur: duckdb.DuckDBPyConnection, series: list[Series]) -> pa.Table:
    if not series:
        return _empty(cur, f"SELECT provider, coin_id, {', '.join(LATEST_FIELDS)}, true AS simulated FROM coins")
    where, params = _series_filter(series)
    fields = ", ".join(f for f in LATEST_FIELDS)
    return cur.sql(
        f"""SELECT provider, coin_id, {fields}, {_simulated_sql()} AS simulated
            FROM coins WHERE {where} ORDER BY symbol""",
        params=params,
    ).to_arrow_table()


def default_range(cur: duckdb.DuckDBPyConnection, series: list[Series]) -> datetime | None:
    """The newest timestamp among the series: the default end of a history window."""
    if not series:
        return None
    where, params = _series_filter(series)
    # fetchall, not fetchone: a pending result breaks the next query on this (reused) cursor
    row = cur.execute(f"SELECT max(timestamp) FROM coins WHERE {where}", params).fetchall()[0]
    return row[0] if row else None


def bucket_seconds(start: datetime, end: datetime, points: int) -> int:
    span = (end - start).total_seconds()
    return max(1, math.ceil(span / points))


STEPS = (
    1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30,
    60, 120, 180, 240, 300, 360, 600, 720, 900, 1200, 1800, 2400,
    3600, 7200, 10800, 14400, 21600, 28800, 43200, 86400,
)  # fmt: skip
"""Bucket widths (s): each divides a day, so buckets start on round UTC times (10:05, 10:10 …), series
with the same width share bucket times, and hourly rollup rows fill whole buckets of ≥ 1 h."""


@dataclass(frozen=True, slots=True)
class Extent:
    """Where one series has data inside a requested window."""

    first: datetime
    last: datetime

    def step(self, points: int) -> int:
        """The narrowest bucket width (s) of `STEPS` (then whole days) that covers the data in at most
        `points` buckets aligned on multiples of the width."""
        span = (self.last - self.first).total_seconds()
        need = math.ceil(span / max(points - 1, 1))  # one bucket of slack for the alignment
        return next((s for s in STEPS if s >= need), None) or math.ceil(need / 86400) * 86400


def data_extent(
    cur: duckdb.DuckDBPyConnection, series: list[Series], start: datetime, end: datetime
) -> dict[tuple[str, str], Extent]:
    """The first and last sample time of each series inside [start, end], by (provider, coin_id).

    The one place that says where a selection has data: /history spreads its buckets over this
    part of the window (not the whole window, which may be mostly empty), and stamps no bucket
    before a series' first sample. It reads the same union of sources as the history itself
    (sources.py: quotes, their rollups, candles and theirs), so a new source added there counts here
    too. Series without data in the window are absent.
    """
    if not series:
        return {}
    where, params = _series_filter(series)
    bounds = sources.data_bounds(cur, where, params, start, end)
    return {key: Extent(first, last) for key, (first, last) in bounds.items()}


def history(
    cur: duckdb.DuckDBPyConnection, series: list[Series], start: datetime, end: datetime, points: int
) -> tuple[int, pa.Table]:
    """OHLC per bucket per series, at most `points` buckets per series over its data in [start, end].

    Each series' buckets are as wide as its data's span in the window needs (`Extent.step`), so ten
    minutes of data in a 7-day window still draw a line, and the first bucket is stamped at the first
    sample, never before; the step returned is the widest. Samples come from quotes and candles
    (sources.py): a quote lives either raw or (after retention) in the rollup, never both, and likewise
    a candle; where quotes and candles (or candles of several intervals) meet in a bucket only the
    preferred source counts, so no sample is counted twice. `samples` counts the quotes or candles
    merged into a bucket. Symbol and name are the coin's current ones (from `coins`).
    """
    step, sql, params = _history_query(cur, series, start, end, points)
    return step, cur.sql(f"{sql} ORDER BY {_HISTORY_ORDER}", params=params).to_arrow_table()


def history_json(
    cur: duckdb.DuckDBPyConnection, series: list[Series], start: datetime, end: datetime, points: int
) -> tuple[int, bytes]:
    """`history`'s rows as the UTF-8 text of a JSON array's items, written by DuckDB.

    The same rows and values as `history` encoded by orjson (timestamps ISO-8601 with `Z`,
    non-finite numbers null), several times faster than making 20,000 Python dicts, and off the
    GIL: each row is encoded in parallel before the sort, then Arrow joins them in one copy. Only
    the spelling of very large or small numbers can differ (`1e16` vs `10000000000000000.0`).
    """
    step, sql, params = _history_query(cur, series, start, end, points)
    rows = cur.sql(_JSON_ROWS_SQL.format(answer=sql), params=params).to_arrow_table().column(0).combine_chunks()
    if len(rows) == 0:
        return step, b""
    one_list = pa.ListArray.from_arrays(pa.array([0, len(rows)], pa.int32()), rows)
    return step, pc.binary_join(one_list, b",")[0].as_py()


def _history_query(
    cur: duckdb.DuckDBPyConnection, series: list[Series], start: datetime, end: datetime, points: int
) -> tuple[int, str, list]:
    extents = data_extent(cur, series, start, end)
    grid = []
    for key, extent in extents.items():
        step, first = extent.step(points), _epoch_us(extent.first)
        grid.append((*key, first - first % (step * 1_000_000), first, step * 1_000_000))
    where, series_params = _series_filter(series) if series else ("false", [])
    found = sources.present(cur, start, end)
    samples, sample_params = sources.samples_sql(where, series_params, start, end, found)
    ranking = {"rank": _PREFERENCE, "preference_column": ", preference", "qualify": _PREFER} if found.ranked else {}
    ranking = {"rank": "", "preference_column": "", "qualify": "", **ranking}
    # no data: a grid row that joins nothing keeps the answer's columns (CSV headers, Arrow schema)
    rows = grid or [(None, None, 0, 0, 1)]
    values = ", ".join("(?::VARCHAR, ?::VARCHAR, ?::BIGINT, ?::BIGINT, ?::BIGINT)" for _ in rows)
    params = [value for row in rows for value in row] + [points - 1, *sample_params]
    step = max(row[4] for row in grid) // 1_000_000 if grid else bucket_seconds(start, end, points)
    return step, _HISTORY_SQL.format(grid=values, samples=samples, **ranking), params


def _finite(column: str) -> str:
    return f"'{column}', CASE WHEN isfinite({column}) THEN {column} END"


_JSON_ROWS_SQL = f"""
SELECT encode(json_object(
    'symbol', symbol, 'provider', provider, 'coin_id', coin_id, 'name', name,
    'timestamp', CASE WHEN epoch_us(timestamp) % 1000000 = 0 THEN strftime(timestamp, '%Y-%m-%dT%H:%M:%SZ')
                      ELSE strftime(timestamp, '%Y-%m-%dT%H:%M:%S.%fZ') END,
    {", ".join(_finite(c) for c in ("open", "high", "low", "close", "price", "volume_24h"))},
    'samples', samples
)::VARCHAR) AS row
FROM ({{answer}})
ORDER BY symbol, provider, coin_id, timestamp
"""


def _epoch_us(naive_utc: datetime) -> int:
    return (naive_utc - datetime(1970, 1, 1)) // timedelta(microseconds=1)


_PREFERENCE = """, CASE WHEN rank = 0 THEN 100000
                  WHEN (rank - 1)::BIGINT * 1000000 <= g.step THEN rank
                  ELSE 200000 + rank END AS preference"""
"""Where sources overlap in a bucket, only one counts: candles no longer than the bucket (the finest
first: they carry the market's real open, high, low and close), else quotes (samples of the price),
else coarser candles. `rank` is 0 for quotes and 1 + interval for candles (sources.py)."""
_PREFER = "QUALIFY preference = min(preference) OVER (PARTITION BY provider, coin_id, bucket)"

_HISTORY_SQL = """
WITH grid(provider, coin_id, origin, first_us, step) AS (VALUES {grid}),
placed AS (
    SELECT s.provider, s.coin_id, first_ts, last_ts, open, high, low, close, volume_24h, n,
           g.origin, g.first_us, g.step, least(greatest((us - g.origin) // g.step, 0), ?::BIGINT) AS bucket{rank}
    FROM ({samples}) s JOIN grid g ON s.provider = g.provider AND s.coin_id = g.coin_id
),
buckets AS (
    SELECT provider, coin_id, bucket{preference_column},
           any_value(origin) AS origin, any_value(first_us) AS first_us, any_value(step) AS step,
           arg_min(open, first_ts) AS open, max(high) AS high, min(low) AS low, arg_max(close, last_ts) AS close,
           arg_max(volume_24h, last_ts) AS volume_24h, sum(n)::BIGINT AS samples
    FROM placed
    GROUP BY provider, coin_id, bucket{preference_column}
    {qualify}
)
SELECT c.symbol, b.provider, b.coin_id, c.name,
       make_timestamp(greatest(b.origin + b.bucket * b.step, b.first_us)) AS timestamp,
       b.open, b.high, b.low, b.close, b.close AS price, b.volume_24h, b.samples
FROM buckets b JOIN coins c ON b.provider = c.provider AND b.coin_id = c.coin_id
"""
_HISTORY_ORDER = "c.symbol, b.provider, b.coin_id, b.bucket"


def stats(cur: duckdb.DuckDBPyConnection) -> dict:
    row = cur.execute(
        f"""SELECT coalesce(sum(records), 0)::BIGINT, count(*), min(first_timestamp), max(timestamp),
                   max(received_at), list(DISTINCT provider ORDER BY provider),
                   coalesce(bool_or({_simulated_sql()}), false), coalesce(sum(candles), 0)::BIGINT
            FROM coins"""
    ).fetchall()[0]
    records, coin_count, first, last, last_received, providers, simulated, candles = row
    return {
        "records": records,
        "candles": candles,
        "coins": coin_count,
        "first_update": first,
        "last_update": last,
        "last_received": last_received,
        "providers": [p for p in providers or [] if p is not None],
        "simulated": bool(simulated),
    }


def _empty(cur: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pa.Table:
    """A zero-row table with the columns of `sql` (so empty CSV/Arrow answers keep their header)."""
    return cur.sql(f"SELECT * FROM ({sql}) LIMIT 0", params=params or None).to_arrow_table()
