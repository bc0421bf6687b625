"""The columnar fast path stores exactly what `contract.decode_message` would, or steps aside."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from cryptoviz.core import contract
from cryptoviz.ingester.fastdecode import decode_canonical
from cryptoviz.ingester.store import quotes_to_arrow
from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_ingest_harness import synthetic_quotes

NUMBERS = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-(2**62), max_value=2**62),
    st.sampled_from(["12.5", "", " 3 ", True, -100.0, 1e6, 1e15, 1e9, 0, -0.0]),
)
TEXTS = st.one_of(
    st.sampled_from(["bitcoin", " btc", "BTC", "btc", "", "Ünïcode", "x" * 201, "a\x1f", 7, None]), st.text()
)
TIMES = st.one_of(
    st.sampled_from(
        [
            "2025-01-13T00:05:00Z",
            "2025-01-13T00:05:00.123456Z",
            "2025-01-13T00:05:00+00:00",
            "2025-02-30T00:00:00Z",
            "2025-01-13T00:05:00.5Z",
            1736726700,
            None,
            "soon",
        ]
    ),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9000, 1, 1)).map(
        lambda d: d.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    ),
)
QUOTE = st.fixed_dictionaries(
    {
        "provider": st.sampled_from(["demo", "demo", "demo", "replay", "bogus"]),
        "coin_id": TEXTS,
        "symbol": TEXTS,
        "name": TEXTS,
        "price": NUMBERS,
        "timestamp": TIMES,
        "received_at": TIMES,
        "volume_24h": NUMBERS,
        "market_cap": NUMBERS,
        "percent_change_1h": NUMBERS,
        "percent_change_24h": NUMBERS,
        "percent_change_7d": NUMBERS,
        "rank": st.one_of(st.none(), st.integers(min_value=-5, max_value=2**40), st.sampled_from([1.0, 2.5, "3"])),
    }
)


def _slow(payload: bytes):
    return quotes_to_arrow(contract.decode_message(payload).quotes)


@settings(max_examples=400, deadline=None)
@given(st.lists(QUOTE, min_size=1, max_size=5))
def test_fast_path_equals_the_contract_decoder_whenever_it_answers(quotes):
    payload = orjson.dumps({"schema": 1, "provider": "demo", "scraped_at": "2025-01-13T00:05:00Z", "quotes": quotes})
    fast = decode_canonical(payload)
    event("fast path" if fast is not None else "slow path")
    if fast is not None:
        slow = _slow(payload)
        assert fast.num_rows == len(quotes)  # only all-valid messages take the fast path
        assert fast.equals(slow), (fast.to_pylist(), slow.to_pylist())


def test_scraper_messages_take_the_fast_path_with_identical_values():
    quotes = synthetic_quotes(1000, coins=7)
    for message in contract.encode_scrape("demo", quotes):
        fast = decode_canonical(message.payload)
        assert fast is not None
        assert fast.equals(_slow(message.payload))


def test_anything_unusual_steps_aside():
    base = contract.encode_scrape("demo", synthetic_quotes(3))[0]
    body = orjson.loads(base.payload)
    for field, value in [("price", "12.5"), ("name", " padded"), ("timestamp", 1736726700), ("price", -1.0)]:
        changed = {**body, "quotes": [{**body["quotes"][0], field: value}, *body["quotes"][1:]]}
        assert decode_canonical(orjson.dumps(changed)) is None
    assert decode_canonical(b"{nope") is None
    assert decode_canonical(orjson.dumps({**body, "schema": 2})) is None
