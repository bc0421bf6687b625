"""The candles fast path stores exactly what `contract.decode_candles` would, or steps aside."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from cryptoviz.core import contract
from cryptoviz.core.candle import make_candle
from cryptoviz.ingester.candle_decode import candles_to_arrow, decode_candles, decode_canonical_candles
from hypothesis import event, given, settings
from hypothesis import strategies as st

NOW = datetime(2025, 2, 1, tzinfo=UTC)
OPEN = datetime(2025, 1, 13, tzinfo=UTC)

NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-(2**62), max_value=2**62),
    st.sampled_from(["12.5", "", " 3 ", True, None, -1.0, 0, 1e9, 1e10, 100, 100.5, 99.5, 101]),
)
TEXTS = st.one_of(st.sampled_from(["bitcoin", " btc", "BTC", "btc", "", "ß", "x" * 201, 7, None]), st.text(max_size=5))
TIMES = st.one_of(
    st.sampled_from(
        [
            "2025-01-13T00:05:00Z",
            "2025-01-13T00:05:00.123456Z",
            "2025-01-13T00:05:00+00:00",
            "2025-02-30T00:00:00Z",
            "2025-02-01T00:05:00Z",
            "2025-02-01T00:05:00.000001Z",
            "2025-01-13T00:05:00.5Z",
            "٢٠٢٥-01-13T00:05:00Z",
            1736726700,
            None,
            "soon",
        ]
    ),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2030, 1, 1)).map(
        lambda d: d.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    ),
)
FIELDS = {
    "provider": st.sampled_from(["binance", "binance", "binance", "kraken", "bogus"]),
    "coin_id": TEXTS,
    "symbol": TEXTS,
    "name": TEXTS,
    "interval": st.sampled_from([300, 300, 3600, 60.0, 120, "300", True]),
    "open_time": TIMES,
    "open": NUMBERS,
    "high": NUMBERS,
    "low": NUMBERS,
    "close": NUMBERS,
    "received_at": TIMES,
    "volume": NUMBERS,
}
CANDLE = st.fixed_dictionaries(FIELDS)


def _slow(payload: bytes):
    return candles_to_arrow(contract.decode_candles(payload, now=NOW).candles)


ENVELOPE = {"kind": "candles", "provider": "binance", "scraped_at": "2025-02-01T00:00:00Z"}


def _payload(candles: list) -> bytes:
    """Schema 1: one record per candle."""
    return orjson.dumps({"schema": 1, **ENVELOPE, "candles": candles})


def _columnar(shared: dict, candles: list) -> bytes:
    """Schema 2: `shared`'s coin id, symbol, name and interval once, the other fields of `candles` as lists."""
    columns = {name: [c[name] for c in candles] for name in contract.CANDLE_COLUMNS}
    return orjson.dumps({"schema": 2, **ENVELOPE, **{k: shared[k] for k in contract.CANDLE_SHARED}, **columns})


def candles(count: int, coin: str = "BTCUSDT", interval: int = 300, start: datetime = OPEN) -> list:
    return [
        make_candle(
            provider="binance",
            coin_id=coin,
            symbol=coin[:3],
            name="Bitcoin",
            interval=interval,
            open_time=start + timedelta(seconds=interval * i),
            open=100 + i % 7,
            high=110.5 + i % 7,
            low=90.25,
            close=101,
            volume=None if i % 3 else 1234.5,
            received_at=NOW - timedelta(microseconds=i),
            now=NOW,
        )
        for i in range(count)
    ]


VALID = orjson.loads(orjson.dumps([c.to_json_dict() for c in candles(4)]))


