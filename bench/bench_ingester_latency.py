"""Freshness: publish → visible in /api/v1/latest, p50 and p99, at 1,000 quotes/s.

A publisher sends one scrape of 10 coins every 10 ms (1k quotes/s), each with a new provider
timestamp; a poller asks /api/v1/latest every 5 ms and notes when each timestamp first shows.
Ours runs with the defaults (BATCH_SIZE 10000, BATCH_TIMEOUT 0.25 s); the baseline in the same
run is the same ingester committing every 10 quotes, as the original consumer did.

    .venv/bin/python bench/bench_ingester_latency.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cryptoviz.core import contract
from cryptoviz.core.nats import EmbeddedNats, ensure_stream
from cryptoviz.core.quote import Quote, parse_ts
from test_ingest_harness import Ingester

COINS = 10
INTERVAL = 0.01


async def _publish(url: str, seconds: float, sent: dict[datetime, float]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_stream(js)
    base = datetime(2025, 8, 1, tzinfo=UTC)
    started = time.perf_counter()
    tick = 0
    while time.perf_counter() - started < seconds:
        ts = base + timedelta(seconds=tick)
        quotes = [Quote("demo", f"coin-{c}", f"C{c}", f"Coin {c}", 100.0 + tick, ts, ts) for c in range(COINS)]
        for message in contract.encode_scrape("demo", quotes):
            sent[ts] = time.perf_counter()
            await js.publish(message.subject, message.payload, headers=message.headers)
        tick += 1
        await asyncio.sleep(max(0.0, started + tick * INTERVAL - time.perf_counter()))
    await nc.close()


def _poll(url: str, seen: dict[datetime, float], stop: threading.Event) -> None:
    session = requests.Session()
    while not stop.is_set():
        rows = session.get(url + "/api/v1/latest", params={"symbols": "C0"}, timeout=10).json()["data"]
        now = time.perf_counter()
        if rows:
            seen.setdefault(parse_ts(rows[0]["timestamp"]), now)
        time.sleep(0.005)


def measure(work: Path, label: str, seconds: float, **env: str) -> tuple[float, float]:
    server = EmbeddedNats(work / f"nats-{label}").start()
    ingester = Ingester(server.url, work / f"{label}.duckdb", work / f"{label}.log", **env).start()
    sent: dict[datetime, float] = {}
    seen: dict[datetime, float] = {}
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(ingester.url, seen, stop))
    poller.start()
    try:
        asyncio.run(_publish(server.url, seconds, sent))
        time.sleep(2)
    finally:
        stop.set()
        poller.join()
        ingester.stop()
        server.stop()
    # A timestamp seen implies every earlier one is visible too (each commit holds a prefix).
    latencies = []
    seen_sorted = sorted(seen.items())
    index = 0
    for ts, published in sorted(sent.items()):
        while index < len(seen_sorted) and seen_sorted[index][0] < ts:
            index += 1
        if index < len(seen_sorted):
            latencies.append(seen_sorted[index][1] - published)
    latencies.sort()
    return statistics.median(latencies), latencies[int(len(latencies) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        work = Path(tmp)
        ours = measure(work, "ours", args.seconds, BATCH_SIZE="10000", BATCH_TIMEOUT="0.25")
        base = measure(work, "baseline", args.seconds, BATCH_SIZE="10", BATCH_TIMEOUT="0.25")
    print(f"ours     (batches of ≤10k, 0.25 s timeout): p50 {ours[0] * 1000:6.0f} ms  p99 {ours[1] * 1000:6.0f} ms")
    print(f"baseline (commit every 10 quotes):          p50 {base[0] * 1000:6.0f} ms  p99 {base[1] * 1000:6.0f} ms")
    print(
        f"ratio baseline/ours p99: {base[1] / ours[1]:.2f}x; target p99 < 1 s: {'met' if ours[1] < 1.0 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
