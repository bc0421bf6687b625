"""CoinMarketCap: live quotes by id or symbol, OHLCV history (paid plans only), and its fake wire format."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import requests

from cryptoviz.core.config import TrackedCoin
from cryptoviz.scraper.http import ProviderError
from cryptoviz.scraper.providers.base import (
    ApiKey,
    CoinIndex,
    Fetched,
    HistorySpec,
    HistoryUnavailable,
    Offer,
    Page,
    ProviderSpec,
    Target,
)
from cryptoviz.scraper.providers.wire import CandleRow, CoinRow, Reply, Wire, WireRequest, iso, query_int, query_time

ERRORS: dict[int, str] = {
    1001: "the API key is invalid (CMC 1001)",
    1002: "the API key is missing (CMC 1002)",
    1003: "the API key's plan requires payment (CMC 1003)",
    1004: "the API key's plan payment expired (CMC 1004)",
    1005: "an API key is required (CMC 1005)",
    1006: "the API key's plan does not include this endpoint (CMC 1006)",
    1007: "the API key is disabled (CMC 1007)",
    1009: "the plan's daily credits are exhausted (CMC 1009); not retried: they reset at 00:00 UTC",
    1010: "the plan's monthly credits are exhausted (CMC 1010); not retried: they reset with the plan's next month",
    1011: "the IP rate limit is reached (CMC 1011)",
}
"""Permanent for this run: retrying would only burn credits. Other codes follow the HTTP status."""
MINUTE_LIMIT = 1008
"""The per-minute rate limit: waited out (Retry-After, else CMC's one-minute window) and retried."""
MINUTE = 60.0
RATE_LIMIT_CODES = {1008, 1009, 1010, 1011}
PAID_ONLY = (
    "CoinMarketCap's OHLCV history (/v2/cryptocurrency/ohlcv/historical) needs a paid plan (Hobbyist or "
    "higher); this key's plan does not include it (CMC 1006)"
)
HISTORY_PAGE = 1000
"""Hourly periods asked per call (`count`)."""


class CoinMarketCap(CoinIndex):
    name = "coinmarketcap"
    history_offers = (Offer(3600),)

    def check(self, response: requests.Response, body: Any) -> None:
        status = body.get("status") if isinstance(body, dict) else None
        code = status.get("error_code") if isinstance(status, dict) else None
        try:
            code = int(code or 0)
        except (TypeError, ValueError):
            code = -1
        if code == 0:
            return
        if code == 1006 and "/ohlcv/" in response.url:
            raise HistoryUnavailable(self.label, PAID_ONLY, status=response.status_code)
        if code == MINUTE_LIMIT:
            retry_after = self.http.retry_after(response)
            message = "the plan's per-minute rate limit is reached (CMC 1008)"
            if retry_after is None:
                retry_after, message = MINUTE, message + " without Retry-After: CMC's limits reset every minute"
            raise ProviderError(
                self.label,
                message,
                retryable=True,
                retry_after=retry_after,
                status=response.status_code,
                rate_limited=True,
            )
        if code in ERRORS:
            rate_limited = code in RATE_LIMIT_CODES
            raise ProviderError(self.label, ERRORS[code], status=response.status_code, rate_limited=rate_limited)
        if response.status_code == 429:
            return  # a generic rate limit: the HTTP layer honours Retry-After
        message = self.http.redact(str(status.get("error_message") or "unknown error"))[:200]
        raise ProviderError(self.label, f"error {code}: {message}", status=response.status_code)

    def _data(self, path: str, params: dict[str, Any]) -> Any:
        return self._expect(self._get(path, params), dict).get("data")

    def fetch(self, coins: list[TrackedCoin], top_n: int) -> Fetched:
        out = Fetched()
        if not coins:
            params = {"start": 1, "limit": top_n, "convert": "USD"}
            data = self._expect(self._data("/v1/cryptocurrency/listings/latest", params), list)
            self._keep(out, data, lambda item: self._record(item, None))
            return out
        pinned = {c.ids["coinmarketcap"]: c for c in coins if "coinmarketcap" in c.ids}
        if pinned:
            params = {"id": ",".join(pinned), "convert": "USD", "skip_invalid": "true"}
            data = self._expect(self._data("/v2/cryptocurrency/quotes/latest", params), dict)
            out.missing += [c.symbol for cid, c in pinned.items() if cid not in data]
            self._keep_tracked(out, list(data.values()), pinned)
        loose = [c for c in coins if "coinmarketcap" not in c.ids]
        if loose:
            params = {"symbol": ",".join(c.symbol for c in loose), "convert": "USD", "skip_invalid": "true"}
            data = self._expect(self._data("/v2/cryptocurrency/quotes/latest", params), dict)
            for coin in loose:
                self._keep_symbol_match(out, coin, [m for m in data.get(coin.symbol) or [] if isinstance(m, dict)])
        return out

    def _record(self, item: dict[str, Any], coin: TrackedCoin | None) -> dict[str, Any]:
        usd = item["quote"]["USD"]
        return dict(
            coin_id=item.get("id"),
            symbol=coin.symbol if coin else item.get("symbol"),
            name=(coin and coin.name) or item.get("name"),
            price=usd.get("price"),
            timestamp=usd.get("last_updated") or item.get("last_updated"),
            volume_24h=usd.get("volume_24h"),
            market_cap=usd.get("market_cap"),
            percent_change_1h=usd.get("percent_change_1h"),
            percent_change_24h=usd.get("percent_change_24h"),
            percent_change_7d=usd.get("percent_change_7d"),
            rank=item.get("cmc_rank"),
        )

    def history_page(self, target: Target, interval: int, start: datetime, end: datetime) -> Page:
        """Hourly OHLCV; CMC returns one period per hour in (time_start, time_end]."""
        last = min(end, start + timedelta(seconds=interval * HISTORY_PAGE))
        params = {
            "id": target.coin_id,
            "convert": "USD",
            "time_period": "hourly",
            "interval": "hourly",
            "time_start": iso(start - timedelta(seconds=1)),
            "time_end": iso(last - timedelta(seconds=1)),
            "count": HISTORY_PAGE,
        }
        data = self._expect(self._data("/v2/cryptocurrency/ohlcv/historical", params), dict)
        rows = self._expect(data.get("quotes"), list)
        page = self._candles(Page(), target, interval, rows, _history_record)
        page.next = last if last < end else None
        return page


def _history_record(item: dict[str, Any]) -> dict[str, Any]:
    usd = item["quote"]["USD"]
    return dict(
        open_time=item["time_open"],
        open=usd["open"],
        high=usd["high"],
        low=usd["low"],
        close=usd["close"],
        volume=usd.get("volume"),
    )


# ---- the fake wire format ------------------------------------------------------------------------

WIRE_ERRORS: dict[int, tuple[int, str]] = {
    1001: (401, "This API Key is invalid."),
    1002: (401, "API key missing."),
    1006: (403, "Your API Key subscription plan doesn't support this endpoint."),
    1008: (429, "You've exceeded your API Key's HTTP request rate limit. Rate limits reset every minute."),
    1009: (429, "You've exceeded your API Key's daily rate limit."),
    1010: (429, "You've exceeded your API Key's monthly rate limit."),
    1011: (429, "You've hit an IP rate limit."),
}


def status_body(code: int, message: str | None = None, when: datetime | None = None) -> dict[str, Any]:
    return {
        "status": {
            "timestamp": iso(when or datetime.now(UTC)),
            "error_code": code,
            "error_message": message or WIRE_ERRORS.get(code, (0, "error"))[1],
            "elapsed": 0,
            "credit_count": 0,
        }
    }


class CoinMarketCapWire(Wire):
    """`/v1/cryptocurrency/listings/latest`, `/v2/cryptocurrency/quotes/latest`, `/v2/cryptocurrency/ohlcv/historical`.

    `api_key`, when set, is required in `X-CMC_PRO_API_KEY` (else error 1002/1001); the history answers
    error 1006 unless `paid` (a free Basic key, as most users have).
    """

    name = "coinmarketcap"
    prefixes = ("/v1/cryptocurrency/", "/v2/cryptocurrency/")
    history_paths = ("/ohlcv/",)
    known_ids: ClassVar[dict[str, str]] = {
        "BTC": "1", "ETH": "1027", "USDT": "825", "XRP": "52", "BNB": "1839", "SOL": "5426", "USDC": "3408",
        "DOGE": "74", "ADA": "2010", "AVAX": "5805", "LINK": "1975", "DOT": "6636", "LTC": "2", "MATIC": "3890",
    }  # fmt: skip
    rate_limited_body: ClassVar[Any] = status_body(429, "Too Many Requests")

    def __init__(self, api_key: str | None = None, paid: bool = False) -> None:
        self.api_key = api_key
        self.paid = paid

    def default_id(self, symbol: str) -> str:
        return str(500_000 + zlib.crc32(symbol.encode()) % 400_000)

    def answer(self, request: WireRequest) -> Any:
        self._check_key(request.headers)
        number = request.number
        if request.path == "/v1/cryptocurrency/listings/latest":
            start, limit = query_int(request, "start", 1), query_int(request, "limit", 100)
            return self._envelope([self._coin(r, number) for r in request.rows[start - 1 : start - 1 + limit]], request)
        if request.path == "/v2/cryptocurrency/quotes/latest":
            return self._envelope(self._quotes(request), request)
        if request.path == "/v2/cryptocurrency/ohlcv/historical":
            if not self.paid:
                raise Reply(WIRE_ERRORS[1006][0], status_body(1006))
            return self._envelope(self._ohlcv(request), request)
        raise Reply(404, status_body(404, f"unknown endpoint {request.path}"))

    def _check_key(self, headers: dict[str, str]) -> None:
        if self.api_key is None:
            return
        given = headers.get("x-cmc_pro_api_key")
        if given != self.api_key:
            code = 1002 if not given else 1001
            raise Reply(WIRE_ERRORS[code][0], status_body(code))

    @staticmethod
    def _envelope(data: Any, request: WireRequest) -> dict[str, Any]:
        status = {
            "timestamp": iso(request.now),
            "error_code": 0,
            "error_message": None,
            "elapsed": 1,
            "credit_count": 1,
        }
        return {"status": status, "data": data}

    def _coin(self, row: CoinRow, number: Any) -> dict[str, Any]:
        usd = {
            "price": number(row.price),
            "volume_24h": number(row.volume_24h),
            "percent_change_1h": number(row.percent_change_1h),
            "percent_change_24h": number(row.percent_change_24h),
            "percent_change_7d": number(row.percent_change_7d),
            "market_cap": number(row.market_cap),
            "last_updated": iso(row.timestamp),
        }
        return {
            "id": int(self.id_of(row) or 0),
            "name": row.name,
            "symbol": row.symbol,
            "slug": row.name.lower().replace(" ", "-"),
            "cmc_rank": row.rank,
            "last_updated": iso(row.timestamp),
            "quote": {"USD": usd},
        }

    def _quotes(self, request: WireRequest) -> dict[str, Any]:
        """v2 quotes: keyed by id (one object each) or by symbol (a list: symbols can collide).

        Like CMC, an id or symbol it does not know fails the whole request unless `skip_invalid=true`.
        """
        query, rows = request.query, request.rows
        skip_invalid = query.get("skip_invalid", "").lower() == "true"
        if "id" in query:
            wanted = {s.strip() for s in query["id"].split(",")}
            _refuse_unknown("id", wanted - set(self.known(request)), skip_invalid)
            return {self.id_of(r): self._coin(r, request.number) for r in rows if self.id_of(r) in wanted}
        if "symbol" in query:
            out: dict[str, list] = {s.strip().upper(): [] for s in query["symbol"].split(",")}
            _refuse_unknown("symbol", set(out) - set(self.known(request).values()), skip_invalid)
            for row in rows:
                if row.symbol in out:
                    out[row.symbol].append(self._coin(row, request.number))
            return out
        raise Reply(400, status_body(400, '"id" or "symbol" is required'))

    def _ohlcv(self, request: WireRequest) -> dict[str, Any]:
        coin_id = request.query.get("id", "")
        symbol = self.known(request).get(coin_id)
        if symbol is None:
            raise Reply(400, status_body(400, f'Invalid value for "id": "{coin_id}"'))
        period = {"hourly": 3600, "daily": 86400}.get(request.query.get("time_period", "daily"))
        if period is None:
            raise Reply(400, status_body(400, 'Invalid value for "time_period"'))
        after = query_time(request, "time_start")
        until = query_time(request, "time_end", request.now)
        count = min(query_int(request, "count", 10), 10_000)
        rows = [c for c in request.history(symbol, period, after, until + timedelta(seconds=1)) if c.open_time > after]
        quotes = [_ohlcv_quote(c, period, request.number) for c in rows[:count]]
        return {"id": int(coin_id), "name": symbol, "symbol": symbol, "quotes": quotes}


def _ohlcv_quote(candle: CandleRow, period: int, number: Any) -> dict[str, Any]:
    close_time = candle.open_time + timedelta(seconds=period) - timedelta(milliseconds=1)
    usd = {
        "open": number(candle.open),
        "high": number(candle.high),
        "low": number(candle.low),
        "close": number(candle.close),
        "volume": number(candle.volume),
        "timestamp": iso(close_time),
    }
    return {
        "time_open": iso(candle.open_time),
        "time_close": iso(close_time),
        "time_high": iso(candle.open_time),
        "time_low": iso(candle.open_time),
        "quote": {"USD": usd},
    }


def _refuse_unknown(field: str, unknown: set[str], skip_invalid: bool) -> None:
    if unknown and not skip_invalid:
        raise Reply(400, status_body(400, f'Invalid value for "{field}": "{",".join(sorted(unknown))}"'))


SPEC = ProviderSpec(
    name="coinmarketcap",
    display_name="CoinMarketCap",
    adapter=CoinMarketCap,
    base_url="https://pro-api.coinmarketcap.com",
    base_url_env="CMC_BASE_URL",
    ping_path="/v1/cryptocurrency/listings/latest?limit=1",
    key=ApiKey(
        env="CMC_API_KEY",
        file_env="CMC_API_KEY_FILE",
        header="X-CMC_PRO_API_KEY",
        required=True,
        help="CoinMarketCap API key (never logged).",
    ),
    history=HistorySpec(
        endpoint="GET /v2/cryptocurrency/ohlcv/historical?id=&time_period=hourly&time_start=&time_end=&count=",
        per_call=HISTORY_PAGE,
        min_interval=2.0,
        offers=CoinMarketCap.history_offers,
        notes="paid plans only: a free key's error 1006 is said once and the coin's other providers are used",
    ),
    wire=CoinMarketCapWire,
    quote_endpoints="`GET /v1/cryptocurrency/listings/latest` (top N), "
    "`GET /v2/cryptocurrency/quotes/latest?id=|symbol=`",
)
