"""A local market server speaking the documented wire formats of all five providers.

`cryptoviz dev --demo/--replay`, the tests and the benchmarks point the scraper's base URLs at
one `MarketServer`. It serves coin rows from a `Feed` (a CSV replay of the shared 5-minute
candles, or any object with `snapshot()`/`advance()`/`now()`, e.g. the demo simulator) as:

- CoinMarketCap: `GET /v1/cryptocurrency/listings/latest?start=&limit=`,
  `GET /v2/cryptocurrency/quotes/latest?id=…|symbol=…`
- CoinGecko: `GET /api/v3/coins/markets?vs_currency=usd&ids=|symbols=&per_page=&page=`
- Binance: `GET /api/v3/ticker/24hr?symbols=["BTCUSDT",…]` (or `symbol=`)
- Kraken: `GET /0/public/Ticker?pair=XBTUSD,…` (answers with renamed pairs such as `XXBTZUSD`)
- Coinbase: `GET /products/{id}/ticker`, `GET /products/{id}/stats`

Control (JSON): `POST /_control/advance` `{"steps": n}`, `POST /_control/fault` (a `Fault` as an
object, or `{"clear": true}`), `GET /_control/state`. The HTTP `Date` header carries the feed's
time, as a provider's clock would (Kraken's ticker has no timestamp of its own).
"""

from __future__ import annotations

import bisect
import csv
import json
import logging
import threading
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from cryptoviz.scraper.providers import kraken_altname

log = logging.getLogger(__name__)

CANDLE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class CoinIds:
    """One coin's id at each provider (Binance has no USDT/USD pair: USDT is its quote asset)."""

    coinmarketcap: int
    coingecko: str
    binance: str | None
    kraken: str
    coinbase: str


def _ids(cmc: int, cg: str, kraken: str, symbol: str) -> CoinIds:
    return CoinIds(cmc, cg, None if symbol == "USDT" else f"{symbol}USDT", kraken, f"{symbol}-USD")


KNOWN_COINS: dict[str, tuple[str, int, CoinIds]] = {
    "BTC": ("Bitcoin", 1, _ids(1, "bitcoin", "XXBTZUSD", "BTC")),
    "ETH": ("Ethereum", 2, _ids(1027, "ethereum", "XETHZUSD", "ETH")),
    "USDT": ("Tether", 3, _ids(825, "tether", "USDTZUSD", "USDT")),
    "XRP": ("XRP", 4, _ids(52, "ripple", "XXRPZUSD", "XRP")),
    "BNB": ("BNB", 5, _ids(1839, "binancecoin", "BNBUSD", "BNB")),
    "SOL": ("Solana", 6, _ids(5426, "solana", "SOLUSD", "SOL")),
    "USDC": ("USDC", 7, _ids(3408, "usd-coin", "USDCUSD", "USDC")),
    "DOGE": ("Dogecoin", 8, _ids(74, "dogecoin", "XDGUSD", "DOGE")),
    "ADA": ("Cardano", 9, _ids(2010, "cardano", "ADAUSD", "ADA")),
    "AVAX": ("Avalanche", 10, _ids(5805, "avalanche-2", "AVAXUSD", "AVAX")),
    "LINK": ("Chainlink", 11, _ids(1975, "chainlink", "LINKUSD", "LINK")),
    "DOT": ("Polkadot", 12, _ids(6636, "polkadot", "DOTUSD", "DOT")),
    "LTC": ("Litecoin", 13, _ids(2, "litecoin", "XLTCZUSD", "LTC")),
    "MATIC": ("Polygon", 14, _ids(3890, "matic-network", "MATICUSD", "MATIC")),
}
"""Stable provider ids of the 14 coins in the shared market data (real ids where they exist)."""


def ids_for(symbol: str, coingecko_id: str | None = None) -> CoinIds:
    """Known ids for the shared coins; deterministic made-up ones for anything else."""
    if symbol in KNOWN_COINS:
        return KNOWN_COINS[symbol][2]
    cmc = 500_000 + zlib.crc32(symbol.encode()) % 400_000
    return _ids(cmc, coingecko_id or symbol.lower(), f"{symbol}USD", symbol)


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
    ids: CoinIds | None = None

    @property
    def provider_ids(self) -> CoinIds:
        return self.ids or ids_for(self.symbol)


