"""The normalised OHLCV candle every provider's history maps into, and its validation.

Candles are first-class data beside quotes: a provider's history (klines, OHLC, market charts)
becomes candles, a scrape's present becomes quotes. `make_candle` is the trust boundary for
candles as `make_quote` is for quotes: it coerces, checks and either returns a `Candle` or raises
`InvalidQuote` with a short machine-readable reason that callers count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import eq, le, lt, truediv
from typing import Any

from cryptoviz.core.quote import (
    ALL_PROVIDERS,
    MAX_AMOUNT_USD,
    MAX_PRICE_USD,
    MIN_TIMESTAMP,
    InvalidQuote,
    _text,
    bounded_ts,
    format_ts,
    max_clock_skew,
    received_ts,
    to_number,
)

CANDLE_INTERVALS: tuple[int, ...] = (60, 300, 900, 3600, 14400, 86400)
"""Candle lengths in seconds that providers offer and we store (1m, 5m, 15m, 1h, 4h, 1d)."""


@dataclass(frozen=True, slots=True)
class Candle:
    """One provider's OHLCV summary of one coin over [open_time, open_time + interval).

    Identity: (provider, coin_id, interval, open_time). Prices in USD; `volume` is the traded value
    in USD over the candle (None when the provider does not say).
    """

    provider: str
    coin_id: str
    symbol: str
    name: str
    interval: int
    open_time: datetime
    open: float
    high: float
    low: float
    close: float
    received_at: datetime
    volume: float | None = None

    @property
    def identity(self) -> tuple[str, str, int, datetime]:
        return (self.provider, self.coin_id, self.interval, self.open_time)

    @property
    def close_time(self) -> datetime:
        return self.open_time + timedelta(seconds=self.interval)

    def to_json_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        data["open_time"] = format_ts(self.open_time)
        data["received_at"] = format_ts(self.received_at)
        return data

    @classmethod
    def from_json_dict(cls, data: Any, *, now: datetime | None = None) -> Candle:
        if not isinstance(data, dict):
            raise InvalidQuote("not_an_object", type(data).__name__)
        return make_candle(**{name: data.get(name) for name in _FIELD_NAMES}, now=now)


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Candle))


def _price(value: Any, field: str) -> float:
    number = to_number(value, field, required=True)
    if number is None or number <= 0:
        raise InvalidQuote("nonpositive_price", f"{field}={value!r}")
    if number > MAX_PRICE_USD:
        raise InvalidQuote("out_of_range_price", f"{field}={value!r}")
    return number


def make_candle(
    *,
    provider: Any,
    coin_id: Any,
    symbol: Any,
    name: Any,
    interval: Any,
    open_time: Any,
    open: Any,
    high: Any,
    low: Any,
    close: Any,
    volume: Any = None,
    received_at: Any = None,
    now: datetime | None = None,
) -> Candle:
    """Build a validated candle, or raise `InvalidQuote` naming what is wrong.

    `now` (default: the wall clock) bounds the times as for quotes (`bounded_ts`): a candle opening
    more than MAX_CLOCK_SKEW after it was received (or after now) is refused as `future_open_time`.
    """
    provider_name = _text(provider, "provider", required=True)
    if provider_name not in ALL_PROVIDERS:
        raise InvalidQuote("unknown_provider", provider_name[:32])
    coin = _text(coin_id, "coin_id", required=True)
    symbol_text = _text(symbol, "symbol", required=True, limit=32).upper()
    seconds = to_number(interval, "interval", required=True)
    if seconds not in CANDLE_INTERVALS:
        raise InvalidQuote("invalid_interval", repr(interval))
    prices = {f: _price(v, f) for f, v in (("open", open), ("high", high), ("low", low), ("close", close))}
    body_low, body_high = sorted((prices["open"], prices["close"]))
    if not prices["low"] <= body_low <= body_high <= prices["high"]:
        raise InvalidQuote("inconsistent_ohlc", repr(prices))
    volume_value = to_number(volume, "volume")
    if volume_value is not None and not 0.0 <= volume_value <= MAX_AMOUNT_USD:
        raise InvalidQuote("out_of_range_volume", repr(volume))
    now = now or datetime.now(UTC)
    received = received_ts(received_at, now)
    opened = bounded_ts(open_time, "open_time", now, received)
    return Candle(
        provider=provider_name,
        coin_id=coin,
        symbol=symbol_text,
        name=_text(name, "name", required=False) or symbol_text,
        interval=int(seconds),
        open_time=opened,
        open=prices["open"],
        high=prices["high"],
        low=prices["low"],
        close=prices["close"],
        received_at=received,
        volume=volume_value,
    )


_NUMBERS = (str, float, int)
"""The types `to_number` reads (bool excluded: it is an int, and refused)."""
_NUMBER_TYPES = frozenset(_NUMBERS)


class CandleMaker:
    """`make_candle` for many candles of one coin at one interval (a provider's page): the same candles, the
    same `InvalidQuote` reasons, a third of the work.

    What all candles share (provider, coin, symbol, name, interval, receive time) is checked once; each
    candle whose prices, volume and open time pass a quick check is built directly, and any other goes
    through `make_candle` itself, which gives the exact reason (or the candle, when the quick check was
    only stricter: an open time as text, say).
    """

    __slots__ = ("_common", "_fields", "_received", "_upper")

    def __init__(
        self,
        *,
        provider: Any,
        coin_id: Any,
        symbol: Any,
        name: Any,
        interval: Any,
        received_at: Any = None,
        now: datetime | None = None,
    ) -> None:
        now = now or datetime.now(UTC)
        self._fields = dict(
            provider=provider, coin_id=coin_id, symbol=symbol, name=name, interval=interval,
            received_at=received_at, now=now,
        )  # fmt: skip
        self._common: tuple[str, str, str, str, int] | None = None
        try:  # a probe candle checks what all share; if it fails, every candle takes the exact path
            probe = make_candle(**self._fields, open_time=now, open=1.0, high=1.0, low=1.0, close=1.0)
        except InvalidQuote:
            return
        self._common = (probe.provider, probe.coin_id, probe.symbol, probe.name, probe.interval)
        self._received = probe.received_at
        self._upper = min(probe.received_at, now) + max_clock_skew()

    def __call__(self, *, open_time: Any, open: Any, high: Any, low: Any, close: Any, volume: Any = None) -> Candle:
        common = self._common
        if (
            common is not None
            and type(open) in _NUMBERS
            and type(high) in _NUMBERS
            and type(low) in _NUMBERS
            and type(close) in _NUMBERS
            and type(open_time) is int
            and (volume is None or type(volume) in _NUMBERS)
        ):
            try:
                o, h, lo, c = float(open), float(high), float(low), float(close)
                v = None if volume is None or volume == "" else float(volume)
                opened = datetime.fromtimestamp(open_time / 1000 if open_time > 1e11 else open_time, UTC)
            except (ValueError, OverflowError, OSError):
                pass
            else:  # NaN fails every comparison, infinities and times <= 0 the bounds: all go the exact way
                body_low, body_high = (o, c) if o <= c else (c, o)
                if (
                    0.0 < lo <= body_low <= body_high <= h <= MAX_PRICE_USD
                    and (v is None or 0.0 <= v <= MAX_AMOUNT_USD)
                    and MIN_TIMESTAMP <= opened <= self._upper
                ):
                    provider, coin, symbol, name, interval = common
                    return Candle(provider, coin, symbol, name, interval, opened, o, h, lo, c, self._received, v)
        return make_candle(
            **self._fields, open_time=open_time, open=open, high=high, low=low, close=close, volume=volume
        )

    def columns(
        self,
        *,
        open_time: Sequence[Any],
        open: Sequence[Any],
        high: Sequence[Any],
        low: Sequence[Any],
        close: Sequence[Any],
        volume: Sequence[Any],
    ) -> list[Candle] | None:
        """A whole page's candles from its columns, when every row passes the quick check of `__call__`
        (open times in epoch milliseconds, a volume each); else None, and the caller takes each row alone.

        The same candles as calling per row, with the checks as loops in C (`map`) instead of Python.
        """
        common = self._common
        columns = (open, high, low, close, volume)
        if common is None or not open_time or set(map(type, open_time)) != {int}:
            return None
        if not all(set(map(type, column)) <= _NUMBER_TYPES for column in columns):
            return None
        try:
            o, h, lo, c, v = (list(map(float, column)) for column in columns)
            if min(open_time) <= 1e11:  # seconds, not milliseconds: the per-row path tells them apart
                return None
            opened = list(map(datetime.fromtimestamp, map(truediv, open_time, repeat(1000)), repeat(UTC)))
        except (ValueError, OverflowError, OSError):
            return None
        body_low, body_high = list(map(min, o, c)), list(map(max, o, c))
        if not (
            all(map(eq, o, o))  # no NaN (min and max would hide one in `close`)
            and all(map(eq, c, c))
            and all(map(lt, repeat(0.0), lo))
            and all(map(le, lo, body_low))
            and all(map(le, body_low, body_high))
            and all(map(le, body_high, h))
            and all(map(le, h, repeat(MAX_PRICE_USD)))
            and all(map(le, repeat(0.0), v))
            and all(map(le, v, repeat(MAX_AMOUNT_USD)))
            and min(opened) >= MIN_TIMESTAMP
            and max(opened) <= self._upper
        ):
            return None
        provider, coin, symbol, name, interval = common
        shared = [repeat(x) for x in (provider, coin, symbol, name, interval)]
        return list(map(Candle, *shared, opened, o, h, lo, c, repeat(self._received), v))
