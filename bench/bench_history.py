"""/api/v1/history cost as the table grows, and the ingester's RSS.

Builds DuckDB files of 20 coins × 1-minute quotes (30 days ≈ 864k rows, then larger), starts
the real `cryptoviz ingest` on each, and times GET /api/v1/history bucketed to 1,000 points:
one symbol and all 20, over the newest 30 days and (large files) over everything. Baseline in
the same run: what the original dashboard did, reading every raw row of the window and
bucketing client-side (pandas). RSS is the ingester's after the queries and a 100k-quote ingest.

    .venv/bin/python bench/bench_history.py [--sizes 864000,10000000,50000000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import nats
import orjson
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cryptoviz.core.nats import EmbeddedNats, ensure_stream
from cryptoviz.core.quote import format_ts
from cryptoviz.ingester import queries
from cryptoviz.ingester.formats import JSON_OPTIONS, json_rows
from cryptoviz.ingester.schema import LATEST_FIELDS
from cryptoviz.ingester.store import Store
from test_ingest_harness import Ingester, chunked, publish, synthetic_quotes

COINS = 20
END = datetime(2025, 7, 1)


def build(path: Path, rows: int) -> None:
    """`rows` quotes of 20 coins, one per minute each, ending at END, in time order."""
    Store(path).close()
    minutes = rows // COINS
    with duckdb.connect(str(path)) as conn:
        conn.execute(
            """
            INSERT INTO crypto_prices BY NAME
            SELECT 'Coin ' || c AS name, 'C' || c AS symbol,
                   100 + c + 10 * sin(m / 500.0) + (hash(m * 31 + c) % 1000) / 1000.0 AS price,
                   NULL AS percent_change_24h, NULL AS market_cap,
                   $end - to_minutes(CAST($minutes - m AS BIGINT)) AS timestamp, 'coingecko' AS provider,
                   'coin-' || c AS coin_id, 1e6 AS volume_24h, NULL AS percent_change_1h, NULL AS percent_change_7d,
                   c + 1 AS rank, $end - to_minutes(CAST($minutes - m AS BIGINT)) AS received_at
            FROM range($minutes) t(m), range($coins) s(c)
            ORDER BY m, c
            """,
            {"end": END, "minutes": minutes, "coins": COINS},
        )
        conn.execute(
            f"""
            INSERT INTO coins BY NAME
            SELECT provider, coin_id, count(*) OVER w AS records, min(timestamp) OVER w AS first_timestamp,
                   {", ".join(LATEST_FIELDS)}
            FROM crypto_prices WINDOW w AS (PARTITION BY provider, coin_id)
            QUALIFY row_number() OVER (PARTITION BY provider, coin_id ORDER BY timestamp DESC) = 1
            """
        )
        conn.execute("CHECKPOINT")


def timed(url: str, params: dict, repeat: int, cold: bool = True) -> tuple[float, float, int]:
    """p50 and p99 in ms, and the row count of the answer.

    `cold`: every request asks a different question (its end moves by a second past the data, so
    the work is the same) and the ingester's answer cache cannot help; otherwise the same request
    is repeated, as dashboard refreshes between two commits are, and all but the first are hits.
    """
    session = requests.Session()
    samples, rows = [], 0
    for i in range(repeat):
        query = {**params, "end": format_ts(END + timedelta(seconds=i + 1))} if cold else params
        started = time.perf_counter()
        response = session.get(url + "/api/v1/history", params=query, timeout=120)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
        rows = len(response.json()["data"]) if params.get("format") is None else -1
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))], rows


def baseline(path: Path, symbols: list[str], start: datetime, repeat: int) -> float:
    """Read every raw row of the window, bucket client-side (the original dashboard's way); p50 ms."""
    samples = []
    with duckdb.connect(str(path), read_only=True) as conn:
        for _ in range(repeat):
            started = time.perf_counter()
            frame = conn.execute(
                "SELECT symbol, timestamp, price FROM crypto_prices WHERE symbol IN (SELECT unnest(?))"
                " AND timestamp >= ? ORDER BY timestamp",
                [symbols, start],
            ).df()
            step = (END - start) / 1000
            frame.groupby(["symbol", ((frame["timestamp"] - start) // step)])["price"].agg(
                ["first", "max", "min", "last"]
            )
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def in_process(path: Path, symbols: list[str], start: datetime, repeat: int) -> float:
    """Our server-side bucketing query alone (no HTTP), p50 ms: the like-for-like comparison."""
    samples = []
    with duckdb.connect(str(path), read_only=True) as conn:
        for _ in range(repeat):
            started = time.perf_counter()
            series = queries.select_series(conn, symbols, None)
            queries.history_json(conn, series, start, END, 1000)
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def encode_costs(path: Path, symbols: list[str], start: datetime, repeat: int) -> dict[str, float]:
    """p50 ms of the ways to the 20-symbol JSON answer, interleaved in one process so machine noise
    hits all alike: the Arrow query alone, then + `to_pylist()` + orjson (before), + `json_rows` +
    orjson; and the query with DuckDB writing the JSON rows (`history_json`, what /history does now)."""
    samples: dict[str, list[float]] = {"query": [], "to_pylist": [], "json_rows": [], "history_json": []}
    with duckdb.connect(str(path), read_only=True) as conn:
        series = queries.select_series(conn, symbols, None)
        ways = {
            "query": lambda: queries.history(conn, series, start, END, 1000),
            "to_pylist": lambda: orjson.dumps(
                queries.history(conn, series, start, END, 1000)[1].to_pylist(), option=JSON_OPTIONS
            ),
            "json_rows": lambda: orjson.dumps(
                json_rows(queries.history(conn, series, start, END, 1000)[1]), option=JSON_OPTIONS
            ),
            "history_json": lambda: queries.history_json(conn, series, start, END, 1000),
        }
        for _ in range(repeat):
            for name, way in ways.items():
                started = time.perf_counter()
                way()
                samples[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _ensure(url: str) -> None:
    nc = await nats.connect(url)
    await ensure_stream(nc.jetstream())
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="864000,10000000")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    all_symbols = [f"C{c}" for c in range(COINS)]
    month = END - timedelta(days=30)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        work = Path(tmp)
        server = EmbeddedNats(work / "nats").start()
        asyncio.run(_ensure(server.url))
        try:
            for size in sizes:
                path = work / f"h{size}.duckdb"
                started = time.perf_counter()
                build(path, size)
                built = time.perf_counter() - started
                mb = path.stat().st_size / 2**20
                # Before the ingester starts: only one process may open the file.
                base_one = baseline(path, ["C7"], month, 5)
                base_all = baseline(path, all_symbols, month, 5)
                ours_one = in_process(path, ["C7"], month, 10)
                ours_all = in_process(path, all_symbols, month, 10)
                encode = encode_costs(path, all_symbols, month, 15)
                ingester = Ingester(server.url, path, work / f"h{size}.log", RETENTION_DAYS="0").start(timeout=300)
                try:
                    window = {"start": format_ts(month), "end": format_ts(END), "points": "1000"}
                    one = timed(ingester.url, {**window, "symbols": "C7"}, args.repeat)
                    twenty = timed(ingester.url, {**window, "symbols": ",".join(all_symbols)}, args.repeat)
                    twenty_cached = timed(
                        ingester.url, {**window, "symbols": ",".join(all_symbols)}, args.repeat, cold=False
                    )
                    twenty_arrow = timed(
                        ingester.url, {**window, "symbols": ",".join(all_symbols), "format": "arrow"}, args.repeat
                    )
                    everything = timed(
                        ingester.url, {"symbols": "C7", "start": "2000-01-01T00:00:00Z", "points": "1000"}, 5
                    )
                    rss_idle = rss_mb(ingester.process.pid)
                    # New timestamps per size: JetStream's duplicate window outlives a purge.
                    fresh = synthetic_quotes(100_000, coins=COINS, start=END + timedelta(days=len(results)))
                    publish(server.url, chunked(fresh, 500))
                    ingester.wait_records(size // COINS * COINS + 100_000, timeout=300)
                    rss_ingest = rss_mb(ingester.process.pid)
                finally:
                    ingester.stop()
                asyncio.run(_purge(server.url))
                results.append(
                    (size, mb, built, one, twenty, everything, twenty_arrow, rss_idle, rss_ingest, twenty_cached)
                )
                print(
                    f"{size:>11,} rows ({mb:,.0f} MiB, built in {built:.0f}s): "
                    f"1 symbol p50 {one[0]:.1f} ms p99 {one[1]:.1f} ms ({one[2]} rows); "
                    f"20 symbols p50 {twenty[0]:.1f} ms p99 {twenty[1]:.1f} ms ({twenty[2]} rows), "
                    f"as Arrow p50 {twenty_arrow[0]:.1f} ms, repeated (cached) JSON p50 {twenty_cached[0]:.1f} ms; "
                    f"1 symbol, whole range p50 {everything[0]:.0f} ms; "
                    f"RSS {rss_idle:.0f} MiB idle, {rss_ingest:.0f} MiB after a 100k ingest\n"
                    f"    in-process, 30 days, 1000 points: ours 1 sym {ours_one:.1f} ms, 20 symbols {ours_all:.1f} ms;"
                    f" baseline (raw rows + pandas) 1 symbol {base_one:.1f} ms, 20 symbols {base_all:.1f} ms;"
                    f" ratio baseline/ours {base_one / ours_one:.1f}x and {base_all / ours_all:.1f}x\n"
                    f"    20-symbol answer ({twenty[2]} rows) in-process, interleaved:"
                    f" Arrow query {encode['query']:.1f} ms;"
                    f" as JSON: + to_pylist + orjson (before) {encode['to_pylist']:.1f} ms,"
                    f" + json_rows + orjson {encode['json_rows']:.1f} ms,"
                    f" DuckDB-written rows (now) {encode['history_json']:.1f} ms",
                    flush=True,
                )
        finally:
            server.stop()
    first = results[0]
    for row in results[1:]:
        print(
            f"growth {first[0]:,} → {row[0]:,} rows (×{row[0] / first[0]:.0f}): "
            f"30-day 1-symbol p50 ×{row[3][0] / first[3][0]:.2f}, 20-symbol p50 ×{row[4][0] / first[4][0]:.2f}, "
            f"whole-range p50 ×{row[5][0] / first[5][0]:.1f}"
        )
    verdict = {True: "met", False: "NOT met"}
    print(
        f"target p50 < 50 ms at 864k rows, 1,000 points: 1 symbol {verdict[first[3][0] < 50]} ({first[3][0]:.1f} ms);"
        f" 20 symbols as JSON {verdict[first[4][0] < 50]} ({first[4][0]:.1f} ms),"
        f" as Arrow {verdict[first[6][0] < 50]} ({first[6][0]:.1f} ms) (all cold: a new question each time;"
        f" repeated, from the answer cache: {first[9][0]:.1f} ms)"
    )


async def _purge(url: str) -> None:
    """Drop the ingested bench quotes and the durable consumer, so each size starts clean."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.purge_stream("CRYPTOVIZ_QUOTES")
    await js.delete_consumer("CRYPTOVIZ_QUOTES", "cryptoviz-ingester")
    await nc.close()


if __name__ == "__main__":
    main()
