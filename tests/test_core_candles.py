"""The candle model and the candles message contract (provider history → JetStream → ingester)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from cryptoviz.core import contract
from cryptoviz.core.candle import Candle, CandleMaker, make_candle
from cryptoviz.core.quote import InvalidQuote, parse_ts

OPEN = datetime(2025, 1, 13, 0, 5, tzinfo=UTC)
NOW = datetime(2025, 2, 1, tzinfo=UTC)


def candle(**overrides) -> Candle:
    fields = dict(
        provider="binance",
        coin_id="BTCUSDT",
        symbol="btc",
        name="Bitcoin",
        interval=300,
        open_time=OPEN,
        open="94519.75",
        high=94564.5,
        low=94446.9,
        close=94446.98,
        volume=45852672,
        received_at=NOW,
    )
    fields.update(overrides)
    return make_candle(**fields, now=NOW)


def test_candle_is_coerced_and_round_trips_on_the_wire():
    c = candle()
    assert c.symbol == "BTC" and c.open == pytest.approx(94519.75) and c.interval == 300
    assert c.close_time == OPEN + timedelta(minutes=5)
    assert Candle.from_json_dict(orjson.loads(orjson.dumps(c.to_json_dict())), now=NOW) == c


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"open": 0}, "nonpositive_price"),
        ({"low": -1}, "nonpositive_price"),
        ({"close": math.nan}, "nonfinite_close"),
        ({"high": 94000.0}, "inconsistent_ohlc"),
        ({"low": 94500.0}, "inconsistent_ohlc"),
        ({"interval": 7}, "invalid_interval"),
        ({"volume": -3}, "out_of_range_volume"),
        ({"open_time": NOW + timedelta(hours=1)}, "future_open_time"),
        ({"open_time": 1.7e15}, "invalid_open_time"),
        ({"provider": "evil"}, "unknown_provider"),
    ],
)
def test_invalid_candles_are_refused_with_a_stable_reason(overrides, reason):
    with pytest.raises(InvalidQuote) as info:
        candle(**overrides)
    assert info.value.reason == reason


def _outcome(build, **fields):
    try:
        return build(**fields)
    except InvalidQuote as exc:
        return exc.reason
    except (TypeError, ValueError, ArithmeticError) as exc:  # what providers count as malformed_record
        return type(exc).__name__


MS = int(OPEN.timestamp() * 1000)
ODD = [None, "", " ", True, "1e400", 1e400, 10**400, -math.inf, math.nan, "nan", " 94500 ", "9_4500", 0, -1, "0", 5e11]
ROWS = [
    *({"open_time": MS, "open": "94500", "high": "94600", "low": "94400", "close": "94450", "volume": "1e6", **{k: v}}
      for k in ("open", "high", "low", "close", "volume") for v in ODD),
    *({"open_time": t, "open": 1.0, "high": 2, "low": 0.5, "close": "1.5"}
      for t in (MS, MS / 1000, int(MS / 1000), -MS, 0, True, None, "2025-01-13T00:05:00Z", 10**20, 1e11, 1e11 + 1,
                int((NOW + timedelta(seconds=299)).timestamp() * 1000),
                int((NOW + timedelta(seconds=301)).timestamp() * 1000),
                int(datetime(2009, 1, 2, tzinfo=UTC).timestamp() * 1000), OPEN)),
]  # fmt: skip


@pytest.mark.parametrize(
    "common",
    [
        {},
        {"provider": "evil"},
        {"symbol": None},
        {"interval": 7},
        {"interval": "300"},
        {"name": 5},
        {"received_at": NOW + timedelta(days=1)},
        {"received_at": OPEN},
    ],
)
def test_candle_maker_gives_make_candles_candles_and_reasons(common):
    """The batch path (a provider's page) is `make_candle`, only faster: same candle or same reason, row by row."""
    fields = dict(provider="binance", coin_id="BTCUSDT", symbol="btc", name="Bitcoin", interval=300, received_at=NOW)
    fields.update(common)
    make = CandleMaker(**fields, now=NOW)
    for row in ROWS:
        assert _outcome(make, **row) == _outcome(make_candle, **fields, **row, now=NOW), row


@pytest.mark.parametrize("common", [{}, {"provider": "evil"}, {"received_at": OPEN}])
def test_candle_maker_columns_give_the_per_row_candles_or_step_aside(common):
    """A page at once (`CandleMaker.columns`) is the rows one by one: the same candles, or None (each row alone)."""
    fields = dict(provider="binance", coin_id="BTCUSDT", symbol="btc", name="Bitcoin", interval=300, received_at=NOW)
    fields.update(common)
    make = CandleMaker(**fields, now=NOW)
    good = {"open_time": MS, "open": "94500", "high": "94600", "low": "94400", "close": "94450", "volume": "1e6"}
    answered = 0
    for row in [good, *ROWS]:
        page = [good, {"volume": "1", **row}, {**good, "open_time": MS + 300_000}]
        whole = make.columns(**{k: [r[k] for r in page] for k in good})
        one_by_one = [_outcome(make, **r) for r in page]
        if whole is not None:
            answered += 1
            assert whole == one_by_one, row
    if not common:  # the good page and every row only text, ints or other exponents make of it
        assert answered > 10
    if "provider" in common:  # what all share is wrong: every row takes make_candle, for its reason
        assert answered == 0


def test_numeric_timestamps_beyond_year_9999_are_invalid_not_a_crash():
    with pytest.raises(InvalidQuote) as info:
        parse_ts(1.7e15)
    assert info.value.reason == "invalid_timestamp"


def test_candles_are_chunked_per_coin_and_interval_with_stable_ids():
    candles = [candle(open_time=OPEN + timedelta(minutes=5 * i)) for i in range(2500)]
    candles += [candle(coin_id="ETHUSDT", symbol="ETH", open=3300, high=3310, low=3290, close=3301)]
    messages = contract.encode_candles("binance", candles, scraped_at=NOW)
    sizes = [len(contract.decode_candles(m.payload, now=NOW).candles) for m in messages]
    assert sizes == [1000, 1000, 500, 1]
    assert {m.subject for m in messages} == {"cryptoviz.candles.binance"}
    again = contract.encode_candles("binance", list(reversed(candles)), scraped_at=NOW + timedelta(hours=1))
    assert [m.msg_id for m in again] == [m.msg_id for m in messages]
    assert len({m.msg_id for m in messages}) == 4
    assert "cryptoviz.candles.>" in contract.STREAM_SUBJECTS


def test_a_bad_candle_spoils_nothing_else_in_its_message():
    good = candle().to_json_dict()
    body = {
        "schema": 1,
        "kind": "candles",
        "provider": "binance",
        "scraped_at": "2025-02-01T00:00:00Z",
        "candles": [good, {**good, "high": 1.0}, {**good, "provider": "kraken"}, "junk"],
    }
    decoded = contract.decode_candles(orjson.dumps(body), now=NOW)
    assert len(decoded.candles) == 1
    assert decoded.rejected == {"inconsistent_ohlc": 1, "provider_mismatch": 1, "not_an_object": 1}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b"[]", "not_an_object"),
        (b'{"schema": 3, "kind": "candles"}', "unknown_schema"),
        (b'{"schema": 1, "provider": "binance", "quotes": []}', "not_candles"),
        (b'{"schema": 1, "kind": "candles", "provider": "evil", "candles": []}', "unknown_provider"),
        (b'{"schema": 1, "kind": "candles", "provider": "binance"}', "missing_candles"),
        (b'{"schema": 2, "kind": "candles", "provider": "binance", "open": [1.0]}', "missing_candles"),
        (
            b'{"schema": 2, "kind": "candles", "provider": "binance", "open_time": [], "open": [1.0], "high": [], '
            b'"low": [], "close": [], "volume": [], "received_at": []}',
            "missing_candles",
        ),
    ],
)
def test_unusable_candle_envelopes_are_contract_errors(payload, reason):
    with pytest.raises(contract.ContractError) as info:
        contract.decode_candles(payload, now=NOW)
    assert info.value.reason == reason


