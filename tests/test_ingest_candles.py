"""Candles end to end: real nats-server, real `cryptoviz ingest` subprocess, real DuckDB file.

Candles are published with the contract's own encoder, as `cryptoviz backfill` does, then mixed
with duplicates, overlapping and out-of-order ranges, invalid candles and poison envelopes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import pytest
from cryptoviz.core import contract
from cryptoviz.core.candle import Candle, make_candle
from cryptoviz.core.quote import format_ts
from support.jetstream import wait_all_acked
from test_ingest_harness import (
    Ingester,
    dead_letters,
    kill_while_publishing,
    market_candles,
    market_quotes,
    publish,
    publish_raw,
    scrapes,
    synthetic_quotes,
)

pytestmark = pytest.mark.timeout(180)

IDENTITY = "(provider, coin_id, interval, open_time)"


@pytest.fixture
def ingester(nats_server, tmp_path: Path) -> Iterator[Ingester]:
    # A long ACK_WAIT: exact duplicate counts must not include redeliveries of a slow (loaded) commit.
    process = Ingester(
        nats_server.url, tmp_path / "db" / "cryptoviz.duckdb", tmp_path / "ingester.log", ACK_WAIT="60"
    ).start()
    try:
        yield process
    finally:
        process.stop()


def hourly(candles: list[Candle]) -> list[Candle]:
    """The provider's own 1-hour candles of the same market (12 five-minute rows each)."""
    result = []
    for start in range(0, len(candles) - 11, 12):
        hour = candles[start : start + 12]
        result.append(
            make_candle(
                provider=hour[0].provider,
                coin_id=hour[0].coin_id,
                symbol=hour[0].symbol,
                name=hour[0].name,
                interval=3600,
                open_time=hour[0].open_time,
                open=hour[0].open,
                high=max(c.high for c in hour),
                low=min(c.low for c in hour),
                close=hour[-1].close,
                received_at=hour[0].received_at,
                now=hour[0].received_at,
            )
        )
    return result


def renamed(messages: list[contract.OutgoingMessage], suffix: str) -> list[contract.OutgoingMessage]:
    """The same content under new message ids: JetStream's duplicate window cannot help."""
    return [
        contract.OutgoingMessage(m.subject, m.payload, {**m.headers, contract.MSG_ID_HEADER: m.msg_id + suffix})
        for m in messages
    ]


def stored(db: Path) -> tuple[int, int, dict]:
    with duckdb.connect(str(db), read_only=True) as conn:
        total, distinct = conn.execute(f"SELECT count(*), count(DISTINCT {IDENTITY}) FROM candles").fetchone()
        rows = conn.execute(
            "SELECT coin_id, interval, epoch(open_time)::BIGINT, open, high, low, close, volume FROM candles"
        ).fetchall()
    return total, distinct, {r[:3]: r[3:] for r in rows}


def key(c: Candle) -> tuple:
    return (c.coin_id, c.interval, int(c.open_time.timestamp()))


