"""Coverage (`/api/v1/coverage`'s query) on real DuckDB files, fast: covered time from quotes,
rollups and candles, gaps against a plain reference sweep, parameter limits."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from cryptoviz.core.api_contract import CoverageResponse, SeriesCoverage
from cryptoviz.core.candle import make_candle
from cryptoviz.core.quote import Quote
from cryptoviz.ingester import coverage as coverage_module
from cryptoviz.ingester.candle_decode import candles_to_arrow
from cryptoviz.ingester.coverage import MAX_GAPS, Window, answer, coverage, stored_series
from cryptoviz.ingester.formats import JSON_OPTIONS, BadRequest
from cryptoviz.ingester.retention import apply_retention
from cryptoviz.ingester.store import Store, quotes_to_arrow
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = datetime(2025, 1, 13)
NOW = datetime(2025, 2, 12)


def quote(at: datetime, coin: str = "bitcoin", provider: str = "coingecko", symbol: str = "BTC") -> Quote:
    return Quote(provider, coin, symbol, symbol.title(), 100.0, at.replace(tzinfo=UTC), NOW.replace(tzinfo=UTC))


def candle(at: datetime, interval: int = 300, coin: str = "BTCUSDT", provider: str = "binance", symbol: str = "BTC"):
    return make_candle(
        provider=provider,
        coin_id=coin,
        symbol=symbol,
        name=symbol.title(),
        interval=interval,
        open_time=at.replace(tzinfo=UTC),
        open=100,
        high=101,
        low=99,
        close=100,
        received_at=NOW.replace(tzinfo=UTC),
        now=NOW.replace(tzinfo=UTC),
    )


def covered(store: Store, since=T0, until=NOW, min_gap=900, symbols=None, provider=None) -> list[SeriesCoverage]:
    """The rows as JSON, read back through the response model (they are rows for orjson: see `coverage`)."""
    cur = store.reader()
    rows = coverage(cur, stored_series(cur, symbols, provider), Window(since, until, min_gap))
    return [SeriesCoverage.model_validate_json(orjson.dumps(row, option=JSON_OPTIONS)) for row in rows]


def answered(store: Store, symbols: list[str] | None, window: Window) -> CoverageResponse:
    return CoverageResponse.model_validate_json(
        orjson.dumps(answer(store.reader(), symbols, None, window), option=JSON_OPTIONS)
    )


def naive(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=None) if value is not None else None


def test_a_known_hole_in_quotes_closed_by_candles_of_another_provider(store: Store):
    # coingecko quotes every 5 minutes for a day, with a 2-hour outage from 06:00 to 08:00
    times = [T0 + timedelta(minutes=5 * i) for i in range(288)]
    outage = (T0 + timedelta(hours=6), T0 + timedelta(hours=8))
    store.write_batch(quotes_to_arrow([quote(t) for t in times if not outage[0] < t < outage[1]]))
    # binance history: 5-minute candles for the same day, except one missing hour
    opens = [T0 + timedelta(minutes=5 * i) for i in range(288) if not 120 <= i < 132]
    store.write_candles(candles_to_arrow([candle(t) for t in opens]))
    assert [r.provider for r in covered(store)] == ["binance", "coingecko"]
    rows = {r.provider: r for r in covered(store)}
    gecko, binance = rows["coingecko"], rows["binance"]
    assert (naive(gecko.first), naive(gecko.last)) == (T0, times[-1])
    assert gecko.quotes == 288 - 23 and gecko.candles == 0
    assert [(naive(g.start), naive(g.end), g.seconds) for g in gecko.gaps] == [(*outage, 7200.0)]
    assert naive(binance.last) == T0 + timedelta(days=1)  # the end of the last candle
    assert binance.candles == 276 and binance.quotes == 0
    assert [(naive(g.start), naive(g.end)) for g in binance.gaps] == [
        (T0 + timedelta(hours=10), T0 + timedelta(hours=11))
    ]
    # holes at or below min_gap are not gaps; a window inside the hole sees no data at all
    assert covered(store, min_gap=7200)[1].gaps == []
    inside = covered(store, since=outage[0] + timedelta(minutes=10), until=outage[1] - timedelta(minutes=10))
    assert inside[1].first is None and inside[1].quotes == 0 and inside[1].gaps == []
    # provider and symbols select series
    assert [r.provider for r in covered(store, provider="binance")] == ["binance"]
    assert covered(store, symbols=["ETH"]) == []


def test_rollups_cover_their_whole_hour(store: Store):
    old = [T0 + timedelta(minutes=m) for m in (0, 10, 20, 300)]  # 00:00-00:20 and 05:00
    store.write_batch(quotes_to_arrow([quote(t) for t in old]))
    apply_retention(store, 10, now=NOW.replace(tzinfo=UTC))
    (row,) = covered(store)
    assert row.quotes == 4 and naive(row.last) == T0 + timedelta(hours=6)
    assert [(naive(g.start), naive(g.end)) for g in row.gaps] == [(T0 + timedelta(hours=1), T0 + timedelta(hours=5))]


def test_gaps_are_capped_and_say_so(store: Store):
    store.write_batch(quotes_to_arrow([quote(T0 + timedelta(hours=2 * i)) for i in range(MAX_GAPS + 20)]))
    (row,) = covered(store, until=T0 + timedelta(days=60))
    assert len(row.gaps) == MAX_GAPS and row.gaps_truncated
    assert row.gaps[0].start.replace(tzinfo=None) == T0  # the earliest are listed


SPAN = st.tuples(st.integers(0, 5000), st.sampled_from([0, 0, 60, 300, 3600]))


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory) -> Iterator[Store]:
    """One store for every example (emptied before each): migrating a new file per example is slow."""
    opened = Store(tmp_path_factory.mktemp("sweep") / "db.duckdb")
    try:
        yield opened
    finally:
        opened.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(SPAN, max_size=30), st.sampled_from([60, 120, 900]))
def test_gaps_equal_a_plain_sweep_over_the_spans(sweep_store, spans, min_gap):
    """Quotes are points, candles intervals: the folded SQL finds exactly the holes a sweep does."""
    store = sweep_store
    for table in ("crypto_prices", "candles", "coins"):
        store.conn.execute(f"DELETE FROM {table}")
    base = T0
    points = [base + timedelta(seconds=s) for s, length in spans if length == 0]
    bars = [(base + timedelta(seconds=s), length) for s, length in spans if length]
    if points:
        store.write_batch(quotes_to_arrow([quote(t, coin="x", provider="binance") for t in points]))
    if bars:
        store.write_candles(candles_to_arrow([candle(t, length, coin="x") for t, length in bars]))
    since, until = base + timedelta(seconds=500), base + timedelta(seconds=4000)
    rows = covered(store, since=since, until=until, min_gap=min_gap)
    expected = sweep([(t, t) for t in points] + [(t, t + timedelta(seconds=n)) for t, n in bars], since, until)
    got = [(naive(g.start), naive(g.end)) for r in rows for g in r.gaps]
    assert got == [g for g in expected if (g[1] - g[0]).total_seconds() > min_gap]


def sweep(spans: list[tuple[datetime, datetime]], since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """The reference: clip, sort, walk, report every hole between covered parts."""
    clipped = sorted((max(s, since), min(e, until)) for s, e in spans if e >= since and s <= until)
    holes, reach = [], None
    for s, e in clipped:
        if reach is not None and s > reach:
            holes.append((reach, s))
        reach = e if reach is None else max(reach, e)
    return holes


@pytest.mark.parametrize(
    ("since", "until", "min_gap", "message"),
    [
        (NOW, T0, 900, "since must be before until"),
        (NOW - timedelta(days=500), NOW, 900, "at most 400 days"),
        (NOW - timedelta(days=300), NOW, 60, "too fine"),
    ],
)
def test_window_limits_are_clear_400s(since, until, min_gap, message):
    with pytest.raises(BadRequest, match=message):
        Window.of(since, until, min_gap, NOW)


def test_window_defaults_to_the_last_30_days():
    assert Window.of(None, None, 900, NOW) == Window(NOW - timedelta(days=30), NOW, 900)
    assert Window.of(None, T0 + timedelta(days=40), 900, NOW).since == T0 + timedelta(days=10)


def test_the_answer_caps_its_series_and_says_so(store: Store, monkeypatch):
    store.write_batch(quotes_to_arrow([quote(T0, coin=f"c{i}", symbol=f"C{i}") for i in range(4)]))
    window = Window(T0 - timedelta(days=1), NOW, 900)
    full = answered(store, ["C0", "C1", "X"], window)
    assert [r.symbol for r in full.data] == ["C0", "C1"] and full.unknown_symbols == ["X"]
    assert not full.series_truncated and full.since.tzinfo is not None
    monkeypatch.setattr(coverage_module, "MAX_SERIES", 3)
    capped = answered(store, None, window)
    assert len(capped.data) == 3 and capped.series_truncated
