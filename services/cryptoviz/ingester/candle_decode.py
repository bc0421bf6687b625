"""Candles messages → Arrow batches in `candles`' layout: a columnar fast path, or the contract decoder.

`contract.decode_candles` validates one `Candle` per record through `make_candle` (the trust
boundary), about 15 µs each: a 864,000-candle backfill would spend most of its time there.
Messages written by our scraper are canonical (every candle went through `make_candle` and
`Candle.to_json_dict`), so `decode_canonical_candles` checks the same rules column by column and
builds the batch directly; anything it is not sure of returns None and the message takes the exact
path, which names each invalid candle's reason. The stored values are identical either way
(tests/test_ingest_candles_decode.py).
"""

from __future__ import annotations

import re
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
    """The candles of an all-valid canonical message as Arrow, or None: use the exact path.

    Checks run per column and mostly in C (`set(map(type, ...))`, one regex over all timestamps
    joined), on distinct values where a message repeats them (one coin per message): ~1 µs a candle.
    """
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("schema") != contract.SCHEMA_VERSION:
        return None
    provider, candles = body.get("provider"), body.get("candles")
    if body.get("kind") != contract.CANDLES_KIND or provider not in ALL_PROVIDERS:
        return None
    if not isinstance(candles, list) or not candles or set(map(type, candles)) != {dict}:
        return None
    if set(map(tuple, candles)) != {_WIRE_FIELDS}:  # every key, in to_json_dict's order
        return None
    column = dict(zip(_WIRE_FIELDS, zip(*map(dict.values, candles), strict=True), strict=True))
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


def _types(values: tuple) -> set[type]:
    return set(map(type, values))


def _timestamps(values: tuple) -> pa.Array | None:
    """`format_ts` strings (whole seconds or six decimals, `Z`) as naive UTC; None for anything else."""
    if _types(values) != {str} or _CANONICAL_TS_LINES.fullmatch("\n".join(values) + "\n") is None:
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
