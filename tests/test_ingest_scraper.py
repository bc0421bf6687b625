"""The real scraper replaying the shared 5-minute candles through NATS into the real ingester."""

from __future__ import annotations

import csv
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptoviz.core.quote import format_ts
from cryptoviz.dev.market import CsvReplayFeed, MarketServer
from cryptoviz.scraper.run import EXIT_OK, Settings, run_once
from test_ingest_harness import CRYPTOVIZ, Ingester

pytestmark = pytest.mark.timeout(120)

TICKS = 24


def _closes(directory: Path) -> dict[tuple[str, datetime], float]:
    """(symbol, candle time) → Close, read straight from the CSV files."""
    closes = {}
    for file in directory.glob("*.csv"):
        with file.open(newline="") as handle:
            for row in csv.DictReader(handle):
                closes[(file.name.split("-")[0], datetime.fromisoformat(row["Date"]).astimezone(UTC))] = float(
                    row["Close"]
                )
    return closes


def test_replay_through_the_scraper_is_served_exactly(nats_server, market_5m: Path, tmp_path: Path):
    closes = _closes(market_5m)
    ingester = Ingester(nats_server.url, tmp_path / "db.duckdb", tmp_path / "ingester.log").start()
    try:
        with MarketServer(CsvReplayFeed(market_5m, start=2000)) as market:
            env = {
                **os.environ,
                "NATS_URL": nats_server.url,
                "SCRAPE_PROVIDER": "replay",
                "MARKET_BASE_URL": market.url,
            }
            seen = [market.feed.now()]
            done = subprocess.run([CRYPTOVIZ, "scrape", "--once"], env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr[-2000:]
            settings = Settings(nats_url=nats_server.url, market_base_url=market.url, provider="replay")
            for _ in range(TICKS - 1):
                market.advance()
                seen.append(market.feed.now())
                result = run_once(settings)
                assert result.exit_code == EXIT_OK, result.error
        expected = {(symbol, format_ts(ts)): price for (symbol, ts), price in closes.items() if ts in seen}
        ingester.wait_records(len(expected))
        answer = ingester.json(
            "/api/v1/history",
            start=format_ts(seen[0]),
            end=format_ts(seen[0] + timedelta(seconds=300 * TICKS - 1)),
            points=TICKS,
            provider="replay",
        )
        stats = ingester.json("/api/v1/stats")
    finally:
        ingester.stop()
    assert answer["bucket_seconds"] == 300
    served = {(row["symbol"], row["timestamp"]): row["price"] for row in answer["data"]}
    assert all(row["samples"] == 1 for row in answer["data"])
    assert served == expected
    assert stats["records"] == len(expected) and stats["providers"] == ["replay"]
