"""Hostile data at the ingester: forged times, poison messages, messages that never get stored, crashes.

Real nats-server, real `cryptoviz ingest` subprocess, real DuckDB files; publishers write raw payloads
as an attacker (or a broken scraper) would.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import nats
import orjson
import pytest
from cryptoviz.core import alert_contract as ac
from cryptoviz.core import contract
from cryptoviz.core.candle import make_candle
from cryptoviz.core.deadletter import JETSTREAM_MAX_DELIVER, MAX_DELIVER
from cryptoviz.core.nats import bind_durable
from cryptoviz.core.quote import Quote, format_ts
from cryptoviz.ingester.consumer import DURABLE_NAME, FILTER_SUBJECT, guarded
from cryptoviz.ingester.store import Store, quotes_to_arrow
from nats.js.api import AckPolicy, ConsumerConfig
from support.notify import NotifyProcess, Receiver, metric_value
from test_ingest_harness import Ingester, chunked, dead_letters, publish, publish_raw, synthetic_quotes

pytestmark = pytest.mark.timeout(180)

NOW = datetime.now(UTC).replace(microsecond=0)


def body(quotes: list[Quote]) -> dict:
    return orjson.loads(contract.encode_scrape("demo", quotes)[0].payload)


def test_forged_times_are_refused_counted_and_never_pin_the_window(nats_server, tmp_path: Path):
    good = synthetic_quotes(10, coins=2, start=NOW - timedelta(minutes=10))
    newest = max(q.timestamp for q in good)
    hostile = body(synthetic_quotes(6, coins=6, start=NOW - timedelta(minutes=1)))
    quotes = hostile["quotes"]
    quotes[0]["timestamp"] = "2999-01-01T00:00:00Z"
    quotes[1]["received_at"] = "2999-01-01T00:00:00Z"  # a forged receive time does not widen the window
    quotes[1]["timestamp"] = "2999-01-01T00:00:00Z"
    quotes[2]["received_at"] = format_ts(NOW + timedelta(days=2))
    quotes[3]["timestamp"] = 1.7e15
    quotes[4]["timestamp"] = "9999-12-31T23:59:59-05:00"
    quotes[5]["timestamp"] = format_ts(NOW + timedelta(hours=1))
    future_candle = make_candle(
        provider="binance", coin_id="BTCUSDT", symbol="BTC", name="Bitcoin", interval=300, open_time=NOW,
        open=1, high=1, low=1, close=1, received_at=NOW,
    ).to_json_dict()  # fmt: skip
    future_candle["open_time"] = "2999-01-01T00:00:00Z"
    candles = {"schema": 1, "kind": "candles", "provider": "binance", "candles": [future_candle]}
    ingester = Ingester(nats_server.url, tmp_path / "db.duckdb", tmp_path / "ingester.log").start()
    try:
        publish_raw(nats_server.url, contract.subject_for("demo"), orjson.dumps(hostile))
        publish_raw(nats_server.url, contract.candles_subject_for("binance"), orjson.dumps(candles))
        publish(nats_server.url, contract.encode_scrape("demo", good))
        ingester.wait_records(len(good))
        stats = ingester.wait_lag_zero()
        latest = ingester.json("/api/v1/latest")
        coins = ingester.json("/api/v1/coins")
        metrics = ingester.get("/metrics").text
    finally:
        ingester.stop()
    assert stats["records"] == len(good) and stats["candles"] == 0
    assert stats["rejected"] == 7
    assert stats["last_update"] == format_ts(newest)
    assert max(row["timestamp"] for row in latest["data"]) == format_ts(newest)
    assert {row["symbol"] for row in coins["data"]} == {"C0", "C1"}
    for reason, count in [("future_timestamp", 2), ("future_received_at", 2), ("invalid_timestamp", 2)]:
        assert f'cryptoviz_rejected_total{{reason="{reason}"}} {count}.0' in metrics
    assert 'cryptoviz_rejected_total{reason="future_open_time"} 1.0' in metrics
    assert "Traceback" not in ingester.log()


def test_a_file_already_holding_a_future_quote_is_repaired_at_start(nats_server, tmp_path: Path):
    db = tmp_path / "db.duckdb"
    real = Quote("demo", "btc", "BTC", "Bitcoin", 100.0, NOW - timedelta(hours=1), NOW - timedelta(hours=1))
    stamped = datetime(2999, 1, 1, tzinfo=UTC)
    store = Store(db)  # what an ingester without the time check stored
    store.write_batch(quotes_to_arrow([real, Quote("demo", "btc", "BTC", "Bitcoin", 1e6, stamped, stamped)]))
    store.close()
    ingester = Ingester(nats_server.url, db, tmp_path / "ingester.log").start()
    try:
        stats = ingester.json("/api/v1/stats")
        latest = ingester.json("/api/v1/latest", symbols="BTC")["data"]
        history = ingester.json("/api/v1/history", symbols="BTC")
    finally:
        ingester.stop()
    assert stats["last_update"] == format_ts(real.timestamp) and stats["records"] == 1
    assert [row["price"] for row in latest] == [100.0]
    assert history["end"] == format_ts(real.timestamp) and len(history["data"]) == 1
    assert "moved 1 quotes and 0 candles" in ingester.log()
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.execute("SELECT price, reason FROM quarantined_quotes").fetchall() == [(1e6, "future_timestamp")]


def test_a_decode_error_of_any_kind_makes_a_dead_letter_not_a_failed_batch():
    def broken(payload: bytes, now: datetime):
        raise RuntimeError("surprise")

    error = guarded(broken, b"{}", NOW)
    assert isinstance(error, contract.ContractError)
    assert error.reason == "decode_error" and "RuntimeError: surprise" in str(error)


def test_poison_headers_cannot_break_the_dead_letter_and_the_batch_is_stored(nats_server, tmp_path: Path):
    good = synthetic_quotes(30, coins=3)
    ingester = Ingester(nats_server.url, tmp_path / "db.duckdb", tmp_path / "ingester.log").start()
    try:
        # Valid once per subject: copied onto the dead letters (one subject), it would refuse the 2nd and 3rd.
        hostile_headers = {"Nats-Expected-Last-Subject-Sequence": "0", "X-Trace": "t1"}
        for n, provider in enumerate(("demo", "replay", "binance")):
            publish_raw(nats_server.url, contract.subject_for(provider), b"[1,2", hostile_headers | {"X-N": str(n)})
        publish(nats_server.url, chunked(good, 10))
        ingester.wait_records(len(good))
        letters = asyncio.run(dead_letters(nats_server.url, 3))
        stats = ingester.wait_lag_zero()
    finally:
        ingester.stop()
    assert [m.headers["Cryptoviz-Reason"] for m in letters] == ["malformed_json"] * 3
    assert {m.headers["X-N"] for m in letters} == {"0", "1", "2"}
    assert all(m.headers["X-Trace"] == "t1" and "Nats-Expected-Last-Subject-Sequence" not in m.headers for m in letters)
    assert stats["rejected"] == 3 and stats["records"] == len(good) and stats["consumer_lag"] == 0


async def _deliver_unacked(url: str, times: int) -> None:
    """Take the ingester's durable consumer and let one message go unacked `times` times (a crash loop)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        config = ConsumerConfig(
            durable_name=DURABLE_NAME,
            filter_subject=FILTER_SUBJECT,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=2,
            max_deliver=JETSTREAM_MAX_DELIVER,
        )
        sub = await bind_durable(js, contract.STREAM_NAME, config)
        for _ in range(times):
            (msg,) = await sub.fetch(1, timeout=10)
            await msg.nak()
    finally:
        await nc.close()


