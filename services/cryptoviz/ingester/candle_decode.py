"""Candles messages → Arrow batches in `candles`' layout: a columnar fast path, or the contract decoder.

`contract.decode_candles` validates one `Candle` per record through `make_candle` (the trust
boundary), about 15 µs each: a 864,000-candle backfill would spend most of its time there.
Messages written by our scraper are canonical (every candle went through `make_candle`, and its
fields are `Candle.to_json_dict`'s: one object each in schema 1, one list per field in schema 2, whose
lists come out of the JSON parser ready for Arrow), so `decode_canonical_candles` checks the same
rules column by column and builds the batch directly; anything it is not sure of returns None and
the message takes the exact path, which names each invalid candle's reason. The stored values are identical either way
(tests/test_ingest_candles_decode.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from cryptoviz.core import contract
from cryptoviz.core.candle import CANDLE_INTERVALS, Candle
from cryptoviz.core.quote import ALL_PROVIDERS, MAX_AMOUNT_USD, MAX_PRICE_USD
from cryptoviz.ingester.fastdecode import clean_texts, times_within, within
from cryptoviz.ingester.store import CANDLE_ARROW_SCHEMA, naive_utc

_PRICES = ("open", "high", "low", "close")
_INTERVALS = frozenset(CANDLE_INTERVALS)
_WIRE_FIELDS = tuple(f.name for f in fields(Candle))
"""The keys of `Candle.to_json_dict`, in its order."""
_NUMBER = {int, float}
_OPTIONAL_NUMBER = {int, float, type(None)}
_DIGITS = str.maketrans("0123456789", "0000000000")
_WHOLE_SECONDS = "0000-00-00T00:00:00Z\n"
"""A whole-second `format_ts` line with its digits mapped to 0 (`_DIGITS`)."""
_CANONICAL_TS_LINES = re.compile(r"(?:[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?Z\n)+")


@dataclass(slots=True)
class CandleBatch:
    """One message's valid candles as Arrow, and the reasons of those rejected."""

    table: pa.Table
    rejected: dict[str, int] = field(default_factory=dict)


def candles_to_arrow(candles: list[Candle]) -> pa.Table:
    columns = {}
    for name in CANDLE_ARROW_SCHEMA.names:
        if name in ("open_time", "received_at"):
            columns[name] = [naive_utc(getattr(c, name)) for c in candles]
        else:
            columns[name] = [getattr(c, name) for c in candles]
    return pa.Table.from_pydict(columns, schema=CANDLE_ARROW_SCHEMA)


def decode_candles(payload: bytes, now: datetime | None = None) -> CandleBatch:
    """The message's candles, fast when canonical; raises `contract.ContractError` for unusable envelopes."""
    now = now or datetime.now(UTC)
    table = decode_canonical_candles(payload, now)
    if table is not None:
        return CandleBatch(table)
    decoded = contract.decode_candles(payload, now=now)
    return CandleBatch(candles_to_arrow(decoded.candles), decoded.rejected)


