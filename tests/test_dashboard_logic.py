"""Unit tests of the dashboard's pure logic: indicators, groups, periods, status, cache."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from cryptoviz.dashboard import indicators
from cryptoviz.dashboard.cli import dashboard
from cryptoviz.dashboard.data import IngesterUnavailable, TTLCache
from cryptoviz.dashboard.logic import (
    HIGH,
    LOW,
    MID,
    assign_groups,
    default_selection,
    esc,
    format_age,
    latest_table,
    magnitude_span,
    needs_scale_advice,
    percent_change,
    period_window,
    streaming_status,
)

# ---- indicators ----------------------------------------------------------------------------


def test_sma_is_the_plain_mean_of_the_window() -> None:
    close = pd.Series([1.0, 2, 3, 4, 5])
    out = indicators.sma(close, 3)
    assert out.isna().tolist() == [True, True, False, False, False]
    assert out.iloc[2:].tolist() == [2.0, 3.0, 4.0]


def test_ema_follows_the_recursive_definition() -> None:
    close = pd.Series([10.0, 11, 12, 11, 13])
    alpha = 2 / (3 + 1)
    expected = [10.0]
    for price in close.iloc[1:]:
        expected.append(alpha * price + (1 - alpha) * expected[-1])
    assert indicators.ema(close, 3).tolist() == pytest.approx(expected)


def test_bollinger_bands_are_two_population_deviations_around_the_sma() -> None:
    close = pd.Series([2.0, 4, 4, 4, 5, 5, 7, 9])  # population std of this window is exactly 2
    bands = indicators.bollinger(close, window=8, k=2)
    last = bands.iloc[-1]
    assert last["middle"] == pytest.approx(5.0)
    assert last["upper"] == pytest.approx(9.0)
    assert last["lower"] == pytest.approx(1.0)
    assert bands.iloc[:7].isna().all().all()


def test_rsi_matches_wilders_smoothing_and_its_edge_cases() -> None:
    close = pd.Series([44.0, 44.5, 43.5, 44.5, 45.0, 44.0])
    period = 3
    deltas = np.diff(close.to_numpy())
    gains, losses = np.clip(deltas, 0, None), np.clip(-deltas, 0, None)
    avg_gain, avg_loss = gains[0], losses[0]  # pandas ewm(adjust=False) seeds with the first value
    for g, loss in zip(gains[1:], losses[1:], strict=True):
        avg_gain = (avg_gain * (period - 1) + g) / period
        avg_loss = (avg_loss * (period - 1) + loss) / period
    expected = 100 - 100 / (1 + avg_gain / avg_loss)
    out = indicators.rsi(close, period)
    assert out.iloc[-1] == pytest.approx(expected)
    assert out.iloc[:period].isna().all()
    assert indicators.rsi(pd.Series(np.arange(1.0, 30)), 14).iloc[-1] == 100.0  # only gains
    assert indicators.rsi(pd.Series(np.ones(30)), 14).iloc[-1] == 50.0  # no movement
    assert indicators.rsi(pd.Series(np.arange(30.0, 1, -1)), 14).iloc[-1] == pytest.approx(0.0)


def test_macd_line_signal_and_histogram() -> None:
    close = pd.Series(np.linspace(100, 130, 60) + np.sin(np.arange(60)))
    out = indicators.macd(close)
    line = indicators.ema(close, 12) - indicators.ema(close, 26)
    assert out["macd"].tolist() == pytest.approx(line.tolist())
    assert out["signal"].tolist() == pytest.approx(indicators.ema(line, 9).tolist())
    assert (out["histogram"] - (out["macd"] - out["signal"])).abs().max() < 1e-12
    assert out["macd"].iloc[-1] > 0  # rising prices: fast EMA above slow
    with pytest.raises(ValueError):
        indicators.macd(close, fast=26, slow=12)
    with pytest.raises(ValueError):
        indicators.sma(close, 0)


# ---- price groups -------------------------------------------------------------------------


def test_groups_follow_the_originals_boundaries() -> None:
    groups = assign_groups({"BTC": 97000, "ETH": 2600, "XRP": 2.4, "BNB": 617, "DOGE": 0.25, "USDT": 1.0002})
    assert groups == {"BTC": HIGH, "ETH": HIGH, "XRP": MID, "BNB": MID, "DOGE": LOW, "USDT": LOW}


@pytest.mark.parametrize("start", [0.9998, 1.0002])
def test_a_stablecoin_on_the_boundary_does_not_flicker(start: float) -> None:
    groups = assign_groups({"USDT": start})
    first = groups["USDT"]
    for price in [0.9998, 1.0002, 1.0101, 0.9899, 1.0003, 0.9997] * 3:
        groups = assign_groups({"USDT": price}, groups)
        assert groups["USDT"] == first


def test_a_coin_that_really_moves_changes_group() -> None:
    groups = assign_groups({"X": 0.5})
    assert groups["X"] == LOW
    groups = assign_groups({"X": 1.5}, groups)
    assert groups["X"] == MID
    groups = assign_groups({"X": 990.0}, groups)
    assert groups["X"] == MID
    groups = assign_groups({"X": 1019.0}, groups)  # within the 2 % margin of $1000
    assert groups["X"] == MID
    groups = assign_groups({"X": 1100.0}, groups)
    assert groups["X"] == HIGH
    groups = assign_groups({"X": 985.0}, groups)  # within the margin below
    assert groups["X"] == HIGH
    groups = assign_groups({"X": 0.5}, groups)
    assert groups["X"] == LOW


def test_groups_skip_unusable_prices() -> None:
    assert assign_groups({"A": float("nan"), "B": 0.0, "C": -1.0, "D": 5.0}) == {"D": MID}


def test_default_selection_takes_the_biggest_of_each_group_and_skips_stablecoins() -> None:
    latest = pd.DataFrame(
        {
            "symbol": ["BTC", "ETH", "BNB", "XRP", "SOL", "USDT", "USDC", "DOGE", "ADA"],
            "price": [97000, 2600, 617, 2.4, 200, 1.0, 1.0, 0.25, 0.71],
            "market_cap": [1.9e12, 3.2e11, 8.9e10, 1.4e11, 9.6e10, 1.37e11, 5.2e10, 3.7e10, 2.5e10],
        }
    )
    groups = assign_groups(dict(zip(latest.symbol, latest.price, strict=True)))
    assert default_selection(latest, groups) == ["BTC", "ETH", "XRP", "SOL", "DOGE", "ADA"]
    assert default_selection(latest.iloc[0:0], {}) == []


# ---- scale, periods, status, formatting -----------------------------------------------------------


def test_scale_advice_above_two_orders_of_magnitude() -> None:
    assert magnitude_span([97000, 0.25]) == pytest.approx(388000)
    assert needs_scale_advice([97000, 2600, 0.25])
    assert not needs_scale_advice([2600, 617, 200])
    assert not needs_scale_advice([5.0])
    assert magnitude_span([]) == 1.0


def test_periods_end_at_the_newest_data() -> None:
    newest = datetime(2025, 2, 10, 23, 55, tzinfo=UTC)
    assert period_window("24h", newest) == (newest - timedelta(hours=24), None)
    assert period_window("7d", newest) == (newest - timedelta(days=7), None)
    assert period_window("all", newest) == (None, None)
    assert period_window("1h", None) == (None, None)
    custom = (newest - timedelta(days=2), newest - timedelta(days=1))
    assert period_window("custom", newest, custom) == custom
    with pytest.raises(ValueError, match="before"):
        period_window("custom", newest, (custom[1], custom[0]))
    with pytest.raises(ValueError):
        period_window("2y", newest)


def test_streaming_status_levels() -> None:
    assert streaming_status(45, 300).level == "green"
    assert "45 s" in streaming_status(45, 300).text
    assert streaming_status(600, 300).level == "green"
    assert streaming_status(601, 300).level == "amber"
    assert streaming_status(1501, 300).level == "red"
    assert streaming_status(None, 300).level == "red"
    assert streaming_status(1, 300, reachable=False).text == "Ingester unreachable"


def test_percent_change_is_relative_to_each_coins_first_point() -> None:
    frame = pd.DataFrame({"symbol": ["A", "A", "B", "B"], "close": [10.0, 12.0, 200.0, 150.0]})
    assert percent_change(frame).tolist() == pytest.approx([0.0, 20.0, 0.0, -25.0])


def test_untrusted_text_is_escaped() -> None:
    assert esc("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)&gt;"
    assert esc("a\"b'c&") == "a&quot;b&#x27;c&amp;"
    assert esc(None) == ""


def test_age_formatting() -> None:
    assert format_age(45) == "45 s"
    assert format_age(300) == "5 min"
    assert format_age(7300) == "2 h 1 min"
    assert format_age(3 * 86400) == "3 d"


# ---- the shared cache ---------------------------------------------------------------------------


def test_cache_runs_one_loader_for_concurrent_misses() -> None:
    cache = TTLCache()
    calls = []

    def loader() -> str:
        calls.append(1)
        time.sleep(0.05)
        return "rows"

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("k", 10, loader))) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["rows"] * 50
    assert len(calls) == 1


def test_cache_expires_and_remembers_failures_briefly() -> None:
    cache = TTLCache(error_ttl=0.1)
    values = iter([1, 2])
    assert cache.get("k", 0.05, lambda: next(values)) == 1
    assert cache.get("k", 0.05, lambda: next(values)) == 1
    time.sleep(0.06)
    assert cache.get("k", 0.05, lambda: next(values)) == 2

    failures = []

    def down() -> None:
        failures.append(1)
        raise IngesterUnavailable("down")

    for _ in range(3):
        with pytest.raises(IngesterUnavailable):
            cache.get("d", 10, down)
    assert len(failures) == 1
    time.sleep(0.12)
    assert cache.get("d", 10, lambda: "up") == "up"


def test_cache_is_bounded() -> None:
    cache = TTLCache(max_entries=3)
    for key in range(10):
        cache.get(key, 60, lambda key=key: key)
    assert len(cache._entries) == 3
    assert cache.get(9, 60, lambda: "reloaded") == 9


# ---- the command ------------------------------------------------------------------------------------


def test_every_setting_is_an_env_var_and_a_flag() -> None:
    out = CliRunner().invoke(dashboard, ["--help"], terminal_width=200).output
    for env in (
        "INGESTER_URL",
        "DASHBOARD_PORT",
        "DASHBOARD_PREFIX",
        "DASHBOARD_ALLOWED_ORIGINS",
        "CACHE_TTL",
        "SCRAPE_INTERVAL",
        "DASHBOARD_BASIC_AUTH",
    ):
        assert env in out
        assert "--" + env.lower().replace("_", "-") in out


def test_bad_basic_auth_is_a_clear_error() -> None:
    result = CliRunner().invoke(dashboard, ["--dashboard-basic-auth", "nopassword"])
    assert result.exit_code == 2
    assert "user:password" in result.output


def test_latest_table_sorts_by_market_cap_and_marks_simulated_sources() -> None:
    latest = pd.DataFrame(
        {
            "symbol": ["ETH", "BTC", "XSS"],
            "name": ["Ethereum", "Bitcoin", "<b>x</b>"],
            "provider": ["coingecko", "coingecko", "demo"],
            "price": [2600.0, 97000.0, 0.5],
            "market_cap": [3.2e11, 1.9e12, None],
            "percent_change_24h": [1.0, -2.0, None],
            "simulated": [False, False, True],
        }
    )
    table = latest_table(latest)
    assert table["Symbol"].tolist() == ["BTC", "ETH", "XSS"]
    assert table["Source"].tolist() == ["coingecko", "coingecko", "demo (simulated)"]
    assert table["1h %"].isna().all()  # a column the API did not send stays empty, not an error
    assert table["Name"].iloc[2] == "<b>x</b>"  # Tabulator renders cell text as text
    assert list(latest_table(pd.DataFrame()).columns) == list(table.columns)


def test_cache_drops_entries_of_old_versions() -> None:
    cache = TTLCache()
    for version in range(5):
        cache.get(("latest", version), 60, lambda version=version: version)
    cache.drop(lambda key: key[1] < 3)
    assert sorted(k[1] for k in cache._entries) == [3, 4]


def test_refresh_spacing_is_immediate_at_a_normal_cadence_and_shares_the_server_under_a_flood():
    from cryptoviz.dashboard.logic import refresh_spacing

    assert refresh_spacing(0.08, 1, floor=0.5) == 0.5  # one tab: every tick with new data redraws
    assert refresh_spacing(0.08, 5, floor=0.5) == pytest.approx(0.8)  # still well inside 2 s
    assert refresh_spacing(0.08, 20, floor=0.5) == pytest.approx(3.2)  # 20 tabs × 80 ms: half of one core
    assert refresh_spacing(0.0, 0, floor=0.5) == 0.5


# ---- display decisions ---------------------------------------------------------------------


def test_prices_keep_about_four_significant_digits() -> None:
    from cryptoviz.dashboard.logic import price_decimals, round_price

    assert [price_decimals(p) for p in (97123.45, 187.4219, 1.0002, 0.25345, 0.00001234)] == [0, 2, 2, 4, 8]
    assert round_price(97123.45) == 97123 and round_price(0.253452) == 0.2535 and round_price(None) is None


def test_axis_formats_show_cents_only_where_they_matter() -> None:
    from cryptoviz.dashboard.logic import axis_format

    assert axis_format(94_000, 102_000) == "$0,0"
    assert axis_format(180, 210) == "$0,0" and axis_format(181, 184) == "$0,0.0"
    assert axis_format(0.24, 0.27) == "$0,0.000"


def test_each_coin_keeps_its_colour_and_colours_differ() -> None:
    from cryptoviz.dashboard.logic import PALETTE, coin_colours

    colours = coin_colours(["BTC", "ETH", "SOL", "BTC"])
    assert list(colours) == ["BTC", "ETH", "SOL"] and len(set(colours.values())) == 3
    assert coin_colours(["BTC", "ETH", "SOL", "XRP"])["SOL"] == colours["SOL"]
    assert len(set(PALETTE)) == len(PALETTE) == 20


def test_the_first_view_is_percent_change_when_prices_span_two_orders_of_magnitude() -> None:
    from cryptoviz.dashboard.logic import first_mode

    assert first_mode([97_000, 2_600, 0.25]) == "percent"
    assert first_mode([97_000, 2_600]) == "shared"


def test_indicators_say_how_many_candles_they_need() -> None:
    from cryptoviz.dashboard.logic import indicator_notes

    assert indicator_notes(["SMA", "RSI", "MACD"], 16) == [
        "SMA needs 20 candles; this period has 16.",
        "MACD needs 35 candles; this period has 16.",
    ]
    assert indicator_notes(["SMA", "Bollinger"], 80) == []


# ---- candle geometry ---------------------------------------------------------------------------


def test_candles_of_a_backfilled_past_and_live_buckets_never_overlap() -> None:
    """A demo's 1h view: 5-minute candles of the backfilled past, then 90-second buckets of live quotes
    (one width for all, the 5-minute one, drew the live candles over each other)."""
    from cryptoviz.dashboard.charts import candle_chart, macd_chart, rsi_chart

    start = pd.Timestamp("2026-12-04 02:00")
    past = [start + pd.Timedelta(minutes=5 * i) for i in range(9)]
    live = [past[-1] + pd.Timedelta(seconds=90 * (i + 1)) for i in range(14)]
    times = pd.Series([start + pd.Timedelta(seconds=40), *past[1:], *live])  # the first stamped at its first quote
    close = np.linspace(100.0, 110.0, len(times))
    ohlc = pd.DataFrame({"time": times, "open": close - 0.5, "high": close + 1, "low": close - 1, "close": close})
    fig = candle_chart(ohlc, ["SMA"], title="BTC candlesticks", xlabel="Time", theme="default", logy=False)
    body = next(r for r in fig.renderers if r.glyph.__class__.__name__ == "VBar")
    centre = np.asarray(body.data_source.data["time"]).astype("datetime64[ms]").astype(np.int64)
    spec = body.glyph.width  # a column, or one value for all
    width = np.asarray(body.data_source.data[spec]) if isinstance(spec, str) else np.full(len(centre), float(spec))
    left, right = centre - width / 2, centre + width / 2
    assert (right[:-1] <= left[1:]).all(), "neighbouring candles overlap"
    assert width[:8].min() == pytest.approx(0.8 * 300_000) and width[-12:].max() == pytest.approx(0.8 * 90_000)
    assert fig.x_range.start < left[0] and right[-1] < fig.x_range.end  # the outer candles whole
    assert left[0] <= times.iloc[0].value / 1e6  # the first bucket's candle covers its first quote
    for indicator in (rsi_chart, macd_chart):
        line = next(r for r in indicator(ohlc, x_range=fig.x_range, xlabel="Time", theme="default").renderers
                    if r.glyph.__class__.__name__ == "Line")  # fmt: skip
        assert np.array_equal(np.asarray(line.data_source.data["x"]).astype("datetime64[ms]").astype(np.int64), centre)


def test_an_ingester_that_answers_with_an_error_is_not_called_unreachable() -> None:
    """A 503 for one view's history (the ingester up, its stats fine) says what it answered; only no
    answer at all is "unreachable" (the demo's broken 30d period said unreachable beside "Streaming")."""
    from cryptoviz.core.api_client import IngesterClient, IngesterUnavailable
    from cryptoviz.dashboard.data import SharedData
    from cryptoviz.dashboard.state import DashboardState
    from cryptoviz.dashboard.views import Banners, StatusCards

    shared = SharedData(IngesterClient("http://127.0.0.1:9"))
    state = DashboardState(shared)
    banners = Banners("http://ingester:8000", state=state, cards=StatusCards(300, state=state))

    def shown() -> str:
        return " ".join(str(item.object) for item in banners.column.objects)

    state._failed(IngesterUnavailable("/api/v1/history answered HTTP 503: database unavailable, try again", 503))
    assert "could not answer for this view (/api/v1/history answered HTTP 503" in shown()
    assert "unreachable" not in shown()
    shared.reachable = False
    state._failed(IngesterUnavailable("http://ingester:8000 unreachable: ConnectionError"))
    assert "The ingester at http://ingester:8000 is unreachable" in shown()
    assert "could not answer" not in shown()
