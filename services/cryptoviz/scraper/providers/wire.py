"""The fake side of a provider unit: what the local market server needs to speak its wire format.

Each provider module defines a `Wire` subclass answering the provider's documented endpoints from
the market's coin rows (quotes) and candles (history), with the provider's real paging limits.
`cryptoviz.dev.market` routes requests to them and applies its faults around them; the tests and
benchmarks point the scraper's base URLs at that server.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from cryptoviz.core.quote import InvalidQuote, parse_ts


@dataclass(slots=True)
class CoinRow:
    """One coin at one feed tick, in USD. Unknown values are None and are left out or null on the wire."""

    symbol: str
    name: str
    price: Any
    timestamp: datetime
    volume_24h: float | None = None
    market_cap: float | None = None
    percent_change_1h: float | None = None
    percent_change_24h: float | None = None
    percent_change_7d: float | None = None
    rank: int | None = None
    ids: dict[str, str] = field(default_factory=dict)
    """Ids that differ from what each wire format derives from the symbol (synthetic coins, twins)."""


@dataclass(frozen=True, slots=True)
class CandleRow:
    """One candle of the market's history, in USD (volume: traded value over the candle)."""

    open_time: datetime
    open: Any
    high: Any
    low: Any
    close: Any
    volume: float = 0.0


History = Callable[[str, int, datetime, datetime], list[CandleRow]]
"""(symbol, interval, start, end) → the candles opening in [start, end) up to the market's now, in time order
(the last one may still be in progress, as with every real provider)."""


class Reply(Exception):
    """Raised by a wire format to answer at once with this status, body and headers."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


@dataclass(slots=True)
class WireRequest:
    """One GET to a wire format: the request, and the market as it stands (faults already applied)."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    rows: list[CoinRow]
    now: datetime
    number: Callable[[Any], Any]
    """How numbers go on the wire: as they are, or (the `strings` fault) as JSON strings."""
    history: History
    known_symbols: frozenset[str] = frozenset()
    """Coins the provider lists even when the feed has no row for them right now (a gap in the data)."""
    faulty: bool = False
    """Faults apply to this request: answer with plain values (the server writes them with `json`)."""


class Wire:
    """A provider's fake wire format. `known_ids` are the real ids of the coins in the shared data."""

    name: ClassVar[str] = ""
    prefixes: ClassVar[tuple[str, ...]] = ()
    history_paths: ClassVar[tuple[str, ...]] = ()
    """Path fragments of the history endpoints (the `stuck_cursor` fault and path-scoped faults use them)."""
    known_ids: ClassVar[dict[str, str]] = {}
    rate_limited_body: ClassVar[Any] = {"error": "rate limited"}
    """The provider's body on HTTP 429."""

    def coin_id(self, symbol: str) -> str | None:
        """This provider's id for a coin of the market (None: it does not list the coin)."""
        return self.known_ids.get(symbol, self.default_id(symbol))

    def default_id(self, symbol: str) -> str | None:
        return symbol

    def id_of(self, row: CoinRow) -> str | None:
        return row.ids.get(self.name) or self.coin_id(row.symbol)

    def known(self, request: WireRequest) -> dict[str, str]:
        """id → symbol of every coin the provider lists (also those absent from this tick)."""
        symbols = set(request.known_symbols) | {r.symbol for r in request.rows}
        out = {i: s for s in symbols if (i := self.coin_id(s))}
        out.update({i: r.symbol for r in request.rows if (i := self.id_of(r))})
        return out

    def row(self, request: WireRequest, coin_id: str) -> CoinRow | None:
        return next((r for r in request.rows if self.id_of(r) == coin_id), None)

    def answer(self, request: WireRequest) -> Any:
        raise Reply(404, {"error": f"unknown endpoint {request.path}"})


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def as_string(value: Any) -> Any:
    return None if value is None else str(value)


def plain(value: Any) -> Any:
    return value


def both_numbers(a: Any, b: Any) -> bool:
    return isinstance(a, float | int) and isinstance(b, float | int) and b > 0


def query_time(request: WireRequest, name: str, default: datetime | None = None) -> datetime:
    """A time parameter (epoch s/ms or ISO), or `default`; a bad one is a 400 as providers answer."""
    value = request.query.get(name)
    if value is None:
        if default is None:
            raise Reply(400, {"error": f"missing parameter {name}"})
        return default
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    try:
        return parse_ts(number if math.isfinite(number) else value, name)
    except InvalidQuote:
        raise Reply(400, {"error": f"invalid parameter {name}"}) from None


def query_int(request: WireRequest, name: str, default: int) -> int:
    try:
        return int(request.query.get(name, default))
    except ValueError:
        raise Reply(400, {"error": f"invalid parameter {name}"}) from None