def test_candles_are_stored_exactly_once_whatever_the_delivery(nats_server, tmp_path: Path, market_5m: Path):
    five = market_candles(market_5m, rows=800, symbols=["BTC", "ETH", "SOL"])
    by_coin = {s: [c for c in five if c.symbol == s] for s in ("BTC", "ETH", "SOL")}
    btc_a, btc_b = by_coin["BTC"][:600], by_coin["BTC"][400:]  # overlapping ranges, chunked differently
    eth, sol = by_coin["ETH"][:600], by_coin["SOL"][:600]
    btc_hours = hourly(by_coin["BTC"][:600])
    bad = contract.encode_candles("binance", by_coin["ETH"][700:705])[0]
    body = orjson.loads(bad.payload)
    body["high"][1] = body["low"][1] / 2  # high below low (schema 2: one list per field)
    body["close"][3] = -1  # negative price
    first = contract.encode_candles("binance", btc_a + eth + sol + btc_hours)

    db = tmp_path / "db.duckdb"
    ingester = Ingester(nats_server.url, db, tmp_path / "ingester.log", ACK_WAIT="60").start()
    try:
        subject = contract.candles_subject_for("binance")
        publish(nats_server.url, contract.encode_candles("binance", btc_b))  # the later range first
        publish(nats_server.url, first)
        publish(nats_server.url, renamed(first, "-again"))  # everything once more
        publish_raw(nats_server.url, subject, orjson.dumps(body), {contract.MSG_ID_HEADER: "partly-bad"})
        publish_raw(nats_server.url, subject, b'{"schema": 1, "kind": "candles", "candles": [')
        quotes = contract.encode_scrape("binance", synthetic_quotes(2, provider="binance"))[0]
        publish_raw(nats_server.url, subject, quotes.payload)  # quotes on the candles subject
        publish_raw(nats_server.url, subject, orjson.dumps({"schema": 7, "kind": "candles", "provider": "binance"}))
        expected = 800 + 600 + 3 + 600 + len(btc_hours)
        stats = ingester.wait_records(expected, key="candles")
        stats = ingester.wait_records(len(btc_a + eth + sol + btc_hours), key="candle_duplicates")
        ingester.wait_records(2 + 3, key="rejected")
        wait_all_acked(nats_server.url)
        stats = ingester.wait_lag_zero()  # every message acked, the poison ones included: none comes back
        coins = {row["symbol"]: row for row in ingester.json("/api/v1/coins")["data"]}
        latest = {row["symbol"]: row for row in ingester.json("/api/v1/latest")["data"]}
        metrics = ingester.get("/metrics").text
        letters = asyncio.run(dead_letters(nats_server.url, 3))
    finally:
        ingester.stop()

    assert sorted(m.subject for m in letters) == [
        "cryptoviz.deadletter.malformed_json",
        "cryptoviz.deadletter.not_candles",
        "cryptoviz.deadletter.unknown_schema",
    ]
    assert {m.headers["Cryptoviz-Original-Subject"] for m in letters} == {subject}
    assert stats["candles"] == expected and stats["records"] == 0
    assert stats["candle_duplicates"] == len(btc_a + eth + sol + btc_hours) + 200  # 200: the overlap
    assert stats["rejected"] == 2 + 3 and stats["consumer_lag"] == 0
    assert 'cryptoviz_rejected_total{reason="inconsistent_ohlc"} 1.0' in metrics
    assert 'cryptoviz_rejected_total{reason="not_candles"} 1.0' in metrics
    total, distinct, values = stored(db)
    assert total == distinct == expected
    for c in btc_a + btc_b + eth + sol + btc_hours:
        assert values[key(c)] == (c.open, c.high, c.low, c.close, c.volume)
    eth_bad = [c for i, c in enumerate(by_coin["ETH"][700:705]) if i not in (1, 3)]
    assert all(key(c) in values for c in eth_bad) and len(values) == expected

    # a coin known only from candles is listed, its newest close stands for its price
    assert set(coins) == {"BTC", "ETH", "SOL"}
    assert coins["BTC"]["candles"] == 800 + len(btc_hours) and coins["BTC"]["records"] == 0
    assert coins["BTC"]["first_timestamp"] == format_ts(by_coin["BTC"][0].open_time)
    assert latest["BTC"]["price"] == by_coin["BTC"][-1].close
    assert latest["BTC"]["timestamp"] == format_ts(by_coin["BTC"][-1].open_time + timedelta(minutes=5))


def test_republishing_a_backfill_stores_nothing(nats_server, ingester: Ingester, market_5m: Path):
    candles = market_candles(market_5m, rows=1500, symbols=["ADA", "DOT"])
    messages = contract.encode_candles("binance", candles)
    publish(nats_server.url, messages)
    ingester.wait_records(len(candles), key="candles")
    publish(nats_server.url, messages)  # dropped by JetStream (same Nats-Msg-Id)
    publish(nats_server.url, renamed(messages, "-rerun"))  # a re-run outside the duplicate window
    ingester.wait_records(len(candles), key="candle_duplicates")
    stats = ingester.wait_lag_zero()
    assert stats["candles"] == len(candles) and stats["candle_duplicates"] == len(candles)


