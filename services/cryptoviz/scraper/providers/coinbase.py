"""Coinbase Exchange: one product per call (ticker + stats), candles ≤ 300 a call, and its fake wire format."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

from cryptoviz.core.config import TrackedCoin
from cryptoviz.scraper.http import ProviderError
from cryptoviz.scraper.providers.base import Fetched, HistorySpec, Offer, Page, Provider, ProviderSpec, Target
from cryptoviz.scraper.providers.wire import (
    Reply,
    Wire,
    WireRequest,
    as_string,
    both_numbers,
    iso,
    query_int,
    query_time,
)

TOP = ("BTC", "ETH", "USDT", "XRP", "SOL", "DOGE", "ADA", "AVAX", "LINK", "DOT", "LTC")
"""Exchanges have no market-cap ranking: their "top N" is this list of large coins (early 2025) they trade."""
CANDLES_PER_CALL = 300
GRANULARITIES = (60, 300, 900, 3600, 21_600, 86_400)


class Coinbase(Provider):
    """Calls are paced to stay under Coinbase's 10 public requests a second."""

    name = "coinbase"
    history_offers = (Offer(300),)

    def fetch(self, coins: list[TrackedCoin], top_n: int) -> Fetched:
        out = Fetched()
        tracked = coins or [TrackedCoin(symbol=s) for s in TOP[:top_n]]
        items = []
        for coin in tracked:
            product = coin.ids.get("coinbase", f"{coin.symbol}-USD")
            try:
                ticker = self._expect(self._get(f"/products/{product}/ticker"), dict)
                stats = self._expect(self._get(f"/products/{product}/stats"), dict)
            except ProviderError as exc:
                if exc.status != 404:
                    raise
                out.missing.append(coin.symbol)
                continue
            items.append((product, ticker, stats, coin))
        self._keep(out, items, lambda item: self._record(*item))
        return out

    @staticmethod
    def _record(product: str, ticker: dict[str, Any], stats: dict[str, Any], coin: TrackedCoin) -> dict[str, Any]:
        price, base_volume, opened = ticker.get("price"), stats.get("volume"), stats.get("open")
        volume = float(base_volume) * float(price) if base_volume is not None and price is not None else None
        change = None
        if price is not None and opened is not None and float(opened) > 0:  # a new product may open at 0
            change = (float(price) / float(opened) - 1) * 100
        return dict(
            coin_id=product,
            symbol=coin.symbol,
            name=coin.name,
            price=price,
            timestamp=ticker.get("time"),
            volume_24h=volume,
            percent_change_24h=change,
        )

    def history_page(self, target: Target, interval: int, start: datetime, end: datetime) -> Page:
        """One window of ≤ 300 candles (Coinbase refuses more); the next window starts where this one ends."""
        until = min(end, start + timedelta(seconds=interval * CANDLES_PER_CALL))
        params = {"granularity": interval, "start": iso(start), "end": iso(until - timedelta(seconds=1))}
        rows = self._expect(self._get(f"/products/{target.coin_id}/candles", params), list)
        page = self._candles(Page(), target, interval, reversed(rows), _candle)  # documented: newest first
        page.next = until if until < end else None
        return page


def _candle(row: list[Any]) -> dict[str, Any]:
    """[time, low, high, open, close, base volume], newest first; the USD volume is taken as volume × close."""
    time, low, high, opened, close, volume = row[:6]
    return dict(open_time=time, open=opened, high=high, low=low, close=close, volume=float(volume) * float(close))


# ---- the fake wire format ------------------------------------------------------------------------


class CoinbaseWire(Wire):
    """`/products/{id}/ticker`, `/products/{id}/stats`, `/products/{id}/candles?granularity=&start=&end=`."""

    name = "coinbase"
    prefixes = ("/products/",)
    history_paths = ("/candles",)
    rate_limited_body: ClassVar[Any] = {"message": "Public rate limit exceeded"}

    def default_id(self, symbol: str) -> str:
        return f"{symbol}-USD"

    def answer(self, request: WireRequest) -> Any:
        parts = request.path.strip("/").split("/")
        if len(parts) != 3 or parts[2] not in ("ticker", "stats", "candles"):
            raise Reply(404, {"message": "NotFound"})
        if parts[2] == "candles":
            return self._candles(request, parts[1])
        row = self.row(request, parts[1])
        if row is None:
            raise Reply(404, {"message": "NotFound"})
        base_volume = as_string(row.volume_24h / row.price) if both_numbers(row.volume_24h, row.price) else None
        if parts[2] == "ticker":
            price = as_string(row.price)
            return {
                "ask": price,
                "bid": price,
                "volume": base_volume,
                "trade_id": 1,
                "price": price,
                "size": "0.01",
                "time": iso(row.timestamp),
            }
        stats: dict[str, Any] = {
            "high": as_string(row.price),
            "low": as_string(row.price),
            "last": as_string(row.price),
            "volume": base_volume,
        }
        if row.percent_change_24h is not None and isinstance(row.price, float):
            stats["open"] = str(row.price / (1 + row.percent_change_24h / 100))
        return stats

    def _candles(self, request: WireRequest, product: str) -> list[list[Any]]:
        symbol = self.known(request).get(product)
        if symbol is None:
            raise Reply(404, {"message": "NotFound"})
        granularity = query_int(request, "granularity", 60)
        if granularity not in GRANULARITIES:
            raise Reply(400, {"message": "Unsupported granularity"})
        end = query_time(request, "end", request.now)
        start = query_time(request, "start", end - timedelta(seconds=granularity * CANDLES_PER_CALL))
        if (end - start).total_seconds() / granularity > CANDLES_PER_CALL:
            raise Reply(400, {"message": "granularity too small for the requested time range"})
        candles = request.history(symbol, granularity, start, end + timedelta(seconds=1))
        number = request.number
        rows = []
        for c in reversed(candles):  # newest first
            base = c.volume / float(c.close) if both_numbers(c.volume, c.close) else 0.0
            rows.append([int(c.open_time.timestamp()), *map(number, (c.low, c.high, c.open, c.close)), base])
        return rows


SPEC = ProviderSpec(
    name="coinbase",
    display_name="Coinbase",
    adapter=Coinbase,
    base_url="https://api.exchange.coinbase.com",
    base_url_env="COINBASE_BASE_URL",
    ping_path="/time",
    min_interval=0.1,
    history=HistorySpec(
        endpoint="GET /products/{id}/candles?granularity=300&start=&end=",
        per_call=CANDLES_PER_CALL,
        min_interval=0.1,
        offers=Coinbase.history_offers,
        notes="rows are [time, low, high, open, close, volume], newest first; paced under 10 requests a second",
    ),
    wire=CoinbaseWire,
    quote_endpoints="`GET /products/{id}/ticker` and `GET /products/{id}/stats` per coin",
)
