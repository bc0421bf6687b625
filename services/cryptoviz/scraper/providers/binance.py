"""Binance: 24 h tickers of USDT pairs, klines (≤ 1000 a call, request weight), and its fake wire format."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from itertools import repeat
from operator import add, attrgetter, lt, truediv
from typing import Any, ClassVar

import orjson
import requests

from cryptoviz.core.candle import Candle, CandleMaker
from cryptoviz.core.config import TrackedCoin
from cryptoviz.scraper.http import ProviderError
from cryptoviz.scraper.providers.base import (
    Fetched,
    HistorySpec,
    Offer,
    Page,
    Provider,
    ProviderSpec,
    Target,
    epoch_ms,
    unknown_pair_message,
)
from cryptoviz.scraper.providers.wire import (
    CandleRow,
    CoinRow,
    Reply,
    Wire,
    WireRequest,
    as_string,
    both_numbers,
    query_int,
    query_time,
)

log = logging.getLogger("cryptoviz.scraper.providers")

TOP = ("BTC", "ETH", "XRP", "BNB", "SOL", "USDC", "DOGE", "ADA", "AVAX", "LINK", "DOT", "LTC")
"""Exchanges have no market-cap ranking: their "top N" is this list of large coins (early 2025) they trade."""
WEIGHT_LIMIT = 6000
"""Request weight per minute and IP (`X-MBX-USED-WEIGHT-1m`)."""
KLINES_LIMIT = 1000
INTERVALS = {60: "1m", 300: "5m", 900: "15m", 3600: "1h", 14_400: "4h", 86_400: "1d"}


class Binance(Provider):
    name = "binance"
    history_offers = (Offer(300),)

    def check(self, response: requests.Response, body: Any) -> None:
        used = response.headers.get("X-MBX-USED-WEIGHT-1m")
        if used and used.isdigit():
            if int(used) > WEIGHT_LIMIT * 0.9:
                pause = 61 - datetime.now().second  # the weight is counted per clock minute
                log.warning("binance: request weight %s of %d used; pausing %ds", used, WEIGHT_LIMIT, pause)
                self.http.hold(pause)
            elif int(used) > WEIGHT_LIMIT * 0.8:
                log.warning("binance: request weight %s of %d per minute used", used, WEIGHT_LIMIT)
        if isinstance(body, dict) and "code" in body and response.status_code not in (418, 429):
            message = self.http.redact(str(body.get("msg")))[:200]
            raise ProviderError(self.label, f"error {body.get('code')}: {message}", status=response.status_code)

    def unknown_pair(self, error: ProviderError) -> bool:
        return error.message.startswith("error -1121:")  # "Invalid symbol."

    def fetch(self, coins: list[TrackedCoin], top_n: int) -> Fetched:
        out = Fetched()
        tracked = coins or [TrackedCoin(symbol=s) for s in TOP[:top_n]]
        by_pair = {c.ids.get("binance", f"{c.symbol}USDT"): c for c in tracked}
        answers, unknown = self._by_pairs(list(by_pair), self._tickers)
        out.errors += [unknown_pair_message(self.name, pair, by_pair[pair].symbol) for pair in unknown]
        tickers = [t for answer in answers for t in answer]
        seen = {t.get("symbol") for t in tickers if isinstance(t, dict)}
        out.missing += [c.symbol for pair, c in by_pair.items() if pair not in seen and pair not in unknown]
        self._keep(out, tickers, lambda t: self._record(t, by_pair[t["symbol"]]))
        return out

    def _tickers(self, pairs: list[str]) -> list[Any]:
        symbols = json.dumps(pairs, separators=(",", ":"))
        return self._expect(self._get("/api/v3/ticker/24hr", {"symbols": symbols}), list)

    @staticmethod
    def _record(ticker: dict[str, Any], coin: TrackedCoin) -> dict[str, Any]:
        return dict(
            coin_id=ticker["symbol"],
            symbol=coin.symbol,
            name=coin.name,
            price=ticker.get("lastPrice"),
            timestamp=ticker.get("closeTime"),
            volume_24h=ticker.get("quoteVolume"),
            percent_change_24h=ticker.get("priceChangePercent"),
        )

    def history_page(self, target: Target, interval: int, start: datetime, end: datetime) -> Page:
        """Klines from `start` on; a full page means more may follow from the last open time on."""
        params = {
            "symbol": target.coin_id,
            "interval": INTERVALS[interval],
            "startTime": epoch_ms(start),
            "endTime": epoch_ms(end) - 1,
            "limit": KLINES_LIMIT,
        }
        rows = self._expect(self._get("/api/v3/klines", params), list)
        page = self._candles(Page(), target, interval, rows, _kline, _kline_columns)
        if len(rows) >= KLINES_LIMIT and isinstance(rows[-1], list) and isinstance(rows[-1][0], int | float):
            page.next = datetime.fromtimestamp(rows[-1][0] / 1000 + interval, start.tzinfo)
        return page


def _kline(row: list[Any]) -> dict[str, Any]:
    """[open time ms, open, high, low, close, base volume, close time, quote volume (USDT), …]."""
    return dict(open_time=row[0], open=row[1], high=row[2], low=row[3], close=row[4], volume=row[7])


def _kline_columns(make: CandleMaker, rows: list[Any]) -> list[Candle] | None:
    """A page of klines at once (`CandleMaker.columns`), when every row is a list of at least 8 fields."""
    if not rows or set(map(type, rows)) != {list} or min(map(len, rows)) < 8:
        return None
    fields = list(zip(*rows, strict=False))  # the first 8 of each row: Binance may add fields
    return make.columns(
        open_time=fields[0], open=fields[1], high=fields[2], low=fields[3], close=fields[4], volume=fields[7]
    )


# ---- the fake wire format ------------------------------------------------------------------------


class BinanceWire(Wire):
    """`/api/v3/ticker/24hr?symbols=[…]` and `/api/v3/klines`; Binance has no USDT/USD pair (USDT is the quote)."""

    name = "binance"
    prefixes = ("/api/v3/ticker", "/api/v3/klines")
    history_paths = ("/klines",)
    rate_limited_body: ClassVar[Any] = {"code": -1003, "msg": "Too much request weight used; use WebSocket Streams."}

    def __init__(self) -> None:
        self.rendered: dict[int, dict[CandleRow, orjson.Fragment]] = {}
        """Klines rendered ahead (`prerender`), per interval and candle."""

    def default_id(self, symbol: str) -> str | None:
        return None if symbol == "USDT" else f"{symbol}USDT"

    def prerender(self, candles: Iterable[CandleRow], interval: int) -> None:
        """Render these candles' klines now, so answering them costs a lookup: a benchmark's market does
        it before its clock starts. Same bytes as rendering on request; any other candle is rendered then."""
        rows = list(candles)
        ahead = self.rendered.setdefault(interval, {})
        for row, kline in zip(rows, _render_klines(rows, interval * 1000 - 1), strict=True):
            ahead[row] = orjson.Fragment(orjson.dumps(kline))

    def answer(self, request: WireRequest) -> Any:
        if request.path == "/api/v3/ticker/24hr":
            return self._tickers(request)
        if request.path == "/api/v3/klines":
            return self._klines(request)
        raise Reply(404, {"code": -1, "msg": f"unknown endpoint {request.path}"})

    def _tickers(self, request: WireRequest) -> Any:
        query = request.query
        by_id = {i: r for r in request.rows if (i := self.id_of(r))}
        if "symbols" in query:
            try:
                wanted = json.loads(query["symbols"])
            except ValueError:
                raise Reply(400, {"code": -1100, "msg": "Illegal characters found in parameter 'symbols'."}) from None
            single = False
        elif "symbol" in query:
            wanted, single = [query["symbol"]], True
        else:
            wanted, single = list(by_id), False
        # The real API refuses unknown symbols; a listed coin missing in a data gap is simply left out.
        known = self.known(request)
        if any(w not in known for w in wanted):
            raise Reply(400, {"code": -1121, "msg": "Invalid symbol."})
        tickers = [self._ticker(by_id[w], w) for w in wanted if w in by_id]
        return tickers[0] if single and tickers else tickers

    @staticmethod
    def _ticker(row: CoinRow, pair: str) -> dict[str, Any]:
        """Binance sends every decimal as a string."""
        close_ms = epoch_ms(row.timestamp)
        ticker: dict[str, Any] = {
            "symbol": pair,
            "lastPrice": as_string(row.price),
            "quoteVolume": as_string(row.volume_24h),
            "volume": as_string(row.volume_24h / row.price) if both_numbers(row.volume_24h, row.price) else None,
            "openTime": close_ms - 86_400_000,
            "closeTime": close_ms,
        }
        if row.percent_change_24h is not None:
            ticker["priceChangePercent"] = f"{row.percent_change_24h:.3f}"
        return ticker

    def _klines(self, request: WireRequest) -> list[Any]:
        pair = request.query.get("symbol", "")
        symbol = self.known(request).get(pair)
        if symbol is None:
            raise Reply(400, {"code": -1121, "msg": "Invalid symbol."})
        interval = {v: k for k, v in INTERVALS.items()}.get(request.query.get("interval", ""))
        if interval is None:
            raise Reply(400, {"code": -1120, "msg": "Invalid interval."})
        limit = query_int(request, "limit", 500)
        if not 1 <= limit <= KLINES_LIMIT:
            raise Reply(400, {"code": -1130, "msg": "Invalid data sent for a parameter."})
        end = query_time(request, "endTime", request.now) + timedelta(milliseconds=1)
        span = timedelta(seconds=interval * limit)
        if "startTime" in request.query:  # the first `limit` from startTime on, however far gaps spread them
            start, candles = query_time(request, "startTime"), []
            while len(candles) < limit and start < end:
                candles += request.history(symbol, interval, start, min(end, start + span))
                start += span
            candles = candles[:limit]
        else:  # the most recent `limit` up to endTime
            candles = request.history(symbol, interval, end - span, end)[-limit:]
        ahead = None if request.faulty else self.rendered.get(interval)
        if ahead:
            found = list(map(ahead.get, candles))
            if None not in found:
                return found
        return _render_klines(candles, interval * 1000 - 1)


def _render_klines(candles: list[CandleRow], last_ms: int) -> list[list[Any]]:
    """Klines rows; a backfill benchmark renders 864,000 of these, so a page of plain numbers (no fault
    made one None or text) is rendered column by column with `map` (in C), any other row by row."""
    fields = [list(map(attrgetter(name), candles)) for name in ("open", "high", "low", "close", "volume")]
    opened = [int(t.timestamp() * 1000) for t in map(attrgetter("open_time"), candles)]  # epoch_ms
    if all(set(map(type, column)) <= {float, int} for column in fields) and all(map(lt, repeat(0), fields[3])):
        o, h, lo, close, volume = fields
        base = list(map(truediv, volume, map(float, close)))
        texts = [list(map(str, column)) for column in (o, h, lo, close, base, volume)]
        halves = [list(map(str, map(truediv, column, repeat(2)))) for column in (base, volume)]
        return list(map(list, zip(
            opened, *texts[:5], map(add, opened, repeat(last_ms)), texts[5], repeat(100), *halves, repeat("0"),
            strict=False,
        )))  # fmt: skip
    out = []
    for opened_ms, c in zip(opened, candles, strict=True):
        o, h, lo, close, volume = c.open, c.high, c.low, c.close, c.volume
        base = volume / float(close) if both_numbers(volume, close) else 0.0
        out.append([
            opened_ms, None if o is None else str(o), None if h is None else str(h), None if lo is None else str(lo),
            None if close is None else str(close), str(base), opened_ms + last_ms, str(volume), 100, str(base / 2),
            str(volume / 2), "0",
        ])  # fmt: skip
    return out


SPEC = ProviderSpec(
    name="binance",
    display_name="Binance",
    adapter=Binance,
    base_url="https://api.binance.com",
    base_url_env="BINANCE_BASE_URL",
    ping_path="/api/v3/ping",
    history=HistorySpec(
        endpoint="GET /api/v3/klines?symbol=&interval=5m&startTime=&endTime=&limit=1000",
        per_call=KLINES_LIMIT,
        min_interval=0.0,
        offers=Binance.history_offers,
        notes=f"paced by its request weight (2 a call, {WEIGHT_LIMIT:,} a minute, `X-MBX-USED-WEIGHT-1m`): "
        "above 90 % used it pauses to the next minute",
    ),
    wire=BinanceWire,
    quote_endpoints='`GET /api/v3/ticker/24hr?symbols=["BTCUSDT",…]`',
)
