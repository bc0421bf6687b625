"""A columnar fast path for canonical messages, falling back to `contract.decode_message`.

`contract.decode_message` builds and validates one `Quote` per record (the trust boundary),
which caps a core at ~50k quotes/s. Messages written by our scraper are canonical: every
quote went through `make_quote` and `Quote.to_json_dict`, so strings are stripped, numbers
are JSON numbers and timestamps are `format_ts` strings. For such a message this module checks
the same rules column by column and builds the Arrow batch directly. Anything it is not sure
of (a string number, an untrimmed name, an unusual timestamp, any invalid value) returns None,
and the caller uses `contract.decode_message`, which gives the exact per-quote reasons. So
the stored values are identical either way (tests/test_ingest_fastdecode.py checks that).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from cryptoviz.core import contract
from cryptoviz.core.quote import (
    ALL_PROVIDERS,
    MAX_AMOUNT_USD,
    MAX_PERCENT_CHANGE,
    MAX_PRICE_USD,
    MIN_TIMESTAMP,
    max_clock_skew,
)
from cryptoviz.ingester.store import ARROW_SCHEMA, naive_utc

_CANONICAL_TS = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z$"
_CANONICAL_TS_PY = re.compile(_CANONICAL_TS)
MAX_RANK = 2**31 - 1
_BOUNDS = {
    "volume_24h": (0.0, MAX_AMOUNT_USD),
    "market_cap": (0.0, MAX_AMOUNT_USD),
    "percent_change_1h": (-100.0, MAX_PERCENT_CHANGE),
    "percent_change_24h": (-100.0, MAX_PERCENT_CHANGE),
    "percent_change_7d": (-100.0, MAX_PERCENT_CHANGE),
}


def clean_texts(values: list, limit: int) -> bool:
    return all(type(v) is str and v and len(v) <= limit and v == v.strip() for v in values)


def numbers(values: list, *, required: bool) -> bool:
    if required:
        return all(type(v) is float or type(v) is int for v in values)
    return all(v is None or type(v) is float or type(v) is int for v in values)


def within(array: pa.Array, low: float, high: float) -> bool:
    valid = array.drop_null()
    if len(valid) == 0:
        return True
    bounds = pc.min_max(valid)
    return bounds["min"].as_py() >= low and bounds["max"].as_py() <= high


def canonical_timestamps(values: list) -> pa.Array | None:
    if not all(type(v) is str and _CANONICAL_TS_PY.match(v) for v in values):
        return None
    try:
        return pa.array(values, pa.string()).cast(pa.timestamp("us", "UTC")).cast(pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def times_within(stamps: pa.Array, received: pa.Array, now: datetime) -> bool:
    """`bounded_ts`' rule column-wise (naive UTC arrays): every time after MIN_TIMESTAMP, receive times no
    later than now + MAX_CLOCK_SKEW, `stamps` no later than min(their receive time, now) + MAX_CLOCK_SKEW."""
    now_us = pa.scalar(naive_utc(now), pa.timestamp("us"))
    skew = pa.scalar(max_clock_skew(), pa.duration("us"))
    lowest = pa.scalar(naive_utc(MIN_TIMESTAMP), pa.timestamp("us"))
    latest = pc.add(pc.min_element_wise(received, now_us), skew)
    return bool(
        pc.min(stamps).as_py() >= lowest.as_py()
        and pc.min(received).as_py() >= lowest.as_py()
        and pc.max(received).as_py() <= pc.add(now_us, skew).as_py()
        and pc.all(pc.less_equal(stamps, latest)).as_py()
    )


def decode_canonical(payload: bytes, now: datetime | None = None) -> pa.Table | None:
    """The message's quotes as an Arrow table in crypto_prices' layout, or None: use the slow path.

    `now` (default: the wall clock) is the ingester's clock that bounds the timestamps."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("schema") != contract.SCHEMA_VERSION:
        return None
    provider, quotes = body.get("provider"), body.get("quotes")
    if provider not in ALL_PROVIDERS or not isinstance(quotes, list) or not quotes:
        return None
    if not all(type(q) is dict for q in quotes):
        return None
    column = {name: [q.get(name) for q in quotes] for name in ARROW_SCHEMA.names}
    if not all(p == provider for p in column["provider"]):
        return None
    if not (clean_texts(column["coin_id"], 200) and clean_texts(column["name"], 200)):
        return None
    if not all(type(s) is str and s and len(s) <= 32 and s == s.strip() and s == s.upper() for s in column["symbol"]):
        return None
    if not numbers(column["price"], required=True):
        return None
    if not all(v is None or (type(v) is int and 1 <= v <= MAX_RANK) for v in column["rank"]):
        return None
    for name in _BOUNDS:
        if not numbers(column[name], required=False):
            return None
    arrays = {}
    for name in ("timestamp", "received_at"):
        arrays[name] = canonical_timestamps(column[name])
        if arrays[name] is None:
            return None
    if not times_within(arrays["timestamp"], arrays["received_at"], now or datetime.now(UTC)):
        return None
    try:
        for name in ("price", *_BOUNDS):
            arrays[name] = pa.array(column[name], pa.float64())
    except (pa.ArrowInvalid, OverflowError):  # integers too large for a double
        return None
    if not (pc.min(arrays["price"]).as_py() > 0 and pc.max(arrays["price"]).as_py() <= MAX_PRICE_USD):
        return None
    if not all(within(arrays[name], low, high) for name, (low, high) in _BOUNDS.items()):
        return None
    for name in ("provider", "coin_id", "symbol", "name"):
        arrays[name] = pa.array(column[name], pa.string())
    arrays["rank"] = pa.array(column["rank"], pa.int32())
    return pa.Table.from_arrays([arrays[name] for name in ARROW_SCHEMA.names], schema=ARROW_SCHEMA)