class Feed(Protocol):
    """What the server serves: the coins now, a way to move on, and the feed's clock."""

    def snapshot(self) -> list[CoinRow]: ...

    def advance(self) -> bool:
        """Move one tick on; False when there is nothing more (the feed stays on its last tick)."""
        ...

    def now(self) -> datetime: ...


@dataclass(slots=True)
class _Series:
    times: list[datetime]
    closes: list[float]
    volume_prefix: list[float]
    index: dict[datetime, int]


class CsvReplayFeed:
    """Replays `<SYMBOL>-USD_5m.csv` candles (Date,Close,High,Low,Open,Volume): one candle per coin per tick.

    A tick is a candle time present in any file; a coin without a candle at that time is absent
    from that tick (the data's real gaps are preserved). Price = Close, timestamp = Date; the
    1h/24h/7d changes and the 24 h volume (sum of the candles' Volume) come from the files
    themselves and are None where the files do not reach back far enough.
    """

    def __init__(self, directory: str | Path, *, start: int = 0) -> None:
        self.directory = Path(directory)
        self.series: dict[str, _Series] = {}
        for file in sorted(self.directory.glob("*.csv")):
            symbol = file.name.split("-")[0].split("_")[0].upper()
            self.series[symbol] = self._load(file)
        if not self.series:
            raise FileNotFoundError(f"no *.csv market files in {self.directory}")
        self.ticks: list[datetime] = sorted({t for s in self.series.values() for t in s.times})
        self.position = min(max(start, 0), len(self.ticks) - 1)

    @staticmethod
    def _load(file: Path) -> _Series:
        times, closes, prefix = [], [], [0.0]
        with file.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                times.append(datetime.fromisoformat(row["Date"]).astimezone(UTC))
                closes.append(float(row["Close"]))
                prefix.append(prefix[-1] + float(row["Volume"] or 0))
        return _Series(times, closes, prefix, {t: i for i, t in enumerate(times)})

    def now(self) -> datetime:
        return self.ticks[self.position]

    def advance(self) -> bool:
        if self.position + 1 >= len(self.ticks):
            return False
        self.position += 1
        return True

    def snapshot(self) -> list[CoinRow]:
        rows = [row for symbol in self.series if (row := self.row(symbol, self.now())) is not None]
        return sorted(rows, key=lambda r: (r.rank or 10**9, r.symbol))

    def row(self, symbol: str, when: datetime) -> CoinRow | None:
        """The coin row the feed serves for `symbol` at `when`, or None in a gap."""
        series = self.series[symbol]
        i = series.index.get(when)
        if i is None:
            return None
        close = series.closes[i]
        first = bisect.bisect_right(series.times, when - timedelta(hours=24))
        name, rank, ids = KNOWN_COINS.get(symbol, (symbol, None, None))
        return CoinRow(
            symbol=symbol,
            name=name,
            price=close,
            timestamp=when,
            volume_24h=series.volume_prefix[i + 1] - series.volume_prefix[first],
            percent_change_1h=self._change(series, close, when - timedelta(hours=1)),
            percent_change_24h=self._change(series, close, when - timedelta(hours=24)),
            percent_change_7d=self._change(series, close, when - timedelta(days=7)),
            rank=rank,
            ids=ids,
        )

    @staticmethod
    def _change(series: _Series, close: float, then: datetime) -> float | None:
        j = series.index.get(then)
        if j is None or series.closes[j] <= 0:
            return None
        return (close / series.closes[j] - 1.0) * 100.0


