"""The one normalised quote record every provider maps into, and its validation.

Providers send numbers as JSON numbers or strings, sometimes null, sometimes NaN.
`make_quote` is the single trust boundary: it coerces, checks and either returns a
`Quote` or raises `InvalidQuote` with a short machine-readable reason that callers count.
It runs twice: in the scraper, and in the ingester against the ingester's own clock, since
whoever can publish can also forge `received_at`.

Time is checked like any other value: a timestamp must parse, lie after MIN_TIMESTAMP and no
later than its receive time (and the validating clock) plus MAX_CLOCK_SKEW. One quote stamped
in the future would otherwise be every chart's newest point for as long as it is stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptoviz.core.providers import ALL_PROVIDERS as ALL_PROVIDERS  # the registry, re-exported
from cryptoviz.core.providers import LOCAL_PROVIDERS as LOCAL_PROVIDERS
from cryptoviz.core.providers import PROVIDERS as PROVIDERS

MAX_PRICE_USD = 1e9
"""No traded coin is worth a billion dollars; anything above is a feed error."""
MAX_AMOUNT_USD = 1e15
"""Market caps and volumes above a quadrillion dollars are feed errors."""
MAX_PERCENT_CHANGE = 1e6
MIN_TIMESTAMP = datetime(2009, 1, 3, tzinfo=UTC)
"""Bitcoin's first block: no crypto price is older; an earlier time is a unit or feed error."""
DEFAULT_MAX_CLOCK_SKEW = timedelta(seconds=300)
MAX_CLOCK_SKEW_LIMIT = timedelta(days=1)


_max_clock_skew = DEFAULT_MAX_CLOCK_SKEW


def parse_clock_skew(text: str) -> timedelta:
    """`MAX_CLOCK_SKEW` as given: seconds, or a duration such as 90s or 5m; at most 1d. ValueError otherwise."""
    from cryptoviz.core.config import parse_duration  # config imports this module

    raw = str(text).strip()
    try:
        seconds = float(raw) if raw.replace(".", "", 1).isdigit() else parse_duration(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_CLOCK_SKEW_LIMIT.total_seconds():
        raise ValueError(f"{raw!r} is not usable: give seconds or a duration such as 5m, at most 1d")
    return timedelta(seconds=seconds)


def set_max_clock_skew(skew: timedelta) -> None:
    """Set by the `cryptoviz` command from MAX_CLOCK_SKEW / --max-clock-skew (shared by scraper and ingester)."""
    global _max_clock_skew
    _max_clock_skew = skew


def max_clock_skew() -> timedelta:
    """How far a timestamp may lie past its receive time and past the validating clock (default 300 s)."""
    return _max_clock_skew


class InvalidQuote(ValueError):
    """A record that cannot become a quote. `reason` is short and stable, for counting."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Quote:
    """One price observation of one coin by one provider.

    A quote's identity is (provider, coin_id, timestamp): the same provider reporting the
    same coin at the same provider time is the same fact, however often it is delivered.
    """

    provider: str
    coin_id: str
    symbol: str
    name: str
    price: float
    timestamp: datetime
    received_at: datetime
    volume_24h: float | None = None
    market_cap: float | None = None
    percent_change_1h: float | None = None
    percent_change_24h: float | None = None
    percent_change_7d: float | None = None
    rank: int | None = None

    @property
    def identity(self) -> tuple[str, str, datetime]:
        return (self.provider, self.coin_id, self.timestamp)

    def to_json_dict(self) -> dict[str, Any]:
        """The wire form used in messages and API answers (timestamps as ISO-8601 UTC)."""
        data = {name: getattr(self, name) for name in _FIELD_NAMES}  # asdict() deep-copies: 10x slower
        data["timestamp"] = format_ts(self.timestamp)
        data["received_at"] = format_ts(self.received_at)
        return data

    @classmethod
    def from_json_dict(cls, data: dict[str, Any], *, now: datetime | None = None) -> Quote:
        """Rebuild a quote from its wire form, re-validating every field (times against `now`)."""
        if not isinstance(data, dict):
            raise InvalidQuote("not_an_object", type(data).__name__)
        return make_quote(
            provider=data.get("provider"),
            coin_id=data.get("coin_id"),
            symbol=data.get("symbol"),
            name=data.get("name"),
            price=data.get("price"),
            timestamp=data.get("timestamp"),
            received_at=data.get("received_at"),
            volume_24h=data.get("volume_24h"),
            market_cap=data.get("market_cap"),
            percent_change_1h=data.get("percent_change_1h"),
            percent_change_24h=data.get("percent_change_24h"),
            percent_change_7d=data.get("percent_change_7d"),
            rank=data.get("rank"),
            now=now,
        )


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Quote))


def format_ts(value: datetime) -> str:
    """ISO-8601 in UTC with a `Z`, microseconds only when present."""
    text = value.astimezone(UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


def parse_ts(value: Any, field: str = "timestamp") -> datetime:
    """Accept ISO-8601 strings (with `Z` or an offset; naive means UTC) and epoch seconds/ms."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bool) or value is None:
        raise InvalidQuote(f"missing_{field}" if value is None else f"invalid_{field}", repr(value))
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            raise InvalidQuote(f"invalid_{field}", repr(value))
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):  # beyond year 9999, e.g. microseconds sent as ms
            raise InvalidQuote(f"invalid_{field}", repr(value)) from None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except (ValueError, OverflowError):  # not ISO-8601, or an offset pushing it past year 1 or 9999
            raise InvalidQuote(f"invalid_{field}", value[:64]) from None
    raise InvalidQuote(f"invalid_{field}", type(value).__name__)


