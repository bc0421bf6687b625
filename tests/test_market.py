"""The local market server on its own: wire formats, replay semantics, control endpoints, clocked mode."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import orjson
import pytest
import requests
from cryptoviz.dev.market import CoinRow, CsvReplayFeed, Fault, MarketServer
from support.wait import wait_for


@pytest.fixture(scope="module")
def feed(market_5m: Path) -> CsvReplayFeed:
    return CsvReplayFeed(market_5m)


@pytest.fixture
def market(feed: CsvReplayFeed):
    feed.position = 0
    with MarketServer(feed) as server:
        yield server


def test_replay_serves_one_candle_per_coin_per_tick_and_keeps_real_gaps(feed, market_5m):
    first = feed.ticks[0]
    assert first == datetime(2025, 1, 13, tzinfo=UTC) and len(feed.snapshot()) == 14
    btc = next(r for r in feed.snapshot() if r.symbol == "BTC")
    assert btc.price == 94524.0546875 and btc.timestamp == first
    assert btc.percent_change_24h is None  # no history before the first candle: unknown, not invented
    gap = datetime(2025, 1, 20, tzinfo=UTC)
    assert feed.row("BTC", gap) is None and feed.row("ETH", gap) is not None
    later = feed.row("BTC", first + timedelta(hours=1))
    assert later.percent_change_1h == pytest.approx((later.price / 94524.0546875 - 1) * 100)


def test_every_provider_format_from_one_server(market):
    url = market.url
    cmc = requests.get(f"{url}/v1/cryptocurrency/listings/latest", params={"start": 2, "limit": 3}).json()
    assert cmc["status"]["error_code"] == 0
    assert [c["symbol"] for c in cmc["data"]] == ["ETH", "USDT", "XRP"]
    assert cmc["data"][0]["id"] == 1027 and "price" in cmc["data"][0]["quote"]["USD"]
    v2 = requests.get(f"{url}/v2/cryptocurrency/quotes/latest", params={"id": "1,2"}).json()["data"]
    assert set(v2) == {"1", "2"} and v2["2"]["symbol"] == "LTC"
    by_symbol = requests.get(f"{url}/v2/cryptocurrency/quotes/latest", params={"symbol": "BTC"}).json()["data"]
    assert isinstance(by_symbol["BTC"], list) and by_symbol["BTC"][0]["id"] == 1
    v2_url = f"{url}/v2/cryptocurrency/quotes/latest"
    strict = requests.get(v2_url, params={"id": "1,999999"})
    assert strict.status_code == 400 and strict.json()["status"]["error_message"] == 'Invalid value for "id": "999999"'
    relaxed = requests.get(v2_url, params={"symbol": "BTC,ZZZ", "skip_invalid": "true"}).json()["data"]
    assert len(relaxed["BTC"]) == 1 and relaxed["ZZZ"] == []

    page2 = requests.get(f"{url}/api/v3/coins/markets", params={"vs_currency": "usd", "per_page": 5, "page": 2}).json()
    assert [c["id"] for c in page2] == ["solana", "usd-coin", "dogecoin", "cardano", "avalanche-2"]

    binance = requests.get(f"{url}/api/v3/ticker/24hr", params={"symbols": '["BTCUSDT","ETHUSDT"]'}).json()
    assert [t["symbol"] for t in binance] == ["BTCUSDT", "ETHUSDT"] and isinstance(binance[0]["lastPrice"], str)
    bad = requests.get(f"{url}/api/v3/ticker/24hr", params={"symbols": '["USDTUSDT"]'})
    assert bad.status_code == 400 and bad.json()["code"] == -1121

    kraken = requests.get(f"{url}/0/public/Ticker", params={"pair": "XBTUSD,ETHUSD,XDGUSD"})
    assert kraken.json()["error"] == [] and set(kraken.json()["result"]) == {"XXBTZUSD", "XETHZUSD", "XDGUSD"}
    assert parsedate_to_datetime(kraken.headers["Date"]) == market.feed.now()  # the feed's clock
    unknown = requests.get(f"{url}/0/public/Ticker", params={"pair": "FOOUSD"})
    assert unknown.status_code == 200 and unknown.json()["error"] == ["EQuery:Unknown asset pair"]

    ticker = requests.get(f"{url}/products/BTC-USD/ticker").json()
    assert ticker["price"] == "94524.0546875" and ticker["time"] == "2025-01-13T00:00:00.000Z"
    assert requests.get(f"{url}/products/FOO-USD/ticker").status_code == 404
    assert "volume" in requests.get(f"{url}/products/BTC-USD/stats").json()


def test_control_endpoints_advance_and_switch_faults(market):
    url = market.url
    state = requests.post(f"{url}/_control/advance", json={"steps": 2}).json()
    assert state["more"] is True and state["time"] == "2025-01-13T00:10:00.000Z"

    fault = {"kind": "http_429", "provider": "coingecko", "count": 1, "retry_after": 7}
    assert requests.post(f"{url}/_control/fault", json=fault).json()["faults"][0]["kind"] == "http_429"
    limited = requests.get(f"{url}/api/v3/coins/markets", params={"vs_currency": "usd"})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert requests.get(f"{url}/api/v3/coins/markets", params={"vs_currency": "usd"}).status_code == 200

    requests.post(f"{url}/_control/fault", json={"kind": "kraken_error", "message": "EService:Busy"})
    assert requests.get(f"{url}/0/public/Ticker", params={"pair": "XBTUSD"}).json()["error"] == ["EService:Busy"]
    assert requests.post(f"{url}/_control/fault", json={"clear": True}).json()["faults"] == []
    bad = requests.post(f"{url}/_control/fault", json={"kind": "meteor"})
    assert bad.status_code == 400 and "unknown fault kind" in bad.json()["error"]


def test_value_faults_shape_the_json(market):
    url = market.url
    market.add_fault(kind="nan", symbols=["BTC"])
    market.add_fault(kind="strings")
    market.add_fault(kind="duplicate_symbols", symbols=["ETH"], provider="coinmarketcap")
    text = requests.get(f"{url}/v1/cryptocurrency/listings/latest", params={"limit": 5000}).text
    assert '"price": "nan"' in text  # numbers as strings, the NaN too
    data = json.loads(text)["data"]
    assert [(c["id"], c["name"]) for c in data if c["symbol"] == "ETH"] == [
        (1027, "Ethereum"),
        (901027, "Ethereum Classic"),
    ]
    market.clear_faults()
    market.add_fault(Fault(kind="truncated", count=1))
    with pytest.raises(json.JSONDecodeError):
        json.loads(requests.get(f"{url}/api/v3/coins/markets", params={"vs_currency": "usd"}).text)
    market.add_fault(kind="listing_5000", provider="coingecko")
    pages = [
        requests.get(f"{url}/api/v3/coins/markets", params={"vs_currency": "usd", "per_page": 250, "page": p}).json()
        for p in (1, 20, 21)
    ]
    assert [len(p) for p in pages] == [250, 250, 0]


def test_timeout_fault_sleeps_before_answering(market):
    market.add_fault(kind="timeout", delay=0.6, count=1)
    with pytest.raises(requests.Timeout):
        requests.get(f"{market.url}/products/BTC-USD/ticker", timeout=0.2)
    started = time.monotonic()
    requests.get(f"{market.url}/products/BTC-USD/ticker", timeout=2)
    assert time.monotonic() - started < 0.5


def test_clocked_mode_advances_one_candle_every_300_over_speed_seconds(feed):
    feed.position = 0
    with MarketServer(feed, speed=1500) as server:  # a candle every 0.2 s
        started = time.monotonic()
        wait_for(lambda: feed.now() - feed.ticks[0] >= timedelta(minutes=20), 10, "four candles to pass")
        elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 3, f"four candles in {elapsed:.2f}s, not one every 0.2 s"
    with pytest.raises(requests.ConnectionError):  # stopped means stopped
        requests.get(f"{server.url}/_control/state", timeout=1)


class TwoCoins:
    """A minimal plug-in feed, as the demo simulator provides one."""

    def __init__(self) -> None:
        self.t = datetime(2026, 1, 1, tzinfo=UTC)
        self.price = 100.0

    def snapshot(self) -> list[CoinRow]:
        return [
            CoinRow("BTC", "Bitcoin", self.price * 1000, self.t, rank=1),
            CoinRow("NEWC", "New Coin", self.price, self.t, rank=2),
        ]

    def advance(self) -> bool:
        self.t += timedelta(seconds=5)
        self.price += 1
        return True

    def now(self) -> datetime:
        return self.t


def test_any_feed_object_can_drive_the_server():
    with MarketServer(TwoCoins()) as server:
        server.advance()
        coins = requests.get(f"{server.url}/api/v3/coins/markets", params={"vs_currency": "usd"}).json()
    assert [(c["id"], c["current_price"], c["last_updated"]) for c in coins] == [
        ("bitcoin", 101000.0, "2026-01-01T00:00:05.000Z"),
        ("newc", 101.0, "2026-01-01T00:00:05.000Z"),
    ]


def test_prerendered_klines_are_the_bytes_rendered_on_request(market):
    """bench_backfill renders its klines ahead (`BinanceWire.prerender`): answers are the same bytes, and
    a request with faults (or a candle not rendered ahead) is rendered as before."""
    market.advance(60)
    wire = market.wires["binance"]
    start = market.feed.now() - timedelta(minutes=5 * 60)
    params = {"symbol": "BTCUSDT", "interval": "5m", "startTime": int(start.timestamp() * 1000), "limit": 1000}
    fresh = requests.get(f"{market.url}/api/v3/klines", params=params).content
    assert len(json.loads(fresh)) == 61  # the one in progress too, as Binance answers
    candles = market.feed.candles("BTC", 300, start, market.feed.now() + timedelta(seconds=1))
    wire.prerender(candles[1:], 300)  # the first is rendered on request
    assert requests.get(f"{market.url}/api/v3/klines", params=params).content == fresh
    wire.prerender(candles[:1], 300)
    assert requests.get(f"{market.url}/api/v3/klines", params=params).content == fresh
    wire.rendered[300][candles[0]] = orjson.Fragment(b'"ahead"')  # proves the answer comes from what was rendered
    assert json.loads(requests.get(f"{market.url}/api/v3/klines", params=params).content)[0] == "ahead"
    market.add_fault(kind="nan", symbols=["BTC"], path="/klines")  # a value fault on the history
    faulty = requests.get(f"{market.url}/api/v3/klines", params=params).text
    assert "ahead" not in faulty and '"nan"' in faulty