FAULT_KINDS = (
    "http_429",  # HTTP 429 + Retry-After (provider-shaped body)
    "binance_418",  # HTTP 418 + Retry-After (Binance IP ban)
    "coingecko_429_200",  # CoinGecko's rate-limit body with HTTP 200
    "cmc_error",  # CMC status.error_code `code` (1001, 1002, 1008, 1009, …), its HTTP status or 200 (`http_200`)
    "kraken_error",  # Kraken `error` array with HTTP 200 (`message`, default EAPI:Rate limit exceeded)
    "http_5xx",  # HTTP `status` (default 503)
    "timeout",  # sleep `delay` seconds before answering
    "truncated",  # cut the JSON body in half
    "nulls",  # price null for `symbols`
    "strings",  # every number as a JSON string
    "nan",  # price NaN for `symbols`
    "negative",  # negative price for `symbols`
    "duplicate_symbols",  # a second coin with the same symbol and other ids, for `symbols`
    "listing_5000",  # synthetic extra coins up to `total` (default 5,000) in listings/markets
    "binance_weight",  # Binance's X-MBX-USED-WEIGHT-1m header reports `weight` (default 5,500 of 6,000)
)

CMC_ERRORS: dict[int, tuple[int, str]] = {
    1001: (401, "This API Key is invalid."),
    1002: (401, "API key missing."),
    1006: (403, "Your API Key subscription plan doesn't support this endpoint."),
    1008: (429, "You've exceeded your API Key's HTTP request rate limit. Rate limits reset every minute."),
    1009: (429, "You've exceeded your API Key's daily rate limit."),
    1010: (429, "You've exceeded your API Key's monthly rate limit."),
    1011: (429, "You've hit an IP rate limit."),
}


@dataclass(slots=True)
class Fault:
    """A switchable misbehaviour. `provider` None = every provider; `count` None = until cleared."""

    kind: str
    provider: str | None = None
    count: int | None = None
    symbols: list[str] | None = None
    retry_after: float | None = 1
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


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """A request the server saw (the tests check retries, pacing and headers with these)."""

    at: float
    provider: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


