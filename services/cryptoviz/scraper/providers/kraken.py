"""Kraken: tickers, OHLC history (the 720 most recent entries per interval, `last` cursor), fake wire format.

Kraken's ticker has no timestamp: the quote time is the API server's `Date` header. Errors come in
the `error` array, also with HTTP 200.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import requests

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
    unknown_pair_message,
)
from cryptoviz.scraper.providers.wire import Reply, Wire, WireRequest, as_string, both_numbers, query_int

TOP = ("BTC", "ETH", "USDT", "XRP", "SOL", "USDC", "DOGE", "ADA", "AVAX", "LINK", "DOT", "LTC")
"""Exchanges have no market-cap ranking: their "top N" is this list of large coins (early 2025) they trade."""
ASSETS = {"BTC": "XBT", "DOGE": "XDG"}
RATE_LIMITS = ("EAPI:Rate limit exceeded", "EGeneral:Too many requests")
RETRYABLE = (*RATE_LIMITS, "EService:Unavailable", "EService:Busy")
OHLC_ENTRIES = 720
"""OHLC answers the most recent 720 entries of an interval, whatever `since` asks: older ones cannot be had."""
OHLC_INTERVALS = (300, 900, 3600, 14_400, 86_400)


def kraken_altname(pair: str) -> str:
    """Kraken's short pair name: `XXBTZUSD` → `XBTUSD`, `XETHZUSD` → `ETHUSD`, `SOLUSD` stays."""
    pair = pair.upper()
    if len(pair) == 8 and pair.endswith("ZUSD") and pair[0] == "X":
        return pair[1:4] + "USD"
    if pair.endswith("ZUSD"):
        return pair[:-4] + "USD"
    return pair


def _reach(interval: int) -> timedelta:
    """How far back the committed entries of `interval` reach (the newest entry is still in progress)."""
    return timedelta(seconds=interval * (OHLC_ENTRIES - 2))


