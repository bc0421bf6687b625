"""Switchable misbehaviours of the local market: rate limits, provider errors, broken bodies, bad values, history."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from cryptoviz.scraper.providers.coingecko import CoinGeckoWire
from cryptoviz.scraper.providers.coinmarketcap import WIRE_ERRORS, CoinMarketCapWire, status_body
from cryptoviz.scraper.providers.wire import CandleRow, CoinRow, Reply, Wire

FAULT_KINDS = (
    "http_429",  # HTTP 429 + Retry-After (provider-shaped body; `retry_after_date`: as an HTTP date)
    "binance_418",  # HTTP 418 + Retry-After (Binance IP ban)
    "coingecko_429_200",  # CoinGecko's rate-limit body with HTTP 200
    "cmc_error",  # CMC status.error_code `code` (1001, 1002, 1008, 1009, …), its HTTP status or 200 (`http_200`)
    "kraken_error",  # Kraken `error` array with HTTP 200 (`message`, default EAPI:Rate limit exceeded)
    "http_5xx",  # HTTP `status` (default 503)
    "html",  # an HTML error page with HTTP `status` (as a proxy or captive portal sends)
    "redirect",  # HTTP `status` (301/302/303/307/308) to `location` + the request's path and query
    "timeout",  # sleep `delay` seconds before answering
    "truncated",  # cut the JSON body in half
    "nulls",  # price (candles: close) null for `symbols`
    "strings",  # every number as a JSON string
    "nan",  # price (candles: close) NaN for `symbols`
    "negative",  # negative price (candles: close) for `symbols`
    "duplicate_symbols",  # a second coin with the same symbol and other ids, for `symbols`
    "listing_5000",  # synthetic extra coins up to `total` (default 5,000) in listings/markets
    "binance_weight",  # Binance's X-MBX-USED-WEIGHT-1m header reports `weight` (default 5,500 of 6,000)
    "stuck_cursor",  # history endpoints answer every call with their first answer (the cursor never advances)
    "shuffled",  # history answers reversed, with their first candle twice (out of order, duplicate)
    "future_candles",  # history answers end with three candles opening after now
)
VALUE_FAULTS = ("nulls", "strings", "nan", "negative", "duplicate_symbols", "listing_5000")
"""Faults in the values of an answer: they hit quote endpoints, and history ones only when `path` names them."""
HISTORY_FAULTS = ("stuck_cursor", "shuffled", "future_candles")


@dataclass(slots=True)
class Fault:
    """A switchable misbehaviour. `provider` None = every provider; `count` None = until cleared.

    `path`, when set, limits it to requests whose path contains it (e.g. `klines`: Binance's history only).
    A fault is used up only by requests it applies to (a value fault without `path` by quote requests,
    a history fault by history requests), so a scrape's candle requests do not take a quote's fault.
    """

    kind: str
    provider: str | None = None
    count: int | None = None
    symbols: list[str] | None = None
    path: str | None = None
    retry_after: float | None = 1
    retry_after_date: bool = False
    """Send `Retry-After` as an HTTP date (the feed's time + `retry_after`, as the `Date` header is)."""
    location: str = ""
    """redirect: where to (e.g. `http://localhost:PORT`; empty: this server), the request's path appended."""
    delay: float = 5.0
    status: int = 503
    code: int = 1008
    message: str = "EAPI:Rate limit exceeded"
    total: int = 5000
    weight: int = 5500
    http_200: bool = False
    """cmc_error: send the error body with HTTP 200 (clients must read status.error_code anyway)."""

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(FAULT_KINDS)}")

    def hits(self, symbol: str) -> bool:
        return self.symbols is None or symbol in self.symbols

    def applies(self, provider: str, path: str, history: bool) -> bool:
        if self.provider not in (None, provider) or (self.path is not None and self.path not in path):
            return False
        if self.kind in HISTORY_FAULTS:
            return history
        return self.kind not in VALUE_FAULTS or self.path is not None or not history


def raise_error_fault(fault: Fault, wire: Wire, target: str, now: datetime) -> None:
    """Answer at once as the provider does when it is in the fault's state (`target`: the request's path and query)."""
    retry = {"Retry-After": _retry_after(fault, now)} if fault.retry_after is not None else {}
    kind = fault.kind
    if kind == "redirect":
        status = fault.status if 300 <= fault.status < 400 else 302
        raise Reply(status, {"error": "moved"}, {"Location": fault.location.rstrip("/") + target})
    if kind == "http_429":
        raise Reply(429, wire.rate_limited_body, retry)
    if kind == "binance_418":
        raise Reply(418, {"code": -1003, "msg": "Way too much request weight used; IP banned."}, retry)
    if kind == "coingecko_429_200":
        raise Reply(200, CoinGeckoWire.rate_limited_body)
    if kind == "cmc_error":
        status = 200 if fault.http_200 else WIRE_ERRORS.get(fault.code, (400, ""))[0]
        raise Reply(status, status_body(fault.code), retry if status == 429 else {})
    if kind == "kraken_error":
        raise Reply(200, {"error": [fault.message], "result": {}})
    if kind == "http_5xx":
        raise Reply(fault.status, {"error": "upstream unavailable"})
    if kind == "html":
        title = f"<title>{fault.status} Service Unavailable</title>"
        page = f"<!DOCTYPE html><html><head>{title}</head><body>Please try again later.</body></html>"
        raise Reply(fault.status, page, {"Content-Type": "text/html"})


def _retry_after(fault: Fault, now: datetime) -> str:
    if fault.retry_after_date:
        return format_datetime((now + timedelta(seconds=fault.retry_after or 0)).astimezone(UTC), usegmt=True)
    return f"{fault.retry_after:g}"


def apply_row_faults(rows: list[CoinRow], faults: list[Fault]) -> list[CoinRow]:
    out = []
    for row in rows:
        for fault in faults:
            if not fault.hits(row.symbol):
                continue
            if fault.kind == "nulls":
                row = replace(row, price=None)
            elif fault.kind == "nan":
                row = replace(row, price=float("nan"))
            elif fault.kind == "negative":
                row = replace(row, price=-abs(row.price))
        out.append(row)
    for fault in faults:
        if fault.kind == "duplicate_symbols":
            out.extend(_twin(row) for row in rows if fault.symbols is None or row.symbol in fault.symbols)
    return out


def apply_candle_faults(symbol: str, candles: list[CandleRow], faults: list[Fault], now: datetime) -> list[CandleRow]:
    """Bad values in the history (the close of every candle), or a shuffled or future-stamped answer."""
    out = list(candles)
    for fault in faults:
        if fault.kind in ("nulls", "nan", "negative") and fault.hits(symbol):
            bad = {"nulls": None, "nan": float("nan")}.get(fault.kind)
            out = [replace(c, close=-abs(c.close) if fault.kind == "negative" else bad) for c in out]
        elif fault.kind == "shuffled" and out:
            out = [out[0], *reversed(out)]
        elif fault.kind == "future_candles" and out:
            times = sorted({c.open_time for c in out})
            step = min((b - a for a, b in itertools.pairwise(times)), default=timedelta(minutes=5))
            newest = max(out, key=lambda c: c.open_time)
            start = max(newest.open_time, now)
            out += [replace(newest, open_time=start + step * (i + 1)) for i in range(3)]
    return out


def _twin(row: CoinRow) -> CoinRow:
    """Another coin that shares the ticker (like the two BTGs): different ids, name, price and rank."""
    cmc = CoinMarketCapWire().id_of(row) or "0"
    ids = {**row.ids, "coinmarketcap": str(900_000 + int(cmc)), "coingecko": f"{CoinGeckoWire().id_of(row)}-classic"}
    price = row.price / 1000 if isinstance(row.price, float) else row.price
    return replace(row, name=f"{row.name} Classic", price=price, rank=4000 + (row.rank or 0), ids=ids)


def with_synthetic(rows: list[CoinRow], faults: list[Fault], now: datetime) -> list[CoinRow]:
    """Pad a ranked listing with deterministic synthetic coins (per feed time) up to `total`."""
    total = max((f.total for f in faults if f.kind == "listing_5000"), default=0)
    extra = []
    wiggle = 1 + (int(now.timestamp()) // 300 % 97) / 1000
    for n in range(1, total - len(rows) + 1):
        price = (0.01 + (n * 7919 % 100_000) / 100) * wiggle
        extra.append(
            CoinRow(
                symbol=f"SYN{n}",
                name=f"Synthetic Coin {n}",
                price=price,
                timestamp=now,
                volume_24h=price * 1000 * n,
                market_cap=price * 1_000_000,
                percent_change_24h=(n % 21) - 10.0,
                rank=len(rows) + n,
                ids={"coinmarketcap": str(1_000_000 + n), "coingecko": f"synthetic-coin-{n}"},
            )
        )
    return rows + extra
