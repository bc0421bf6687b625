"""Query-parameter parsing: the same messages and accepted inputs as ever, and a cost bounded before
any per-item work (pure functions, no server)."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from cryptoviz.core.api_contract import MAX_SYMBOLS, SYMBOLS_MAX_CHARS
from cryptoviz.ingester import params
from cryptoviz.ingester.formats import BadRequest


def test_symbols_are_upper_cased_de_duplicated_in_order_and_blank_means_all():
    assert params.symbols("btc, ETH,,btc ,sol") == ["BTC", "ETH", "SOL"]
    assert params.symbols(None) is None and params.symbols("  ") is None and params.symbols(",") is None
    assert params.symbols(",".join(f"S{i}" for i in range(MAX_SYMBOLS))) == [f"S{i}" for i in range(MAX_SYMBOLS)]
    with pytest.raises(BadRequest, match="invalid symbol 'B@D'"):
        params.symbols("BTC,B@D")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (",".join(f"S{i}" for i in range(MAX_SYMBOLS + 1)), "at most 200 symbols per request"),
        ("BTC," * 20_000, "symbols is too long"),
        ("A" * (SYMBOLS_MAX_CHARS + 1), "symbols is too long"),
    ],
    ids=["201-symbols", "repeated", "one-long"],
)
def test_too_many_or_too_long_symbols_are_refused(value, message):
    with pytest.raises(BadRequest, match=message):
        params.symbols(value)


def test_hostile_symbol_lists_cost_linear_time():
    """20,000 distinct symbols were de-duplicated with a list (O(n²), seconds on the event loop)
    before the cap was even checked; now the cap comes first and de-duplication is a set."""
    hostile = [",".join(f"S{i}" for i in range(20_000)), ",".join(f"S{i % 150}" for i in range(1_000))]
    for value in hostile:
        started = time.perf_counter()
        with pytest.raises(BadRequest):
            params.symbols(value)
        assert time.perf_counter() - started < 0.01
    longest = ", ".join(f"{i:0>20}" for i in range(MAX_SYMBOLS))  # the longest accepted value
    assert len(longest) <= SYMBOLS_MAX_CHARS
    started = time.perf_counter()
    assert len(params.symbols(longest)) == MAX_SYMBOLS
    assert time.perf_counter() - started < 0.01


def test_timestamps_iso_or_epoch_seconds_within_range():
    assert params.timestamp("2025-01-13T00:00:00Z", "start") == datetime(2025, 1, 13)
    assert params.timestamp("2025-01-13T01:00:00+01:00", "start") == datetime(2025, 1, 13)
    assert params.timestamp("2025-01-13", "start") == datetime(2025, 1, 13)
    assert params.timestamp("1736726400", "end") == datetime(2025, 1, 13)
    assert params.timestamp(" ", "end") is None and params.timestamp(None, "end") is None
    for value, message in [
        ("yesterday", "start must be ISO-8601"),
        ("1e300", "start epoch seconds out of range"),
        ("nan", "start epoch seconds out of range"),
        ("9" * 100, "start is too long"),
    ]:
        with pytest.raises(BadRequest, match=message):
            params.timestamp(value, "start")


def test_integers_and_providers():
    assert params.integer(None, "points", 1000, 1, 10) == 1000 and params.integer(" 7 ", "points", 1, 1, 10) == 7
    for value, message in [("0", "points must be between 1 and 10, not 0"), ("x", "points must be an integer")]:
        with pytest.raises(BadRequest, match=message):
            params.integer(value, "points", 1, 1, 10)
    with pytest.raises(BadRequest, match="points is too long"):
        params.integer("1" * 5000, "points", 1, 1, 10)
    assert params.provider(" Replay ") == "replay" and params.provider("") is None
    with pytest.raises(BadRequest, match="unknown provider 'mtgox'"):
        params.provider("mtgox")
