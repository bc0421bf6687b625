"""Time is validated at the trust boundary: timestamps past receive time + MAX_CLOCK_SKEW, unparseable or
out of range are refused with a stable reason, on the exact and on the fast decode paths alike."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from cryptoviz.core import contract
from cryptoviz.core.candle import make_candle
from cryptoviz.core.quote import InvalidQuote, format_ts, make_quote, max_clock_skew
from cryptoviz.ingester.candle_decode import decode_candles
from cryptoviz.ingester.consumer import decode_quotes
from cryptoviz.ingester.fastdecode import decode_canonical

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SKEW = timedelta(seconds=300)


def quote(now: datetime = NOW, **overrides):
    fields = dict(provider="demo", coin_id="bitcoin", symbol="BTC", name="Bitcoin", price=100.0, timestamp=NOW)
    fields.update(overrides)
    return make_quote(**fields, now=now)


def candle(now: datetime = NOW, **overrides):
    fields = dict(
        provider="binance", coin_id="BTCUSDT", symbol="BTC", name="Bitcoin", interval=300, open_time=NOW,
        open=1.0, high=2.0, low=0.5, close=1.5, received_at=NOW,
    )  # fmt: skip
    fields.update(overrides)
    return make_candle(**fields, now=now)


def reason(build, **overrides) -> str:
    with pytest.raises(InvalidQuote) as info:
        build(**overrides)
    return info.value.reason


def test_the_default_skew_is_five_minutes():
    assert max_clock_skew() == SKEW


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"timestamp": "2999-01-01T00:00:00Z"}, "future_timestamp"),
        ({"timestamp": NOW + SKEW + timedelta(seconds=1)}, "future_timestamp"),
        ({"received_at": "2999-01-01T00:00:00Z"}, "future_received_at"),
        # a forged receive time does not widen the window: the validator's own clock bounds it too
        ({"timestamp": NOW + timedelta(hours=1), "received_at": NOW + timedelta(hours=1)}, "future_received_at"),
        ({"timestamp": NOW, "received_at": NOW - timedelta(hours=1)}, "future_timestamp"),
        ({"timestamp": 1.7e15}, "invalid_timestamp"),
        ({"timestamp": 1_700_000_000_000_000}, "invalid_timestamp"),
        ({"timestamp": 1e300}, "invalid_timestamp"),
        ({"timestamp": "9999-12-31T23:59:59-05:00"}, "invalid_timestamp"),
        ({"timestamp": "0001-01-01T00:00:00+01:00"}, "invalid_timestamp"),
        ({"timestamp": "1999-12-31T00:00:00Z"}, "out_of_range_timestamp"),
        ({"timestamp": 5}, "out_of_range_timestamp"),
        ({"received_at": "1970-01-02T00:00:00Z"}, "out_of_range_received_at"),
    ],
)
def test_quotes_in_the_future_or_out_of_range_are_refused(overrides, expected):
    assert reason(quote, **overrides) == expected


def test_a_quote_within_the_skew_is_kept():
    assert quote(timestamp=NOW + SKEW).timestamp == NOW + SKEW
    assert quote(timestamp=NOW - timedelta(days=400)).timestamp == NOW - timedelta(days=400)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"open_time": NOW + SKEW + timedelta(seconds=1)}, "future_open_time"),
        ({"received_at": NOW + timedelta(days=1), "open_time": NOW}, "future_received_at"),
        ({"open_time": "9999-12-31T23:59:59-05:00"}, "invalid_open_time"),
        ({"open_time": "2001-01-01T00:00:00Z"}, "out_of_range_open_time"),
    ],
)
def test_candles_in_the_future_or_out_of_range_are_refused(overrides, expected):
    assert reason(candle, **overrides) == expected


def _message(**overrides) -> bytes:
    body = orjson.loads(contract.encode_scrape("demo", [quote(), quote(coin_id="eth", symbol="ETH")])[0].payload)
    body["quotes"][0].update(overrides)
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"timestamp": "2999-01-01T00:00:00Z"}, "future_timestamp"),
        ({"received_at": "2999-01-01T00:00:00Z"}, "future_received_at"),
        ({"timestamp": "2001-01-01T00:00:00Z"}, "out_of_range_timestamp"),
        ({"timestamp": 1.7e15}, "invalid_timestamp"),
        ({"timestamp": "9999-12-31T23:59:59-05:00"}, "invalid_timestamp"),
    ],
)
def test_the_ingester_refuses_them_against_its_own_clock_on_every_path(overrides, expected):
    payload = _message(**overrides)
    assert decode_canonical(payload, NOW) is None  # the fast path steps aside ...
    decoded = decode_quotes(payload, NOW)  # ... and the exact one names the reason, keeping the rest
    assert decoded.rejected == {expected: 1}
    assert decoded.table.column("coin_id").to_pylist() == ["eth"]


def test_a_message_valid_when_scraped_is_judged_by_the_ingesters_clock():
    payload = _message()
    assert decode_canonical(payload, NOW) is not None
    assert decode_quotes(payload, NOW - timedelta(hours=1)).rejected == {"future_received_at": 2}


def test_the_candle_fast_path_checks_receive_times_too():
    good = candle()
    forged = {**good.to_json_dict(), "received_at": format_ts(NOW + timedelta(days=1))}
    body = {"schema": 1, "kind": "candles", "provider": "binance", "candles": [good.to_json_dict(), forged]}
    batch = decode_candles(orjson.dumps(body), NOW)
    assert batch.rejected == {"future_received_at": 1}
    assert batch.table.num_rows == 1


@pytest.mark.parametrize("value", ["banana", "-5", "2d"])
def test_an_unusable_max_clock_skew_is_a_clear_error_before_anything_runs(value):
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cryptoviz"), "check-config", "/nonexistent"],
        capture_output=True,
        text=True,
        env={**os.environ, "MAX_CLOCK_SKEW": value},
        timeout=60,
    )
    assert done.returncode != 0
    assert "MAX_CLOCK_SKEW" in done.stderr and "Traceback" not in done.stderr
