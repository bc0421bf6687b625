"""End-to-end ingest throughput: JetStream backlog → committed DuckDB rows.

Ours: the real `cryptoviz ingest` subprocess draining a backlog of N quotes (500 per message,
as the scraper chunks them). Baseline, same run, same messages: the original consumer's way,
popping 10 quotes at a time and inserting them row by row, then committing.

    .venv/bin/python bench/bench_ingest.py [--quotes 500000] [--baseline-quotes 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import nats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cryptoviz.core import contract
from cryptoviz.core.nats import EmbeddedNats, ensure_stream
from cryptoviz.ingester.schema import migrate
from test_ingest_harness import Ingester, chunked, publish, synthetic_quotes


def ours(nats_url: str, work: Path, total: int, batch_size: int) -> tuple[float, float]:
    """(rate including process start, steady rate from the first committed batch to the last)."""
    ingester = Ingester(nats_url, work / "ours.duckdb", work / "ours.log", BATCH_SIZE=str(batch_size), ACK_WAIT="60")
    started = time.perf_counter()
    ingester.start(wait=False)
    first: tuple[float, int] | None = None
    try:
        while True:
            try:
                records = ingester.json("/api/v1/stats")["records"]
            except Exception:  # not listening yet
                records = 0
            now = time.perf_counter()
            if records and first is None:
                first = (now, records)
            if records >= total:
                break
            time.sleep(0.02)
    finally:
        ingester.stop()
    steady = (total - first[1]) / (now - first[0]) if now > first[0] else float("nan")
    return total / (now - started), steady


async def _baseline(nats_url: str, db_path: Path, total: int) -> float:
    """Row-by-row INSERTs in transactions of 10, like the original Redis consumer."""
    conn = duckdb.connect(str(db_path))
    migrate(conn)
    columns = "name, symbol, price, percent_change_24h, market_cap, timestamp, provider, coin_id, received_at"
    sql = f"INSERT INTO crypto_prices ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(f"{contract.SUBJECT_PREFIX}.>", durable="baseline", stream=contract.STREAM_NAME)
    stored = 0
    started = time.perf_counter()
    while stored < total:
        for msg in await sub.fetch(1, timeout=5):
            quotes = contract.decode_message(msg.data).quotes
            for start in range(0, len(quotes), 10):
                conn.execute("BEGIN TRANSACTION")
                for q in quotes[start : start + 10]:
                    row = (q.name, q.symbol, q.price, q.percent_change_24h, q.market_cap, q.timestamp, q.provider)
                    conn.execute(sql, [*row, q.coin_id, q.received_at])
                conn.execute("COMMIT")
                stored += len(quotes[start : start + 10])
                if stored >= total:
                    break
            await msg.ack()
            if stored >= total:
                break
    elapsed = time.perf_counter() - started
    await nc.close()
    conn.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quotes", type=int, default=500_000)
    parser.add_argument("--baseline-quotes", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        server = EmbeddedNats(work / "nats").start()
        try:
            asyncio.run(_ensure(server.url))
            quotes = synthetic_quotes(args.quotes, coins=100)
            started = time.perf_counter()
            publish(server.url, chunked(quotes, contract.MAX_QUOTES_PER_MESSAGE))
            print(f"published {args.quotes:,} quotes in {time.perf_counter() - started:.1f}s (setup, not measured)")
            with_start, ours_rate = ours(server.url, work, args.quotes, args.batch_size)
            base_s = asyncio.run(_baseline(server.url, work / "baseline.duckdb", args.baseline_quotes))
            base_rate = args.baseline_quotes / base_s
        finally:
            server.stop()
    print(f"ours, steady (JetStream → committed DuckDB rows, Arrow batches): {ours_rate:12,.0f} quotes/s")
    print(f"ours, including the ingester's process start:                     {with_start:12,.0f} quotes/s")
    print(f"baseline (row-by-row INSERT, commit every 10, as the original):   {base_rate:12,.0f} quotes/s")
    print(
        f"ratio ours/baseline: {ours_rate / base_rate:.1f}x; "
        f"target ≥ 100,000 quotes/s: {'met' if ours_rate >= 1e5 else 'NOT met'}"
    )


async def _ensure(url: str) -> None:
    nc = await nats.connect(url)
    await ensure_stream(nc.jetstream())
    await nc.close()


if __name__ == "__main__":
    main()
