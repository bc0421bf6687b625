"""CoinGecko: live quotes (`coins/markets`), OHLC history (`/ohlc`, `market_chart/range`), its fake wire format.

CoinGecko chooses the granularity itself (keyless and demo plans): `/ohlc?days=1..2` gives 30-minute
candles (stored as hourly ones, two halves each), `days=3..30` 4-hour candles, and `market_chart/range`
over up to 90 days hourly prices, from which daily candles are made beyond 30 days (keyless history
reaches back 365 days). `/ohlc` stamps each candle with its close time. The local market of
`cryptoviz dev` speaks this format too, with `interval=5m` for its own 5-minute candles.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, ClassVar

import requests

from cryptoviz.core.config import TrackedCoin
from cryptoviz.scraper.http import ProviderError
from cryptoviz.scraper.providers.base import (
    ApiKey,
    CoinIndex,
    Fetched,
    HistorySpec,
    Offer,
    Page,
    ProviderSpec,
    Target,
    epoch_ms,
)
from cryptoviz.scraper.providers.wire import CandleRow, CoinRow, Reply, Wire, WireRequest, iso, query_int, query_time

PAGE = 250
OHLC_DAYS = (1, 7, 14, 30, 90, 180, 365)
"""The `days` values `/ohlc` accepts (besides `max`)."""
RANGE_WINDOW = timedelta(days=90)
"""Longest `market_chart/range` window that still answers hourly prices."""
HALF_HOUR = 1800


def ohlc_days(since: timedelta) -> int | str:
    """The smallest `days` whose answer reaches back `since`."""
    return next((d for d in OHLC_DAYS if timedelta(days=d) >= since), "max")


def auto_granularity(days: float) -> int:
    """Seconds per candle CoinGecko's `/ohlc` answers with for `days` (keyless and demo plans)."""
    return HALF_HOUR if days <= 2 else 14_400 if days <= 30 else 4 * 86_400


