"""/history's adaptive window, on real DuckDB files: buckets spread over where the data is.

A fresh install has minutes of data in a 7-day window, a stopped feed has its newest quote days ago,
a coin added last has less history than the others: each series still draws a line (≥ 2 points when
it has ≥ 2 samples) and no bucket is stamped before its first sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from cryptoviz.core.quote import Quote
from cryptoviz.ingester import queries
from cryptoviz.ingester.formats import JSON_OPTIONS
from cryptoviz.ingester.retention import apply_retention
from cryptoviz.ingester.store import Store, quotes_to_arrow

NOW = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)


def _quotes(symbol: str, start: datetime, count: int, every: timedelta, price: float = 100.0) -> list[Quote]:
    return [
        Quote("demo", symbol.lower(), symbol, symbol.title(), price + i, start + i * every, start + i * every)
        for i in range(count)
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "cv.duckdb")
    try:
        yield opened
    finally:
        opened.close()


def _history(store: Store, symbols: list[str], start: datetime, end: datetime, points: int) -> tuple[int, list]:
    cur = store.reader()
    series = queries.select_series(cur, symbols, None)
    step, table = queries.history(cur, series, *(t.astimezone(UTC).replace(tzinfo=None) for t in (start, end)), points)
    return step, table.to_pylist()


def _naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def test_ten_minutes_in_a_seven_day_window_spread_over_the_ten_minutes(store: Store) -> None:
    first = NOW - timedelta(minutes=10)
    store.write_batch(quotes_to_arrow(_quotes("BTC", first, 121, timedelta(seconds=5))))
    step, rows = _history(store, ["BTC"], NOW - timedelta(days=7), NOW, 300)
    assert step == 3  # 600 s in at most 300 buckets: the narrowest round width that fits
    assert len(rows) == 121 and all(r["samples"] == 1 for r in rows)
    assert rows[0]["timestamp"] == _naive(first)  # never before the first stored quote
    # with fewer buckets than samples, the ten minutes still hold them all
    step, rows = _history(store, ["BTC"], NOW - timedelta(days=7), NOW, 20)
    assert step == 60 and len(rows) == 11
    assert rows[0]["timestamp"] == _naive(first) and sum(r["samples"] for r in rows) == 121
    assert rows[0]["open"] == 100.0 and rows[-1]["close"] == 220.0


def test_two_samples_make_two_points_and_one_makes_one(store: Store) -> None:
    store.write_batch(quotes_to_arrow(_quotes("ETH", NOW - timedelta(days=3), 2, timedelta(days=2, hours=23))))
    store.write_batch(quotes_to_arrow(_quotes("SOL", NOW - timedelta(hours=2), 1, timedelta(0))))
    _, rows = _history(store, ["ETH", "SOL"], NOW - timedelta(days=30), NOW, 300)
    eth = [r for r in rows if r["symbol"] == "ETH"]
    sol = [r for r in rows if r["symbol"] == "SOL"]
    assert [r["close"] for r in eth] == [100.0, 101.0]
    assert [r["timestamp"] for r in sol] == [_naive(NOW - timedelta(hours=2))]


def test_each_series_is_spread_over_its_own_data(store: Store) -> None:
    """A coin added ten minutes ago next to one with a week of history: both draw a line."""
    store.write_batch(quotes_to_arrow(_quotes("BTC", NOW - timedelta(days=7), 2017, timedelta(minutes=5))))
    store.write_batch(quotes_to_arrow(_quotes("NEW", NOW - timedelta(minutes=10), 3, timedelta(minutes=5))))
    step, rows = _history(store, ["BTC", "NEW"], NOW - timedelta(days=7), NOW, 300)
    btc = [r for r in rows if r["symbol"] == "BTC"]
    new = [r for r in rows if r["symbol"] == "NEW"]
    assert step == 2400 and len(btc) == 253  # 40-minute buckets over the week; the widest step is reported
    assert len(new) == 3 and new[0]["timestamp"] == _naive(NOW - timedelta(minutes=10))


def test_old_data_is_bucketed_where_it_is(store: Store) -> None:
    """A feed that stopped ten days ago, asked for the day before its last quote."""
    last = NOW - timedelta(days=10)
    store.write_batch(quotes_to_arrow(_quotes("BTC", last - timedelta(hours=1), 13, timedelta(minutes=5))))
    step, rows = _history(store, ["BTC"], last - timedelta(days=1), last, 300)
    assert step == 15 and len(rows) == 13
    assert rows[0]["timestamp"] == _naive(last - timedelta(hours=1)) and rows[-1]["timestamp"] == _naive(last)
    _, nothing = _history(store, ["BTC"], NOW - timedelta(days=1), NOW, 300)
    assert nothing == []


def test_rolled_up_hours_join_the_raw_quotes_without_loss(store: Store) -> None:
    store.write_batch(quotes_to_arrow(_quotes("BTC", NOW - timedelta(days=40), 12 * 24 * 20, timedelta(minutes=5))))
    apply_retention(store, 30, now=NOW)
    cur = store.reader()
    assert cur.execute("SELECT count(*) FROM crypto_prices_hourly").fetchall()[0][0] > 0
    start, end = NOW - timedelta(days=45), NOW
    step, rows = _history(store, ["BTC"], start, end, 100)
    assert sum(r["samples"] for r in rows) == 12 * 24 * 20
    assert 2 <= len(rows) <= 100 and rows[0]["timestamp"] >= _naive(NOW - timedelta(days=40))
    assert step == 21600  # the 20 days that have data in at most 100 buckets (6 h), not the 45 days asked


def test_json_rows_equal_the_arrow_rows_with_fractional_bucket_times(store: Store) -> None:
    first = NOW - timedelta(hours=1, microseconds=-250_000)  # a sample at .25 s: the first bucket is stamped there
    store.write_batch(quotes_to_arrow(_quotes("BTC", first, 60, timedelta(minutes=1))))
    cur = store.reader()
    series = queries.select_series(cur, ["BTC"], None)
    window = (_naive(NOW - timedelta(days=1)), _naive(NOW))
    _, table = queries.history(cur, series, *window, 7)
    _, text = queries.history_json(cur, series, *window, 7)
    rows = orjson.loads(b"[" + text + b"]")
    assert rows == orjson.loads(orjson.dumps(table.to_pylist(), option=JSON_OPTIONS))
    assert rows[0]["timestamp"].endswith(".250000Z")


@pytest.mark.parametrize(
    ("span", "points", "step"),
    [(0, 300, 1), (1, 300, 1), (600, 300, 3), (3600, 300, 15), (86400, 300, 300), (7 * 86400, 300, 2400),
     (30 * 86400, 300, 10800), (365 * 86400, 300, 172800), (600, 1, 600), (86400 - 300, 288, 300)],
)  # fmt: skip
def test_bucket_widths_are_round_and_hold_the_data(span: int, points: int, step: int) -> None:
    extent = queries.Extent(_naive(NOW), _naive(NOW + timedelta(seconds=span)))
    assert extent.step(points) == step
    assert 86400 % step == 0 or step % 86400 == 0
    first = int(_naive(NOW).timestamp())
    assert (first % step + span) // step <= max(points - 1, 1)  # aligned, the last sample is in the last bucket


def test_no_data_keeps_the_columns(store: Store) -> None:
    store.write_batch(quotes_to_arrow(_quotes("BTC", NOW - timedelta(days=3), 3, timedelta(minutes=5))))
    cur = store.reader()
    series = queries.select_series(cur, ["BTC"], None)
    step, table = queries.history(cur, series, _naive(NOW - timedelta(days=1)), _naive(NOW), 288)
    assert table.num_rows == 0 and step == 300
    assert {"symbol", "timestamp", "open", "high", "low", "close", "price", "samples"} <= set(table.column_names)
    assert queries.data_extent(cur, series, _naive(NOW - timedelta(days=1)), _naive(NOW)) == {}