def bounded_ts(value: Any, field: str, now: datetime, received: datetime | None = None) -> datetime:
    """`parse_ts`, then within [MIN_TIMESTAMP, min(received, now) + MAX_CLOCK_SKEW]: `future_<field>` or
    `out_of_range_<field>` otherwise."""
    stamp = parse_ts(value, field)
    if stamp < MIN_TIMESTAMP:
        raise InvalidQuote(f"out_of_range_{field}", format_ts(stamp))
    if stamp > min(received or now, now) + max_clock_skew():
        raise InvalidQuote(f"future_{field}", format_ts(stamp))
    return stamp


def received_ts(value: Any, now: datetime) -> datetime:
    """A record's receive time: given (and bounded by `now`), else `now`."""
    return bounded_ts(value, "received_at", now) if value is not None else now


def to_number(value: Any, field: str, *, required: bool = False) -> float | None:
    """Coerce a JSON number or numeric string to a finite float; None stays None unless required."""
    if value is None or value == "":
        if required:
            raise InvalidQuote(f"missing_{field}")
        return None
    if isinstance(value, bool):
        raise InvalidQuote(f"invalid_{field}", repr(value))
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise InvalidQuote(f"invalid_{field}", value[:32]) from None
    if not isinstance(value, int | float):
        raise InvalidQuote(f"invalid_{field}", type(value).__name__)
    number = float(value)
    if not math.isfinite(number):
        raise InvalidQuote(f"nonfinite_{field}", repr(value))
    return number


def _bounded(value: float | None, field: str, low: float, high: float) -> float | None:
    if value is not None and not (low <= value <= high):
        raise InvalidQuote(f"out_of_range_{field}", repr(value))
    return value


def _percent(value: Any, field: str) -> float | None:
    """A change can fall by at most 100 %, and rise by a lot, but not by a million percent."""
    return _bounded(to_number(value, field), field, -100.0, MAX_PERCENT_CHANGE)


def _text(value: Any, field: str, *, required: bool, limit: int = 200) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidQuote(f"missing_{field}")
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidQuote(f"invalid_{field}", type(value).__name__)
    return value.strip()[:limit]


def make_quote(
    *,
    provider: Any,
    coin_id: Any,
    symbol: Any,
    name: Any,
    price: Any,
    timestamp: Any,
    received_at: Any = None,
    volume_24h: Any = None,
    market_cap: Any = None,
    percent_change_1h: Any = None,
    percent_change_24h: Any = None,
    percent_change_7d: Any = None,
    rank: Any = None,
    now: datetime | None = None,
) -> Quote:
    """Build a validated quote, or raise `InvalidQuote` naming the first bad field.

    `now` (default: the wall clock) is the validating clock that bounds both timestamps."""
    provider_name = _text(provider, "provider", required=True)
    if provider_name not in ALL_PROVIDERS:
        raise InvalidQuote("unknown_provider", provider_name[:32])
    coin = _text(coin_id, "coin_id", required=True)
    price_value = to_number(price, "price", required=True)
    if price_value is None or price_value <= 0:
        raise InvalidQuote("nonpositive_price", repr(price))
    _bounded(price_value, "price", 0.0, MAX_PRICE_USD)
    symbol_text = _text(symbol, "symbol", required=True, limit=32).upper()
    rank_value = to_number(rank, "rank")
    if rank_value is not None and (rank_value < 1 or rank_value != int(rank_value)):
        raise InvalidQuote("invalid_rank", repr(rank))
    now = now or datetime.now(UTC)
    received = received_ts(received_at, now)
    return Quote(
        provider=provider_name,
        coin_id=coin,
        symbol=symbol_text,
        name=_text(name, "name", required=False) or symbol_text,
        price=price_value,
        timestamp=bounded_ts(timestamp, "timestamp", now, received),
        received_at=received,
        volume_24h=_bounded(to_number(volume_24h, "volume_24h"), "volume_24h", 0.0, MAX_AMOUNT_USD),
        market_cap=_bounded(to_number(market_cap, "market_cap"), "market_cap", 0.0, MAX_AMOUNT_USD),
        percent_change_1h=_percent(percent_change_1h, "percent_change_1h"),
        percent_change_24h=_percent(percent_change_24h, "percent_change_24h"),
        percent_change_7d=_percent(percent_change_7d, "percent_change_7d"),
        rank=int(rank_value) if rank_value is not None else None,
    )
