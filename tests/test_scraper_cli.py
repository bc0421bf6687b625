"""`cryptoviz scrape` as the CronJob and a developer run it: a subprocess configured by env vars."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptoviz.dev.market import CsvReplayFeed, MarketServer
from support.wait import wait_for
from test_scraper_support import UNREACHABLE, stream_quotes

CRYPTOVIZ = str(Path(sys.executable).parent / "cryptoviz")


@pytest.fixture(scope="module")
def feed(market_5m: Path) -> CsvReplayFeed:
    return CsvReplayFeed(market_5m)


@pytest.fixture
def market(feed: CsvReplayFeed):
    feed.position = 500
    with MarketServer(feed) as server:
        yield server


def scrape_env(market: MarketServer, nats_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CMC_", "SCRAPE", "COINGECKO_", "MARKET_"))}
    env.update(
        NATS_URL=nats_url,
        MARKET_BASE_URL=market.url,
        CMC_BASE_URL=market.url,
        COINGECKO_BASE_URL=market.url,
        SCRAPE_BACKOFF="0.05",
        PUBLISH_DEADLINE="3",
        INGESTER_URL=UNREACHABLE,
    )
    env.update(extra)
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CRYPTOVIZ, "scrape", *args], env=env, capture_output=True, text=True, timeout=60)


def test_scrape_once_publishes_and_logs_a_summary(market, nats_server):
    done = run(scrape_env(market, nats_server.url, SCRAPE_PROVIDER="replay"), "--once")
    assert done.returncode == 0, done.stderr
    assert "scrape provider=replay quotes=14 rejected=0 messages=1 published=1 duplicates=0" in done.stderr
    again = run(scrape_env(market, nats_server.url, SCRAPE_PROVIDER="replay", LOG_FORMAT="json"))
    assert again.returncode == 0
    assert '"msg":"scrape provider=replay quotes=14' in again.stderr and "duplicates=1" in again.stderr  # JSON logs
    assert len(stream_quotes(nats_server.url)) == 14


def test_exit_codes(market, nats_server, tmp_path):
    secret = "cmc-secret-0f9e8d7c"
    env = scrape_env(market, nats_server.url, CMC_API_KEY=secret, LOG_LEVEL="DEBUG")
    market.add_fault(kind="cmc_error", code=1009)
    failed = run(env)  # CMC_API_KEY set: coinmarketcap is the default provider
    assert failed.returncode == 1
    assert "coinmarketcap: the plan's daily credits are exhausted (CMC 1009)" in failed.stderr
    assert secret not in failed.stderr + failed.stdout
    assert market.requests[-1].headers["x-cmc_pro_api_key"] == secret

    bad = tmp_path / "scraper.yaml"
    bad.write_text("top_n: 0\n")
    config_error = run(scrape_env(market, nats_server.url, SCRAPER_CONFIG=str(bad)))
    assert config_error.returncode == 2 and "top_n" in config_error.stderr

    nats_server.stop()
    no_nats = run(scrape_env(market, nats_server.url, SCRAPE_PROVIDER="replay", PUBLISH_DEADLINE="1"))
    assert no_nats.returncode == 3 and "not reachable" in no_nats.stderr


def test_loop_scrapes_every_interval_until_sigterm(feed, nats_server):
    feed.position = 500
    with MarketServer(feed, speed=300) as market:  # a new candle every second
        env = scrape_env(market, nats_server.url, SCRAPE_PROVIDER="replay", SCRAPE_INTERVAL="1")
        loop = subprocess.Popen([CRYPTOVIZ, "scrape", "--loop"], env=env, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: len({q.timestamp for q in stream_quotes(nats_server.url)}) >= 3, 30, "three scrapes")
        finally:
            loop.send_signal(signal.SIGTERM)
            _, stderr = loop.communicate(timeout=20)
    assert loop.returncode == 0, stderr
    assert stderr.count("scrape provider=replay quotes=14") >= 3
    times = {q.timestamp for q in stream_quotes(nats_server.url)}
    assert len(times) >= 3