def test_candles_go_on_the_wire_as_columns_of_their_json_dicts():
    """Schema 2: what a message's candles share once, each other field of to_json_dict() as one list."""
    candles = [
        candle(open_time=OPEN + timedelta(minutes=5 * i), received_at=NOW + timedelta(microseconds=i * 7919), volume=v)
        for i, v in enumerate([None, 0, 1.5e12, 3.25, None])
    ]
    [message] = contract.encode_candles("binance", candles, scraped_at=NOW)
    body = orjson.loads(message.payload)
    records = [c.to_json_dict() for c in candles]
    assert body["schema"] == 2 and message.headers[contract.SCHEMA_HEADER] == "2"
    assert {k: body[k] for k in ("provider", *contract.CANDLE_SHARED)} == {
        k: records[0][k] for k in ("provider", *contract.CANDLE_SHARED)
    }
    for column in contract.CANDLE_COLUMNS:
        assert body[column] == [r[column] for r in records], column
    assert contract.candle_records(body) == records
    assert contract.decode_candles(message.payload, now=NOW).candles == candles


def test_schema_1_candle_messages_are_still_decoded():
    """Messages a scraper before schema 2 published (still in the stream after an upgrade) store the same candles."""
    candles = [candle(open_time=OPEN + timedelta(minutes=5 * i)) for i in range(3)]
    body = {"schema": 1, "kind": "candles", "provider": "binance", "scraped_at": "2025-02-01T00:00:00Z"}
    old = orjson.dumps({**body, "candles": [c.to_json_dict() for c in candles]})
    assert contract.decode_candles(old, now=NOW).candles == candles


def test_a_bad_candle_spoils_nothing_else_in_a_schema_2_message():
    [message] = contract.encode_candles(
        "binance", [candle(open_time=OPEN + timedelta(minutes=5 * i)) for i in range(3)]
    )
    body = orjson.loads(message.payload)
    body["high"][1] = 1.0
    body["open_time"][2] = "yesterday"
    decoded = contract.decode_candles(orjson.dumps(body), now=NOW)
    assert len(decoded.candles) == 1
    assert decoded.rejected == {"inconsistent_ohlc": 1, "invalid_open_time": 1}


def test_candles_message_id_is_the_sha_of_the_sorted_format_ts_stamps():
    """The id (JetStream's dedup key across re-runs) is defined on format_ts's text; the fast path
    must give the very same ids, with microseconds, other offsets and unsorted input."""
    import hashlib
    from datetime import timezone

    from cryptoviz.core.quote import format_ts

    east = timezone(timedelta(hours=5, minutes=30))
    base = datetime(2025, 1, 1, tzinfo=UTC)
    times = [base + timedelta(minutes=5 * i, microseconds=(i % 3) * 1500) for i in range(50)][::-1]
    times += [(base + timedelta(days=1)).astimezone(east)]
    digest = hashlib.sha256(b"binance\0BTCUSDT\x00300")
    for stamp in sorted(format_ts(t) for t in times):
        digest.update(b"\0" + stamp.encode())
    assert contract.candles_message_id("binance", "BTCUSDT", 300, times) == f"candles-binance-{digest.hexdigest()[:40]}"
