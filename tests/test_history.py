"""Provider history → candles, fast: the pure decisions, and each adapter paging the local market's history
endpoints (an in-process MarketServer over the shared 5-minute and daily data; no NATS, no ingester)."""

from __future__ import annotations

import csv
import itertools
import math
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from conftest import SHARED_DIR
from cryptoviz.core.candle import make_candle
from cryptoviz.dev.market import CsvReplayFeed, MarketServer, coin_id
from cryptoviz.scraper.history import Segment, Span, accept, fetch_history, missing_ranges, plan_segments
from cryptoviz.scraper.http import ProviderError
from cryptoviz.scraper.providers import spec
from cryptoviz.scraper.providers.base import HistoryUnavailable, Offer, Target
from cryptoviz.scraper.providers.coingecko import CoinGecko, _halves_to_hours
from cryptoviz.scraper.providers.kraken import Kraken
from cryptoviz.scraper.run import adapter_for
from test_scraper_support import settings_for

MARKET_1D = SHARED_DIR / "data" / "market" / "1d"
END = datetime(2025, 2, 10, 23, 55, tzinfo=UTC)
"""The last tick of the 5-minute data: the replay's now."""
H, D = timedelta(hours=1), timedelta(days=1)


# ---- pure decisions -----------------------------------------------------------------------------


def test_each_part_of_a_range_gets_the_finest_interval_that_reaches_it():
    now = END
    segments, unreached = plan_segments(now - 30 * D, now, now, Kraken.history_offers)
    assert [(s.interval, s.end - s.start) for s in segments][-1][0] == 300
    assert [s.interval for s in segments] == [14_400, 3600, 900, 300]  # oldest part first; hourly reach 29.9 days
    assert segments[-1].start >= now - timedelta(minutes=5 * 718) and unreached is None
    assert all(a.end >= b.start for a, b in itertools.pairwise(segments))  # no part left out between two

    segments, unreached = plan_segments(now - 400 * D, now, now, CoinGecko.history_offers)
    assert [s.interval for s in segments] == [86_400, 14_400, 3600]
    assert unreached == Span(now - 400 * D, now - 365 * D)  # keyless CoinGecko keeps a year

    segments, unreached = plan_segments(now - 30 * D, now, now, (Offer(300),))
    assert segments == [Segment(300, now - 30 * D, now)] and unreached is None


def test_missing_ranges_are_before_the_first_between_gaps_and_after_the_last():
    since, now = END - 10 * D, END
    assert missing_ranges(None, None, (), since, now, 900) == [Span(since, now)]
    first, last = END - 8 * D, END - 2 * H
    gaps = [Span(END - 5 * D, END - 5 * D + 2 * H), Span(END - 4 * D, END - 4 * D + timedelta(minutes=10))]
    assert missing_ranges(first, last, gaps, since, now, 900) == [Span(since, first), gaps[0], Span(last, now)]
    # A scrape's gap filling wants only the holes: not the past before the first time, nor a series never stored.
    assert missing_ranges(first, last, gaps, since, now, 900, past=False) == [gaps[0], Span(last, now)]
    assert missing_ranges(None, None, (), since, now, 900, past=False) == []
    # A scraper that ran every five minutes has nothing missing; an old gap outside the window is clipped.
    assert missing_ranges(since - D, now - timedelta(minutes=5), [Span(since - 2 * D, since + H)], since, now, 900) == [
        Span(since, since + H)
    ]


def candle(minutes: int, close: float = 100.0, interval: int = 300):
    open_time = END - timedelta(days=1) + timedelta(minutes=minutes)
    return make_candle(
        provider="binance", coin_id="BTCUSDT", symbol="BTC", name="Bitcoin", interval=interval,
        open_time=open_time, open=100, high=max(100, close), low=min(100, close), close=close, received_at=END + D,
    )  # fmt: skip


def test_accept_counts_repeats_disorder_and_future_and_drops_the_candle_in_progress():
    segment = Segment(300, END - D, END)
    rejected: Counter[str] = Counter()
    page = [candle(0), candle(10), candle(5), candle(5), candle(24 * 60), candle(24 * 60 + 60)]
    kept = accept(page, segment, END, set(), rejected)
    assert [c.open_time for c in kept] == [candle(m).open_time for m in (0, 10, 5)]
    assert rejected == {"out_of_order": 1, "duplicate_candle": 1, "future_candle": 1}  # 23:55 is in progress


def test_thirty_minute_halves_become_hours_and_a_lone_half_is_left_out():
    hour = 1_739_228_400_000  # 2025-02-10 23:00 UTC, in ms
    rows = [[hour + 1_800_000, 1, 3, 1, 2], [hour + 3_600_000, 2, 4, 0.5, 3], [hour + 5_400_000, 3, 3, 3, 3]]
    assert _halves_to_hours(rows) == [[hour + 3_600_000, 1, 4, 0.5, 3]]


# ---- adapters against the local market ----------------------------------------------------------