def test_sigkill_during_a_large_candle_load_loses_and_doubles_nothing(nats_server, tmp_path: Path, market_5m: Path):
    """All 14 coins × four weeks (~117k candles) flow while the ingester is killed again and again."""
    candles = market_candles(market_5m)
    messages = contract.encode_candles("binance", candles)
    random.Random(3).shuffle(messages)
    db = tmp_path / "kill.duckdb"
    ingester = Ingester(nats_server.url, db, tmp_path / "kill.log", CANDLE_BATCH_SIZE="5000", BATCH_TIMEOUT="0.05")
    try:
        kills = kill_while_publishing(
            ingester, nats_server.url, messages, seconds=3.0, kills=4, seed=11, pause=(0.1, 0.6)
        )
        ingester.wait_records(len(candles), timeout=90, key="candles")
        wait_all_acked(nats_server.url)  # everything acked: no straggling redelivery can add rows after this
        stats = ingester.json("/api/v1/stats")
    finally:
        ingester.stop()
    assert kills >= 4
    assert stats["candles"] == len(candles)
    total, distinct, values = stored(db)
    assert total == distinct == len(candles)
    assert values == {key(c): (c.open, c.high, c.low, c.close, c.volume) for c in candles}


def test_coverage_and_history_of_a_backfilled_series_with_a_hole(ingester: Ingester, nats_server, market_5m: Path):
    """Backfilled 5-minute candles with a 2-hour hole, then live quotes of the same series overlapping
    the newest candles: coverage names the hole, /history draws the candles' real OHLC, also where a
    quote shares the bucket (a candle no longer than the bucket wins), never both, quotes past the candles."""
    history = market_candles(market_5m, symbols=["BTC"])[:2000]
    hole = history[1000:1024]
    candles = history[:1000] + history[1024:]
    live = market_quotes(market_5m, provider="binance", rows=2000)
    live = [q for q in live if q.symbol == "BTC"][1900:]
    live = [dataclasses.replace(q, coin_id="BTCUSDT") for q in live]
    publish(nats_server.url, contract.encode_candles("binance", candles))
    publish(nats_server.url, scrapes(live))
    ingester.wait_records(len(candles), key="candles")
    ingester.wait_records(len(live))

    since, until = history[0].open_time, history[-1].close_time
    window = {"symbols": "BTC", "since": format_ts(since), "until": format_ts(until)}
    answer = ingester.json("/api/v1/coverage", **window)
    assert (answer["since"], answer["until"], answer["min_gap_seconds"]) == (format_ts(since), format_ts(until), 900)
    (series,) = answer["data"]
    assert (series["symbol"], series["provider"], series["coin_id"]) == ("BTC", "binance", "BTCUSDT")
    assert (series["first"], series["last"]) == (format_ts(since), format_ts(until))
    assert (series["candles"], series["quotes"]) == (len(candles), len(live))
    start, end = hole[0].open_time, hole[-1].close_time
    assert series["gaps"] == [{"start": format_ts(start), "end": format_ts(end), "seconds": 7200.0}]
    assert series["gaps_truncated"] is False
    assert ingester.json("/api/v1/coverage", **window, min_gap="7200")["data"][0]["gaps"] == []
    other = ingester.json("/api/v1/coverage", symbols="BTC,DOGE", provider="coingecko")
    assert other["data"] == [] and other["unknown_symbols"] == ["BTC", "DOGE"]

    # 5-minute buckets aligned on the candles: one source per bucket
    rows = ingester.json(
        "/api/v1/history",
        symbols="BTC",
        start=format_ts(since),
        end=format_ts(until - timedelta(seconds=1)),
        points=str(len(history)),
    )["data"]
    assert len(rows) == len(candles)  # the hole has no bucket; one source per bucket
    by_time = {row["timestamp"]: row for row in rows}
    for c in candles[:1800]:  # candles only: the provider's own OHLC
        row = by_time[format_ts(c.open_time)]
        assert (row["open"], row["high"], row["low"], row["close"], row["samples"]) == (
            c.open,
            c.high,
            c.low,
            c.close,
            1,
        )
        assert row["volume_24h"] is None
    candle_at = {c.open_time: c for c in candles}
    assert sum(q.timestamp in candle_at for q in live) > 50  # the overlap this test is about
    for q in live:  # both: the candle's OHLC, not the quote as well
        row = by_time[format_ts(q.timestamp)]
        c = candle_at.get(q.timestamp)
        expected = (c.open, c.high, c.low, c.close) if c else (q.price,) * 4
        assert (row["open"], row["high"], row["low"], row["close"], row["samples"]) == (*expected, 1)
    assert all(format_ts(c.open_time) not in by_time for c in hole)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"min_gap": "5"}, "min_gap must be between 60"),
        ({"since": "2025-02-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"}, "since must be before until"),
        ({"symbols": "BTC;DROP"}, "invalid symbol"),
        ({"provider": "nyse"}, "unknown provider"),
        ({"since": "2024-01-01T00:00:00Z", "until": "2025-06-01T00:00:00Z"}, "at most 400 days"),
        ({"until": "soon"}, "until must be ISO-8601"),
    ],
)
def test_coverage_refuses_bad_parameters_with_a_clear_400(ingester: Ingester, query: dict, message: str):
    response = ingester.get("/api/v1/coverage", **query)
    assert response.status_code == 400 and message in response.json()["error"], response.text