def decode_canonical_candles(payload: bytes, now: datetime) -> pa.Table | None:
    """The candles of an all-valid canonical message (schema 1 or 2) as Arrow, or None: use the exact path.

    Checks run per column and mostly in C (`set(map(type, ...))`, one regex over all timestamps
    joined), on distinct values where a message repeats them (one coin per message): ~1 µs a candle
    in schema 1, a fraction of that in schema 2, whose columns come out of the JSON parser as lists.
    """
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("kind") != contract.CANDLES_KIND:
        return None
    provider = body.get("provider")
    if provider not in ALL_PROVIDERS:
        return None
    schema = body.get("schema")
    column = _columns(body) if schema == contract.CANDLES_SCHEMA_VERSION else _records(body) if schema == 1 else None
    if column is None:
        return None
    if not all(_types(column[name]) == {str} for name in ("provider", "coin_id", "symbol", "name")):
        return None
    symbols = set(column["symbol"])
    if set(column["provider"]) != {provider} or not all(s == s.upper() for s in symbols):
        return None
    if not (clean_texts(set(column["coin_id"]), 200) and clean_texts(set(column["name"]), 200)):
        return None
    if not clean_texts(symbols, 32):
        return None
    if _types(column["interval"]) != {int} or not set(column["interval"]) <= _INTERVALS:
        return None
    if not all(_types(column[p]) <= _NUMBER for p in _PRICES) or not _types(column["volume"]) <= _OPTIONAL_NUMBER:
        return None
    arrays = {}
    for name in ("open_time", "received_at"):
        arrays[name] = _timestamps(column[name])
        if arrays[name] is None:
            return None
    try:
        for name in (*_PRICES, "volume"):
            arrays[name] = pa.array(column[name], pa.float64())
    except (pa.ArrowInvalid, OverflowError):  # integers too large for a double
        return None
    if not _valid(arrays, now):
        return None
    for name in ("provider", "coin_id", "symbol", "name"):
        arrays[name] = pa.array(column[name], pa.string())
    arrays["interval"] = pa.array(column["interval"], pa.int32())
    return pa.Table.from_arrays([arrays[name] for name in CANDLE_ARROW_SCHEMA.names], schema=CANDLE_ARROW_SCHEMA)


def _records(body: dict) -> dict[str, Sequence] | None:
    """Schema 1's records as columns, when each has every key of `to_json_dict`, in its order."""
    candles = body.get("candles")
    if not isinstance(candles, list) or not candles or set(map(type, candles)) != {dict}:
        return None
    if set(map(tuple, candles)) != {_WIRE_FIELDS}:
        return None
    return dict(zip(_WIRE_FIELDS, zip(*map(dict.values, candles), strict=True), strict=True))


def _columns(body: dict) -> dict[str, Sequence] | None:
    """Schema 2's columns, the shared fields repeated to the candles' count (checked and stored as in schema 1)."""
    column = {name: body.get(name) for name in contract.CANDLE_COLUMNS}
    if set(map(type, column.values())) != {list}:
        return None
    sizes = set(map(len, column.values()))  # type: ignore[arg-type]
    if len(sizes) != 1 or 0 in sizes:
        return None
    count = sizes.pop()
    for name in ("provider", *contract.CANDLE_SHARED):
        column[name] = [body.get(name)] * count
    return column  # type: ignore[return-value]


def _types(values: Sequence) -> set[type]:
    return set(map(type, values))


def _timestamps(values: Sequence) -> pa.Array | None:
    """`format_ts` strings (whole seconds or six decimals, `Z`) as naive UTC; None for anything else.

    The form is checked on the distinct values (a message's receive times are one or two), whole
    seconds by mapping every digit to 0 (20 times faster than the regex, which checks the rest).
    """
    if _types(values) != {str}:
        return None
    distinct = set(values)
    lines = "\n".join(distinct) + "\n"
    if lines.translate(_DIGITS) != _WHOLE_SECONDS * len(distinct) and _CANONICAL_TS_LINES.fullmatch(lines) is None:
        return None
    try:
        return pa.array(values, pa.string()).cast(pa.timestamp("us", "UTC")).cast(pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _valid(arrays: dict[str, pa.Array], now: datetime) -> bool:
    """`make_candle`'s value rules, column-wise: prices in (0, MAX], consistent OHLC, volume in
    [0, MAX], times as `bounded_ts` bounds them (no candle opening more than MAX_CLOCK_SKEW after it
    was received, or after now)."""
    for name in _PRICES:
        if not (pc.min(arrays[name]).as_py() > 0 and pc.max(arrays[name]).as_py() <= MAX_PRICE_USD):
            return False
    body_low = pc.min_element_wise(arrays["open"], arrays["close"])
    body_high = pc.max_element_wise(arrays["open"], arrays["close"])
    if not (
        pc.all(pc.less_equal(arrays["low"], body_low)).as_py()
        and pc.all(pc.less_equal(body_high, arrays["high"])).as_py()
    ):
        return False
    if not within(arrays["volume"], 0.0, MAX_AMOUNT_USD):
        return False
    return times_within(arrays["open_time"], arrays["received_at"], now)
