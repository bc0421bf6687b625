"""Provider adapters: each turns one provider's documented wire format into validated `Quote`s.

Coins are identified by the provider's own id (CMC `1`, CoinGecko `bitcoin`, Binance `BTCUSDT`,
Kraken `XXBTZUSD`, Coinbase `BTC-USD`); the symbol is kept for display. A tracked coin without a
pinned id is looked up by symbol, and a symbol that matches several ids is reported (naming the
candidates) instead of guessing. Every record goes through `make_quote`; rejects are counted by reason.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import requests

from cryptoviz.core.config import ConfigError, TrackedCoin
from cryptoviz.core.quote import InvalidQuote, Quote, make_quote
from cryptoviz.scraper.http import HttpClient, ProviderError

log = logging.getLogger(__name__)

DEFAULT_BASE_URLS: dict[str, str] = {
    "coinmarketcap": "https://pro-api.coinmarketcap.com",
    "coingecko": "https://api.coingecko.com",
    "binance": "https://api.binance.com",
    "kraken": "https://api.kraken.com",
    "coinbase": "https://api.exchange.coinbase.com",
}

EXCHANGE_TOP: dict[str, tuple[str, ...]] = {
    "binance": ("BTC", "ETH", "XRP", "BNB", "SOL", "USDC", "DOGE", "ADA", "AVAX", "LINK", "DOT", "LTC"),
    "kraken": ("BTC", "ETH", "USDT", "XRP", "SOL", "USDC", "DOGE", "ADA", "AVAX", "LINK", "DOT", "LTC"),
    "coinbase": ("BTC", "ETH", "USDT", "XRP", "SOL", "DOGE", "ADA", "AVAX", "LINK", "DOT", "LTC"),
}
"""Exchanges have no market-cap ranking: their "top N" is this list of large coins (early 2025) they trade."""

KRAKEN_ASSETS = {"BTC": "XBT", "DOGE": "XDG"}

T = TypeVar("T")


def kraken_altname(pair: str) -> str:
    """Kraken's short pair name: `XXBTZUSD` → `XBTUSD`, `XETHZUSD` → `ETHUSD`, `SOLUSD` stays."""
    pair = pair.upper()
    if len(pair) == 8 and pair.endswith("ZUSD") and pair[0] == "X":
        return pair[1:4] + "USD"
    if pair.endswith("ZUSD"):
        return pair[:-4] + "USD"
    return pair


@dataclass(slots=True)
class Fetched:
    """What one provider gave in one scrape."""

    quotes: list[Quote] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    missing: list[str] = field(default_factory=list)
    """Tracked coins the provider did not return this time (not listed, or a gap in its data)."""
    errors: list[str] = field(default_factory=list)
    """Configuration problems found while scraping, e.g. an ambiguous symbol."""
    identities: set[tuple[str, str, datetime]] = field(default_factory=set)


