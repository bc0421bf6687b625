"""Rate limits and redirects against the real local market and a real nats-server; waits go through a fake sleep.

No test here sleeps: `run_once(..., sleep=waits)` records every wait the HTTP layer asks for instead.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from cryptoviz.dev.market import CsvReplayFeed, MarketServer
from cryptoviz.scraper.http import parse_retry_after, same_host
from cryptoviz.scraper.providers import live_specs, spec
from cryptoviz.scraper.run import EXIT_OK, EXIT_PROVIDER, ProviderResult, Settings, run_once
from test_scraper_support import settings_for, stream_quotes

LIVE = [unit.name for unit in live_specs()]
KEYED = {unit.name: unit.key.header.lower() for unit in live_specs() if unit.key}
KEYS = {name: f"secret-{name}-key-7f3a" for name in KEYED}


class Waits(list[float]):
    """A `sleep` that sleeps not at all and remembers what it was asked to wait."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture(scope="module")
def feed(market_5m: Path) -> CsvReplayFeed:
    return CsvReplayFeed(market_5m)


@pytest.fixture
def market(feed: CsvReplayFeed):
    feed.position = 300
    with MarketServer(feed, cmc_api_key=KEYS["coinmarketcap"]) as server:
        yield server


def keyed_settings(market: MarketServer, nats_url: str, provider: str, **overrides):
    """Every provider's key set; SCRAPE_MAX_RETRY_AFTER at its default (the fake sleep makes waiting free)."""
    keys = {spec(name).key.env.lower(): key for name, key in KEYS.items()}
    fields = {"scrape_max_retry_after": Settings.model_fields["scrape_max_retry_after"].default, **keys, **overrides}
    return settings_for(market.url, nats_url, provider=provider, **fields)


def rate_limit_waits(waits: Waits, provider: str) -> list[float]:
    """The waits that were not the provider's own pacing (Coinbase 0.1 s between calls, Kraken 1 s)."""
    return [w for w in waits if w > spec(provider).min_interval + 0.01]


# ---- redirects -------------------------------------------------------------------------------------


def test_the_registry_declares_the_key_headers_tested_here():
    assert KEYED == {"coinmarketcap": "x-cmc_pro_api_key", "coingecko": "x-cg-demo-api-key"}


@pytest.mark.parametrize("status", [301, 302, 307])
@pytest.mark.parametrize("provider", LIVE)
def test_a_redirect_to_another_host_is_refused_and_the_key_never_reaches_it(provider, status, market, nats_server):
    port = market.url.rsplit(":", 1)[1]
    other = f"localhost:{port}"  # the same server by another host name: whatever reaches it is recorded
    market.add_fault(kind="redirect", provider=provider, status=status, location=f"http://{other}")
    result = run_once(keyed_settings(market, nats_server.url, provider))
    assert result.exit_code == EXIT_PROVIDER
    assert f"{provider}: refused a redirect (HTTP {status}) from 127.0.0.1:{port} to {other}" in result.error
    assert not any(key in result.error for key in KEYS.values())
    seen = [r for r in market.requests if r.headers.get("host") == other]
    assert seen == []  # not one request, so no key header either
    assert all(r.headers.get("host") == f"127.0.0.1:{port}" for r in market.requests)
    if provider in KEYED:  # the key went to the configured host only
        assert market.requests[0].headers[KEYED[provider]] == KEYS[provider]
    assert stream_quotes(nats_server.url) == []


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("provider", ["coinmarketcap", "coingecko", "binance"])
@pytest.mark.parametrize("relative", [False, True])
def test_a_redirect_within_the_same_host_is_followed(provider, status, relative, market, nats_server):
    market.add_fault(
        kind="redirect", provider=provider, status=status, count=1, location="" if relative else market.url
    )
    result = run_once(keyed_settings(market, nats_server.url, provider))
    assert result.exit_code == EXIT_OK, result.error
    first, second = market.requests_for(provider)[:2]
    assert (second.path, second.query) == (first.path, first.query)
    if provider in KEYED:
        assert second.headers[KEYED[provider]] == KEYS[provider]
    assert len(stream_quotes(nats_server.url)) == result.quotes > 0


def test_endless_same_host_redirects_end_with_a_clear_error(market, nats_server):
    market.add_fault(kind="redirect", provider="binance", status=302, location=market.url)
    result = run_once(keyed_settings(market, nats_server.url, "binance"))
    assert result.exit_code == EXIT_PROVIDER and "binance: more than 5 redirects" in result.error


@pytest.mark.parametrize(
    ("source", "target", "same"),
    [
        ("http://127.0.0.1:8000/a", "http://127.0.0.1:8000/b?x=1", True),
        ("https://api.example.com/a", "https://API.example.com:443/b", True),
        ("http://api.example.com/a", "https://api.example.com/a", True),  # an upgrade on the default ports
        ("https://api.example.com/a", "http://api.example.com/a", False),  # a downgrade: the key in clear
        ("http://127.0.0.1:8000/a", "http://localhost:8000/a", False),
        ("http://127.0.0.1:8000/a", "http://127.0.0.1:8001/a", False),
        ("https://api.example.com/a", "https://api.example.com.evil.test/a", False),
        ("https://api.example.com/a", "https://user@evil.test/a", False),
    ],
)
def test_same_host(source, target, same):
    assert same_host(source, target) is same


