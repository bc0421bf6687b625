"""Candles in the store (real DuckDB files, no processes): exactly-once writes, provisional candles,
the `coins` summary they feed, and retention rolling sub-hour candles up into hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
from cryptoviz.core.candle import Candle, make_candle
from cryptoviz.core.quote import Quote
from cryptoviz.ingester import queries
from cryptoviz.ingester.candle_decode import candles_to_arrow
from cryptoviz.ingester.retention import apply_candle_retention, apply_retention
from cryptoviz.ingester.store import Store, quotes_to_arrow

NOW = datetime(2025, 7, 1, tzinfo=UTC)
OLD = NOW - timedelta(days=40)


def candle(minute: int, price: float, interval: int = 300, start: datetime = OLD, **fields) -> Candle:
    values = {
        "provider": "binance",
        "coin_id": "BTCUSDT",
        "symbol": "BTC",
        "name": "Bitcoin",
        "interval": interval,
        "open_time": start + timedelta(minutes=minute),
        "open": price,
        "high": price + 2,
        "low": price - 1,
        "close": price + 1,
        "volume": 10.0,
        "received_at": NOW,
        **fields,
    }
    return make_candle(**values, now=NOW)


def rows(store: Store, sql: str) -> list[tuple]:
    return store.reader().execute(sql).fetchall()


def test_each_identity_is_stored_once_across_batches_and_within_one(store: Store):
    batch = [candle(5 * i, 100.0 + i) for i in range(24)]
    first = store.write_candles(candles_to_arrow(batch + batch[:5]))
    assert (first.received, first.inserted, first.duplicates) == (29, 24, 5)
    again = store.write_candles(candles_to_arrow([*batch[10:], candle(0, 10.0, interval=3600)]))
    assert (again.inserted, again.duplicates) == (1, 14)  # the hourly candle is another identity
    assert rows(store, "SELECT count(*), count(DISTINCT (coin_id, interval, open_time)) FROM candles") == [(25, 25)]
    assert store.counters()["candles"] == 25 and store.counters()["candle_duplicates"] == 19


def test_a_provisional_candle_is_replaced_by_a_later_delivery_and_a_closed_one_is_final(store: Store):
    opened = NOW - timedelta(minutes=2)
    forming = candle(0, 100.0, start=opened, received_at=NOW)  # received before its close
    store.write_candles(candles_to_arrow([forming]))
    later = NOW + timedelta(minutes=4)
    closed = make_candle(**{**forming.to_json_dict(), "close": 105.0, "high": 106.0, "received_at": later}, now=later)
    result = store.write_candles(candles_to_arrow([closed]))
    assert (result.inserted, result.replaced, result.duplicates) == (0, 1, 0)
    stale = make_candle(**{**forming.to_json_dict(), "close": 90.0, "low": 89.0, "received_at": later}, now=later)
    assert store.write_candles(candles_to_arrow([stale])).duplicates == 1  # closed now: final
    assert rows(store, "SELECT close, high, count(*) OVER () FROM candles") == [(105.0, 106.0, 1)]


def test_candles_give_a_coin_its_row_and_quotes_own_its_latest_fields(store: Store):
    store.write_candles(candles_to_arrow([candle(5 * i, 100.0 + i) for i in range(12)]))
    coin = queries.coins(store.reader()).to_pylist()[0]
    assert (coin["symbol"], coin["records"], coin["candles"], coin["last_price"]) == ("BTC", 0, 12, 112.0)
    assert coin["first_timestamp"] == OLD.replace(tzinfo=None)
    assert coin["last_timestamp"] == (OLD + timedelta(minutes=60)).replace(tzinfo=None)  # the last close
    quote_time = OLD + timedelta(minutes=90)  # a scrape after the backfill
    quote = Quote("binance", "BTCUSDT", "BTC", "Bitcoin", 500.0, quote_time, NOW, market_cap=1e12, rank=1)
    store.write_batch(quotes_to_arrow([quote]))
    store.write_candles(candles_to_arrow([candle(5 * i, 200.0) for i in range(12, 24)]))  # up to 02:00
    coin = queries.coins(store.reader()).to_pylist()[0]
    assert (coin["records"], coin["candles"]) == (1, 24)
    latest = queries.latest(store.reader(), queries.select_series(store.reader(), ["BTC"], None)).to_pylist()[0]
    assert (latest["price"], latest["market_cap"], latest["rank"]) == (500.0, 1e12, 1)  # the quote's, not a close
    stats = queries.stats(store.reader())
    assert (stats["records"], stats["candles"]) == (1, 24)


def test_retention_rolls_sub_hour_candles_into_hours_once(store: Store):
    five = [candle(5 * i, 100.0 + i) for i in range(30)]  # 2.5 hours, 40 days ago
    one = [candle(i, 500.0, interval=60) for i in range(60)]  # the same first hour at 1 m: finer
    daily = [candle(0, 50.0, interval=86400)]
    recent = [candle(5 * i, 300.0, start=NOW - timedelta(days=1)) for i in range(12)]
    store.write_candles(candles_to_arrow(five + one + daily + recent))
    assert apply_candle_retention(store, 30, now=NOW) == 30 + 60
    hours = rows(store, "SELECT hour, open, high, low, close, volume, candles FROM candles_hourly ORDER BY hour")
    hour0 = OLD.replace(tzinfo=None)
    assert hours == [
        (hour0, 500.0, 502.0, 499.0, 501.0, 600.0, 60),  # the 1 m candles; the 5 m ones said it coarser
        (hour0 + timedelta(hours=1), 112.0, 125.0, 111.0, 124.0, 120.0, 12),
        (hour0 + timedelta(hours=2), 124.0, 131.0, 123.0, 130.0, 60.0, 6),
    ]
    assert rows(store, "SELECT interval, count(*) FROM candles GROUP BY ALL ORDER BY 1") == [(300, 12), (86400, 1)]
    assert queries.coins(store.reader()).to_pylist()[0]["candles"] == 13
    # idempotent: a second run changes nothing; a redelivery of rolled-up candles is a duplicate
    assert apply_candle_retention(store, 30, now=NOW) == 0
    again = store.write_candles(candles_to_arrow(five + one))
    assert (again.inserted, again.duplicates) == (0, 90)
    assert apply_candle_retention(store, 30, now=NOW) == 0
    assert (
        rows(store, "SELECT hour, open, high, low, close, volume, candles FROM candles_hourly ORDER BY hour") == hours
    )
    # a genuinely new late candle of a rolled-up hour is merged into it
    late = candle(150, 1000.0)  # 02:30, inside the third hour, after its last rolled candle
    store.write_candles(candles_to_arrow([late]))
    apply_candle_retention(store, 30, now=NOW)
    merged = rows(store, "SELECT open, high, low, close, volume, candles FROM candles_hourly ORDER BY hour")[2]
    assert merged == (124.0, 1002.0, 123.0, 1001.0, 70.0, 7)
    assert apply_retention(store, 30, now=NOW) == 0  # quotes' retention is untouched by candles


def test_history_takes_per_bucket_the_finest_candles_else_the_quotes(store: Store):
    """Hour 0: quotes and 5 m and 1 h candles; hour 1: 5 m and 1 h candles; hour 2: the 1 h candle
    only. Hourly buckets show the 5 m candles, the 5 m candles, the 1 h candle: one source each; with
    5-minute buckets the 1 h candles are coarser than a bucket, so the quotes show where there are any."""
    start = OLD.replace(tzinfo=None)
    five = [candle(5 * i, 100.0 + i) for i in range(24)]
    hours = [candle(60 * h, 500.0 + h, interval=3600) for h in range(3)]
    quotes = [
        Quote("binance", "BTCUSDT", "BTC", "Bitcoin", 900.0 + m, OLD + timedelta(minutes=m), NOW)
        for m in range(0, 60, 10)
    ]
    store.write_candles(candles_to_arrow(five + hours))
    store.write_batch(quotes_to_arrow(quotes))
    cur = store.reader()
    series = queries.select_series(cur, ["BTC"], None)
    step, table = queries.history(cur, series, start, start + timedelta(hours=3), 3)
    assert step == 3600
    got = [(r["open"], r["high"], r["low"], r["close"], r["samples"]) for r in table.to_pylist()]
    assert got == [
        (100.0, 113.0, 99.0, 112.0, 12),  # the 5-minute candles (real OHLC), not the quotes nor the hourly one
        (112.0, 125.0, 111.0, 124.0, 12),  # the 5-minute candles, not the hourly one as well
        (502.0, 504.0, 501.0, 503.0, 1),  # only the hourly candle
    ]
    _, text = queries.history_json(cur, series, start, start + timedelta(hours=3), 3)
    assert text.count(b'"samples"') == 3
    extent = queries.data_extent(cur, series, start, start + timedelta(hours=3))
    assert extent == {("binance", "BTCUSDT"): queries.Extent(start, start + timedelta(hours=2))}
    # 10-minute buckets in hour 2: the hourly candle is coarser than a bucket, so quotes show where there are any
    later = [
        Quote("binance", "BTCUSDT", "BTC", "Bitcoin", 700.0 + m, OLD + timedelta(hours=2, minutes=m), NOW)
        for m in range(0, 60, 10)
    ]
    store.write_batch(quotes_to_arrow(later))
    cur = store.reader()
    hour2 = start + timedelta(hours=2)
    step, table = queries.history(cur, series, hour2, hour2 + timedelta(minutes=59), 7)
    assert step == 600
    assert [(r["close"], r["samples"]) for r in table.to_pylist()] == [(700.0 + m, 1) for m in range(0, 60, 10)]


def test_history_reads_rolled_up_candle_hours_with_the_raw_ones(store: Store):
    """A window reaching past candle retention (the demo's 30-day past, a 30d or "all" period): the
    rolled-up hours keep their candles' interval, so they rank with the raw candles and every hour
    draws, old and recent alike (this query failed with a Binder Error before they kept it)."""
    old = [candle(5 * i, 100.0 + i) for i in range(36)]  # 3 hours, 40 days ago: rolled up
    recent_start = NOW - timedelta(days=1)
    recent = [candle(5 * i, 300.0 + i, start=recent_start) for i in range(24)]  # 2 hours, kept raw
    store.write_candles(candles_to_arrow(old + recent))
    assert apply_candle_retention(store, 30, now=NOW) == 36
    assert rows(store, "SELECT interval, candles FROM candles_hourly ORDER BY hour") == [(300, 12)] * 3
    cur = store.reader()
    series = queries.select_series(cur, ["BTC"], None)
    start, end = OLD.replace(tzinfo=None), NOW.replace(tzinfo=None)
    step, table = queries.history(cur, series, start, end, 960)  # 40 days of hours
    assert step == 3600
    got = [(r["open"], r["close"], r["samples"]) for r in table.to_pylist()]
    assert got == [
        (100.0, 112.0, 12),  # rolled up: open of the first candle, close of the last, 12 candles
        (112.0, 124.0, 12),
        (124.0, 136.0, 12),
        (300.0, 312.0, 12),  # raw
        (312.0, 324.0, 12),
    ]
    _, text = queries.history_json(cur, series, start, end, 960)
    assert text.count(b'"samples"') == 5
    extent = queries.data_extent(cur, series, start, end)
    last_open = recent_start.replace(tzinfo=None) + timedelta(minutes=115)
    assert extent == {("binance", "BTCUSDT"): queries.Extent(start, last_open)}


def test_hours_rolled_up_before_they_kept_an_interval_get_one_at_migration(tmp_path):
    """A file whose candles_hourly predates migration 8: each hour's interval comes from the rolled-up
    identities, else from its candles' spacing; history over them works after the upgrade."""
    path = tmp_path / "db.duckdb"
    first = Store(path)
    try:
        first.write_candles(candles_to_arrow([candle(5 * i, 100.0 + i) for i in range(24)]))
        apply_candle_retention(first, 30, now=NOW)
    finally:
        first.close()
    with duckdb.connect(str(path)) as conn:  # back to version 7's layout, one hour's identities gone
        conn.execute("ALTER TABLE candles_hourly DROP COLUMN interval")
        conn.execute("DELETE FROM rolled_up_candles WHERE open_time >= ?", [OLD + timedelta(hours=1)])
        conn.execute(
            "INSERT INTO candles_hourly BY NAME SELECT * REPLACE (hour + INTERVAL 5 HOUR AS hour,"
            " first_open + INTERVAL 5 HOUR AS first_open, last_open + INTERVAL 5 HOUR AS last_open,"
            " 1::BIGINT AS candles) FROM candles_hourly ORDER BY hour LIMIT 1"
        )
        conn.execute("DELETE FROM schema_migrations WHERE version >= 8")
    store = Store(path)
    try:
        # identities (hour 0), spacing of 12 candles (hour 1), a lone candle: the coarsest (hour 5)
        assert rows(store, "SELECT interval FROM candles_hourly ORDER BY hour") == [(300,), (300,), (900,)]
        cur = store.reader()
        series = queries.select_series(cur, ["BTC"], None)
        _, table = queries.history(cur, series, OLD.replace(tzinfo=None), NOW.replace(tzinfo=None), 2000)
        assert [r["samples"] for r in table.to_pylist()] == [12, 12, 1]
    finally:
        store.close()
