"""Benchmark: backfill 100 coins × 30 days of 5-minute candles (864,000) into DuckDB (target < 30 s).

The real path end to end: `cryptoviz.scraper.backfill.run_backfill` (provider `binance`: klines of
≤ 1,000 a call, paged, validated by `CandleMaker`, chunked by `encode_candles`, published with
`publish_async`) against a local fake Binance in its own process (its klines rendered ahead), a real
nats-server, and the real `cryptoviz ingest` storing the candles in DuckDB. Timed from the start of
the backfill until the ingester's coverage shows all 864,000 candles stored. Baseline in the same
run: the live-ingest benchmark's measure (bench_ingest.py: a backlog of quotes, 500 a message, into DuckDB).

    .venv/bin/python bench/bench_backfill.py [--coins 100] [--days 30] [--baseline-quotes 300000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench_ingest import _ensure, ours
from cryptoviz.core import contract
from cryptoviz.core.nats import EmbeddedNats
from cryptoviz.core.quote import format_ts
from cryptoviz.dev.market import CandleRow, CoinRow, MarketServer
from cryptoviz.scraper.backfill import run_backfill
from cryptoviz.scraper.settings import BackfillSettings
from test_ingest_harness import Ingester, chunked, publish, synthetic_quotes

NOW = datetime(2025, 3, 1, tzinfo=UTC)
SLOT = 300


class SyntheticMarket:
    """`coins` coins with `days` of deterministic 5-minute candles ending at NOW (a random walk each)."""

    def __init__(self, coins: int, days: int) -> None:
        self.symbols = [f"C{i:03d}" for i in range(coins)]
        slots = days * 86_400 // SLOT + 1  # the last one opens at NOW: in progress
        self.start = int(NOW.timestamp()) - (slots - 1) * SLOT
        rng = np.random.default_rng(7)
        steps = rng.normal(0, 0.002, size=(coins, slots + 1))
        closes = 100 * np.exp(np.cumsum(steps, axis=1))
        self.opens, self.closes = closes[:, :-1], closes[:, 1:]
        spread = np.abs(rng.normal(0, 0.001, size=(coins, slots)))
        self.highs = np.maximum(self.opens, self.closes) * (1 + spread)
        self.lows = np.minimum(self.opens, self.closes) * (1 - spread)

    def snapshot(self) -> list[CoinRow]:
        return [CoinRow(s, s, float(self.closes[i, -1]), NOW, rank=i + 1) for i, s in enumerate(self.symbols)]

    def advance(self) -> bool:
        return False

    def now(self) -> datetime:
        return NOW

    def candles(self, symbol: str, interval: int, start: datetime, end: datetime) -> list[CandleRow]:
        if interval != SLOT or not symbol.startswith("C"):
            return []
        i = int(symbol[1:])
        first = max(0, math.ceil((start.timestamp() - self.start) / SLOT))
        last = min(
            self.opens.shape[1], math.ceil((min(end, NOW + timedelta(seconds=1)).timestamp() - self.start) / SLOT)
        )
        o, h, lo, c = (a[i, first:last].tolist() for a in (self.opens, self.highs, self.lows, self.closes))
        return [
            CandleRow(datetime.fromtimestamp(self.start + (first + k) * SLOT, UTC), o[k], h[k], lo[k], c[k], 1e6)
            for k in range(last - first)
        ]


def serve(coins: int, days: int, urls: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    """The fake provider in its own process, so rendering its answers does not take the scraper's GIL.

    Its klines are rendered before the clock starts (`BinanceWire.prerender`: the same bytes), so the
    fake provider's share of the two cores is a lookup a candle, not the `str()` of seven decimals.
    """
    feed = SyntheticMarket(coins, days)
    with MarketServer(feed) as market:
        every = (datetime.fromtimestamp(feed.start, UTC), NOW + timedelta(seconds=1))
        market.wires["binance"].prerender((c for s in feed.symbols for c in feed.candles(s, SLOT, *every)), SLOT)
        urls.put(market.url)
        stop.wait()


def stored_candles(ingester: Ingester, symbols: list[str], days: int) -> int | None:
    """Candles the ingester's coverage shows stored (None when it has no coverage: the storage side is missing)."""
    total = 0
    for start in range(0, len(symbols), 50):
        response = ingester.get(
            "/api/v1/coverage",
            symbols=",".join(symbols[start : start + 50]),
            provider="binance",
            since=format_ts(NOW - timedelta(days=days + 1)),
            until=format_ts(NOW),
        )
        if response.status_code == 404:
            return None
        total += sum(row["candles"] for row in response.json()["data"])
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (Linux /proc), to tell a busy machine from a slow path."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backfill(work: Path, nats_url: str, coins: int, days: int) -> tuple[float, float | None, int, dict[str, float]]:
    """(seconds until published, seconds until stored or None, candles, CPU seconds per process)."""
    urls: multiprocessing.Queue = multiprocessing.Queue()
    stop = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(coins, days, urls, stop), daemon=True)
    server.start()
    market_url = urls.get(timeout=120)
    symbols = [f"C{i:03d}" for i in range(coins)]
    config = work / "scraper.yaml"
    config.write_text("coins:\n" + "".join(f"  - {{symbol: {s}}}\n" for s in symbols))
    ingester = Ingester(nats_url, work / "backfill.duckdb", work / "backfill.log", BATCH_SIZE="20000").start()
    try:
        settings = BackfillSettings(
            nats_url=nats_url, provider="binance", binance_base_url=market_url, scraper_config=str(config),
            ingester_url=ingester.url, backfill_days=days, publish_deadline=120,
        )  # fmt: skip
        cpu_before = {"scraper": time.process_time(), "fake provider": cpu_seconds(server.pid)}
        cpu_before["ingester"] = cpu_seconds(ingester.process.pid)
        started = time.perf_counter()
        result = run_backfill(settings)
        published = time.perf_counter() - started
        assert result.exit_code == 0, result.error
        expected = coins * days * 86_400 // SLOT
        assert result.candles == expected, (result.candles, expected)
        stored_at = None
        while stored_at is None:
            count = stored_candles(ingester, symbols, days)
            if count is None:
                break
            if count >= expected:
                stored_at = time.perf_counter() - started
                assert count == expected, (count, expected)
            elif time.perf_counter() - started > 600:
                raise TimeoutError(f"only {count:,} of {expected:,} candles stored after 600 s")
            else:
                time.sleep(0.1)
        cpu = {
            "scraper": time.process_time() - cpu_before["scraper"],
            "fake provider": cpu_seconds(server.pid) - cpu_before["fake provider"],
            "ingester": cpu_seconds(ingester.process.pid) - cpu_before["ingester"],
        }
    finally:
        ingester.stop()
        stop.set()
        server.join(timeout=10)
    return published, stored_at, result.candles, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coins", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--baseline-quotes", type=int, default=300_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        work = Path(tmp)
        server = EmbeddedNats(work / "nats").start()
        try:
            published, stored, candles, cpu = backfill(work, server.url, args.coins, args.days)
            asyncio.run(_ensure(server.url))
            base = EmbeddedNats(work / "nats-baseline").start()
            try:
                asyncio.run(_ensure(base.url))
                publish(
                    base.url,
                    chunked(synthetic_quotes(args.baseline_quotes, coins=100), contract.MAX_QUOTES_PER_MESSAGE),
                )
                _, live_rate = ours(base.url, work, args.baseline_quotes, 20_000)
            finally:
                base.stop()
        finally:
            server.stop()
    print(f"backfill: {args.coins} coins × {args.days} days of 5-minute candles = {candles:,} candles")
    print(
        f"fetched, validated and acknowledged by JetStream in {published:.1f} s ({candles / published:,.0f} candles/s)"
    )
    used = ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items())
    print(f"CPU seconds used meanwhile: {used} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    if stored is None:
        print("stored in DuckDB: not measured (this ingester has no /api/v1/coverage: the storage side is missing)")
        return
    rate = candles / stored
    print(f"stored in DuckDB (coverage shows all) in {stored:.1f} s: {rate:,.0f} candles/s; target < 30 s: "
          f"{'met' if stored < 30 else 'NOT met'}")  # fmt: skip
    print(f"baseline, live ingest (bench_ingest: a quote backlog into DuckDB): {live_rate:,.0f} quotes/s; "
          f"ratio backfill/live ingest: {rate / live_rate:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