def provider_of(path: str) -> str | None:
    if path.startswith(("/v1/cryptocurrency/", "/v2/cryptocurrency/")):
        return "coinmarketcap"
    if path.startswith("/api/v3/coins/"):
        return "coingecko"
    if path.startswith("/api/v3/ticker"):
        return "binance"
    if path.startswith("/0/public/"):
        return "kraken"
    if path.startswith("/products/"):
        return "coinbase"
    return None


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class _Reply(Exception):
    """Raised inside a handler to answer at once with this status, body and headers."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


class MarketServer:
    """Threaded HTTP server on loopback (port 0 = a free port); use as a context manager or start()/stop().

    `speed` (optional) advances the feed by itself, one 5-minute candle every 300/speed seconds;
    otherwise the feed moves only on `advance()` / `POST /_control/advance`.
    `cmc_api_key`, when set, is required in `X-CMC_PRO_API_KEY` (else CMC error 1002/1001).
    """

    def __init__(
        self,
        feed: Feed,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float | None = None,
        cmc_api_key: str | None = None,
        keep_requests: int | None = None,
    ) -> None:
        self.feed = feed
        self.speed = speed
        self.cmc_api_key = cmc_api_key
        self.faults: list[Fault] = []
        self.requests: list[RequestRecord] = []
        self.keep_requests = keep_requests
        """Keep only about the last N in `requests` (a long fast replay would otherwise grow it without bound)."""
        self.request_counts: Counter[str] = Counter()
        """Requests per provider since the start, also for the records no longer kept."""
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> MarketServer:
        serve = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        serve.start()
        self._threads.append(serve)
        if self.speed:
            clock = threading.Thread(target=self._clock, daemon=True)
            clock.start()
            self._threads.append(clock)
        log.info("market server on %s", self.url)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> MarketServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _clock(self) -> None:
        interval = CANDLE.total_seconds() / float(self.speed or 1)
        while not self._stop.wait(interval):
            self.advance()

    def advance(self, steps: int = 1) -> bool:
        """Move the feed `steps` ticks on; False if it ran out."""
        with self.lock:
            return all(self.feed.advance() for _ in range(steps))

    def add_fault(self, fault: Fault | None = None, **fields: Any) -> Fault:
        fault = fault or Fault(**fields)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def requests_for(self, provider: str) -> list[RequestRecord]:
        with self.lock:
            return [r for r in self.requests if r.provider == provider]

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "time": _iso(self.feed.now()),
                "coins": len(self.feed.snapshot()),
                "faults": [asdict(f) for f in self.faults],
                "requests": sum(self.request_counts.values()),
            }

    def _take_faults(self, provider: str) -> list[Fault]:
        """The faults that apply to this request, using up one of each counted fault."""
        taken = []
        with self.lock:
            for fault in list(self.faults):
                if fault.provider not in (None, provider):
                    continue
                taken.append(fault)
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
        return taken

    # ---- request handling -------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict]:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if path.startswith("/_control/"):
            return self._control(method, path, body)
        provider = provider_of(path)
        if provider is None or method != "GET":
            return 404, json.dumps({"error": f"no such endpoint {method} {path}"}).encode(), {}
        with self.lock:
            self.requests.append(RequestRecord(time.monotonic(), provider, path, query, headers))
            self.request_counts[provider] += 1
            if self.keep_requests is not None and len(self.requests) > 2 * self.keep_requests:
                del self.requests[: -self.keep_requests]
        faults = self._take_faults(provider)
        for fault in faults:
            if fault.kind == "timeout":
                time.sleep(fault.delay)
        try:
            for fault in faults:
                _raise_error_fault(fault, provider)
            with self.lock:
                rows = self.feed.snapshot()
                now = self.feed.now()
            rows = _apply_row_faults(rows, faults, now)
            number = _s if any(f.kind == "strings" for f in faults) else _plain
            payload = self._route(provider, path, query, headers, rows, now, number, faults)
            status, extra = 200, {}
        except _Reply as reply:
            payload, status, extra = reply.body, reply.status, reply.headers
        data = json.dumps(payload).encode()  # allow_nan: the `nan` fault sends a literal NaN
        if any(f.kind == "truncated" for f in faults):
            data = data[: len(data) // 2]
        if provider == "binance":
            used = self.request_counts["binance"] * 2
            used = max((f.weight for f in faults if f.kind == "binance_weight"), default=used)
            extra.setdefault("X-MBX-USED-WEIGHT-1m", str(used))
        return status, data, extra

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, bytes, dict]:
        try:
            request = json.loads(body or b"{}")
            if method == "POST" and path == "/_control/advance":
                more = self.advance(int(request.get("steps", 1)))
                answer: dict[str, Any] = {"more": more, **self.state()}
            elif method == "POST" and path == "/_control/fault":
                if request.get("clear"):
                    self.clear_faults()
                else:
                    self.add_fault(Fault(**request))
                answer = self.state()
            elif method == "GET" and path == "/_control/state":
                answer = self.state()
            else:
                return 404, b'{"error": "unknown control endpoint"}', {}
        except (TypeError, ValueError) as exc:
            return 400, json.dumps({"error": str(exc)}).encode(), {}
        return 200, json.dumps(answer).encode(), {}

    def _route(
        self,
        provider: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        rows: list[CoinRow],
        now: datetime,
        number: Any,
        faults: list[Fault],
    ) -> Any:
        if provider == "coinmarketcap":
            self._check_cmc_key(headers)
            if path == "/v1/cryptocurrency/listings/latest":
                rows = _with_synthetic(rows, faults, now)
                start, limit = int(query.get("start", 1)), int(query.get("limit", 100))
                return _cmc_envelope([_cmc_coin(r, number) for r in rows[start - 1 : start - 1 + limit]], now)
            if path == "/v2/cryptocurrency/quotes/latest":
                return _cmc_envelope(_cmc_quotes(rows, query, number), now)
        elif provider == "coingecko" and path == "/api/v3/coins/markets":
            return _coingecko_markets(_with_synthetic(rows, faults, now), query, number)
        elif provider == "binance" and path == "/api/v3/ticker/24hr":
            return _binance_tickers(rows, query, number)
        elif provider == "kraken" and path == "/0/public/Ticker":
            return _kraken_ticker(rows, query.get("pair", ""))
        elif provider == "coinbase":
            return _coinbase(rows, path)
        raise _Reply(404, {"error": f"unknown endpoint {path}"})

    def _check_cmc_key(self, headers: dict[str, str]) -> None:
        if self.cmc_api_key is None:
            return
        given = headers.get("x-cmc_pro_api_key")
        if given != self.cmc_api_key:
            code = 1002 if not given else 1001
            raise _Reply(CMC_ERRORS[code][0], _cmc_status(code))


def _plain(value: Any) -> Any:
    return value


def _raise_error_fault(fault: Fault, provider: str) -> None:
    retry = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
    kind = fault.kind
    if kind == "http_429":
        bodies = {
            "coinmarketcap": _cmc_status(429, "Too Many Requests"),
            "coingecko": {"status": {"error_code": 429, "error_message": "You've exceeded the Rate Limit."}},
            "binance": {"code": -1003, "msg": "Too much request weight used; please use WebSocket Streams."},
            "kraken": {"error": ["EGeneral:Too many requests"]},
            "coinbase": {"message": "Public rate limit exceeded"},
        }
        raise _Reply(429, bodies[provider], retry)
    if kind == "binance_418":
        raise _Reply(418, {"code": -1003, "msg": "Way too much request weight used; IP banned."}, retry)
    if kind == "coingecko_429_200":
        raise _Reply(200, {"status": {"error_code": 429, "error_message": "You've exceeded the Rate Limit."}})
    if kind == "cmc_error":
        status = 200 if fault.http_200 else CMC_ERRORS.get(fault.code, (400, ""))[0]
        raise _Reply(status, _cmc_status(fault.code), retry if status == 429 else {})
    if kind == "kraken_error":
        raise _Reply(200, {"error": [fault.message], "result": {}})
    if kind == "http_5xx":
        raise _Reply(fault.status, {"error": "upstream unavailable"})


def _apply_row_faults(rows: list[CoinRow], faults: list[Fault], now: datetime) -> list[CoinRow]:
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


def _twin(row: CoinRow) -> CoinRow:
    """Another coin that shares the ticker (like the two BTGs): different ids, name, price and rank."""
    ids = row.provider_ids
    twin_ids = replace(ids, coinmarketcap=900_000 + ids.coinmarketcap, coingecko=f"{ids.coingecko}-classic")
    price = row.price / 1000 if isinstance(row.price, float) else row.price
    return replace(row, name=f"{row.name} Classic", price=price, rank=4000 + (row.rank or 0), ids=twin_ids)


def _with_synthetic(rows: list[CoinRow], faults: list[Fault], now: datetime) -> list[CoinRow]:
    """Pad a ranked listing with deterministic synthetic coins (per feed time) up to `total`."""
    total = max((f.total for f in faults if f.kind == "listing_5000"), default=0)
    extra = []
    wiggle = 1 + (int(now.timestamp()) // 300 % 97) / 1000
    for n in range(1, total - len(rows) + 1):
        price = (0.01 + (n * 7919 % 100_000) / 100) * wiggle
        ids = CoinIds(1_000_000 + n, f"synthetic-coin-{n}", f"SYN{n}USDT", f"SYN{n}USD", f"SYN{n}-USD")
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
                ids=ids,
            )
        )
    return rows + extra


# ---- CoinMarketCap ------------------------------------------------------------------------------


def _cmc_status(code: int, message: str | None = None) -> dict[str, Any]:
    return {
        "status": {
            "timestamp": _iso(datetime.now(UTC)),
            "error_code": code,
            "error_message": message or CMC_ERRORS.get(code, (0, "error"))[1],
            "elapsed": 0,
            "credit_count": 0,
        }
    }


def _cmc_envelope(data: Any, now: datetime) -> dict[str, Any]:
    status = {"timestamp": _iso(now), "error_code": 0, "error_message": None, "elapsed": 1, "credit_count": 1}
    return {"status": status, "data": data}


def _cmc_coin(row: CoinRow, number: Any) -> dict[str, Any]:
    ids = row.provider_ids
    usd = {
        "price": number(row.price),
        "volume_24h": number(row.volume_24h),
        "percent_change_1h": number(row.percent_change_1h),
        "percent_change_24h": number(row.percent_change_24h),
        "percent_change_7d": number(row.percent_change_7d),
        "market_cap": number(row.market_cap),
        "last_updated": _iso(row.timestamp),
    }
    return {
        "id": ids.coinmarketcap,
        "name": row.name,
        "symbol": row.symbol,
        "slug": ids.coingecko,
        "cmc_rank": row.rank,
        "last_updated": _iso(row.timestamp),
        "quote": {"USD": usd},
    }


def _cmc_quotes(rows: list[CoinRow], query: dict[str, str], number: Any) -> dict[str, Any]:
    """v2 quotes: keyed by id (one object each) or by symbol (a list: symbols can collide).

    Like CMC, an id or symbol it does not know fails the whole request unless `skip_invalid=true`.
    """
    skip_invalid = query.get("skip_invalid", "").lower() == "true"
    if "id" in query:
        wanted = {s.strip() for s in query["id"].split(",")}
        known = {str(ids_for(s).coinmarketcap) for s in KNOWN_COINS} | {str(r.provider_ids.coinmarketcap) for r in rows}
        _refuse_unknown("id", wanted - known, skip_invalid)
        return {
            str(r.provider_ids.coinmarketcap): _cmc_coin(r, number)
            for r in rows
            if str(r.provider_ids.coinmarketcap) in wanted
        }
    if "symbol" in query:
        out: dict[str, list] = {s.strip().upper(): [] for s in query["symbol"].split(",")}
        _refuse_unknown("symbol", set(out) - set(KNOWN_COINS) - {r.symbol for r in rows}, skip_invalid)
        for row in rows:
            if row.symbol in out:
                out[row.symbol].append(_cmc_coin(row, number))
        return out
    raise _Reply(400, _cmc_status(400, '"id" or "symbol" is required'))


def _refuse_unknown(field: str, unknown: set[str], skip_invalid: bool) -> None:
    if unknown and not skip_invalid:
        raise _Reply(400, _cmc_status(400, f'Invalid value for "{field}": "{",".join(sorted(unknown))}"'))


# ---- CoinGecko ----------------------------------------------------------------------------------


def _coingecko_markets(rows: list[CoinRow], query: dict[str, str], number: Any) -> list[dict[str, Any]]:
    if query.get("vs_currency", "").lower() != "usd":
        raise _Reply(400, {"error": "invalid vs_currency"})
    if "ids" in query:
        wanted = {s.strip() for s in query["ids"].split(",")}
        rows = [r for r in rows if r.provider_ids.coingecko in wanted]
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
    per_page = min(int(query.get("per_page", 100)), 250)
    page = max(int(query.get("page", 1)), 1)
    return [_coingecko_coin(r, number) for r in rows[(page - 1) * per_page : page * per_page]]


def _coingecko_coin(row: CoinRow, number: Any) -> dict[str, Any]:
    return {
        "id": row.provider_ids.coingecko,
        "symbol": row.symbol.lower(),
        "name": row.name,
        "current_price": number(row.price),
        "market_cap": number(row.market_cap),
        "market_cap_rank": row.rank,
        "total_volume": number(row.volume_24h),
        "price_change_percentage_24h": number(row.percent_change_24h),
        "last_updated": _iso(row.timestamp),
        "price_change_percentage_1h_in_currency": number(row.percent_change_1h),
        "price_change_percentage_24h_in_currency": number(row.percent_change_24h),
        "price_change_percentage_7d_in_currency": number(row.percent_change_7d),
    }


# ---- Binance ------------------------------------------------------------------------------------


def _binance_tickers(rows: list[CoinRow], query: dict[str, str], _number: Any) -> Any:
    by_id = {r.provider_ids.binance: r for r in rows if r.provider_ids.binance}
    if "symbols" in query:
        try:
            wanted = json.loads(query["symbols"])
        except ValueError:
            raise _Reply(400, {"code": -1100, "msg": "Illegal characters found in parameter 'symbols'."}) from None
        single = False
    elif "symbol" in query:
        wanted, single = [query["symbol"]], True
    else:
        wanted, single = list(by_id), False
    # The real API refuses unknown symbols; a listed coin missing in a data gap is simply left out.
    known = {i for i in (ids_for(s).binance for s in KNOWN_COINS) if i} | set(by_id)
    if any(w not in known for w in wanted):
        raise _Reply(400, {"code": -1121, "msg": "Invalid symbol."})
    tickers = [_binance_ticker(by_id[w]) for w in wanted if w in by_id]
    return tickers[0] if single and tickers else tickers


def _binance_ticker(row: CoinRow) -> dict[str, Any]:
    """Binance sends every decimal as a string."""
    close_ms = int(row.timestamp.timestamp() * 1000)
    ticker: dict[str, Any] = {
        "symbol": row.provider_ids.binance,
        "lastPrice": _s(row.price),
        "quoteVolume": _s(row.volume_24h),
        "volume": _s(row.volume_24h / row.price) if _both_numbers(row.volume_24h, row.price) else None,
        "openTime": close_ms - 86_400_000,
        "closeTime": close_ms,
    }
    if row.percent_change_24h is not None:
        ticker["priceChangePercent"] = f"{row.percent_change_24h:.3f}"
    return ticker


def _s(value: Any) -> Any:
    return None if value is None else str(value)


def _both_numbers(a: Any, b: Any) -> bool:
    return isinstance(a, float | int) and isinstance(b, float | int) and b > 0


# ---- Kraken -------------------------------------------------------------------------------------


def _kraken_ticker(rows: list[CoinRow], pairs: str) -> dict[str, Any]:
    by_alt = {kraken_altname(r.provider_ids.kraken): r for r in rows}
    known = {kraken_altname(ids_for(s).kraken) for s in KNOWN_COINS} | set(by_alt)
    result = {}
    for pair in filter(None, (p.strip().upper() for p in pairs.split(","))):
        alt = kraken_altname(pair)
        if alt not in known:
            return {"error": ["EQuery:Unknown asset pair"]}
        row = by_alt.get(alt)
        if row is None:
            continue
        price = _s(row.price)
        base_volume = _s(row.volume_24h / row.price) if _both_numbers(row.volume_24h, row.price) else "0"
        result[row.provider_ids.kraken] = {
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


# ---- Coinbase -----------------------------------------------------------------------------------


def _coinbase(rows: list[CoinRow], path: str) -> dict[str, Any]:
    parts = path.strip("/").split("/")
    if len(parts) != 3 or parts[2] not in ("ticker", "stats"):
        raise _Reply(404, {"message": "NotFound"})
    row = next((r for r in rows if r.provider_ids.coinbase == parts[1]), None)
    if row is None:
        raise _Reply(404, {"message": "NotFound"})
    base_volume = _s(row.volume_24h / row.price) if _both_numbers(row.volume_24h, row.price) else None
    if parts[2] == "ticker":
        price = _s(row.price)
        return {
            "ask": price,
            "bid": price,
            "volume": base_volume,
            "trade_id": 1,
            "price": price,
            "size": "0.01",
            "time": _iso(row.timestamp),
        }
    stats: dict[str, Any] = {"high": _s(row.price), "low": _s(row.price), "last": _s(row.price), "volume": base_volume}
    if row.percent_change_24h is not None and isinstance(row.price, float):
        stats["open"] = str(row.price / (1 + row.percent_change_24h / 100))
    return stats


# ---- HTTP plumbing ------------------------------------------------------------------------------


def _make_handler(server: MarketServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, data, extra = server.handle(self.command, self.path, headers, body)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (timeout fault)

        do_GET = do_POST = _serve

        def date_time_string(self, timestamp: float | None = None) -> str:
            with server.lock:
                return format_datetime(server.feed.now().astimezone(UTC), usegmt=True)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("market %s", format % args)

    return Handler


def replay_server(directory: str | Path, **kwargs: Any) -> MarketServer:
    """A (not yet started) server replaying the CSV candles in `directory`."""
    return MarketServer(CsvReplayFeed(directory), **kwargs)