# ---- rate limits --------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["seconds", "http-date"])
@pytest.mark.parametrize(("provider", "kind"), [*((p, "http_429") for p in LIVE), ("binance", "binance_418")])
def test_a_429_with_retry_after_is_waited_out_and_retried_for_every_provider(provider, kind, form, market, nats_server):
    market.add_fault(kind=kind, provider=provider, count=1, retry_after=42, retry_after_date=form == "http-date")
    waits = Waits()
    result = run_once(keyed_settings(market, nats_server.url, provider), sleep=waits)
    assert result.exit_code == EXIT_OK, result.error
    assert rate_limit_waits(waits, provider) == [42.0]
    calls = market.requests_for(provider)[:2]
    assert [c.path for c in calls] == [calls[0].path] * 2
    outcome = result.providers[0]
    assert (outcome.rate_limited, outcome.rate_limit_wait) == (1, 42.0)
    assert "rate_limited=1 rate_limit_wait=42.0s" in outcome.summary()
    assert len(stream_quotes(nats_server.url)) == result.quotes > 0


@pytest.mark.parametrize("provider", LIVE)
def test_a_retry_after_over_the_cap_fails_that_provider_with_a_clear_message(provider, market, nats_server):
    market.add_fault(kind="http_429", provider=provider, retry_after=600)
    waits = Waits()
    settings = keyed_settings(market, nats_server.url, provider, scrape_max_retry_after=60)
    result = run_once(settings, sleep=waits)
    assert result.exit_code == EXIT_PROVIDER
    assert result.error.startswith(f"{provider}: rate limited (")  # HTTP 429, or the provider's own words
    assert "Retry-After 600s exceeds SCRAPE_MAX_RETRY_AFTER=60s, giving up until the next run" in result.error
    assert rate_limit_waits(waits, provider) == [] and len(market.requests_for(provider)) == 1
    assert result.providers[0].rate_limited == 1 and "rate_limited=1" in result.providers[0].summary()


@pytest.mark.parametrize(
    ("fault", "wait"),
    [
        ({"retry_after": 17}, 17.0),  # HTTP 429, Retry-After in seconds
        ({"retry_after": 17, "retry_after_date": True}, 17.0),  # as an HTTP date
        ({"retry_after": None}, 60.0),  # no Retry-After: CMC's limits reset every minute
        ({"http_200": True}, 60.0),  # the body alone says 1008
    ],
)
def test_cmc_minute_limit_1008_is_waited_out_and_retried(fault, wait, market, nats_server):
    market.add_fault(kind="cmc_error", code=1008, count=1, **fault)
    waits = Waits()
    result = run_once(keyed_settings(market, nats_server.url, "coinmarketcap"), sleep=waits)
    assert result.exit_code == EXIT_OK, result.error
    assert waits == [wait]
    assert len(market.requests_for("coinmarketcap")) == 2
    assert result.providers[0].rate_limited == 1
    assert len(stream_quotes(nats_server.url)) == result.quotes > 0


def test_cmc_1008_without_retry_after_over_the_cap_says_why(market, nats_server):
    market.add_fault(kind="cmc_error", code=1008, retry_after=None)
    waits = Waits()
    result = run_once(keyed_settings(market, nats_server.url, "coinmarketcap", scrape_max_retry_after=30), sleep=waits)
    assert result.exit_code == EXIT_PROVIDER and waits == []
    assert "per-minute rate limit is reached (CMC 1008) without Retry-After" in result.error
    assert "exceeds SCRAPE_MAX_RETRY_AFTER=30s" in result.error


@pytest.mark.parametrize(("code", "words"), [(1009, "daily credits"), (1010, "monthly credits")])
@pytest.mark.parametrize("http_200", [False, True])
def test_cmc_daily_and_monthly_limits_are_not_retried(code, words, http_200, market, nats_server):
    market.add_fault(kind="cmc_error", code=code, http_200=http_200, retry_after=5)
    waits = Waits()
    result = run_once(keyed_settings(market, nats_server.url, "coinmarketcap"), sleep=waits)
    assert result.exit_code == EXIT_PROVIDER and waits == []
    assert f"coinmarketcap: the plan's {words} are exhausted (CMC {code}); not retried" in result.error
    assert len(market.requests_for("coinmarketcap")) == 1
    assert result.providers[0].rate_limited == 1
    assert stream_quotes(nats_server.url) == []


def test_coingecko_429_body_on_http_200_is_retried_after_a_backoff(market, nats_server):
    """CoinGecko's 429 body with HTTP 200 comes without Retry-After: the plain backoff then."""
    market.add_fault(kind="coingecko_429_200", count=1)
    waits = Waits()
    result = run_once(keyed_settings(market, nats_server.url, "coingecko", scrape_backoff=2), sleep=waits)
    assert result.exit_code == EXIT_OK, result.error
    assert len(waits) == 1 and 1.0 <= waits[0] <= 3.0  # the backoff with jitter
    assert result.providers[0].rate_limited == 1


def test_the_summary_shows_no_rate_limit_when_there_was_none():
    assert "rate_limited" not in ProviderResult("binance", quotes=3).summary()


def test_parse_retry_after():
    date = datetime(2025, 1, 20, 12, 0, tzinfo=UTC)
    http = format_datetime(date, usegmt=True)
    later = format_datetime(date + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after("120") == 120.0 and parse_retry_after("1.5") == 1.5 and parse_retry_after("-3") == 0.0
    assert parse_retry_after(later, date=http) == 90.0  # measured on the provider's own clock
    assert parse_retry_after(later, now=date.timestamp() + 30) == 60.0  # no Date: this machine's clock
    assert parse_retry_after(http, date=later) == 0.0  # already past
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
