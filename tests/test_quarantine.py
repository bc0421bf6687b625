"""Rows already stored with a time in the future are quarantined and `coins` is rebuilt from what remains."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptoviz.core.candle import Candle
from cryptoviz.core.quote import Quote
from cryptoviz.ingester import queries
from cryptoviz.ingester.candle_decode import candles_to_arrow
from cryptoviz.ingester.quarantine import prune_quarantine, quarantine_future
from cryptoviz.ingester.retention import apply_retention
from cryptoviz.ingester.store import Store, quotes_to_arrow

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
FUTURE = datetime(2999, 1, 1, tzinfo=UTC)


def q(coin: str, when: datetime, price: float, received: datetime | None = None) -> Quote:
    """Built directly, as an ingester without the time check would have stored it."""
    return Quote("demo", coin, coin.upper(), coin.title(), price, when, received or when)


def c(coin: str, when: datetime, price: float) -> Candle:
    return Candle("binance", coin, coin.upper(), coin.title(), 300, when, price, price, price, price, when)


def coins(store: Store) -> dict[tuple[str, str], dict]:
    return {(r["provider"], r["coin_id"]): r for r in queries.coins(store.reader()).to_pylist()}


def test_future_rows_go_to_quarantine_and_coins_show_the_real_latest(store: Store):
    past = NOW - timedelta(hours=1)
    store.write_batch(quotes_to_arrow([q("btc", past, 100.0), q("btc", FUTURE, 1e6), q("eth", FUTURE, 5.0)]))
    store.write_batch(quotes_to_arrow([q("sol", past, 20.0, received=FUTURE)]))  # forged receive time only
    store.write_candles(candles_to_arrow([c("ada", past, 0.5), c("ada", FUTURE, 9.0)]))
    assert queries.stats(store.reader())["last_update"] == FUTURE.replace(tzinfo=None)

    found = quarantine_future(store, now=NOW)

    assert (found.quotes, found.candles) == (3, 1)
    rows = coins(store)
    assert ("demo", "eth") not in rows and ("demo", "sol") not in rows  # nothing of theirs is left
    assert rows[("demo", "btc")]["last_price"] == 100.0
    assert rows[("demo", "btc")]["records"] == 1
    assert rows[("binance", "ada")]["last_price"] == 0.5 and rows[("binance", "ada")]["candles"] == 1
    stats = queries.stats(store.reader())
    assert stats["last_update"] == past.replace(tzinfo=None)  # btc, and ada as of its newest candle
    assert stats["last_received"] < NOW.replace(tzinfo=None)
    reasons = store.reader().execute("SELECT coin_id, reason FROM quarantined_quotes ORDER BY coin_id").fetchall()
    assert reasons == [("btc", "future_timestamp"), ("eth", "future_timestamp"), ("sol", "future_received_at")]
    assert store.reader().execute("SELECT reason FROM quarantined_candles").fetchall() == [("future_open_time",)]
    assert not quarantine_future(store, now=NOW)  # idempotent: nothing more to move
    assert prune_quarantine(store, days=30, now=NOW + timedelta(days=31)) == 4


def test_a_coin_whose_raw_quotes_were_rolled_up_keeps_its_rollup_as_latest(store: Store):
    old = NOW - timedelta(days=40)
    store.write_batch(quotes_to_arrow([q("btc", old, 100.0), q("btc", FUTURE, 1e6)]))
    apply_retention(store, 30, now=NOW)
    quarantine_future(store, now=NOW)
    row = coins(store)[("demo", "btc")]
    assert row["last_price"] == 100.0 and row["last_timestamp"] == old.replace(tzinfo=None)
    assert row["records"] == 0


def test_nothing_is_written_when_nothing_is_in_the_future(store: Store):
    store.write_batch(quotes_to_arrow([q("btc", NOW, 100.0)]))
    before = store.generation
    assert not quarantine_future(store, now=NOW)
    assert store.generation == before