class CoinGecko(CoinIndex):
    name = "coingecko"
    history_offers = (
        Offer(3600, timedelta(days=1)),
        Offer(14_400, timedelta(days=30)),
        Offer(86_400, timedelta(days=365)),
    )

    def check(self, response: requests.Response, body: Any) -> None:
        if not isinstance(body, dict):
            return
        status = body.get("status")
        code = status.get("error_code") if isinstance(status, dict) else None
        if code == 429:  # CoinGecko may send its rate-limit body with HTTP 200
            retry_after = self.http.retry_after(response)
            raise ProviderError(
                self.label, "rate limited (CoinGecko 429)", retryable=True, retry_after=retry_after, rate_limited=True
            )
        if code is not None or "error" in body:
            message = status.get("error_message") if isinstance(status, dict) else body.get("error")
            raise ProviderError(self.label, f"error {code}: {self.http.redact(str(message))[:200]}")

    def _markets(self, **params: Any) -> list[Any]:
        base = {"vs_currency": "usd", "price_change_percentage": "1h,24h,7d", "order": "market_cap_desc"}
        return self._expect(self._get("/api/v3/coins/markets", {**base, **params}), list)

    def fetch(self, coins: list[TrackedCoin], top_n: int) -> Fetched:
        out = Fetched()
        ids_key = "coingecko"  # demo/replay read the CoinGecko ids too
        if not coins:
            items: list[Any] = []
            page = 1
            while len(items) < top_n:
                chunk = self._markets(per_page=min(PAGE, top_n), page=page)
                items += chunk
                if len(chunk) < min(PAGE, top_n):
                    break
                page += 1
            self._keep(out, items[:top_n], lambda item: self._record(item, None))
            return out
        pinned = {c.ids[ids_key]: c for c in coins if ids_key in c.ids}
        ids = list(pinned)
        for start in range(0, len(ids), PAGE):
            chunk = self._markets(ids=",".join(ids[start : start + PAGE]), per_page=PAGE)
            seen = {item.get("id") for item in chunk if isinstance(item, dict)}
            out.missing += [pinned[i].symbol for i in ids[start : start + PAGE] if i not in seen]
            self._keep_tracked(out, chunk, pinned)
        loose = [c for c in coins if ids_key not in c.ids]
        if loose:
            symbols = ",".join(c.symbol.lower() for c in loose)
            found = self._markets(symbols=symbols, include_tokens="all", per_page=PAGE)
            for coin in loose:
                matches = [m for m in found if isinstance(m, dict) and str(m.get("symbol")).upper() == coin.symbol]
                self._keep_symbol_match(out, coin, matches)
        return out

    def _record(self, item: dict[str, Any], coin: TrackedCoin | None) -> dict[str, Any]:
        change_24h = item.get("price_change_percentage_24h_in_currency", item.get("price_change_percentage_24h"))
        return dict(
            coin_id=item.get("id"),
            symbol=coin.symbol if coin else item.get("symbol"),
            name=(coin and coin.name) or item.get("name"),
            price=item.get("current_price"),
            timestamp=item.get("last_updated"),
            volume_24h=item.get("total_volume"),
            market_cap=item.get("market_cap"),
            percent_change_1h=item.get("price_change_percentage_1h_in_currency"),
            percent_change_24h=change_24h,
            percent_change_7d=item.get("price_change_percentage_7d_in_currency"),
            rank=item.get("market_cap_rank"),
        )

    # ---- history --------------------------------------------------------------------------------

    def history_page(self, target: Target, interval: int, start: datetime, end: datetime) -> Page:
        if interval == 86_400:
            return self._daily_from_prices(target, start, end)
        # The last day comes as half hours (days=1); further back as 4 hours (days 7..30, the least reaching back).
        reach = ohlc_days(self.clock() - start)
        days = 1 if interval == 3600 else 30 if reach == "max" else max(7, min(30, int(reach)))
        rows = self._ohlc(target, days)
        granularity = auto_granularity(days)
        if granularity == HALF_HOUR and interval == 3600:
            rows = _halves_to_hours(rows)
            granularity = 3600
        if granularity != interval:
            raise ProviderError(self.label, f"/ohlc?days={days} answers {granularity}s candles, not {interval}s")
        return self._candles(Page(), target, interval, rows, _ohlc_record(interval))

    def _ohlc(self, target: Target, days: int | str, **extra: Any) -> list[Any]:
        params = {"vs_currency": "usd", "days": days, **extra}
        return self._expect(self._get(f"/api/v3/coins/{target.coin_id}/ohlc", params), list)

    def _daily_from_prices(self, target: Target, start: datetime, end: datetime) -> Page:
        """Daily candles from ≤ 90-day windows of hourly prices: first, highest, lowest and last price of each day.

        Only days with a price in each of their first and last hour become candles (a sampled candle
        of a partial day would claim a range it did not see).
        """
        until = min(end, start + RANGE_WINDOW)
        params = {"vs_currency": "usd", "from": int(start.timestamp()), "to": int(until.timestamp())}
        body = self._expect(self._get(f"/api/v3/coins/{target.coin_id}/market_chart/range", params), dict)
        prices = self._expect(body.get("prices"), list)
        volumes = {row[0] // 86_400_000: row[1] for row in body.get("total_volumes") or [] if _pair(row)}
        days: dict[int, list[tuple[int, Any]]] = defaultdict(list)
        page = Page(next=until if until < end else None)
        for row in prices:
            if _pair(row):
                days[int(row[0]) // 86_400_000].append((int(row[0]), row[1]))
            else:
                page.rejected["malformed_record"] += 1
        candles = []
        for day, points in sorted(days.items()):
            points.sort()
            first_hour, last_hour = (points[0][0] // 3_600_000) % 24, (points[-1][0] // 3_600_000) % 24
            if first_hour != 0 or last_hour != 23:
                continue
            values = [p for _, p in points]
            candles.append((day * 86_400, values[0], values, values[-1], volumes.get(day)))
        return self._candles(page, target, 86_400, candles, _sampled_record)


def _opening_from(rows: list[Any], start: datetime, interval: int) -> list[Any]:
    """Rows of candles opening at `start` or later (close-time stamped), and any row too malformed to tell.

    The local market answers a whole day for the one candle a scrape wants: the rest is not worth validating.
    """
    low = epoch_ms(start) + interval * 1000
    return [r for r in rows if not (isinstance(r, list) and r and isinstance(r[0], int | float)) or r[0] >= low]


def _pair(row: Any) -> bool:
    return isinstance(row, list) and len(row) == 2 and isinstance(row[0], int | float)


def _ohlc_record(interval: int):
    def build(row: list[Any]) -> dict[str, Any]:
        close_ms, opened, high, low, close = row[:5]
        return dict(open_time=(close_ms - interval * 1000) / 1000, open=opened, high=high, low=low, close=close)

    return build


def _sampled_record(item: tuple[int, Any, list[Any], Any, Any]) -> dict[str, Any]:
    opened_at, first, values, last, volume = item
    numbers = [float(v) for v in values]
    return dict(open_time=opened_at, open=first, high=max(numbers), low=min(numbers), close=last, volume=volume)


def _halves_to_hours(rows: list[Any]) -> list[Any]:
    """30-minute `/ohlc` rows (close-time stamped) merged into hourly ones; a lone half hour is left out."""
    by_hour: dict[int, list[list[Any]]] = defaultdict(list)
    for row in rows:
        if isinstance(row, list) and len(row) >= 5 and isinstance(row[0], int | float):
            by_hour[(int(row[0]) - 1) // 3_600_000].append(row)
        else:
            by_hour[-1].append(row)  # kept as it is, so the candle check counts it as malformed
    out: list[Any] = list(by_hour.pop(-1, []))
    for hour, halves in sorted(by_hour.items()):
        if len(halves) != 2:
            continue
        first, second = sorted(halves, key=lambda r: r[0])
        try:
            high = max(float(first[2]), float(second[2]))
            low = min(float(first[3]), float(second[3]))
        except (TypeError, ValueError):
            out += [first, second]  # let the candle check count the bad values
            continue
        out.append([(hour + 1) * 3_600_000, first[1], high, low, second[4]])
    return out


class LocalMarket(CoinGecko):
    """The local market of `cryptoviz dev` (demo, replay): CoinGecko's format, its own 5-minute candles."""

    history_offers = (Offer(300),)

    def history_page(self, target: Target, interval: int, start: datetime, end: datetime) -> Page:
        rows = self._ohlc(target, ohlc_days(self.clock() - start), interval="5m")
        return self._candles(Page(), target, interval, _opening_from(rows, start, interval), _ohlc_record(interval))


# ---- the fake wire format ------------------------------------------------------------------------

RATE_LIMITED = {"status": {"error_code": 429, "error_message": "You've exceeded the Rate Limit."}}
OHLC_INTERVALS = {"5m": 300, "hourly": 3600, "daily": 86_400}
"""`interval=` of `/ohlc` (paid plans: hourly/daily; `5m` is the local market's own candles)."""


class CoinGeckoWire(Wire):
    """`/api/v3/coins/markets`, `/api/v3/coins/{id}/ohlc?days=`, `/api/v3/coins/{id}/market_chart/range`."""

    name = "coingecko"
    prefixes = ("/api/v3/coins/",)
    history_paths = ("/ohlc", "/market_chart")
    known_ids: ClassVar[dict[str, str]] = {
        "BTC": "bitcoin", "ETH": "ethereum", "USDT": "tether", "XRP": "ripple", "BNB": "binancecoin",
        "SOL": "solana", "USDC": "usd-coin", "DOGE": "dogecoin", "ADA": "cardano", "AVAX": "avalanche-2",
        "LINK": "chainlink", "DOT": "polkadot", "LTC": "litecoin", "MATIC": "matic-network",
    }  # fmt: skip
    rate_limited_body: ClassVar[Any] = RATE_LIMITED

    def default_id(self, symbol: str) -> str:
        return symbol.lower()

    def answer(self, request: WireRequest) -> Any:
        parts = request.path.strip("/").split("/")
        if request.query.get("vs_currency", "").lower() != "usd":
            raise Reply(400, {"error": "invalid vs_currency"})
        if request.path == "/api/v3/coins/markets":
            return self._markets(request)
        if len(parts) >= 5 and parts[4] in ("ohlc", "market_chart"):
            symbol = self.known(request).get(parts[3])
            if symbol is None:
                raise Reply(404, {"error": "coin not found"})
            if parts[4] == "ohlc":
                return self._ohlc(request, symbol)
            if parts[5:] == ["range"]:
                return self._range(request, symbol)
        raise Reply(404, {"error": f"unknown endpoint {request.path}"})

    def _markets(self, request: WireRequest) -> list[dict[str, Any]]:
        query, rows = request.query, request.rows
        if "ids" in query:
            wanted = {s.strip() for s in query["ids"].split(",")}
            rows = [r for r in rows if self.id_of(r) in wanted]
        elif "symbols" in query:
            wanted = {s.strip().upper() for s in query["symbols"].split(",")}
            rows = [r for r in rows if r.symbol in wanted]
            if query.get("include_tokens", "top") == "top":
                best: dict[str, CoinRow] = {}
                for row in rows:
                    if row.symbol not in best or (row.rank or 10**9) < (best[row.symbol].rank or 10**9):
                        best[row.symbol] = row
                rows = list(best.values())
        rows = sorted(rows, key=lambda r: r.rank or 10**9)
        per_page = min(query_int(request, "per_page", 100), 250)
        page = max(query_int(request, "page", 1), 1)
        return [self._coin(r, request.number) for r in rows[(page - 1) * per_page : page * per_page]]

    def _coin(self, row: CoinRow, number: Any) -> dict[str, Any]:
        return {
            "id": self.id_of(row),
            "symbol": row.symbol.lower(),
            "name": row.name,
            "current_price": number(row.price),
            "market_cap": number(row.market_cap),
            "market_cap_rank": row.rank,
            "total_volume": number(row.volume_24h),
            "price_change_percentage_24h": number(row.percent_change_24h),
            "last_updated": iso(row.timestamp),
            "price_change_percentage_1h_in_currency": number(row.percent_change_1h),
            "price_change_percentage_24h_in_currency": number(row.percent_change_24h),
            "price_change_percentage_7d_in_currency": number(row.percent_change_7d),
        }

    def _ohlc(self, request: WireRequest, symbol: str) -> list[list[Any]]:
        days_text = request.query.get("days", "")
        if days_text != "max" and days_text not in {str(d) for d in OHLC_DAYS}:
            raise Reply(400, {"error": "invalid days"})
        days = math.inf if days_text == "max" else int(days_text)
        named = request.query.get("interval")
        if named is not None and named not in OHLC_INTERVALS:
            raise Reply(400, {"error": "invalid interval"})
        interval = OHLC_INTERVALS[named] if named else auto_granularity(days)
        since = request.now - timedelta(days=min(days, 3650))
        number = request.number
        return [
            [epoch_ms(c.open_time) + interval * 1000, number(c.open), number(c.high), number(c.low), number(c.close)]
            for c in request.history(symbol, interval, since, request.now + timedelta(seconds=1))
        ]

    def _range(self, request: WireRequest, symbol: str) -> dict[str, Any]:
        start, end = query_time(request, "from"), query_time(request, "to")
        span = end - start
        step = 300 if span <= timedelta(days=1) and request.now - end < timedelta(minutes=10) else 3600
        step = 86_400 if span > RANGE_WINDOW else step
        candles = request.history(symbol, step, start, min(end, request.now) + timedelta(seconds=1))
        number = request.number
        prices = [[epoch_ms(c.open_time), number(c.close)] for c in candles]
        volumes = _rolling_volumes(candles, step)
        return {
            "prices": prices,
            "market_caps": [[t, None] for t, _ in prices],
            "total_volumes": [[epoch_ms(c.open_time), number(v)] for c, v in zip(candles, volumes, strict=True)],
        }


def _rolling_volumes(candles: list[CandleRow], step: int) -> list[float]:
    """CoinGecko's total_volumes: the 24 h volume up to each point."""
    window = max(1, 86_400 // step)
    out, total = [], 0.0
    for i, candle in enumerate(candles):
        total += float(candle.volume or 0)
        if i >= window:
            total -= float(candles[i - window].volume or 0)
        out.append(total)
    return out


SPEC = ProviderSpec(
    name="coingecko",
    display_name="CoinGecko",
    adapter=CoinGecko,
    base_url="https://api.coingecko.com",
    base_url_env="COINGECKO_BASE_URL",
    ping_path="/api/v3/ping",
    key=ApiKey(env="COINGECKO_API_KEY", header="x-cg-demo-api-key", help="Optional CoinGecko demo key (never logged)."),
    history=HistorySpec(
        endpoint="GET /api/v3/coins/{id}/ohlc?vs_currency=usd&days= and /market_chart/range?from=&to=",
        per_call=180,
        min_interval=2.0,
        offers=CoinGecko.history_offers,
        notes="keyless and demo plans allow about 30 calls a minute; the last day's half hours are stored as hours, "
        "days beyond 30 are made from hourly prices",
    ),
    wire=CoinGeckoWire,
    quote_endpoints="`GET /api/v3/coins/markets?vs_currency=usd&ids=|symbols=&per_page=250&page=`",
)


def local_spec(name: str, display_name: str) -> ProviderSpec:
    """A provider of the local market (`MARKET_BASE_URL`): CoinGecko's format and ids, 5-minute candles.

    Each scrape also publishes the newest complete candle of every coin, so replayed and simulated
    data reach the ingester with their open, high, low and close (not only the price).
    """
    return ProviderSpec(
        name=name,
        display_name=display_name,
        adapter=LocalMarket,
        base_url=None,
        base_url_env="MARKET_BASE_URL",
        ping_path="/api/v3/ping",
        history=HistorySpec(
            endpoint="GET /api/v3/coins/{id}/ohlc?vs_currency=usd&days=&interval=5m",
            per_call=105_120,
            min_interval=0.0,
            offers=LocalMarket.history_offers,
            notes="the local market's own 5-minute candles, as far back as it has them",
        ),
        ids_key="coingecko",
        quote_endpoints=f"CoinGecko's {SPEC.quote_endpoints} at `MARKET_BASE_URL`",
        candles_with_quotes=True,
    )
