"""The ingester end to end: real nats-server, real `cryptoviz ingest` subprocess, real DuckDB file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from cryptoviz.core import contract
from cryptoviz.core.quote import format_ts
from support.jetstream import wait_all_acked
from test_ingest_harness import (
    Ingester,
    chunked,
    kill_while_publishing,
    market_quotes,
    publish,
    scrapes,
    synthetic_quotes,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ingester(nats_server, tmp_path: Path) -> Iterator[Ingester]:
    process = Ingester(nats_server.url, tmp_path / "db" / "cryptoviz.duckdb", tmp_path / "ingester.log").start()
    try:
        yield process
    finally:
        process.stop()


def test_replayed_market_data_is_served_exactly(nats_server, ingester: Ingester, market_5m: Path):
    quotes = market_quotes(market_5m)
    publish(nats_server.url, scrapes(quotes))
    stats = ingester.wait_records(len(quotes))
    assert stats["records"] == len(quotes)
    assert stats["coins"] == len({q.symbol for q in quotes})
    assert stats["duplicates"] == 0 and stats["rejected"] == 0

    expected: dict[tuple[str, str], float] = {(q.symbol, format_ts(q.timestamp)): q.price for q in quotes}
    first = min(q.timestamp for q in quotes)
    last = max(q.timestamp for q in quotes)
    served: dict[tuple[str, str], float] = {}
    window = timedelta(days=10)
    start = first
    while start <= last:
        # 2880 buckets of exactly 300 s aligned on the data: one sample per bucket.
        answer = ingester.json(
            "/api/v1/history",
            start=format_ts(start),
            end=format_ts(start + window - timedelta(seconds=1)),
            points=2880,
            format="json",
        )
        assert answer["bucket_seconds"] == 300
        for row in answer["data"]:
            assert row["samples"] == 1
            assert row["open"] == row["high"] == row["low"] == row["close"] == row["price"]
            served[(row["symbol"], row["timestamp"])] = row["price"]
        start += window
    assert served == expected

    latest = {row["symbol"]: row for row in ingester.json("/api/v1/latest")["data"]}
    for q in quotes:
        if q.timestamp == last:
            assert latest[q.symbol]["price"] == q.price
            assert latest[q.symbol]["timestamp"] == format_ts(last)
            assert latest[q.symbol]["provider"] == "replay" and latest[q.symbol]["simulated"] is False


def test_duplicate_publishes_and_redeliveries_store_each_quote_once(nats_server, ingester: Ingester, market_5m: Path):
    quotes = market_quotes(market_5m, rows=200)
    messages = scrapes(quotes)
    publish(nats_server.url, messages)
    ingester.wait_records(len(quotes))
    # The same content again under new message ids: JetStream's duplicate window cannot help.
    renamed = [
        contract.OutgoingMessage(m.subject, m.payload, {**m.headers, contract.MSG_ID_HEADER: m.msg_id + "-again"})
        for m in messages
    ]
    publish(nats_server.url, renamed)
    publish(nats_server.url, messages)  # dropped by JetStream itself (same Nats-Msg-Id)
    stats = _wait_duplicates(ingester, len(quotes))
    assert stats["records"] == len(quotes)
    assert stats["duplicates"] == len(quotes)


def _wait_duplicates(ingester: Ingester, count: int, timeout: float = 30.0) -> dict:
    give_up = time.monotonic() + timeout
    while True:
        stats = ingester.json("/api/v1/stats")
        if stats["duplicates"] >= count or time.monotonic() > give_up:
            return stats
        time.sleep(0.2)


def test_sigkill_at_any_moment_loses_and_doubles_nothing(nats_server, tmp_path: Path):
    """100k quotes flow while the ingester is SIGKILLed again and again and restarted."""
    quotes = synthetic_quotes(100_000, coins=20)
    messages = chunked(quotes, 250)
    db = tmp_path / "kill.duckdb"
    ingester = Ingester(nats_server.url, db, tmp_path / "kill.log", BATCH_SIZE="1000", BATCH_TIMEOUT="0.02")
    try:
        kills = kill_while_publishing(ingester, nats_server.url, messages, seconds=3.0, kills=5, seed=7)
        ingester.wait_records(len(quotes), timeout=60)
        wait_all_acked(nats_server.url)  # everything acked: no straggling redelivery can add rows after this
        stats = ingester.json("/api/v1/stats")
    finally:
        ingester.stop()
    assert kills >= 5
    assert stats["records"] == len(quotes)
    with duckdb.connect(str(db), read_only=True) as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (provider, coin_id, timestamp)) FROM crypto_prices"
        ).fetchone()
        assert total == distinct == len(quotes)
        stored = conn.execute("SELECT coin_id, epoch_us(timestamp), price FROM crypto_prices").fetchall()
    expected = {(q.coin_id, int(q.timestamp.timestamp() * 1_000_000), q.price) for q in quotes}
    assert set(stored) == expected


def test_crash_between_commit_and_ack_is_redelivered_as_duplicates(nats_server, tmp_path: Path):
    """The narrowest window, hit on purpose: the process dies right after a commit, before acking."""
    quotes = synthetic_quotes(3000, coins=10)
    publish(nats_server.url, chunked(quotes, 500))
    db = tmp_path / "crash.duckdb"
    crashing = Ingester(
        nats_server.url, db, tmp_path / "crash.log", BATCH_SIZE="1000", CRYPTOVIZ_CRASH_AFTER_COMMIT="1"
    )
    crashing.start(wait=False)
    assert crashing.process.wait(30) == -9
    with duckdb.connect(str(db), read_only=True) as conn:
        committed = conn.execute("SELECT count(*) FROM crypto_prices").fetchone()[0]
    assert 0 < committed < len(quotes)
    ingester = Ingester(nats_server.url, db, tmp_path / "after.log", BATCH_SIZE="1000")
    try:
        ingester.start()
        ingester.wait_records(len(quotes))
        stats = _wait_duplicates(ingester, committed)
    finally:
        ingester.stop()
    assert stats["records"] == len(quotes)
    assert stats["duplicates"] == committed
