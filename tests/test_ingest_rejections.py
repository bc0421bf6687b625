"""Rejections are counted once per message, however often JetStream delivers it (ingester/rejections.py).

The end-to-end tests use a real nats-server, real `cryptoviz ingest` subprocesses and DuckDB files; the
store-level ones the real Store on a file.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import orjson
import pytest
from cryptoviz.core import contract
from cryptoviz.core.deadletter import JETSTREAM_MAX_DELIVER
from cryptoviz.core.nats import bind_durable
from cryptoviz.ingester.candle_decode import candles_to_arrow
from cryptoviz.ingester.consumer import DURABLE_NAME, FILTER_SUBJECT
from cryptoviz.ingester.rejections import Rejection, prune_counted
from cryptoviz.ingester.store import Store, quotes_to_arrow
from nats.js.api import AckPolicy, ConsumerConfig
from support.jetstream import wait_all_acked
from test_ingest_harness import Ingester, dead_letters, publish_raw, synthetic_quotes

pytestmark = pytest.mark.timeout(120)


def partly_bad(count: int) -> bytes:
    """One scrape of `count` quotes, two of them invalid (a negative price, an unparseable time)."""
    body = orjson.loads(contract.encode_scrape("demo", synthetic_quotes(count, coins=count))[0].payload)
    body["quotes"][0]["price"] = -5
    body["quotes"][1]["timestamp"] = "yesterday"
    return orjson.dumps(body)


def rejected_samples(metrics: str) -> dict[str, float]:
    return {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("cryptoviz_rejected_total{")
    }


def test_a_message_redelivered_after_its_commit_counts_its_rejections_once(nats_server, tmp_path: Path):
    db = tmp_path / "db.duckdb"
    first = Ingester(nats_server.url, db, tmp_path / "first.log", CRYPTOVIZ_CRASH_AFTER_COMMIT="1").start()
    try:
        publish_raw(nats_server.url, contract.subject_for("demo"), partly_bad(10))
        assert first.process.wait(30) == -signal.SIGKILL  # committed (rows and counts), never acked
    finally:
        first.kill()
    restarted = Ingester(nats_server.url, db, tmp_path / "restarted.log").start()
    try:
        stats = restarted.wait_records(8, key="duplicates")  # the redelivery came, every row already stored
        wait_all_acked(nats_server.url)
        metrics = restarted.get("/metrics").text
    finally:
        restarted.stop()
    assert stats["records"] == 8 and stats["rejected"] == 2, stats
    assert rejected_samples(metrics) == {}, "the restarted ingester counted the first one's rejections again"
    lines = [orjson.loads(line) for line in restarted.log().splitlines() if line.startswith("{")]
    again = [line for line in lines if line["msg"].startswith("rejected 2 invalid records")]
    assert [line["delivery"] for line in again] == [2]  # decoded and rejected again, only not counted


async def _deliver_unacked(url: str, messages: int, times: int) -> None:
    """Let the ingester's durable consumer deliver `messages` messages `times` times, never acked (a
    consumer that keeps dying before its commit)."""
    nc = await nats.connect(url)
    try:
        config = ConsumerConfig(
            durable_name=DURABLE_NAME,
            filter_subject=FILTER_SUBJECT,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=2,
            max_deliver=JETSTREAM_MAX_DELIVER,
        )
        sub = await bind_durable(nc.jetstream(), contract.STREAM_NAME, config)
        for _ in range(times):
            held = []
            while len(held) < messages:
                held += await sub.fetch(messages - len(held), timeout=10)
            for msg in held:
                await msg.nak()
    finally:
        await nc.close()


def test_rejections_of_deliveries_that_never_committed_are_counted_on_the_one_that_does(nats_server, tmp_path: Path):
    subject = contract.subject_for("demo")
    publish_raw(nats_server.url, subject, partly_bad(6))
    publish_raw(nats_server.url, subject, b"{not json")
    asyncio.run(_deliver_unacked(nats_server.url, 2, 3))  # not the first delivery: counted all the same
    ingester = Ingester(nats_server.url, tmp_path / "db.duckdb", tmp_path / "ingester.log").start()
    try:
        ingester.wait_records(4)
        (letter,) = asyncio.run(dead_letters(nats_server.url, 1))
        wait_all_acked(nats_server.url)
        stats = ingester.json("/api/v1/stats")
        metrics = ingester.get("/metrics").text
    finally:
        ingester.stop()
    assert letter.headers["Cryptoviz-Reason"] == "malformed_json"
    assert stats["rejected"] == 3
    assert rejected_samples(metrics) == {"nonpositive_price": 1, "invalid_timestamp": 1, "malformed_json": 1}


NOW = datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def test_the_store_counts_each_message_s_rejections_once_and_forgets_keys_past_max_age(tmp_path: Path):
    store = Store(tmp_path / "db.duckdb")
    try:
        quotes = quotes_to_arrow(synthetic_quotes(4, coins=2))
        bad = Rejection("CRYPTOVIZ", 7, NOW, {"nonpositive_price": 2, "invalid_timestamp": 1})
        recreated = Rejection("CRYPTOVIZ", 7, NOW + timedelta(seconds=1), {"nonpositive_price": 1})
        letter = Rejection("CRYPTOVIZ", 8, NOW, {"malformed_json": 1})
        assert store.write_batch(quotes, [bad, bad]).rejections == [bad]  # twice in one batch: once
        assert store.write_batch(quotes, [bad]).rejections == []  # redelivered: nothing
        assert store.write_candles(candles_to_arrow([]), [bad]).rejections == []
        assert store.write_batch(quotes, [recreated]).rejections == [recreated]  # same sequence, another message
        assert store.count_rejected(letter) and not store.count_rejected(letter)
        assert store.counters()["rejected"] == 3 + 1 + 1
        with store.write_lock:
            assert prune_counted(store.conn, datetime.now(UTC) + timedelta(days=7, seconds=2)) == 3
        assert store.count_rejected(letter)  # a message the stream no longer holds cannot come back
    finally:
        store.close()