def test_coverage_is_documented_in_openapi(ingester: Ingester):
    spec = ingester.json("/openapi.json")
    answer = spec["paths"]["/api/v1/coverage"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    model = spec["components"]["schemas"][answer["$ref"].rsplit("/", 1)[-1]]
    assert {"since", "until", "min_gap_seconds", "data"} <= set(model["required"])
    series = spec["components"]["schemas"]["SeriesCoverage"]["properties"]
    assert {"symbol", "provider", "coin_id", "first", "last", "quotes", "candles", "gaps"} <= set(series)
    assert {p["name"] for p in spec["paths"]["/api/v1/coverage"]["get"]["parameters"]} == {
        "symbols",
        "provider",
        "since",
        "until",
        "min_gap",
    }


def test_live_quotes_are_not_queued_behind_a_backfill_flood(nats_server, ingester: Ingester):
    """400,000 candles are in the stream when a scrape arrives: its quotes are stored while most of the
    history is still waiting (each has its own consumer), not after it."""
    publish(nats_server.url, flood(coins=40, candles=10_000))
    live = synthetic_quotes(20, coins=20, provider="coingecko")
    publish(nats_server.url, contract.encode_scrape("coingecko", live))
    stats = ingester.wait_records(len(live), timeout=30)
    assert stats["candles"] < 200_000, stats
    assert ingester.wait_records(400_000, timeout=120, key="candles")["records"] == len(live)


def flood(coins: int, candles: int) -> list[contract.OutgoingMessage]:
    """Canonical candle messages (what `encode_candles` writes), built directly: 1,000 per message."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    received = format_ts(start + timedelta(days=60))
    messages = []
    for k in range(coins):
        rows = [
            {
                "provider": "binance",
                "coin_id": f"C{k}USDT",
                "symbol": f"C{k}",
                "name": f"Coin {k}",
                "interval": 300,
                "open_time": format_ts(start + timedelta(minutes=5 * i)),
                "open": 100.0,
                "high": 101.0,
                "low": 99.0,
                "close": 100.5,
                "received_at": received,
                "volume": None,
            }
            for i in range(candles)
        ]
        for chunk in range(0, candles, contract.MAX_CANDLES_PER_MESSAGE):
            body = {"schema": 1, "kind": "candles", "provider": "binance", "scraped_at": received}
            payload = orjson.dumps({**body, "candles": rows[chunk : chunk + contract.MAX_CANDLES_PER_MESSAGE]})
            headers = {contract.MSG_ID_HEADER: f"flood-{k}-{chunk}", contract.SCHEMA_HEADER: "1"}
            messages.append(contract.OutgoingMessage(contract.candles_subject_for("binance"), payload, headers))
    return messages
