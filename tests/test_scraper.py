"""The scraper against the real local market server and a real nats-server: parsing, faults, publishing."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptoviz.dev.market import CoinRow, CsvReplayFeed, MarketServer, coin_id
from cryptoviz.scraper.run import EXIT_CONFIG, EXIT_NATS, EXIT_OK, EXIT_PROVIDER, run_loop, run_once
from support.wait import wait_for
from test_scraper_support import BTC_GAP_START, csv_closes, settings_for, stream_quotes

START = 300  # a feed position with 24 h of history behind it, so the 1h/24h changes are known


@pytest.fixture(scope="module")
def feed(market_5m: Path) -> CsvReplayFeed:
    return CsvReplayFeed(market_5m)


@pytest.fixture
def market(feed: CsvReplayFeed):
    feed.position = START
    with MarketServer(feed, cmc_api_key="test-cmc-key") as server:
        yield server


@pytest.fixture(scope="module")
def closes(market_5m: Path):
    return csv_closes(market_5m)


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "scraper.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("provider", ["coinmarketcap", "coingecko", "binance", "kraken", "coinbase", "demo", "replay"])
def test_every_provider_parses_into_the_replayed_prices(provider, market, nats_server, closes):
    result = run_once(settings_for(market.url, nats_server.url, provider=provider))
    assert result.exit_code == EXIT_OK, result.error
    stored = stream_quotes(nats_server.url)
    assert len(stored) == result.quotes >= 11
    now = market.feed.now()
    for quote in stored:
        assert quote.provider == provider
        assert quote.timestamp == now
        assert quote.price == pytest.approx(closes[(quote.symbol, now)], rel=1e-12)
        assert quote.volume_24h is not None and quote.volume_24h >= 0
    by_symbol = {q.symbol: q for q in stored}
    assert by_symbol["BTC"].coin_id == coin_id(provider, "BTC")
    if provider in ("coinmarketcap", "coingecko", "replay"):
        assert by_symbol["BTC"].rank == 1 and by_symbol["BTC"].name == "Bitcoin"
        assert by_symbol["ETH"].percent_change_24h is not None
    if provider == "coinbase":  # one product per call, paced under Coinbase's 10 requests/s
        calls = [r.at for r in market.requests_for("coinbase")]
        assert len(calls) == 2 * len(stored)
        # Paced on the client, so judge the whole run: one late send can shorten a single gap seen here.
        assert calls[-1] - calls[0] >= 0.09 * (len(calls) - 1)


def test_stream_holds_exactly_the_replayed_quotes_and_reruns_add_nothing(market, nats_server, closes):
    market.feed.position = BTC_GAP_START
    settings = settings_for(market.url, nats_server.url, provider="replay")
    seen_times = []
    for _ in range(5):
        result = run_once(settings)
        assert result.exit_code == EXIT_OK, result.error
        seen_times.append(market.feed.now())
        market.advance()
    stored = stream_quotes(nats_server.url)
    expected = {(s, t): p for (s, t), p in closes.items() if t in seen_times}
    assert len(stored) == len(expected) == 5 * 14 - 1  # BTC has a real gap at 2025-01-20 00:00
    assert {(q.symbol, q.timestamp): q.price for q in stored} == expected

    market.feed.position = BTC_GAP_START + 4  # the last tick again: a CronJob that ran twice
    again = run_once(settings)
    assert again.exit_code == EXIT_OK
    assert again.providers[0].duplicates == 1 and again.providers[0].stored == 0
    assert len(stream_quotes(nats_server.url)) == len(expected)


# ---- provider errors (rate limits and redirects: test_scraper_limits.py) ------------------------------


@pytest.mark.parametrize(
    ("code", "words"),
    [(1001, "API key is invalid"), (1002, "missing"), (1009, "daily credits")],  # 1008: test_scraper_limits.py
)
@pytest.mark.parametrize("http_200", [False, True])
def test_cmc_key_and_plan_errors_are_not_retried(code, words, http_200, market, nats_server):
    market.add_fault(kind="cmc_error", code=code, http_200=http_200)
    result = run_once(settings_for(market.url, nats_server.url, provider="coinmarketcap"))
    assert result.exit_code == EXIT_PROVIDER
    assert words in result.error and f"CMC {code}" in result.error
    assert len(market.requests_for("coinmarketcap")) == 1
    assert stream_quotes(nats_server.url) == []


def test_kraken_error_arrays_on_http_200(market, nats_server):
    market.add_fault(kind="kraken_error", message="EAPI:Rate limit exceeded", count=1)
    result = run_once(settings_for(market.url, nats_server.url, provider="kraken"))
    assert result.exit_code == EXIT_OK and len(market.requests_for("kraken")) == 2

    market.add_fault(kind="kraken_error", message="EGeneral:Permission denied")
    result = run_once(settings_for(market.url, nats_server.url, provider="kraken"))
    assert result.exit_code == EXIT_PROVIDER and "EGeneral:Permission denied" in result.error
    assert len(market.requests_for("kraken")) == 3  # not retried


def test_5xx_is_retried_with_backoff_then_given_up(market, nats_server):
    market.add_fault(kind="http_5xx", status=502, count=2)
    result = run_once(settings_for(market.url, nats_server.url, provider="coingecko"))
    assert result.exit_code == EXIT_OK and len(market.requests_for("coingecko")) == 3

    market.add_fault(kind="http_5xx", status=503)
    result = run_once(settings_for(market.url, nats_server.url, provider="coingecko", scrape_retries=2))
    assert result.exit_code == EXIT_PROVIDER and "HTTP 503" in result.error
    assert len(market.requests_for("coingecko")) == 3 + 3


def test_timeouts_and_truncated_json_are_retried(market, nats_server):
    market.add_fault(kind="timeout", delay=1.0, count=1)
    market.add_fault(kind="truncated", count=2)
    result = run_once(settings_for(market.url, nats_server.url, provider="coingecko", scrape_timeout=0.3))
    assert result.exit_code == EXIT_OK, result.error
    assert len(market.requests_for("coingecko")) == 3

    market.add_fault(kind="truncated")
    result = run_once(settings_for(market.url, nats_server.url, provider="coingecko", scrape_retries=1))
    assert result.exit_code == EXIT_PROVIDER and "malformed JSON" in result.error


def test_binance_request_weight_near_the_limit_is_warned_about(market, nats_server, caplog):
    caplog.set_level(logging.WARNING, logger="cryptoviz")
    assert run_once(settings_for(market.url, nats_server.url, provider="binance")).exit_code == EXIT_OK
    assert "request weight" not in caplog.text
    market.add_fault(kind="binance_weight", weight=5200, count=1)
    assert run_once(settings_for(market.url, nats_server.url, provider="binance")).exit_code == EXIT_OK
    assert "binance: request weight 5200 of 6000 per minute used" in caplog.text


# ---- bad records: rejected, counted, the rest kept ------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "reason"), [("nulls", "missing_price"), ("nan", "nonfinite_price"), ("negative", "nonpositive_price")]
)
@pytest.mark.parametrize("provider", ["coinmarketcap", "coingecko"])
def test_bad_prices_are_rejected_and_counted_and_the_rest_published(
    provider, kind, reason, market, nats_server, caplog
):
    market.add_fault(kind=kind, symbols=["BTC", "DOGE"])
    caplog.set_level(logging.INFO, logger="cryptoviz")
    result = run_once(settings_for(market.url, nats_server.url, provider=provider))
    assert result.exit_code == EXIT_OK
    assert result.providers[0].rejected == {reason: 2}
    stored = stream_quotes(nats_server.url)
    assert len(stored) == 12 and not {"BTC", "DOGE"} & {q.symbol for q in stored}
    assert f"rejected={reason}=2" in caplog.text and "quotes=12" in caplog.text


def test_numbers_as_strings_are_accepted(market, nats_server, closes):
    market.add_fault(kind="strings")
    result = run_once(settings_for(market.url, nats_server.url, provider="coinmarketcap"))
    assert result.exit_code == EXIT_OK and result.quotes == 14
    btc = next(q for q in stream_quotes(nats_server.url) if q.symbol == "BTC")
    assert btc.price == closes[("BTC", market.feed.now())]


def test_only_invalid_records_is_a_provider_failure(market, nats_server):
    market.add_fault(kind="negative")
    result = run_once(settings_for(market.url, nats_server.url, provider="coingecko"))
    assert result.exit_code == EXIT_PROVIDER and "no valid quote" in result.error
    assert result.providers[0].rejected == {"nonpositive_price": 14}


class FixedFeed:
    """A feed of given rows at one tick (any object with snapshot/advance/now is a market feed)."""

    def __init__(self, rows: list[CoinRow]) -> None:
        self.rows = rows

    def snapshot(self) -> list[CoinRow]:
        return self.rows

    def advance(self) -> bool:
        return False

    def now(self) -> datetime:
        return self.rows[0].timestamp


def test_a_coinbase_product_that_opened_at_zero_keeps_its_price_without_a_change(nats_server, tmp_path):
    when = datetime(2025, 3, 1, tzinfo=UTC)
    rows = [
        CoinRow("BTC", "Bitcoin", 90000.0, when, volume_24h=1e9, percent_change_24h=float("inf")),  # open "0.0"
        CoinRow("ETH", "Ethereum", 2000.0, when, volume_24h=1e8, percent_change_24h=2.0),
    ]
    config = write_config(tmp_path, "provider: coinbase\ncoins:\n  - symbol: BTC\n  - symbol: ETH\n")
    with MarketServer(FixedFeed(rows)) as market:
        result = run_once(settings_for(market.url, nats_server.url, scraper_config=config))
    assert result.exit_code == EXIT_OK, result.error
    changes = {q.symbol: q.percent_change_24h for q in stream_quotes(nats_server.url)}
    assert changes == {"BTC": None, "ETH": pytest.approx(2.0)}


def test_a_coin_listed_twice_in_one_answer_is_published_once(nats_server):
    when = datetime(2025, 3, 1, tzinfo=UTC)
    btc = CoinRow("BTC", "Bitcoin", 90000.0, when, rank=1)
    eth = CoinRow("ETH", "Ethereum", 2000.0, when, rank=2)
    with MarketServer(FixedFeed([btc, eth, btc])) as market:  # as when ranks shift between pages
        result = run_once(settings_for(market.url, nats_server.url, provider="coinmarketcap"))
    assert result.exit_code == EXIT_OK and result.providers[0].rejected == {"duplicate_in_answer": 1}
    assert sorted(q.symbol for q in stream_quotes(nats_server.url)) == ["BTC", "ETH"]


# ---- symbols and ids ----------------------------------------------------------------------------


def test_duplicate_symbols_are_distinct_coins_in_a_listing(market, nats_server):
    market.add_fault(kind="duplicate_symbols", symbols=["BTC"])
    result = run_once(settings_for(market.url, nats_server.url, provider="coinmarketcap"))
    assert result.exit_code == EXIT_OK
    btcs = sorted((q.coin_id, q.name) for q in stream_quotes(nats_server.url) if q.symbol == "BTC")
    assert btcs == [("1", "Bitcoin"), ("900001", "Bitcoin Classic")]


@pytest.mark.parametrize("provider", ["coinmarketcap", "coingecko"])
def test_an_ambiguous_tracked_symbol_names_the_candidates_unless_an_id_is_pinned(
    provider, market, nats_server, tmp_path
):
    market.add_fault(kind="duplicate_symbols", symbols=["BTC"])
    config = write_config(tmp_path, f"provider: {provider}\ncoins:\n  - symbol: BTC\n  - symbol: ETH\n")
    result = run_once(settings_for(market.url, nats_server.url, scraper_config=config))
    assert result.exit_code == EXIT_CONFIG
    candidates = (
        "1 (Bitcoin), 900001 (Bitcoin Classic)"
        if provider == "coinmarketcap"
        else "bitcoin (Bitcoin), bitcoin-classic (Bitcoin Classic)"
    )
    assert f"symbol BTC matches 2 {provider} coins: {candidates}" in result.error
    assert f"ids.{provider}" in result.error
    assert [q.symbol for q in stream_quotes(nats_server.url)] == ["ETH"]  # the rest is still published

    pinned = "'1'" if provider == "coinmarketcap" else "bitcoin"
    config = write_config(
        tmp_path,
        f"provider: {provider}\ncoins:\n  - symbol: BTC\n    name: Bitcoin (pinned)\n"
        f"    ids: {{{provider}: {pinned}}}\n",
    )
    result = run_once(settings_for(market.url, nats_server.url, scraper_config=config))
    assert result.exit_code == EXIT_OK
    btc = [q for q in stream_quotes(nats_server.url) if q.symbol == "BTC"]
    assert len(btc) == 1 and btc[0].name == "Bitcoin (pinned)" and btc[0].price > 1000


@pytest.mark.parametrize(
    ("provider", "pinned", "coin_id"), [("coinmarketcap", "'1'", "1"), ("coingecko", "bitcoin", "bitcoin")]
)
def test_a_pinned_id_is_quoted_under_the_configured_symbol(provider, pinned, coin_id, market, nats_server, tmp_path):
    """Alerts and the dashboard know a tracked coin by its configured symbol, as with the exchanges."""
    config = write_config(
        tmp_path, f"provider: {provider}\ncoins:\n  - symbol: XBT\n    ids: {{{provider}: {pinned}}}\n"
    )
    assert run_once(settings_for(market.url, nats_server.url, scraper_config=config)).exit_code == EXIT_OK
    assert [(q.symbol, q.coin_id, q.name) for q in stream_quotes(nats_server.url)] == [("XBT", coin_id, "Bitcoin")]


def test_cmc_ids_and_symbols_it_does_not_know_are_reported_missing_and_the_rest_published(
    market, nats_server, tmp_path
):
    """CMC fails a whole quotes request for one unknown id or symbol unless skip_invalid=true."""
    config = write_config(
        tmp_path,
        "provider: coinmarketcap\ncoins:\n  - {symbol: BTC, ids: {coinmarketcap: '1'}}\n"
        "  - {symbol: FOO, ids: {coinmarketcap: '999999'}}\n  - symbol: ETH\n  - symbol: ZZZ\n",
    )
    result = run_once(settings_for(market.url, nats_server.url, scraper_config=config))
    assert result.exit_code == EXIT_OK, result.error
    assert result.providers[0].missing == ["FOO", "ZZZ"]
    assert sorted(q.symbol for q in stream_quotes(nats_server.url)) == ["BTC", "ETH"]


@pytest.mark.parametrize(("provider", "bad_pair"), [("kraken", "FOOUSD"), ("binance", "FOOUSDT")])
def test_an_unknown_exchange_pair_is_named_and_the_known_pairs_still_published(
    provider, bad_pair, market, nats_server, tmp_path
):
    """Kraken and Binance refuse a whole multi-pair request for one unknown pair; only then ask pair by pair."""
    config = write_config(
        tmp_path, f"provider: {provider}\ncoins:\n  - symbol: BTC\n  - symbol: FOO\n  - symbol: ETH\n"
    )
    result = run_once(settings_for(market.url, nats_server.url, scraper_config=config))
    assert result.exit_code == EXIT_CONFIG
    assert f"{provider} does not know the pair {bad_pair} (for FOO); set coins[].ids.{provider}" in result.error
    assert sorted(q.symbol for q in stream_quotes(nats_server.url)) == ["BTC", "ETH"]
    assert len(market.requests_for(provider)) == 1 + 3  # all together, then each alone
    if provider == "kraken":  # paced at Kraken's public rate of about one call per second
        calls = [r.at for r in market.requests_for("kraken")]
        assert min(b - a for a, b in itertools.pairwise(calls)) >= 0.95

    config = write_config(tmp_path, f"provider: {provider}\ncoins:\n  - symbol: BTC\n  - symbol: ETH\n")
    assert run_once(settings_for(market.url, nats_server.url, scraper_config=config)).exit_code == EXIT_OK
    assert len(market.requests_for(provider)) == 4 + 1  # known pairs: one call, as before


def test_config_sends_coins_to_their_providers(market, nats_server, tmp_path):
    config = write_config(
        tmp_path,
        "provider: coingecko\ncoins:\n  - symbol: BTC\n    providers: [coingecko, kraken]\n"
        "  - symbol: DOGE\n    providers: [binance]\n  - symbol: ETH\n",
    )
    result = run_once(settings_for(market.url, nats_server.url, scraper_config=config))
    assert result.exit_code == EXIT_OK, result.error
    got = Counter((q.provider, q.symbol, q.coin_id) for q in stream_quotes(nats_server.url))
    assert got == Counter(
        {
            ("coingecko", "BTC", "bitcoin"): 1,
            ("coingecko", "ETH", "ethereum"): 1,
            ("kraken", "BTC", "XXBTZUSD"): 1,
            ("binance", "DOGE", "DOGEUSDT"): 1,
        }
    )


@pytest.mark.parametrize(("provider", "calls"), [("coinmarketcap", 1), ("coingecko", 20)])
def test_a_5000_coin_listing_is_published_in_chunks(provider, calls, market, nats_server, tmp_path):
    market.add_fault(kind="listing_5000")
    config = write_config(tmp_path, "top_n: 5000\n")
    result = run_once(settings_for(market.url, nats_server.url, provider=provider, scraper_config=config))
    assert result.exit_code == EXIT_OK
    assert result.providers[0].quotes == 5000 and result.providers[0].messages == 10
    assert len({q.coin_id for q in stream_quotes(nats_server.url)}) == 5000
    assert len(market.requests_for(provider)) == calls  # CoinGecko: 250 per page


def test_invalid_config_and_missing_key_are_config_errors(market, nats_server, tmp_path):
    config = write_config(tmp_path, "coins:\n  - symbol: btc\n")
    result = run_once(settings_for(market.url, nats_server.url, scraper_config=config))
    assert result.exit_code == EXIT_CONFIG and "coins.0.symbol" in result.error
    result = run_once(settings_for(market.url, nats_server.url, provider="coinmarketcap", cmc_api_key=None))
    assert result.exit_code == EXIT_CONFIG and "CMC_API_KEY" in result.error
    assert market.requests == []


def test_the_cmc_key_is_sent_as_a_header_and_never_shown(market, nats_server, tmp_path, caplog, capsys):
    secret = "sk-live-5e3c7a1d9f"
    market.wires["coinmarketcap"].api_key = secret
    caplog.set_level(logging.DEBUG)
    key_file = tmp_path / "cmc-key"
    key_file.write_text(secret + "\n")
    settings = settings_for(
        market.url, nats_server.url, provider="coinmarketcap", cmc_api_key=None, cmc_api_key_file=str(key_file)
    )
    assert run_once(settings).exit_code == EXIT_OK
    assert market.requests[-1].headers["x-cmc_pro_api_key"] == secret
    assert not any(secret in repr(r.query) + r.path for r in market.requests)  # a header, never in the URL

    market.add_fault(kind="cmc_error", code=1001)
    market.add_fault(kind="http_5xx", provider="coinmarketcap", count=1)
    result = run_once(settings)
    assert result.exit_code == EXIT_PROVIDER
    out = capsys.readouterr()
    for text in (caplog.text, out.out, out.err, result.error, repr(settings), repr(result)):
        assert secret not in text


def test_the_coingecko_demo_key_is_sent_as_a_header_and_never_shown(market, nats_server, caplog, capsys):
    secret = "CG-demo-8b1f0c2e7d"
    caplog.set_level(logging.DEBUG)  # urllib3 logs each URL at DEBUG
    market.add_fault(kind="http_5xx", count=1)
    settings = settings_for(market.url, nats_server.url, provider="coingecko", coingecko_api_key=secret)
    assert run_once(settings).exit_code == EXIT_OK
    assert [r.headers.get("x-cg-demo-api-key") for r in market.requests] == [secret, secret]
    assert "GET /api/v3/coins/markets" in caplog.text
    out = capsys.readouterr()
    for text in (caplog.text, out.out, out.err, repr(settings)):
        assert secret not in text


@pytest.mark.parametrize("key", ["sk-live-part1\nsk-live-part2", "sk-live-\u20ac-9d"])
def test_a_key_unfit_for_a_header_is_refused_without_being_shown(key, market, nats_server, caplog):
    """HTTP libraries quote a bad header value in their errors (where redaction cannot recognise it)."""
    caplog.set_level(logging.DEBUG)
    settings = settings_for(market.url, nats_server.url, provider="coinmarketcap", cmc_api_key=key)
    result = run_once(settings)
    assert result.exit_code == EXIT_CONFIG and "CMC_API_KEY contains whitespace, control or non-ASCII" in result.error
    for part in key.split("\n"):
        assert part not in result.error + caplog.text
    assert market.requests == []


# ---- NATS ---------------------------------------------------------------------------------------


def test_nats_unreachable_exits_3_without_spending_provider_calls(market, nats_server):
    nats_server.stop()
    started = time.monotonic()
    result = run_once(settings_for(market.url, nats_server.url, provider="coingecko", publish_deadline=1.5))
    assert result.exit_code == EXIT_NATS and "not reachable" in result.error
    assert time.monotonic() - started < 6
    assert market.requests == []


def _stop_nats_while_fetching(market: MarketServer, nats_server, settings, restart_after: float | None):
    """Start a scrape whose provider answer is slow, and stop NATS while it waits for it."""
    market.add_fault(kind="timeout", delay=1.5, count=1)
    results = []
    worker = threading.Thread(target=lambda: results.append(run_once(settings)))
    worker.start()
    while not market.requests:
        time.sleep(0.02)
    nats_server.stop()
    if restart_after is not None:
        time.sleep(restart_after)
        nats_server.start()
    worker.join(timeout=30)
    return results[0]


def test_nats_stopped_during_a_scrape_exits_3_and_a_rerun_stores_each_quote_once(market, nats_server):
    settings = settings_for(market.url, nats_server.url, provider="coingecko", publish_deadline=2, scrape_timeout=5)
    result = _stop_nats_while_fetching(market, nats_server, settings, restart_after=None)
    assert result.exit_code == EXIT_NATS and "PUBLISH_DEADLINE=2s" in result.error
    nats_server.start()
    assert run_once(settings).exit_code == EXIT_OK
    assert run_once(settings).providers[0].duplicates == 1
    stored = stream_quotes(nats_server.url)
    assert len(stored) == 14 and len({q.identity for q in stored}) == 14


def test_nats_back_within_the_deadline_loses_nothing(market, nats_server):
    settings = settings_for(market.url, nats_server.url, provider="coingecko", publish_deadline=20, scrape_timeout=5)
    result = _stop_nats_while_fetching(market, nats_server, settings, restart_after=2.5)
    assert result.exit_code == EXIT_OK, result.error
    stored = stream_quotes(nats_server.url)
    assert len(stored) == 14 and len({q.identity for q in stored}) == 14


async def test_the_loop_rides_out_a_nats_outage(market, nats_server):
    """`run_loop` (what `cryptoviz dev` reuses): scrapes go on failing while NATS is away, then resume."""
    settings = settings_for(market.url, nats_server.url, provider="replay", scrape_interval=1, publish_deadline=0.5)
    stop = asyncio.Event()
    loop_task = asyncio.create_task(run_loop(settings, stop))
    await asyncio.to_thread(wait_for, lambda: len(stream_quotes(nats_server.url)) >= 14, 30, "the first scrape")
    nats_server.stop()
    market.advance()
    await asyncio.to_thread(wait_for, lambda: len(market.requests) >= 3, 30, "scrapes during the outage")
    nats_server.start()
    await asyncio.to_thread(wait_for, lambda: len(stream_quotes(nats_server.url)) >= 28, 30, "the scrape after it")
    stop.set()
    await asyncio.wait_for(loop_task, timeout=10)
    stored = await asyncio.to_thread(stream_quotes, nats_server.url)
    assert {q.timestamp for q in stored} == {market.feed.ticks[START], market.feed.ticks[START + 1]}
    assert len(stored) == 28


async def test_the_loop_keeps_quotes_nats_did_not_take_and_publishes_them_once_it_is_back(market, nats_server):
    """A scrape fetched, then NATS went away: its quotes go out with the first scrape after the outage."""
    settings = settings_for(market.url, nats_server.url, provider="replay", scrape_interval=1, publish_deadline=0.5)
    market.add_fault(kind="timeout", delay=0.8, count=1)  # the answer (tick START) comes 0.8 s after the request
    stop = asyncio.Event()
    loop_task = asyncio.create_task(run_loop(settings, stop))
    while not market.requests:
        await asyncio.sleep(0.02)
    asked = time.monotonic()
    await asyncio.to_thread(nats_server.stop)  # while the first scrape waits for its answer
    await asyncio.sleep(asked + 1.5 - time.monotonic())
    market.advance()  # the market moves on during the outage: tick START is never served again
    await asyncio.sleep(asked + 2.5 - time.monotonic())
    await asyncio.to_thread(nats_server.start)
    both = {market.feed.ticks[START], market.feed.ticks[START + 1]}
    await asyncio.to_thread(
        wait_for, lambda: {q.timestamp for q in stream_quotes(nats_server.url)} >= both, 20, "both scrapes' quotes"
    )
    stop.set()
    await asyncio.wait_for(loop_task, timeout=10)
    stored = await asyncio.to_thread(stream_quotes, nats_server.url)
    assert {q.timestamp for q in stored} == {market.feed.ticks[START], market.feed.ticks[START + 1]}
    assert len(stored) == len({q.identity for q in stored}) == 28
