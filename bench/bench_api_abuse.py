"""/healthz latency of a real `cryptoviz ingest` while 30 clients send the largest questions the API
accepts and the oversized ones it refuses (bench/api_abuser.py, at nice 10: clients are elsewhere),
against the same ingester idle, measured in the same run.

    .venv/bin/python bench/bench_api_abuse.py [--clients 30] [--seconds 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import MARKET_5M
from cryptoviz.core.nats import EmbeddedNats
from test_ingest_harness import Ingester, market_quotes, publish, scrapes

ABUSER = Path(__file__).resolve().parent / "api_abuser.py"


def probe(url: str, seconds: float) -> list[float]:
    session, samples = requests.Session(), []
    give_up = time.monotonic() + seconds
    while time.monotonic() < give_up:
        started = time.perf_counter()
        session.get(url + "/healthz", timeout=10).raise_for_status()
        samples.append((time.perf_counter() - started) * 1000)
        time.sleep(0.02)
    return sorted(samples)


def p99(samples: list[float]) -> float:
    return samples[max(0, int(len(samples) * 0.99) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-abuse-") as tmp:
        work = Path(tmp)
        server = EmbeddedNats(work / "nats").start()
        ingester = Ingester(server.url, work / "db.duckdb", work / "ingester.log")
        try:
            ingester.start()
            quotes = market_quotes(MARKET_5M, rows=2000)
            publish(server.url, scrapes(quotes))
            ingester.wait_records(len(quotes), timeout=300)
            idle = probe(ingester.url, args.seconds / 2)
            abusers = subprocess.Popen(
                [
                    sys.executable,
                    str(ABUSER),
                    ingester.url,
                    "--clients",
                    str(args.clients),
                    "--seconds",
                    str(args.seconds),
                ],
                stdout=subprocess.PIPE,
                text=True,
                preexec_fn=lambda: os.nice(10),
            )
            assert abusers.stdout is not None and abusers.stdout.readline().strip() == "started"
            abused = probe(ingester.url, args.seconds - 1)
            report = abusers.communicate(timeout=120)[0].strip()
        finally:
            ingester.stop()
            server.stop()
    print(f"idle: /healthz p50 {statistics.median(idle):.1f} ms, p99 {p99(idle):.1f} ms ({len(idle)} probes)")
    print(
        f"{args.clients} abusive clients ({report}): /healthz p50 {statistics.median(abused):.1f} ms,"
        f" p99 {p99(abused):.1f} ms ({len(abused)} probes); p99 ratio abused/idle {p99(abused) / p99(idle):.1f}x;"
        f" target p99 < 100 ms {'met' if p99(abused) < 100 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