def test_a_message_delivered_max_deliver_times_is_dead_lettered_unread(nats_server, tmp_path: Path):
    good = synthetic_quotes(20, coins=2)
    (message,) = contract.encode_scrape("demo", good[:2])
    publish(nats_server.url, [message])
    asyncio.run(_deliver_unacked(nats_server.url, MAX_DELIVER - 1))
    ingester = Ingester(nats_server.url, tmp_path / "db.duckdb", tmp_path / "ingester.log").start()
    try:
        publish(nats_server.url, contract.encode_scrape("demo", good[2:]))
        ingester.wait_records(len(good) - 2)
        (letter,) = asyncio.run(dead_letters(nats_server.url, 1))
        stats = ingester.wait_lag_zero()
        info = asyncio.run(_consumer_info(nats_server.url))
    finally:
        ingester.stop()
    assert letter.headers["Cryptoviz-Reason"] == "max_deliveries"
    assert letter.headers["Cryptoviz-Original-Msg-Id"] == message.msg_id and letter.data == message.payload
    assert stats["records"] == len(good) - 2 and stats["rejected"] == 1 and stats["consumer_lag"] == 0
    assert info.config.max_deliver == JETSTREAM_MAX_DELIVER
    assert info.config.ack_wait == 2  # the harness's ACK_WAIT, applied to the consumer that existed


