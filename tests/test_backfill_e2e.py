"""History end to end with the real components: the local market's history endpoints → the real scraper
(`run_backfill`, `run_once`) → a real nats-server → the real `cryptoviz ingest` storing candles in DuckDB.

What is stored is read back through the ingester's `GET /api/v1/coverage` (and `/api/v1/history`): the
storage side of issue 13. Where this ingester does not have it yet, those tests skip saying so. The
demo's test also opens the real dashboard on what it stored (30d and all over rolled-up candle hours).
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from cryptoviz.core.quote import format_ts
from cryptoviz.dev.market import CsvReplayFeed, MarketServer
from cryptoviz.dev.market_link import SimulatorFeed
from cryptoviz.dev.simulator import MarketSimulator
from cryptoviz.scraper.backfill import run_backfill
from cryptoviz.scraper.run import EXIT_OK, run_once
from dashboard_pages import DashboardProcess, Page, assert_lines_drawn
from support.jetstream import wait_all_acked
from test_ingest_harness import Ingester
from test_scraper_support import backfill_settings_for, settings_for

pytestmark = pytest.mark.timeout(240)
FIVE = timedelta(minutes=5)
DAY_MS = 86_400_000
STORE_MISSING = "needs the storage side of issue 13 (GET /api/v1/coverage, candles stored by the ingester)"


@pytest.fixture
def ingester(nats_server, tmp_path: Path):
    process = Ingester(nats_server.url, tmp_path / "db.duckdb", tmp_path / "ingester.log", RETENTION_DAYS="0").start()
    yield process
    process.stop()


def coverage(ingester: Ingester, symbols: list[str], provider: str, since: datetime, until: datetime) -> dict:
    response = ingester.get(
        "/api/v1/coverage", symbols=",".join(symbols), provider=provider, since=format_ts(since), until=format_ts(until)
    )
    if response.status_code == 404:
        pytest.skip(STORE_MISSING)
    assert response.status_code == 200, response.text
    return {row["symbol"]: row for row in response.json()["data"]}


def wait_candles(ingester, symbols, provider, since, until, expected: dict[str, int], timeout=120.0) -> dict:
    give_up = time.monotonic() + timeout
    while True:
        rows = coverage(ingester, symbols, provider, since, until)
        counts = {s: rows.get(s, {}).get("candles", 0) for s in symbols}
        if all(counts[s] >= n for s, n in expected.items()) or time.monotonic() > give_up:
            return rows
        time.sleep(0.2)


def write_config(tmp_path: Path, *symbols: str) -> str:
    path = tmp_path / "scraper.yaml"
    path.write_text("coins:\n" + "".join(f"  - {{symbol: {s}}}\n" for s in symbols))
    return str(path)


def complete(feed: CsvReplayFeed, symbol: str, start: datetime, end: datetime) -> int:
    return sum(1 for t in feed.series[symbol].times if start <= t and t + FIVE <= end)


@pytest.fixture(scope="module")
def feed(market_5m: Path) -> CsvReplayFeed:
    return CsvReplayFeed(market_5m)


@pytest.fixture
def market(feed: CsvReplayFeed):
    feed.position = len(feed.ticks) - 1
    with MarketServer(feed) as server:
        yield server


def test_a_backfill_stores_exact_candle_counts_and_a_second_run_fetches_nothing(
    market, nats_server, ingester, tmp_path
):
    symbols = ["BTC", "ETH", "SOL"]
    now = market.feed.now()
    since = now - timedelta(days=5)
    coverage(ingester, symbols, "binance", since, now)  # skips without the storage side
    settings = backfill_settings_for(
        market.url, nats_server.url, provider="binance", ingester_url=ingester.url, backfill_days=5,
        scraper_config=write_config(tmp_path, *symbols),
    )  # fmt: skip
    first = run_backfill(settings)
    assert first.exit_code == EXIT_OK, first.error
    expected = {s: complete(market.feed, s, since, now) for s in symbols}
    assert first.candles == first.stored == sum(expected.values())
    rows = wait_candles(ingester, symbols, "binance", since, now, expected)
    assert {s: rows[s]["candles"] for s in symbols} == expected
    calls = len(market.requests_for("binance", "/klines"))

    second = run_backfill(settings)
    assert second.exit_code == EXIT_OK and second.candles == 0
    assert len(market.requests_for("binance", "/klines")) == calls  # coverage showed it all: nothing asked
    wait_all_acked(nats_server.url)  # anything the second run had published would be stored now
    assert {s: r["candles"] for s, r in coverage(ingester, symbols, "binance", since, now).items()} == expected


def test_sigkill_of_the_ingester_during_a_backfill_loses_and_doubles_nothing(market, nats_server, ingester, tmp_path):
    symbols = ["BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "LTC", "DOT"]
    now = market.feed.now()
    since = now - timedelta(days=20)
    coverage(ingester, symbols, "binance", since, now)
    settings = backfill_settings_for(
        market.url, nats_server.url, provider="binance", ingester_url=ingester.url, backfill_days=20,
        scraper_config=write_config(tmp_path, *symbols),
    )  # fmt: skip
    expected = {s: complete(market.feed, s, since, now) for s in symbols}
    results = []
    backfill = threading.Thread(target=lambda: results.append(run_backfill(settings)))
    backfill.start()
    try:
        rows = wait_candles(ingester, symbols, "binance", since, now, {"BTC": 1}, timeout=60)
        ingester.kill()  # SIGKILL while it stores the backfill's candles
        assert 0 < sum(r["candles"] for r in rows.values()) < sum(expected.values())
        ingester.start()
    finally:
        backfill.join(120)
    assert results and results[0].exit_code == EXIT_OK, results and results[0].error
    rows = wait_candles(ingester, symbols, "binance", since, now, expected)
    assert {s: rows[s]["candles"] for s in symbols} == expected
    assert all(rows[s]["gaps"] == [] for s in symbols)


def test_a_two_hour_outage_of_the_scraper_is_closed_by_its_next_run(market, nats_server, ingester, tmp_path):
    market.feed.position = 5000
    settings = settings_for(
        market.url, nats_server.url, provider="binance", ingester_url=ingester.url, gap_fill_lookback=86_400,
        scraper_config=write_config(tmp_path, "BTC", "ETH"),
    )  # fmt: skip
    before = market.feed.now()
    window = (before - timedelta(hours=1), before + timedelta(hours=3))
    coverage(ingester, ["BTC"], "binance", *window)
    assert run_once(settings).exit_code == EXIT_OK  # a fresh series: nothing to fill (its past is the backfill's)
    give_up = time.monotonic() + 30
    while coverage(ingester, ["BTC", "ETH"], "binance", *window).get("ETH", {}).get("quotes") != 1:
        assert time.monotonic() < give_up, "the first scrape's quotes were not stored"
        time.sleep(0.2)
    assert market.requests_for("binance", "/klines") == []
    market.advance(24)  # the CronJob was suspended for two hours
    after = market.feed.now()
    assert run_once(settings).exit_code == EXIT_OK
    expected = {s: complete(market.feed, s, before, after) for s in ("BTC", "ETH")}
    rows = wait_candles(ingester, ["BTC", "ETH"], "binance", *window, expected)
    for symbol in ("BTC", "ETH"):
        assert rows[symbol]["candles"] == expected[symbol] == 24 and rows[symbol]["gaps"] == [], rows[symbol]
        assert rows[symbol]["quotes"] == 2
    assert len(market.requests_for("binance", "/klines")) == 2  # the two hours, one call a coin


def replay_ticks(market: MarketServer, nats_server, ingester: Ingester, ticks: int) -> list[datetime]:
    """Scrape `ticks` replay ticks (each sends the candle that ended at it); the times scraped."""
    settings = settings_for(market.url, nats_server.url, provider="replay", ingester_url=ingester.url)
    seen = []
    for _ in range(ticks):
        assert run_once(settings).exit_code == EXIT_OK
        seen.append(market.feed.now())
        market.advance()
    return seen


def test_replay_scrapes_store_every_replayed_candle_once(market, nats_server, ingester):
    market.feed.position = 3000
    coverage(ingester, ["BTC"], "replay", market.feed.now() - timedelta(days=1), market.feed.now())
    ticks = replay_ticks(market, nats_server, ingester, 13)
    start, end = ticks[0] - FIVE, ticks[-1]  # each tick sent the candle that ended at it
    symbols = sorted(market.feed.series)
    expected = {s: complete(market.feed, s, start, end) for s in symbols}
    rows = wait_candles(ingester, symbols, "replay", start, end, expected)
    assert {s: rows[s]["candles"] for s in symbols} == expected and expected["BTC"] == 13
    assert all(rows[s]["quotes"] == 13 for s in symbols)


def test_replayed_buckets_show_the_candles_real_ohlc(market, nats_server, ingester):
    market.feed.position = 3000
    coverage(ingester, ["BTC"], "replay", market.feed.now() - timedelta(days=1), market.feed.now())
    ticks = replay_ticks(market, nats_server, ingester, 13)
    start, end = ticks[0], ticks[-1]
    # 13: coverage also counts the candle that ended at the first tick; waiting for 12 could ask /history
    # before the last tick's candle was stored (a race the loaded machine lost now and then)
    wait_candles(ingester, ["BTC"], "replay", start, end, {"BTC": 13})
    answer = ingester.json(  # 13 points over the hour: 5-minute buckets, as long as the candles
        "/api/v1/history", symbols="BTC", provider="replay", start=format_ts(start), end=format_ts(end), points=13
    )
    assert answer["bucket_seconds"] == 300
    series = market.feed.series["BTC"]
    by_time = {row["timestamp"]: row for row in answer["data"]}
    for when in ticks[:-1]:
        i = series.index[when]
        row = by_time[format_ts(when)]
        real = (series.opens[i], series.highs[i], series.lows[i], series.closes[i])
        assert (row["open"], row["high"], row["low"], row["close"]) == pytest.approx(real), (
            f"the {format_ts(when)} bucket shows {row} instead of the stored candle's OHLC {real}"
        )


def test_a_backfill_against_demo_gives_every_period_data_from_the_first_second(nats_server, ingester, tmp_path):
    simulator = MarketSimulator(seed=5, start=datetime.now(UTC).replace(microsecond=0))
    with MarketServer(SimulatorFeed(simulator)) as market:
        now = market.feed.now()
        coverage(ingester, ["BTC"], "demo", now - timedelta(days=30), now)
        config = write_config(tmp_path, "BTC", "ETH", "USDT")
        fields = dict(provider="demo", ingester_url=ingester.url, scraper_config=config)
        result = run_backfill(backfill_settings_for(market.url, nats_server.url, **fields))
        assert result.exit_code == EXIT_OK, result.error
        settings = settings_for(market.url, nats_server.url, **fields)
        assert run_once(settings).exit_code == EXIT_OK
    assert result.candles >= 3 * (30 * 288 - 2)
    symbols = ["BTC", "ETH", "USDT"]
    rows = wait_candles(ingester, symbols, "demo", now - timedelta(days=30), now, dict.fromkeys(symbols, 30 * 288 - 2))
    for symbol, row in rows.items():
        assert row["gaps"] == [], (symbol, row["gaps"])
        assert datetime.fromisoformat(row["first"].replace("Z", "+00:00")) <= now - timedelta(days=30) + FIVE
    for days in (1, 7, 30):  # the dashboard's periods: the first bucket already has data
        start = now - timedelta(days=days) + FIVE
        answer = ingester.json(
            "/api/v1/history", symbols="BTC", provider="demo", start=format_ts(start), end=format_ts(now), points=100
        )
        step = timedelta(seconds=answer["bucket_seconds"])
        times = [datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00")) for row in answer["data"]]
        assert times[0] <= start + step and times[-1] >= now - 2 * step, (days, times[0], times[-1])
        holes = [(a, b) for a, b in itertools.pairwise(times[1:]) if b - a != step]  # the first: its first sample
        assert not holes, (days, step, holes[:3])
    prices = ingester.json("/api/v1/latest", provider="demo")["data"]
    btc = next(p for p in prices if p["symbol"] == "BTC")
    assert btc["price"] == pytest.approx(answer["data"][-1]["close"], rel=0.02)  # the past ends at the present price


def test_cryptoviz_dev_demo_backfills_the_simulators_past_in_the_background(tmp_path, browser):
    from support.dev import dev_running, wait_for

    with dev_running(tmp_path / "state", "--demo", "--no-dashboard") as run:
        started = run.text.index("backfill           filling 30 days of history")
        assert started < run.text.index("Press Ctrl-C to stop.")  # started, not waited for
        wait_for(lambda: "backfill done" in run.text, 180, "the start-up backfill to finish")
        log = (run.state_dir / "logs" / "backfill.log").read_text()
        summaries = [line for line in log.splitlines() if " demo: " in line and "candles (" in line]
        assert len(summaries) == 14, log[-3000:]
        now = datetime.now(UTC)
        response = requests.get(
            f"{run.api}/api/v1/coverage",
            params={
                "symbols": "BTC",
                "provider": "demo",
                "since": format_ts(now - timedelta(days=31)),
                "until": format_ts(now),
            },
            timeout=10,
        )
        if response.status_code != 404:  # the storage side: the 30-day past is stored from its first candle
            first = response.json()["data"][0]["first"]
            assert datetime.fromisoformat(first.replace("Z", "+00:00")) <= now - timedelta(days=30) + 2 * FIVE
        # The first retention run (30 s after the ingester starts) rolls the candles past 30 days up into
        # hours; the dashboard's 30d and "all" periods then read both (they answered 503 before).
        ingester_log = run.state_dir / "logs" / "ingester.log"
        wait_for(lambda: "retention: rolled up" in ingester_log.read_text(), 90, "the first retention run")
        rolled = re.search(r"(\d+) sub-hour candles older than", ingester_log.read_text())
        assert rolled and int(rolled[1]) > 0, "retention rolled no candle up: the test did not reach the rollups"
        history = requests.get(
            f"{run.api}/api/v1/history",
            params={"provider": "demo", "start": format_ts(now - timedelta(days=40)), "end": format_ts(now)},
            timeout=10,
        )
        assert history.status_code == 200, history.text[:500]
        body = history.json()
        coins = {row["symbol"] for row in body["data"]}
        assert len(coins) == 14
        btc = sorted((row for row in body["data"] if row["symbol"] == "BTC"), key=lambda row: row["timestamp"])
        assert len(btc) >= 2
        first_bucket = datetime.fromisoformat(btc[0]["timestamp"].replace("Z", "+00:00"))
        assert first_bucket <= now - timedelta(days=30) + timedelta(hours=2)  # the rolled-up hours are drawn
        # and in the dashboard, as a user opens it on the demo: 30d and all draw the whole past
        board = DashboardProcess(run.api, tmp_path / "dashboard.log").start()
        page = Page(browser, board.url)
        try:
            page.wait(lambda: len(page.plotted()) >= 2, what="the demo's first view")
            shown = sorted(page.plotted())
            for period in ("30d", "all"):
                page.click(period)
                page.wait(lambda: page.price_figures()[0]["x"][1] - page.price_figures()[0]["x"][0] > 29 * DAY_MS,
                          timeout=20, what=f"{period}: a 30-day x-range")  # fmt: skip
                assert_lines_drawn(page, shown, period)
                assert page.page.locator(".cv-banner-unreachable, .cv-banner-unanswered").count() == 0, period
            assert page.errors == []
        finally:
            page.close()
            board.stop()
        assert "Traceback" not in (tmp_path / "dashboard.log").read_text()
        assert "Traceback" not in ingester_log.read_text()
        assert run.stop() == 0
