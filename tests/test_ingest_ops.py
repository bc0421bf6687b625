"""Operations: schema migrations, retention with the hourly rollup, backup, alerts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import nats
import orjson
import pytest
from cryptoviz.core.quote import Quote
from cryptoviz.ingester import queries
from cryptoviz.ingester.retention import apply_retention
from cryptoviz.ingester.schema import MIGRATIONS
from cryptoviz.ingester.store import Store, quotes_to_arrow
from support.jetstream import wait_all_acked
from test_ingest_harness import CRYPTOVIZ, Ingester, chunked, publish, synthetic_quotes

pytestmark = pytest.mark.timeout(120)

NOW = datetime(2025, 7, 1, tzinfo=UTC)
LATEST = MIGRATIONS[-1][0]


def _quote(minute: int, price: float, coin: str = "bitcoin", symbol: str = "BTC") -> Quote:
    ts = NOW - timedelta(days=40) + timedelta(minutes=minute)
    return Quote("coingecko", coin, symbol, symbol.title(), price, ts, ts)


def test_legacy_file_is_migrated_and_original_queries_still_work(tmp_path: Path):
    path = tmp_path / "legacy.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute(
            "CREATE TABLE crypto_prices (name VARCHAR, symbol VARCHAR, price DOUBLE, percent_change_24h DOUBLE,"
            " market_cap DOUBLE, timestamp TIMESTAMP)"
        )
        conn.execute(
            "INSERT INTO crypto_prices VALUES ('Bitcoin', 'BTC', 94000, 1.5, 1.8e12, '2025-01-13 00:00:00'),"
            " ('Bitcoin', 'BTC', 95000, 2.5, 1.9e12, '2025-01-13 00:05:00')"
        )
    store = Store(path)
    try:
        assert store.version == LATEST
        cur = store.reader()
        # The original README's queries, unchanged.
        rows = cur.execute("SELECT name, symbol, price FROM crypto_prices ORDER BY timestamp DESC LIMIT 10").fetchall()
        assert rows == [("Bitcoin", "BTC", 95000.0), ("Bitcoin", "BTC", 94000.0)]
        coins = queries.coins(cur).to_pylist()
        assert [(c["symbol"], c["provider"], c["records"], c["last_price"]) for c in coins] == [
            ("BTC", "coinmarketcap", 2, 95000.0)
        ]
        # New quotes of the same coin merge into it; a second open migrates nothing.
        result = store.write_batch(quotes_to_arrow([_quote(0, 1.0, coin="btc")]))
        assert result.inserted == 1
    finally:
        store.close()
    again = Store(path)
    try:
        assert again.version == LATEST
        assert again.reader().execute("SELECT count(*) FROM schema_migrations").fetchall()[0][0] == LATEST
    finally:
        again.close()


def test_retention_rolls_up_hourly_then_deletes_and_history_spans_both(tmp_path: Path):
    store = Store(tmp_path / "db.duckdb")
    try:
        # 3 hours of minute quotes 40 days ago (expired) and one hour 1 day ago (kept raw).
        old = [_quote(m, 100.0 + m) for m in range(180)]
        recent_ts = NOW - timedelta(days=1)
        recent = [
            Quote("coingecko", "bitcoin", "BTC", "Btc", 500.0 + m, recent_ts + timedelta(minutes=m), recent_ts)
            for m in range(60)
        ]
        store.write_batch(quotes_to_arrow(old + recent))
        hourly_view = (NOW - timedelta(days=41), NOW - timedelta(seconds=1), 41 * 24)  # buckets of exactly 1 h
        before = _history(store, *hourly_view)
        assert apply_retention(store, 30, now=NOW) == 180
        cur = store.reader()
        assert cur.execute("SELECT count(*) FROM crypto_prices").fetchall()[0][0] == 60
        hourly = cur.execute(
            "SELECT open, high, low, close, samples FROM crypto_prices_hourly ORDER BY hour"
        ).fetchall()
        assert hourly == [
            (100.0, 159.0, 100.0, 159.0, 60),
            (160.0, 219.0, 160.0, 219.0, 60),
            (220.0, 279.0, 220.0, 279.0, 60),
        ]
        assert queries.coins(cur).to_pylist()[0]["records"] == 60
        # /history over the whole range reads the rollup where raw rows are gone: same answer.
        assert len(before) == 4
        assert _history(store, *hourly_view) == before
        # A late quote for an already rolled-up hour is merged into it, not overwriting it.
        late = old[30].timestamp + timedelta(seconds=1)
        store.write_batch(quotes_to_arrow([Quote("coingecko", "bitcoin", "BTC", "Btc", 1000.0, late, NOW)]))
        apply_retention(store, 30, now=NOW)
        merged = (
            store.reader()
            .execute("SELECT open, high, low, close, samples FROM crypto_prices_hourly ORDER BY hour LIMIT 1")
            .fetchall()[0]
        )
        assert merged == (100.0, 1000.0, 100.0, 159.0, 61)
    finally:
        store.close()


def test_an_old_quote_redelivered_after_its_hour_was_rolled_up_counts_once(tmp_path: Path):
    """A redelivery or replay of quotes already rolled up is a duplicate, not more samples."""
    store = Store(tmp_path / "db.duckdb")
    try:
        old = quotes_to_arrow([_quote(m, 100.0 + m) for m in range(90)])  # 1.5 hours, 40 days ago
        store.write_batch(old)
        apply_retention(store, 30, now=NOW)
        cur = store.reader()
        hourly = "SELECT hour, open, high, low, close, samples FROM crypto_prices_hourly ORDER BY hour"
        rolled = cur.execute(hourly).fetchall()
        history = _history(store, NOW - timedelta(days=41), NOW - timedelta(seconds=1), 41 * 24)
        again = store.write_batch(old)
        assert (again.inserted, again.duplicates) == (0, 90)
        apply_retention(store, 30, now=NOW)
        assert (
            cur.execute("SELECT hour, open, high, low, close, samples FROM crypto_prices_hourly").fetchall() == rolled
        )
        assert sorted(r[-1] for r in rolled) == [30, 60]
        assert _history(store, NOW - timedelta(days=41), NOW - timedelta(seconds=1), 41 * 24) == history
        assert queries.coins(cur).to_pylist()[0]["records"] == 0
        assert store.counters()["duplicates"] == 90
    finally:
        store.close()


def _history(store: Store, start: datetime, end: datetime, points: int) -> list[dict]:
    cur = store.reader()
    series = queries.select_series(cur, ["BTC"], None)
    naive = [t.astimezone(UTC).replace(tzinfo=None) for t in (start, end)]
    return queries.history(cur, series, naive[0], naive[1], points)[1].to_pylist()


def test_backup_while_ingesting_is_a_consistent_importable_snapshot(nats_server, tmp_path: Path):
    quotes = synthetic_quotes(30_000, coins=10)
    messages = chunked(quotes, 500)
    token = {"ADMIN_TOKEN": "backup-test-token-0123456789"}
    ingester = Ingester(nats_server.url, tmp_path / "db.duckdb", tmp_path / "ingester.log", BATCH_SIZE="2000", **token)
    ingester.start()
    try:
        publish(nats_server.url, messages[:20])
        ingester.wait_records(10_000)
        flowing = threading.Thread(target=publish, args=(nats_server.url, messages[20:]))
        flowing.start()
        target = tmp_path / "backup"
        done = subprocess.run(
            [CRYPTOVIZ, "backup", str(target), "--ingester-url", ingester.url],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **token},
        )
        flowing.join()
        assert done.returncode == 0, done.stderr
        assert "backup written to" in done.stdout
        ingester.wait_records(len(quotes))
        # A second backup into the same (non-empty) directory is refused, not mixed.
        again = subprocess.run(
            [CRYPTOVIZ, "backup", str(target), "--ingester-url", ingester.url],
            capture_output=True,
            text=True,
            env={**os.environ, **token},
        )
        assert again.returncode == 1 and "not empty" in again.stderr
    finally:
        ingester.stop()
    restored = duckdb.connect(str(tmp_path / "restored.duckdb"))
    restored.execute(f"IMPORT DATABASE '{target}'")
    rows, summed, ingested = restored.execute(
        "SELECT (SELECT count(*) FROM crypto_prices), (SELECT sum(records) FROM coins),"
        " (SELECT value FROM ingest_counters WHERE name = 'ingested')"
    ).fetchall()[0]
    assert 10_000 <= rows <= len(quotes)
    assert rows == summed == ingested  # one snapshot: the tables agree with each other
    restored.close()


def test_backup_without_a_running_ingester_is_a_clear_error(tmp_path: Path):
    done = subprocess.run(
        [CRYPTOVIZ, "backup", str(tmp_path / "b"), "--ingester-url", "http://127.0.0.1:9", "--timeout", "2"],
        capture_output=True,
        text=True,
        env={**os.environ, "ADMIN_TOKEN": "backup-test-token-0123456789"},
    )
    assert done.returncode == 1
    assert "backup failed" in done.stderr and "Traceback" not in done.stderr


async def _collect_alerts(url: str, into: list, ready: threading.Event, stop: threading.Event) -> None:
    nc = await nats.connect(url)

    async def collect(msg) -> None:
        into.append((msg.subject, orjson.loads(msg.data)))

    await nc.subscribe("cryptoviz.alerts.>", cb=collect)
    await nc.flush()
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    await nc.close()


def test_alerts_fire_once_per_cooldown_are_stored_and_published(nats_server, tmp_path: Path):
    config = tmp_path / "scraper.yaml"
    config.write_text(
        "version: 1\ncoins:\n  - symbol: C1\n    alerts: [{above: 150, cooldown: 1h}]\n"
        "  - symbol: C2\n    alerts: [{below: 50, cooldown: 1h}]\n"
    )
    received: list = []
    ready, stop = threading.Event(), threading.Event()
    listener = threading.Thread(target=lambda: asyncio.run(_collect_alerts(nats_server.url, received, ready, stop)))
    listener.start()
    assert ready.wait(10)
    ingester = Ingester(nats_server.url, tmp_path / "db.duckdb", tmp_path / "i.log", SCRAPER_CONFIG=str(config))
    try:
        ingester.start()
        base = datetime(2025, 6, 1, tzinfo=UTC)
        for step, price in enumerate([100.0, 160.0, 170.0]):  # crosses once; cooldown holds the second
            ts = base + timedelta(minutes=step)
            quotes = [
                Quote("demo", "coin-1", "C1", "Coin 1", price, ts, ts),
                Quote("demo", "coin-2", "C2", "Coin 2", 100.0, ts, ts),
            ]
            publish(nats_server.url, chunked(quotes))
            ingester.wait_records(2 * (step + 1))
        give_up = time.monotonic() + 10
        while not received and time.monotonic() < give_up:
            time.sleep(0.1)
        answer = ingester.json("/api/v1/alerts")
        # After a restart the cooldown is remembered from the alerts table.
        ingester.stop()
        ingester.start()
        ts = base + timedelta(minutes=5)
        publish(nats_server.url, chunked([Quote("demo", "coin-1", "C1", "Coin 1", 180.0, ts, ts)]))
        ingester.wait_records(7)
        wait_all_acked(nats_server.url)
        after_restart = ingester.json("/api/v1/alerts")
    finally:
        ingester.stop()
        stop.set()
        listener.join(10)
    assert [(r["symbol"], r["condition"], r["threshold"], r["price"]) for r in answer["data"]] == [
        ("C1", "above", 150.0, 160.0)
    ]
    assert "C1 price 160 USD is above 150 USD" in answer["data"][0]["message"]
    assert len(after_restart["data"]) == 1
    assert [(s, a["price"]) for s, a in received] == [("cryptoviz.alerts.C1", 160.0)]


def test_alert_of_a_batch_survives_a_crash_right_after_its_commit(nats_server, tmp_path: Path):
    """The alert is stored with the batch: a SIGKILL before the acks (and the redelivery that follows,
    all duplicates) must not lose it, nor fire it twice."""
    config = tmp_path / "scraper.yaml"
    config.write_text("version: 1\ncoins:\n  - symbol: C1\n    alerts: [{above: 150, cooldown: 1h}]\n")
    db, ts = tmp_path / "db.duckdb", datetime(2025, 6, 1, tzinfo=UTC)
    publish(nats_server.url, chunked([Quote("demo", "coin-1", "C1", "Coin 1", 160.0, ts, ts)]))
    crashing = Ingester(
        nats_server.url, db, tmp_path / "crash.log", SCRAPER_CONFIG=str(config), CRYPTOVIZ_CRASH_AFTER_COMMIT="1"
    )
    crashing.start(wait=False)
    assert crashing.process.wait(30) == -9
    ingester = Ingester(nats_server.url, db, tmp_path / "after.log", SCRAPER_CONFIG=str(config))
    try:
        ingester.start()
        give_up = time.monotonic() + 20
        while ingester.json("/api/v1/stats")["duplicates"] < 1 and time.monotonic() < give_up:
            time.sleep(0.2)  # the redelivery (after ACK_WAIT) has been seen
        stats = ingester.json("/api/v1/stats")
        answer = ingester.json("/api/v1/alerts")
    finally:
        ingester.stop()
    # a loaded machine may redeliver more than once: each is a duplicate, none a second row or alert
    assert stats["records"] == 1 and stats["duplicates"] >= 1
    assert [(r["symbol"], r["condition"], r["price"]) for r in answer["data"]] == [("C1", "above", 160.0)]