async def _consumer_info(url: str):
    nc = await nats.connect(url)
    try:
        return await nc.jetstream().consumer_info(contract.STREAM_NAME, DURABLE_NAME)
    finally:
        await nc.close()


async def _held(url: str, count: int, timeout: float = 30) -> None:
    """Until the ingester holds `count` messages fetched but not acked."""
    give_up = time.monotonic() + timeout
    while (info := await _consumer_info(url)).num_ack_pending < count:
        assert time.monotonic() < give_up, info
        await asyncio.sleep(0.1)


KILLED = {
    # BATCH_TIMEOUT long: it holds every message unacked, waiting for more, when it is killed.
    "collecting": {"BATCH_TIMEOUT": "30"},
    # A slow disk: killed inside the commit, its messages kept in progress by heartbeats until then.
    "committing": {"BATCH_TIMEOUT": "3", "CRYPTOVIZ_COMMIT_DELAY": "60", "LOG_LEVEL": "DEBUG"},
    # The rows written, the acks not sent: the redelivered messages are stored once, not twice.
    "before_the_acks": {"CRYPTOVIZ_CRASH_AFTER_COMMIT": "1"},
}


@pytest.mark.parametrize("moment", list(KILLED))
def test_after_a_sigkill_every_held_message_is_stored_within_10_s_of_restart(nats_server, tmp_path: Path, moment):
    quotes = synthetic_quotes(2000, coins=20)
    messages = chunked(quotes, 100)
    db = tmp_path / "db.duckdb"
    first = Ingester(nats_server.url, db, tmp_path / "first.log", BATCH_SIZE="100000", **KILLED[moment])
    first.env.pop("ACK_WAIT")  # the default, as installed
    first.start()
    try:
        publish(nats_server.url, messages)
        if moment == "before_the_acks":
            assert first.process.wait(30) == -signal.SIGKILL  # it killed itself after its first commit
        else:
            asyncio.run(_held(nats_server.url, len(messages)))
            if moment == "committing":
                give_up = time.monotonic() + 30
                while "committing batch" not in first.log():
                    assert time.monotonic() < give_up, first.log()[-2000:]
                    time.sleep(0.05)
    finally:
        first.kill()
    restarted = Ingester(nats_server.url, db, tmp_path / "restarted.log", BATCH_TIMEOUT="0.2")
    restarted.env.pop("ACK_WAIT")
    started = time.monotonic()
    try:
        restarted.start()
        stats = restarted.wait_records(len(quotes), timeout=60)
        elapsed = time.monotonic() - started
        stats = restarted.wait_lag_zero()
    finally:
        restarted.stop()
    assert elapsed < 10, f"{elapsed:.1f}s from restart until every held message was stored"
    assert stats["records"] == len(quotes) and stats["consumer_lag"] == 0
    if moment != "before_the_acks":
        assert stats["duplicates"] == 0
    with duckdb.connect(str(db), read_only=True) as conn:
        sql = "SELECT count(*), count(DISTINCT (coin_id, timestamp)) FROM crypto_prices"
        total, distinct = conn.execute(sql).fetchone()
        assert (total, distinct) == (len(quotes), len(quotes))