class Kraken(Provider):
    name = "kraken"
    history_offers = tuple(Offer(i, _reach(i)) for i in OHLC_INTERVALS)

    def check(self, response: requests.Response, body: Any) -> None:
        errors = body.get("error") if isinstance(body, dict) else None
        if not errors:
            return
        text = self.http.redact("; ".join(str(e) for e in errors))[:200]
        retryable = any(str(e).startswith(RETRYABLE) for e in errors)
        if retryable and response.status_code in (418, 429):
            return  # the HTTP layer honours Retry-After
        limited = any(str(e).startswith(RATE_LIMITS) for e in errors)
        raise ProviderError(self.label, text, retryable=retryable, status=response.status_code, rate_limited=limited)

    def unknown_pair(self, error: ProviderError) -> bool:
        return "EQuery:Unknown asset pair" in error.message

    def fetch(self, coins: list[TrackedCoin], top_n: int) -> Fetched:
        out = Fetched()
        tracked = coins or [TrackedCoin(symbol=s) for s in TOP[:top_n]]
        wanted = {c.ids.get("kraken", ASSETS.get(c.symbol, c.symbol) + "USD"): c for c in tracked}
        answers, unknown = self._by_pairs(list(wanted), self._tickers)
        out.errors += [unknown_pair_message(self.name, pair, wanted[pair].symbol) for pair in unknown]
        by_alt = {kraken_altname(pair): coin for pair, coin in wanted.items() if pair not in unknown}
        entries = [
            (key, value, by_alt[kraken_altname(key)], when)
            for result, when in answers
            for key, value in result.items()
            if kraken_altname(key) in by_alt
        ]
        seen = {kraken_altname(key) for key, *_ in entries}
        out.missing += [coin.symbol for alt, coin in by_alt.items() if alt not in seen]
        self._keep(out, entries, lambda entry: self._record(*entry))
        return out

    def _tickers(self, pairs: list[str]) -> tuple[dict[str, Any], datetime | None]:
        """One Ticker call: the result by Kraken's pair name, and the server time it answered at."""
        body = self._expect(self._get("/0/public/Ticker", {"pair": ",".join(pairs)}), dict)
        return self._expect(body.get("result"), dict), self.clock() if self.http.last_headers.get("Date") else None

    @staticmethod
    def _record(pair: str, ticker: dict[str, Any], coin: TrackedCoin, when: datetime | None) -> dict[str, Any]:
        volume = None
        base_volume, vwap = ticker.get("v", [None, None])[1], ticker.get("p", [None, None])[1]
        if base_volume is not None and vwap is not None:
            volume = float(base_volume) * float(vwap)
        return dict(
            coin_id=pair,
            symbol=coin.symbol,
            name=coin.name,
            price=ticker["c"][0],
            timestamp=when,
            volume_24h=volume,
        )

    def history_page(self, target: Target, interval: int, start: datetime, end: datetime) -> Page:
        """Entries after `since`; a full answer's `last` is where the next call starts."""
        params = {"pair": target.coin_id, "interval": interval // 60, "since": int(start.timestamp()) - 1}
        body = self._expect(self._get("/0/public/OHLC", params), dict)
        result = self._expect(body.get("result"), dict)
        rows = next((v for k, v in result.items() if k != "last" and isinstance(v, list)), [])
        page = self._candles(Page(), target, interval, rows, _entry)
        last = result.get("last")
        if len(rows) >= OHLC_ENTRIES and isinstance(last, int | float):
            page.next = datetime.fromtimestamp(last, UTC)
        return page


def _entry(row: list[Any]) -> dict[str, Any]:
    """[time, open, high, low, close, vwap, base volume, trades]: the USD volume is vwap × base volume."""
    volume = float(row[5]) * float(row[6])
    return dict(open_time=row[0], open=row[1], high=row[2], low=row[3], close=row[4], volume=volume)


# ---- the fake wire format ------------------------------------------------------------------------


class KrakenWire(Wire):
    """`/0/public/Ticker?pair=XBTUSD,…` (answers with renamed pairs such as `XXBTZUSD`), `/0/public/OHLC`."""

    name = "kraken"
    prefixes = ("/0/public/",)
    history_paths = ("/OHLC",)
    known_ids: ClassVar[dict[str, str]] = {
        "BTC": "XXBTZUSD", "ETH": "XETHZUSD", "USDT": "USDTZUSD", "XRP": "XXRPZUSD", "BNB": "BNBUSD",
        "SOL": "SOLUSD", "USDC": "USDCUSD", "DOGE": "XDGUSD", "ADA": "ADAUSD", "AVAX": "AVAXUSD",
        "LINK": "LINKUSD", "DOT": "DOTUSD", "LTC": "XLTCZUSD", "MATIC": "MATICUSD",
    }  # fmt: skip
    rate_limited_body: ClassVar[Any] = {"error": ["EGeneral:Too many requests"]}

    def default_id(self, symbol: str) -> str:
        return f"{symbol}USD"

    def _by_alt(self, request: WireRequest) -> dict[str, tuple[str, str]]:
        """Short pair name → (the name Kraken answers with, symbol)."""
        return {kraken_altname(pair): (pair, symbol) for pair, symbol in self.known(request).items()}

    def answer(self, request: WireRequest) -> Any:
        if request.path == "/0/public/Ticker":
            return self._ticker(request)
        if request.path == "/0/public/OHLC":
            return self._ohlc(request)
        raise Reply(404, {"error": ["EGeneral:Unknown method"]})

    def _ticker(self, request: WireRequest) -> dict[str, Any]:
        by_alt = self._by_alt(request)
        rows = {kraken_altname(i): r for r in request.rows if (i := self.id_of(r))}
        result = {}
        for pair in filter(None, (p.strip().upper() for p in request.query.get("pair", "").split(","))):
            alt = kraken_altname(pair)
            if alt not in by_alt:
                return {"error": ["EQuery:Unknown asset pair"]}
            row = rows.get(alt)
            if row is None:
                continue
            price = as_string(row.price)
            base_volume = as_string(row.volume_24h / row.price) if both_numbers(row.volume_24h, row.price) else "0"
            result[by_alt[alt][0]] = {
                "a": [price, "1", "1.000"],
                "b": [price, "1", "1.000"],
                "c": [price, "0.01"],
                "v": [base_volume, base_volume],
                "p": [price, price],
                "t": [100, 2400],
                "l": [price, price],
                "h": [price, price],
                "o": price,
            }
        return {"error": [], "result": result}

    def _ohlc(self, request: WireRequest) -> dict[str, Any]:
        found = self._by_alt(request).get(kraken_altname(request.query.get("pair", "")))
        if found is None:
            return {"error": ["EQuery:Unknown asset pair"]}
        minutes = query_int(request, "interval", 1)
        if minutes * 60 not in (60, *OHLC_INTERVALS):
            return {"error": ["EGeneral:Invalid arguments:interval"]}
        interval = minutes * 60
        since = query_int(request, "since", 0)
        oldest = request.now - timedelta(seconds=interval * OHLC_ENTRIES)
        recent = request.history(found[1], interval, oldest, request.now + timedelta(seconds=1))[-OHLC_ENTRIES:]
        rows = [c for c in recent if c.open_time.timestamp() > since]
        entries = []
        for c in rows:
            base = c.volume / float(c.close) if both_numbers(c.volume, c.close) else 0.0
            vwap = as_string(c.close)
            entries.append(
                [int(c.open_time.timestamp()), *map(as_string, (c.open, c.high, c.low, c.close)), vwap, str(base), 10]
            )
        committed = entries[-2][0] if len(entries) >= 2 else since
        return {"error": [], "result": {found[0]: entries, "last": committed}}


SPEC = ProviderSpec(
    name="kraken",
    display_name="Kraken",
    adapter=Kraken,
    base_url="https://api.kraken.com",
    base_url_env="KRAKEN_BASE_URL",
    ping_path="/0/public/Time",
    min_interval=1.0,
    history=HistorySpec(
        endpoint="GET /0/public/OHLC?pair=&interval=&since=",
        per_call=OHLC_ENTRIES,
        min_interval=1.0,
        offers=Kraken.history_offers,
        notes="only the 720 most recent entries of each interval can be had; the newest (in progress) is left out",
    ),
    wire=KrakenWire,
    quote_endpoints="`GET /0/public/Ticker?pair=XBTUSD,…`",
)
