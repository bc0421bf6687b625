"""The local market server: every provider's fake wire format on one loopback port, with switchable faults.

Control (JSON): `POST /_control/advance` `{"steps": n}`, `POST /_control/fault` (a `Fault` as an
object, or `{"clear": true}`), `GET /_control/state`. The HTTP `Date` header carries the feed's
time, as a provider's clock would (Kraken's ticker has no timestamp of its own).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from cryptoviz.dev.market.coins import KNOWN_COINS
from cryptoviz.dev.market.faults import Fault, apply_candle_faults, apply_row_faults, raise_error_fault, with_synthetic
from cryptoviz.dev.market.feed import CANDLE, Feed
from cryptoviz.scraper.providers import live_specs
from cryptoviz.scraper.providers.binance import WEIGHT_LIMIT
from cryptoviz.scraper.providers.coinmarketcap import CoinMarketCapWire
from cryptoviz.scraper.providers.wire import CandleRow, Reply, Wire, WireRequest, as_string, iso, plain

log = logging.getLogger("cryptoviz.dev.market")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """A request the server saw (the tests check retries, pacing and headers with these)."""

    at: float
    provider: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


class MarketServer:
    """Threaded HTTP server on loopback (port 0 = a free port); use as a context manager or start()/stop().

    `speed` (optional) advances the feed by itself, one 5-minute candle every 300/speed seconds;
    otherwise the feed moves only on `advance()` / `POST /_control/advance`.
    `cmc_api_key`, when set, is required in `X-CMC_PRO_API_KEY` (else CMC error 1002/1001); CoinMarketCap's
    history answers error 1006 (a free key's plan) unless `cmc_paid`.
    """

    def __init__(
        self,
        feed: Feed,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float | None = None,
        cmc_api_key: str | None = None,
        cmc_paid: bool = False,
        keep_requests: int | None = None,
    ) -> None:
        self.feed = feed
        self.speed = speed
        self.wires: dict[str, Wire] = {u.name: u.wire() for u in live_specs() if u.wire is not None}
        self.wires["coinmarketcap"] = CoinMarketCapWire(api_key=cmc_api_key, paid=cmc_paid)
        self.faults: list[Fault] = []
        self.requests: list[RequestRecord] = []
        self.keep_requests = keep_requests
        """Keep only about the last N in `requests` (a long fast replay would otherwise grow it without bound)."""
        self.request_counts: Counter[str] = Counter()
        """Requests per provider since the start, also for the records no longer kept."""
        self.path_counts: Counter[str] = Counter()
        """Requests per path since the start."""
        self.lock = threading.RLock()
        self._binance_minute: deque[float] = deque()
        self._first_answers: dict[tuple[str, str], Any] = {}
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
            self._first_answers.clear()

    def requests_for(self, provider: str, path: str = "") -> list[RequestRecord]:
        with self.lock:
            return [r for r in self.requests if r.provider == provider and path in r.path]

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "time": iso(self.feed.now()),
                "coins": len(self.feed.snapshot()),
                "faults": [asdict(f) for f in self.faults],
                "requests": sum(self.request_counts.values()),
            }

    def _take_faults(self, provider: str, path: str, history: bool) -> list[Fault]:
        """The faults that apply to this request, using up one of each counted fault."""
        taken = []
        with self.lock:
            for fault in list(self.faults):
                if not fault.applies(provider, path, history):
                    continue
                taken.append(fault)
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
        return taken

    def provider_of(self, path: str) -> str | None:
        return next((name for name, wire in self.wires.items() if path.startswith(wire.prefixes)), None)

    # ---- request handling -------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict]:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if path.startswith("/_control/"):
            return self._control(method, path, body)
        provider = self.provider_of(path)
        if provider is None or method != "GET":
            return 404, json.dumps({"error": f"no such endpoint {method} {path}"}).encode(), {}
        wire = self.wires[provider]
        with self.lock:
            self.requests.append(RequestRecord(time.monotonic(), provider, path, query, headers))
            self.request_counts[provider] += 1
            self.path_counts[path] += 1
            if self.keep_requests is not None and len(self.requests) > 2 * self.keep_requests:
                del self.requests[: -self.keep_requests]
        history = any(fragment in path for fragment in wire.history_paths)
        faults = self._take_faults(provider, path, history)
        for fault in faults:
            if fault.kind == "timeout":
                time.sleep(fault.delay)
        extra: dict[str, str] = {}
        try:
            with self.lock:
                now = self.feed.now()
            for fault in faults:
                raise_error_fault(fault, wire, raw_path, now)
            payload = self._answer(wire, path, query, headers, faults, history)
            status = 200
        except Reply as reply:
            payload, status, extra = reply.body, reply.status, dict(reply.headers)
        if isinstance(payload, str):
            data = payload.encode()
        elif faults:
            data = json.dumps(payload).encode()  # the `nan` fault's NaN stays a literal NaN
        else:
            data = orjson.dumps(payload)
        if any(f.kind == "truncated" for f in faults):
            data = data[: len(data) // 2]
        if provider == "binance":
            extra.setdefault("X-MBX-USED-WEIGHT-1m", str(self._binance_weight(faults)))
        return status, data, extra

    def _answer(
        self, wire: Wire, path: str, query: dict[str, str], headers: dict[str, str], faults: list[Fault], history: bool
    ) -> Any:
        key = (path, query.get("symbol") or query.get("pair") or query.get("id") or "")
        stuck = history and any(f.kind == "stuck_cursor" for f in faults)
        if stuck and key in self._first_answers:
            return self._first_answers[key]
        with self.lock:
            rows = self.feed.snapshot()
            now = self.feed.now()
        rows = apply_row_faults(rows, faults)
        if path.endswith(("/listings/latest", "/coins/markets")):
            rows = with_synthetic(rows, faults, now)

        def candles(symbol: str, interval: int, start: datetime, end: datetime) -> list[CandleRow]:
            feed_candles = getattr(self.feed, "candles", None)
            with self.lock:
                found = feed_candles(symbol, interval, start, end) if feed_candles is not None else []
            return apply_candle_faults(symbol, found, faults, now)

        request = WireRequest(
            path=path,
            query=query,
            headers=headers,
            rows=rows,
            now=now,
            number=as_string if any(f.kind == "strings" for f in faults) else plain,
            history=candles,
            known_symbols=frozenset(KNOWN_COINS),
            faulty=bool(faults),
        )
        answer = wire.answer(request)
        if stuck:
            self._first_answers[key] = answer
        return answer

    def _binance_weight(self, faults: list[Fault]) -> int:
        """Weight used in the last minute (2 a call), or what a `binance_weight` fault says."""
        now = time.monotonic()
        with self.lock:
            self._binance_minute.append(now)
            while self._binance_minute and self._binance_minute[0] < now - 60:
                self._binance_minute.popleft()
            used = min(2 * len(self._binance_minute), WEIGHT_LIMIT)
        return max((f.weight for f in faults if f.kind == "binance_weight"), default=used)

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


def _make_handler(server: MarketServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in two writes: without this, the client's delayed ACK adds 40 ms a call.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, data, extra = server.handle(self.command, self.path, headers, body)
            try:
                self.send_response(status)
                self.send_header("Content-Type", extra.pop("Content-Type", "application/json"))
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