def test_a_commit_slower_than_ack_wait_is_not_redelivered(nats_server, tmp_path: Path):
    quotes = synthetic_quotes(600, coins=6)
    ingester = Ingester(
        nats_server.url, tmp_path / "db.duckdb", tmp_path / "ingester.log", ACK_WAIT="2", CRYPTOVIZ_COMMIT_DELAY="5"
    ).start()
    messages = chunked(quotes, 50)
    try:
        publish(nats_server.url, messages)
        ingester.wait_records(len(quotes))
        stats = ingester.wait_lag_zero()
        info = asyncio.run(_consumer_info(nats_server.url))
    finally:
        ingester.stop()
    assert stats["records"] == len(quotes)
    assert stats["duplicates"] == 0 and stats["consumer_lag"] == 0
    assert info.delivered.consumer_seq == len(messages), "some messages were delivered twice"


async def _parked(url: str, stream: str, subject: str, expected: int) -> list:
    nc = await nats.connect(url)
    try:
        sub = await nc.jetstream().pull_subscribe(subject, stream=stream)
        found: list = []
        give_up = time.monotonic() + 20
        while len(found) < expected and time.monotonic() < give_up:
            with contextlib.suppress(nats.errors.TimeoutError):
                found += await sub.fetch(10, timeout=1)
        return found
    finally:
        await nc.close()


def test_poison_alerts_and_receipts_are_dead_letters_and_alerts_still_flow(nats_server, tmp_path: Path):
    config = tmp_path / "scraper.yaml"
    config.write_text("version: 1\ncoins:\n  - symbol: C1\n    alerts: [{below: 50, cooldown: 1h}]\n")
    with Receiver() as receiver:
        ingester = Ingester(nats_server.url, tmp_path / "db.duckdb", tmp_path / "i.log", SCRAPER_CONFIG=str(config))
        urls = receiver.json_url("/t")
        notifier = NotifyProcess(nats_server.url, tmp_path / "n.log", receiver.base, NOTIFY_URLS=urls)
        try:
            ingester.start()
            notifier.start()
            publish_raw(nats_server.url, f"{ac.ALERTS_PREFIX}.C1", b'{"alert_id": 7}')
            publish_raw(nats_server.url, f"{ac.RECEIPTS_PREFIX}.x.y", b"\xff not json")
            quote = Quote("demo", "c1", "C1", "C1", 40.0, NOW - timedelta(minutes=1), NOW - timedelta(minutes=1))
            publish(nats_server.url, chunked([quote]))
            give_up = time.monotonic() + 60
            while not receiver.on("/t") and time.monotonic() < give_up:
                time.sleep(0.1)
            alerts = asyncio.run(_parked(nats_server.url, ac.STREAM_NAME, ac.UNUSABLE_DEADLETTER, 1))
            receipts = asyncio.run(_parked(nats_server.url, contract.STREAM_NAME, "cryptoviz.deadletter.>", 1))
            stats = ingester.json("/api/v1/stats")
            metrics = notifier.metrics()
        finally:
            notifier.stop()
            ingester.stop()
        assert len(receiver.on("/t")) == 1
    assert [m.headers["Cryptoviz-Reason"] for m in alerts] == ["bad_alert"]
    assert [(m.subject, m.headers["Cryptoviz-Reason"]) for m in receipts] == [
        ("cryptoviz.deadletter.bad_receipt", "bad_receipt")
    ]
    assert stats["rejected"] == 1
    assert metric_value(metrics, "cryptoviz_notify_errors_total", kind="bad_alert") == 1
    for log in (ingester.log(), notifier.log()):
        assert "Traceback" not in log