class Provider:
    """Base adapter. `name` picks the wire format and config ids; `label` is the quotes' provider field."""

    name = ""

    def __init__(self, http: HttpClient, base_url: str, label: str | None = None) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.label = label or self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def fetch(self, coins: list[TrackedCoin], top_n: int) -> Fetched:
        """Tracked `coins`, or the provider's top `top_n` by rank when none are tracked."""
        raise NotImplementedError

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.http.get_json(self.base_url + path, params, self.check)

    def check(self, response: requests.Response, body: Any) -> None:
        """Raise ProviderError for errors the provider reports inside a (possibly HTTP 200) body."""

    def _keep(self, out: Fetched, items: Iterable[Any], build: Callable[[Any], dict[str, Any]]) -> None:
        received = datetime.now(UTC)
        for item in items:
            try:
                quote = make_quote(provider=self.label, received_at=received, **build(item))
            except InvalidQuote as exc:
                out.rejected[exc.reason] += 1
                log.debug("%s: rejected %s", self.label, exc)
            except (TypeError, AttributeError, KeyError, IndexError, ValueError, ArithmeticError):
                out.rejected["malformed_record"] += 1
            else:  # a coin listed twice (pages that shifted while paging, overlapping lookups) is one fact
                if quote.identity in out.identities:
                    out.rejected["duplicate_in_answer"] += 1
                    continue
                out.identities.add(quote.identity)
                out.quotes.append(quote)

    def _expect(self, body: Any, kind: type) -> Any:
        if not isinstance(body, kind):
            raise ProviderError(self.label, f"unexpected answer: expected a JSON {kind.__name__}")
        return body

    def unknown_pair(self, error: ProviderError) -> bool:
        """Whether `error` is the exchange refusing a request because one of its pairs is unknown."""
        return False

    def _by_pairs(self, pairs: list[str], fetch: Callable[[list[str]], T]) -> tuple[list[T], list[str]]:
        """All `pairs` in one call; only if the exchange refuses that for an unknown pair, each pair alone.

        Exchanges reject the whole request for one unknown pair, which would lose every good pair too.
        Returns the answers and the pairs the exchange does not know.
        """
        try:
            return [fetch(pairs)], []
        except ProviderError as exc:
            if not self.unknown_pair(exc):
                raise
            if len(pairs) == 1:
                return [], pairs
        log.warning("%s: an unknown pair among %d; asking for each pair alone", self.label, len(pairs))
        answers, unknown = [], []
        for pair in pairs:
            try:
                answers.append(fetch([pair]))
            except ProviderError as exc:
                if not self.unknown_pair(exc):
                    raise
                unknown.append(pair)
        return answers, unknown


def _unknown_pair(provider: str, pair: str, symbol: str) -> str:
    return (
        f"{provider} does not know the pair {pair} (for {symbol}); set coins[].ids.{provider} to its pair "
        f"in the scraper config, or leave {provider} out of the coin's providers"
    )


class CoinIndex(Provider):
    """A market-data index (CoinMarketCap, CoinGecko): coins found by pinned id or by symbol."""

    def _record(self, item: Any, coin: TrackedCoin | None) -> dict[str, Any]:
        """`make_quote` fields of one answer item; a tracked `coin` gives symbol and name (else the provider's)."""
        raise NotImplementedError

    def _keep_tracked(self, out: Fetched, items: list[Any], coins: dict[str, TrackedCoin]) -> None:
        """Items answering a lookup by pinned id: each quote carries the configured symbol and name."""
        self._keep(out, items, lambda item: self._record(item, coins.get(str(item.get("id")))))

    def _keep_symbol_match(self, out: Fetched, coin: TrackedCoin, matches: list[dict[str, Any]]) -> None:
        """A coin looked up by symbol: one match is kept; several are an error naming the candidates."""
        if len(matches) > 1:
            candidates = ", ".join(f"{m.get('id')} ({m.get('name')})" for m in matches)
            out.errors.append(
                f"symbol {coin.symbol} matches {len(matches)} {self.name} coins: {candidates}; "
                f"pin one with coins[].ids.{self.name} in the scraper config"
            )
        elif not matches:
            out.missing.append(coin.symbol)
        else:
            self._keep(out, matches, lambda item: self._record(item, coin))


# ---- CoinMarketCap ------------------------------------------------------------------------------

CMC_ERRORS: dict[int, str] = {
    1001: "the API key is invalid (CMC 1001)",
    1002: "the API key is missing (CMC 1002)",
    1003: "the API key's plan requires payment (CMC 1003)",
    1004: "the API key's plan payment expired (CMC 1004)",
    1005: "an API key is required (CMC 1005)",
    1006: "the API key's plan does not include this endpoint (CMC 1006)",
    1007: "the API key is disabled (CMC 1007)",
    1008: "the plan's per-minute rate limit is reached (CMC 1008); the next run continues",
    1009: "the plan's daily credits are exhausted (CMC 1009)",
    1010: "the plan's monthly credits are exhausted (CMC 1010)",
    1011: "the IP rate limit is reached (CMC 1011)",
}
"""Permanent for this run: retrying would only burn credits. Other codes follow the HTTP status."""