@st.composite
def near_canonical(draw) -> dict:
    """A valid canonical candle with, now and then, one or two fields replaced by anything."""
    base = dict(draw(st.sampled_from(VALID)))
    for field in draw(st.lists(st.sampled_from(list(base)), max_size=2)):
        base[field] = draw(FIELDS[field])
    return base


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(CANDLE, near_canonical(), near_canonical()), min_size=1, max_size=4))
def test_fast_path_equals_the_contract_decoder_whenever_it_answers(raw):
    payload = _payload(raw)
    fast = decode_canonical_candles(payload, NOW)
    event("fast path" if fast is not None else "slow path")
    if fast is not None:
        slow = _slow(payload)
        assert fast.num_rows == len(raw)  # only all-valid messages take the fast path
        assert fast.equals(slow), (fast.to_pylist(), slow.to_pylist())


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(CANDLE, near_canonical()),
    st.lists(st.one_of(CANDLE, near_canonical(), near_canonical()), min_size=1, max_size=4),
)
def test_schema_2_fast_path_equals_the_contract_decoder_whenever_it_answers(shared, raw):
    payload = _columnar(shared, raw)
    fast = decode_canonical_candles(payload, NOW)
    event("fast path" if fast is not None else "slow path")
    if fast is not None:
        slow = _slow(payload)
        assert fast.num_rows == len(raw)
        assert fast.equals(slow), (fast.to_pylist(), slow.to_pylist())


def test_scraper_messages_take_the_fast_path_with_identical_values():
    for message in contract.encode_candles("binance", candles(2500) + candles(30, coin="ETHUSDT", interval=3600)):
        fast = decode_canonical_candles(message.payload, NOW)
        assert fast is not None
        assert fast.equals(_slow(message.payload))


OFF_CANONICAL = [
    ("open", "100", None),
    ("name", " padded", None),
    ("open_time", 1736726700, None),
    ("interval", 300.0, None),
    ("high", 1.0, "inconsistent_ohlc"),
    ("low", -1.0, "nonpositive_price"),
    ("open_time", "2025-02-01T00:05:00.000001Z", "future_open_time"),
    ("volume", -5, "out_of_range_volume"),
]


def test_one_field_off_canonical_steps_aside_and_the_exact_path_names_the_reason():
    records = [c.to_json_dict() for c in candles(3)]
    body = orjson.loads(_payload(records))
    for field, value, reason in OFF_CANONICAL:
        changed = {**body, "candles": [{**body["candles"][0], field: value}, *body["candles"][1:]]}
        payload = orjson.dumps(changed)
        assert decode_canonical_candles(payload, NOW) is None, field
        batch = decode_candles(payload, NOW)
        assert batch.table.num_rows == (3 if reason is None else 2), field
        assert batch.rejected == ({} if reason is None else {reason: 1}), field
    reordered = {**body, "candles": [dict(reversed(list(c.items()))) for c in body["candles"]]}
    assert decode_canonical_candles(orjson.dumps(reordered), NOW) is None
    assert decode_candles(orjson.dumps(reordered), NOW).table.equals(_slow(orjson.dumps(body)))
    assert decode_canonical_candles(b"{nope", NOW) is None
    assert decode_canonical_candles(orjson.dumps({**body, "kind": "quotes"}), NOW) is None


def test_schema_2_one_value_off_canonical_steps_aside_and_the_exact_path_names_the_reason():
    """A shared field spoils all candles or none; a column's first value only its candle."""
    body = orjson.loads(contract.encode_candles("binance", candles(3))[0].payload)
    assert decode_canonical_candles(orjson.dumps(body), NOW) is not None
    for field, value, reason in OFF_CANONICAL:
        if field in contract.CANDLE_SHARED:
            changed = {**body, field: value}
        else:
            changed = {**body, field: [value, *body[field][1:]]}
        payload = orjson.dumps(changed)
        assert decode_canonical_candles(payload, NOW) is None, field
        batch = decode_candles(payload, NOW)
        assert batch.table.num_rows == (3 if reason is None else 2), field
        assert batch.rejected == ({} if reason is None else {reason: 1}), field
    assert decode_canonical_candles(orjson.dumps({**body, "open": body["open"][:2]}), NOW) is None
    assert decode_canonical_candles(orjson.dumps({**body, "received_at": "2025-02-01T00:00:00Z"}), NOW) is None