def csv_times(symbol: str, start: datetime, end: datetime) -> list[datetime]:
    with (SHARED_DIR / "data" / "market" / "5m" / f"{symbol}-USD_5m.csv").open() as handle:
        times = [datetime.fromisoformat(r["Date"]).astimezone(UTC) for r in csv.DictReader(handle)]
    return [t for t in times if start <= t < end]


def buckets(times: list[datetime], interval: int, end: datetime) -> set[int]:
    """Candle opens of `interval` made from these 5-minute times, complete by `end`."""
    opens = {int(t.timestamp()) // interval * interval for t in times}
    return {o for o in opens if o + interval <= end.timestamp()}


@pytest.fixture(scope="module")
def feed(market_5m: Path) -> CsvReplayFeed:
    return CsvReplayFeed(market_5m, daily=MARKET_1D)


@pytest.fixture
def market(feed: CsvReplayFeed):
    feed.position = len(feed.ticks) - 1
    with MarketServer(feed, cmc_api_key="test-cmc-key", cmc_paid=True) as server:
        yield server


def history(market: MarketServer, label: str, span: Span, symbol: str = "BTC", sleep=time.sleep, **settings):
    settings.setdefault("provider", label)
    settings = settings_for(market.url, "nats://127.0.0.1:9", **settings)
    adapter = adapter_for(label, settings, requests.Session(), sleep=sleep)
    target = Target(coin_id(label, symbol), symbol, symbol)
    return fetch_history(adapter, target, [span], END, spec(label).history.per_call)


@pytest.mark.parametrize(("provider", "calls"), [("binance", 2), ("coinbase", 5), ("replay", 1)])
def test_five_minute_history_is_paged_under_the_providers_limit_with_exact_counts(market, provider, calls):
    span = Span(END - 5 * D, END)
    got = history(market, provider, span)
    expected = [t for t in csv_times("BTC", span.start, span.end) if t + timedelta(minutes=5) <= END]
    assert [c.open_time for c in got.candles] == expected  # the real gaps of the data stay gaps
    assert {c.interval for c in got.candles} == {300} and not got.rejected and got.error is None
    assert got.pages == calls
    wire_path = {"binance": "/klines", "coinbase": "/candles", "replay": "/ohlc"}[provider]
    limit = {"binance": 1000, "coinbase": 300, "replay": math.inf}[provider]
    asked = market.requests_for("coingecko" if provider == "replay" else provider, wire_path)
    assert len(asked) == calls
    if provider == "coinbase":  # paced under Coinbase's 10 public requests a second
        assert all(b.at - a.at >= 0.09 for a, b in itertools.pairwise(asked))
    sizes = [len(requests.get(market.url + r.path, params=r.query).json()) for r in asked]
    assert max(sizes) <= limit
    first = got.candles[0]
    row = next(
        r
        for r in csv.DictReader((SHARED_DIR / "data/market/5m/BTC-USD_5m.csv").open())
        if r["Date"].startswith("2025-02-05 23:55")
    )
    assert first.open_time == datetime(2025, 2, 5, 23, 55, tzinfo=UTC)
    assert (first.open, first.high, first.low, first.close) == pytest.approx(
        (float(row["Open"]), float(row["High"]), float(row["Low"]), float(row["Close"]))
    )


def test_kraken_takes_what_its_720_entries_reach_at_each_interval(market):
    span = Span(END - 20 * D, END)
    got = history(market, "kraken", span)
    by_interval: dict[int, set[int]] = {}
    for c in got.candles:
        by_interval.setdefault(c.interval, set()).add(int(c.open_time.timestamp()))
    assert set(by_interval) == {300, 900, 3600}
    assert len(by_interval[300]) <= 718 and got.pages == 3 and not got.rejected
    segments, _ = plan_segments(span.start, span.end, END, Kraken.history_offers)
    for segment in segments:
        assert by_interval[segment.interval] == buckets(
            csv_times("BTC", segment.start, segment.end), segment.interval, END
        )
    asked = market.requests_for("kraken", "/OHLC")
    assert [r.query["interval"] for r in asked] == ["60", "15", "5"]
    assert all(b.at - a.at >= 0.95 for a, b in itertools.pairwise(asked))  # Kraken's public rate: one call a second


def test_kraken_errors_in_the_error_array_fail_the_coin_with_their_text(market):
    market.add_fault(kind="kraken_error", provider="kraken", path="/OHLC", message="EGeneral:Invalid arguments")
    got = history(market, "kraken", Span(END - D, END))
    assert got.candles == [] and "EGeneral:Invalid arguments" in got.error


def test_coingecko_serves_hours_for_the_last_day_and_four_hours_before(market):
    got = history(market, "coingecko", Span(END - 10 * D, END))
    intervals = Counter(c.interval for c in got.candles)
    assert set(intervals) == {3600, 14_400} and not got.rejected, got.rejected
    hours = {int(c.open_time.timestamp()) for c in got.candles if c.interval == 3600}
    halves = {int(t.timestamp()) // 1800 for t in csv_times("BTC", END - D, END)}
    both = {h * 1800 for h in halves if h % 2 == 0 and h + 1 in halves and (h + 2) * 1800 <= END.timestamp()}
    assert hours == {h for h in both if h >= (END - D).timestamp()}


def test_coingecko_daily_candles_are_sampled_from_hourly_prices(market):
    """Beyond 30 days CoinGecko has no usable OHLC: market_chart/range's hourly prices make the days."""
    span = Span(datetime(2025, 1, 13, tzinfo=UTC), datetime(2025, 1, 20, tzinfo=UTC))
    adapter = adapter_for("coingecko", settings_for(market.url, "nats://127.0.0.1:9"), requests.Session())
    page = adapter.history_page(Target("bitcoin", "BTC", "Bitcoin"), 86_400, span.start, span.end)
    assert page.next is None and not page.rejected
    assert [c.open_time for c in page.candles] == [span.start + i * D for i in range(7)]
    series = market.feed.series["BTC"]
    for day in page.candles:
        hourly = [
            series.closes[series.index[t]]
            for t in series.times
            if day.open_time <= t < day.close_time and t.minute == 55
        ]
        assert (day.open, day.high, day.low, day.close) == (hourly[0], max(hourly), min(hourly), hourly[-1])


def test_coinmarketcap_history_on_a_free_key_is_said_plainly(feed):
    with MarketServer(feed, cmc_api_key="test-cmc-key") as free, pytest.raises(HistoryUnavailable) as info:
        history(free, "coinmarketcap", Span(END - D, END))
    assert "needs a paid plan" in str(info.value) and "1006" in str(info.value)


def test_coinmarketcap_paid_history_is_hourly(market):
    got = history(market, "coinmarketcap", Span(END - 3 * D, END))
    assert {c.interval for c in got.candles} == {3600} and not got.rejected
    assert {int(c.open_time.timestamp()) for c in got.candles} == buckets(csv_times("BTC", END - 3 * D, END), 3600, END)


# ---- bad input ----------------------------------------------------------------------------------


def test_a_cursor_that_does_not_advance_stops_the_range_instead_of_looping(market):
    market.add_fault(kind="stuck_cursor", provider="binance")
    got = history(market, "binance", Span(END - 10 * D, END))
    assert got.rejected["stuck_cursor"] == 1 and got.pages == 2
    assert len(got.candles) == 1000  # what the first page had, once
    assert len(market.requests_for("binance", "/klines")) == 2


def test_bad_values_disorder_and_future_candles_are_counted_and_the_rest_kept(market):
    market.add_fault(kind="nan", provider="coinbase", path="/candles", symbols=["BTC"], count=1)
    market.add_fault(kind="shuffled", provider="binance", count=1)
    market.add_fault(kind="future_candles", provider="binance", count=1)
    span = Span(END - 2 * D, END)
    expected = len([t for t in csv_times("BTC", span.start, span.end) if t + timedelta(minutes=5) <= END])
    got = history(market, "binance", span)
    assert len(got.candles) == expected
    assert got.rejected["out_of_order"] > 0 and got.rejected["duplicate_candle"] == 1
    assert got.rejected["future_candle"] == 3
    nan = history(market, "coinbase", span)
    assert nan.rejected["nonfinite_close"] == 300 and len(nan.candles) == expected - 300


@pytest.mark.parametrize(
    ("fault", "message"),
    [({"kind": "html", "status": 200}, "an HTML page instead of JSON"), ({"kind": "truncated"}, "malformed JSON")],
)
def test_html_pages_and_truncated_json_are_retried_then_end_the_provider_for_this_run(market, fault, message):
    market.add_fault(provider="coinbase", path="/candles", count=1, **fault)
    assert len(history(market, "coinbase", Span(END - D, END), scrape_retries=1).candles) == 288
    market.add_fault(provider="coinbase", path="/candles", **fault)
    with pytest.raises(ProviderError, match=message):
        history(market, "coinbase", Span(END - D, END), scrape_retries=1)
    assert len(market.requests_for("coinbase", "/candles")) == 2 + 2  # once retried each time


def test_rate_limited_history_waits_for_retry_after(market):
    market.add_fault(kind="http_429", provider="binance", path="/klines", count=1, retry_after=4)
    waits: list[float] = []
    got = history(market, "binance", Span(END - D, END), sleep=waits.append)
    calls = market.requests_for("binance", "/klines")
    assert len(calls) == 2 and 4.0 in waits and len(got.candles) > 0


def test_a_rate_limit_beyond_the_patience_ends_the_provider_for_this_run(market):
    market.add_fault(kind="http_429", provider="kraken", path="/OHLC", retry_after=120)
    with pytest.raises(ProviderError, match="Retry-After 120s"):
        history(market, "kraken", Span(END - D, END))


@pytest.mark.parametrize("provider", ["binance", "coinbase"])
def test_gaps_in_the_data_do_not_end_the_paging(market, provider):
    span = Span(END - 20 * D, END)  # LTC has three holes in these weeks: short pages, not the end
    got = history(market, provider, span, symbol="LTC")
    expected = [t for t in csv_times("LTC", span.start, span.end) if t + timedelta(minutes=5) <= END]
    assert [c.open_time for c in got.candles] == expected and len(expected) == 20 * 288 - 6
