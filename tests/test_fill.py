"""Gap filling and backfill through a real nats-server, against the local market's history endpoints.

What the ingester holds comes from a tiny stand-in of `GET /api/v1/coverage` here (the contract's
shape, answers set by each test), so these run without the storage side; tests/test_backfill_e2e.py
does the same against the real `cryptoviz ingest`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptoviz.core.quote import format_ts
from cryptoviz.dev.market import CsvReplayFeed, MarketServer
from cryptoviz.scraper.backfill import run_backfill
from cryptoviz.scraper.coverage import CoverageClient, spans
from cryptoviz.scraper.progress import Progress
from cryptoviz.scraper.run import EXIT_CONFIG, EXIT_OK, run_once
from test_ingest_harness import CRYPTOVIZ
from test_scraper_support import UNREACHABLE, backfill_settings_for, settings_for, stream_candles

pytestmark = pytest.mark.timeout(120)
FIVE = timedelta(minutes=5)


class CoverageStandIn:
    """Answers `GET /api/v1/coverage` with the series a test sets, and records what was asked."""

    def __init__(self) -> None:
        self.series: list[dict[str, Any]] = []
        self.asked: list[dict[str, str]] = []
        self.status = 200
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                stand_in.asked.append(query)
                wanted = set(query.get("symbols", "").split(","))
                rows = [s for s in stand_in.series if s["symbol"] in wanted and s["provider"] == query.get("provider")]
                body = json.dumps(
                    {"since": query["since"], "until": query["until"], "min_gap_seconds": 900, "data": rows}
                ).encode()
                self.send_response(stand_in.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stored(self, symbol: str, provider: str, coin_id: str, first: datetime, last: datetime, gaps=()) -> None:
        holes = [
            {"start": format_ts(a), "end": format_ts(b), "seconds": (b - a) // timedelta(seconds=1)} for a, b in gaps
        ]
        self.series.append(
            {
                "symbol": symbol, "provider": provider, "coin_id": coin_id, "quotes": 1, "candles": 1,
                "first": format_ts(first), "last": format_ts(last),
                "gaps": holes,
            }
        )  # fmt: skip

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def coverage():
    stand_in = CoverageStandIn()
    yield stand_in
    stand_in.close()


@pytest.fixture(scope="module")
def feed(market_5m: Path) -> CsvReplayFeed:
    return CsvReplayFeed(market_5m)


@pytest.fixture
def market(feed: CsvReplayFeed):
    feed.position = 4000
    with MarketServer(feed) as server:
        yield server


def write_config(tmp_path: Path, *symbols: str, providers: str = "") -> str:
    path = tmp_path / "scraper.yaml"
    extra = f", providers: [{providers}]" if providers else ""
    path.write_text("coins:\n" + "".join(f"  - {{symbol: {s}{extra}}}\n" for s in symbols))
    return str(path)


def csv_opens(feed: CsvReplayFeed, symbol: str, start: datetime, end: datetime) -> list[datetime]:
    """Complete 5-minute candles of the files opening in [start, end) (the one at `end` is in progress)."""
    return [t for t in feed.series[symbol].times if start <= t and t + FIVE <= end]


# ---- the coverage client -----------------------------------------------------------------------


def test_coverage_answers_are_typed_and_an_unusable_ingester_means_nothing_known(coverage, caplog):
    now = datetime(2025, 2, 1, tzinfo=UTC)
    coverage.stored(
        "BTC",
        "binance",
        "BTCUSDT",
        now - timedelta(days=3),
        now - timedelta(hours=2),
        [(now - timedelta(days=2), now - timedelta(days=1))],
    )
    client = CoverageClient(coverage.url)
    got = client.fetch(["BTC", "ETH"], "binance", now - timedelta(days=5), now)
    assert set(got) == {("binance", "BTCUSDT")}
    series = got[("binance", "BTCUSDT")]
    assert series.last == now - timedelta(hours=2) and spans(series)[0].seconds == 86_400
    assert coverage.asked[-1]["symbols"] == "BTC,ETH" and coverage.asked[-1]["min_gap"] == "900"
    coverage.status = 404
    assert client.fetch(["BTC"], "binance", now - timedelta(days=5), now) is None
    assert CoverageClient(UNREACHABLE).fetch(["BTC"], "binance", now, now) is None
    assert "older" in caplog.text and "cannot ask the ingester" in caplog.text


# ---- gap filling in scrapes --------------------------------------------------------------------


def test_a_scrape_closes_the_two_hour_hole_of_a_stopped_scraper(market, nats_server, coverage, tmp_path):
    now = market.feed.now()
    stopped = now - timedelta(hours=2)
    coverage.stored("BTC", "binance", "BTCUSDT", now - timedelta(days=3), stopped)
    coverage.stored("ETH", "binance", "ETHUSDT", now - timedelta(days=3), now - FIVE)  # ran until just now
    settings = settings_for(
        market.url, nats_server.url, provider="binance", scraper_config=write_config(tmp_path, "BTC", "ETH"),
        ingester_url=coverage.url, gap_fill_lookback=86_400,
    )  # fmt: skip
    result = run_once(settings)
    assert result.exit_code == EXIT_OK, result.error
    candles = stream_candles(nats_server.url)
    assert [c.open_time for c in candles] == csv_opens(market.feed, "BTC", stopped, now)
    assert {c.coin_id for c in candles} == {"BTCUSDT"} and len(candles) == 24  # ETH ran until just now
    assert result.providers[0].candles == 24 and "candles=24" in result.providers[0].summary()
    asked = coverage.asked[-1]
    assert asked["provider"] == "binance" and asked["since"] == format_ts(now - timedelta(days=1))


def test_a_scrape_fills_holes_only_within_its_budget_and_leaves_the_past_to_backfill(
    market, nats_server, coverage, tmp_path
):
    now = market.feed.now()
    config = write_config(tmp_path, "BTC", "ETH")
    base = dict(provider="binance", scraper_config=config, gap_fill_lookback=86_400)
    run_once(settings_for(market.url, nats_server.url, ingester_url=UNREACHABLE, **base))
    assert market.requests_for("binance", "/klines") == []  # the ingester unknown: holes cannot be told
    coverage.stored("BTC", "binance", "BTCUSDT", now - timedelta(hours=3), now - timedelta(hours=3))
    run_once(settings_for(market.url, nats_server.url, ingester_url=coverage.url, gap_fill_budget=0, **base))
    assert stream_candles(nats_server.url) == []  # three hours to fill, but no time left this run
    run_once(settings_for(market.url, nats_server.url, ingester_url=coverage.url, **base))
    candles = stream_candles(nats_server.url)
    assert [c.open_time for c in candles] == csv_opens(market.feed, "BTC", now - timedelta(hours=3), now)
    assert {c.symbol for c in candles} == {"BTC"}  # ETH was never stored: its past is the backfill's


def test_replay_scrapes_carry_each_ticks_real_candle(market, nats_server):
    settings = settings_for(market.url, nats_server.url, provider="replay")
    seen = []
    for _ in range(4):
        assert run_once(settings).exit_code == EXIT_OK
        seen.append(market.feed.now())
        market.advance()
    assert run_once(settings).exit_code == EXIT_OK  # a CronJob run twice on the same tick adds nothing
    market.feed.position -= 1
    assert run_once(settings).exit_code == EXIT_OK
    candles = stream_candles(nats_server.url)
    btc = sorted((c for c in candles if c.symbol == "BTC"), key=lambda c: c.open_time)
    series = market.feed.series["BTC"]
    assert [c.open_time for c in btc] == [t - FIVE for t in seen[:4]] + [seen[-1]]  # each tick sends the one before
    for c in btc:
        i = series.index[c.open_time]
        assert (c.open, c.high, c.low, c.close) == (series.opens[i], series.highs[i], series.lows[i], series.closes[i])
    assert len(candles) == 14 * 5 and {c.interval for c in candles} == {300}


# ---- backfill ----------------------------------------------------------------------------------


def test_backfill_resumes_from_what_coverage_shows_and_skips_what_it_cannot(market, nats_server, coverage, tmp_path):
    now = market.feed.now()
    since = now - timedelta(days=2)
    hole = (now - timedelta(hours=30), now - timedelta(hours=20))
    coverage.stored("BTC", "binance", "BTCUSDT", since + timedelta(hours=3), now - FIVE, [hole])
    settings = backfill_settings_for(
        market.url, nats_server.url, provider="binance", ingester_url=coverage.url, backfill_days=2,
        scraper_config=write_config(tmp_path, "BTC", "ETH", "USDT"), backfill_symbols=("BTC", "ETH", "USDT", "NOPE"),
    )  # fmt: skip
    result = run_backfill(settings)
    assert result.exit_code == EXIT_CONFIG and "does not know the pair USDTUSDT" in result.error
    candles = stream_candles(nats_server.url)
    btc = [c.open_time for c in candles if c.symbol == "BTC"]
    feed = market.feed
    assert btc == csv_opens(feed, "BTC", since, since + timedelta(hours=3)) + csv_opens(feed, "BTC", *hole)
    assert [c.open_time for c in candles if c.symbol == "ETH"] == csv_opens(feed, "ETH", since, now)
    assert set(result.skipped) == {"NOPE", "USDT"}  # not tracked; Binance has no USDT pair
    assert "not a tracked coin" in result.skipped["NOPE"] and "USDTUSDT" in result.skipped["USDT"]

    again = run_backfill(settings)  # no coverage change here, so the same ranges: JetStream drops the repeats
    assert again.stored == 0 and again.candles == result.candles


def test_a_free_coinmarketcap_key_is_said_once_and_the_coin_filled_by_its_other_provider(
    market, nats_server, coverage, tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    config = write_config(tmp_path, "BTC", "ETH", providers="coinmarketcap, coinbase")
    settings = backfill_settings_for(
        market.url, nats_server.url, ingester_url=coverage.url, backfill_days=0.5, scraper_config=config
    )
    result = run_backfill(settings)
    assert result.exit_code == EXIT_OK, result.error
    assert caplog.text.count("needs a paid plan") == 1 and len(market.requests_for("coinmarketcap", "/ohlcv/")) == 1
    assert "BTC: filled by another provider" in caplog.text.replace("backfill BTC", "BTC") and not result.skipped
    assert {c.provider for c in stream_candles(nats_server.url)} == {"coinbase"}

    only_cmc = write_config(tmp_path, "BTC", providers="coinmarketcap")
    only = backfill_settings_for(market.url, nats_server.url, ingester_url=coverage.url, scraper_config=only_cmc)
    alone = run_backfill(only)
    assert alone.exit_code == EXIT_OK and "needs a paid plan" in alone.skipped["BTC"]


def test_backfill_command_logs_plain_lines_without_a_terminal_and_a_summary_per_coin(market, nats_server, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CMC_", "SCRAPE", "COINGECKO_", "BACKFILL"))}
    env.update(
        NATS_URL=nats_server.url, SCRAPE_PROVIDER="replay", MARKET_BASE_URL=market.url, INGESTER_URL=UNREACHABLE,
        BACKFILL_DAYS="3", BACKFILL_SYMBOLS="btc, eth", SCRAPER_CONFIG=write_config(tmp_path, "BTC", "ETH", "SOL"),
    )  # fmt: skip
    done = subprocess.run([CRYPTOVIZ, "backfill"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    now = market.feed.now()
    count = len(csv_opens(market.feed, "BTC", now - timedelta(days=3), now))
    assert f"backfill BTC replay: {count:,} candles ({count:,} new, 0 duplicates)" in done.stderr
    assert "backfill ETH replay:" in done.stderr and "SOL" not in done.stderr
    assert "backfill: 2/2 coins" in done.stderr and "\r" not in done.stderr  # log lines, no bar
    assert "cannot ask the ingester" in done.stderr
    assert {c.symbol for c in stream_candles(nats_server.url)} == {"BTC", "ETH"}
    help_text = subprocess.run([CRYPTOVIZ, "backfill", "--help"], capture_output=True, text=True, timeout=60).stdout
    for name in ("BACKFILL_DAYS", "BACKFILL_SYMBOLS", "INGESTER_URL", "BINANCE_BASE_URL", "CMC_API_KEY_FILE"):
        assert name in help_text


def test_progress_is_a_bar_on_a_terminal_and_log_lines_elsewhere(caplog):
    caplog.set_level(logging.INFO)
    screen = io.StringIO()
    bar = Progress(total=2, stream=screen, bar=True)
    bar.coin("binance", "BTC")
    bar.add_candles(8640)
    bar.coin_done()
    bar.close()
    assert "binance BTC" in screen.getvalue() and "1/2" in screen.getvalue() and "8,640" in screen.getvalue()
    plain = Progress(total=1, stream=io.StringIO(), bar=False)
    plain.add_candles(5)
    plain.coin_done()
    assert "backfill: 1/1 coins, 5 candles fetched" in caplog.text


def test_the_ingester_being_away_never_fails_a_scrape(market, nats_server, tmp_path):
    settings = settings_for(
        market.url, nats_server.url, provider="binance", ingester_url=UNREACHABLE, gap_fill_lookback=86_400
    )
    assert run_once(settings).exit_code == EXIT_OK
    assert requests.get(market.url + "/_control/state").json()["requests"] >= 1