class CoinMarketCap(CoinIndex):
    name = "coinmarketcap"

    def check(self, response: requests.Response, body: Any) -> None:
        status = body.get("status") if isinstance(body, dict) else None
        code = status.get("error_code") if isinstance(status, dict) else None
        try:
            code = int(code or 0)
        except (TypeError, ValueError):
            code = -1
        if code == 0:
            return
        if code in CMC_ERRORS:
            raise ProviderError(self.label, CMC_ERRORS[code], status=response.status_code)
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


# ---- CoinGecko (and the local demo/replay market, which speaks its format) ----------------------

CG_PAGE = 250


class CoinGecko(CoinIndex):
    name = "coingecko"

    def check(self, response: requests.Response, body: Any) -> None:
        if not isinstance(body, dict):
            return
        status = body.get("status")
        code = status.get("error_code") if isinstance(status, dict) else None
        if code == 429:  # CoinGecko may send its rate-limit body with HTTP 200
            retry_after = response.headers.get("Retry-After")
            raise ProviderError(
                self.label,
                "rate limited (CoinGecko 429)",
                retryable=True,
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        if code is not None or "error" in body:
            message = status.get("error_message") if isinstance(status, dict) else body.get("error")
            raise ProviderError(self.label, f"error {code}: {self.http.redact(str(message))[:200]}")

    def _markets(self, **params: Any) -> list[Any]:
        base = {"vs_currency": "usd", "price_change_percentage": "1h,24h,7d", "order": "market_cap_desc"}
        return self._expect(self._get("/api/v3/coins/markets", {**base, **params}), list)

    def fetch(self, coins: list[TrackedCoin], top_n: int) -> Fetched:
        out = Fetched()
        if not coins:
            items: list[Any] = []
            page = 1
            while len(items) < top_n:
                chunk = self._markets(per_page=min(CG_PAGE, top_n), page=page)
                items += chunk
                if len(chunk) < min(CG_PAGE, top_n):
                    break
                page += 1
            self._keep(out, items[:top_n], lambda item: self._record(item, None))
            return out
        pinned = {c.ids["coingecko"]: c for c in coins if "coingecko" in c.ids}
        ids = list(pinned)
        for start in range(0, len(ids), CG_PAGE):
            chunk = self._markets(ids=",".join(ids[start : start + CG_PAGE]), per_page=CG_PAGE)
            seen = {item.get("id") for item in chunk if isinstance(item, dict)}
            out.missing += [pinned[i].symbol for i in ids[start : start + CG_PAGE] if i not in seen]
            self._keep_tracked(out, chunk, pinned)
        loose = [c for c in coins if "coingecko" not in c.ids]
        if loose:
            symbols = ",".join(c.symbol.lower() for c in loose)
            found = self._markets(symbols=symbols, include_tokens="all", per_page=CG_PAGE)
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


# ---- Binance ------------------------------------------------------------------------------------

BINANCE_WEIGHT_LIMIT = 6000


class Binance(Provider):
    name = "binance"

    def check(self, response: requests.Response, body: Any) -> None:
        used = response.headers.get("X-MBX-USED-WEIGHT-1m")
        if used and used.isdigit() and int(used) > BINANCE_WEIGHT_LIMIT * 0.8:
            log.warning("binance: request weight %s of %d per minute used", used, BINANCE_WEIGHT_LIMIT)
        if isinstance(body, dict) and "code" in body and response.status_code not in (418, 429):
            message = self.http.redact(str(body.get("msg")))[:200]
            raise ProviderError(self.label, f"error {body.get('code')}: {message}", status=response.status_code)

    def unknown_pair(self, error: ProviderError) -> bool:
        return error.message.startswith("error -1121:")  # "Invalid symbol."

    def fetch(self, coins: list[TrackedCoin], top_n: int) -> Fetched:
        out = Fetched()
        tracked = coins or [TrackedCoin(symbol=s) for s in EXCHANGE_TOP["binance"][:top_n]]
        by_pair = {c.ids.get("binance", f"{c.symbol}USDT"): c for c in tracked}
        answers, unknown = self._by_pairs(list(by_pair), self._tickers)
        out.errors += [_unknown_pair(self.name, pair, by_pair[pair].symbol) for pair in unknown]
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


# ---- Kraken -------------------------------------------------------------------------------------

KRAKEN_RETRYABLE = ("EAPI:Rate limit exceeded", "EService:Unavailable", "EService:Busy", "EGeneral:Too many requests")


class Kraken(Provider):
    """Kraken's ticker has no timestamp: the quote time is the API server's `Date` header."""

    name = "kraken"

    def check(self, response: requests.Response, body: Any) -> None:
        errors = body.get("error") if isinstance(body, dict) else None
        if not errors:
            return
        text = self.http.redact("; ".join(str(e) for e in errors))[:200]
        retryable = any(str(e).startswith(KRAKEN_RETRYABLE) for e in errors)
        if retryable and response.status_code in (418, 429):
            return  # the HTTP layer honours Retry-After
        raise ProviderError(self.label, text, retryable=retryable, status=response.status_code)

    def unknown_pair(self, error: ProviderError) -> bool:
        return "EQuery:Unknown asset pair" in error.message

    def fetch(self, coins: list[TrackedCoin], top_n: int) -> Fetched:
        out = Fetched()
        tracked = coins or [TrackedCoin(symbol=s) for s in EXCHANGE_TOP["kraken"][:top_n]]
        wanted = {c.ids.get("kraken", KRAKEN_ASSETS.get(c.symbol, c.symbol) + "USD"): c for c in tracked}
        answers, unknown = self._by_pairs(list(wanted), self._tickers)
        out.errors += [_unknown_pair(self.name, pair, wanted[pair].symbol) for pair in unknown]
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
        return self._expect(body.get("result"), dict), self._server_time()

    def _server_time(self) -> datetime | None:
        date = self.http.last_headers.get("Date")
        try:
            return parsedate_to_datetime(date) if date else None
        except (TypeError, ValueError):
            return None

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


# ---- Coinbase -----------------------------------------------------------------------------------


class Coinbase(Provider):
    """One product per call (ticker + stats); the HTTP client paces calls to stay under 10 req/s."""

    name = "coinbase"

    def fetch(self, coins: list[TrackedCoin], top_n: int) -> Fetched:
        out = Fetched()
        tracked = coins or [TrackedCoin(symbol=s) for s in EXCHANGE_TOP["coinbase"][:top_n]]
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


ADAPTERS: dict[str, type[Provider]] = {
    "coinmarketcap": CoinMarketCap,
    "coingecko": CoinGecko,
    "binance": Binance,
    "kraken": Kraken,
    "coinbase": Coinbase,
}
WIRE_FORMAT: dict[str, str] = {"demo": "coingecko", "replay": "coingecko"}
"""Local providers speak another provider's wire format (and use its config ids)."""
MIN_INTERVAL: dict[str, float] = {"coinbase": 0.1, "kraken": 1.0}
"""Least seconds between two calls: Coinbase allows 10/s per IP, Kraken about 1/s on its public API
(which matters when an unknown pair makes the scraper ask pair by pair)."""


def ids_key(provider: str) -> str:
    """Which `coins[].ids` key a provider reads (demo/replay read the CoinGecko ids)."""
    return WIRE_FORMAT.get(provider, provider)


def build_provider(label: str, base_url: str, http: HttpClient) -> Provider:
    adapter = ADAPTERS.get(ids_key(label))
    if adapter is None:
        raise ConfigError(f"unknown provider {label!r}; one of {', '.join([*ADAPTERS, *WIRE_FORMAT])}")
    return adapter(http, base_url, label)
