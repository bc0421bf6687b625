"""Every period on the data a new user actually has: a fresh install's first ten minutes, and a feed
whose newest quote is ten days old. Each period button (1h, 24h, 7d, 30d, all) and the candles tab
must draw lines — points in the page's data sources, an x-range spanning them — with no "no data"
message, and a coin with a single quote is a dot with a note, never an empty or broken figure.

Two pipelines (real nats-server, ingester, dashboard) in one module, one Chromium.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptoviz.core.quote import make_quote
from dashboard_pages import DashboardProcess, Page, Pipeline, assert_lines_drawn, fresh_quotes, market_quotes

pytestmark = pytest.mark.browser

PERIODS = ["1h", "24h", "7d", "30d", "all"]
COINS = ["BTC", "ETH", "SOL", "DOGE"]


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("DASHBOARD_SCREENSHOT_DIR")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _running(root: Path, quotes: list) -> Iterator[DashboardProcess]:
    pipeline = Pipeline(root)
    try:
        pipeline.start(quotes)
        yield pipeline.dashboard(SCRAPE_INTERVAL="30")
        assert pipeline.tracebacks() == [], "the dashboard logged a traceback"
    finally:
        pipeline.stop()


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, market_5m: Path) -> Iterator[DashboardProcess]:
    """Ten minutes of quotes every 30 s, and a coin (ONE) that has a single quote."""
    end = datetime.now(UTC).replace(microsecond=0)
    one = make_quote(provider="coingecko", coin_id="one", symbol="ONE", name="Lonely", price=2.5, timestamp=end,
                     received_at=end, market_cap=1e6)  # fmt: skip
    yield from _running(tmp_path_factory.mktemp("fresh"), [*fresh_quotes(market_5m, 10, end), one])


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory, market_5m: Path) -> Iterator[DashboardProcess]:
    """Eight days of 5-minute quotes whose newest is ten days old (a feed that stopped)."""
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)
    yield from _running(tmp_path_factory.mktemp("old"), market_quotes(market_5m, 8, end, every=3))


def _every_period_draws_lines(page: Page) -> None:
    for period in PERIODS:
        page.click(period)
        page.wait(lambda p=period: page.pressed(p), what=f"{period} selected")
        assert_lines_drawn(page, COINS, f"period {period}")
        assert not page.page.locator(".cv-no-data").is_visible(), f"'no data' shown for {period}"


def _candles_draw(page: Page) -> dict[str, Any]:
    page.page.locator(".bk-tab", has_text="Candlesticks").first.click()
    page.wait(lambda: any(f["title"] == "BTC candlesticks" for f in page.figures()), what="BTC candlesticks")
    candles = next(f for f in page.figures() if f["title"] == "BTC candlesticks")
    body = next(s for s in candles["series"] if s["glyph"] == "VBar")
    assert body["n"] >= 2 and candles["x"][0] <= body["lo"] and body["hi"] <= candles["x"][1]
    return candles


def test_a_fresh_install_draws_every_period_and_the_candles(browser: Any, fresh: DashboardProcess, shots: Path):
    page = Page(browser, fresh.url + "?coins=" + ",".join(COINS).replace(",", "%22%2C%22").join(("%5B%22", "%22%5D")))
    try:
        _every_period_draws_lines(page)
        page.click("7d")
        span = page.price_figures()[0]["x"]
        assert span[1] - span[0] < 20 * 60_000, "seven days asked, the ten minutes of data fill the chart"
        page.shot(shots / "fresh-ten-minutes.png")
        candles = _candles_draw(page)
        body = next(s for s in candles["series"] if s["glyph"] == "VBar")
        # 21 quotes make 4–5 candles of several quotes each (round bucket widths): real open/high/low/close
        count = len(body["open"])
        assert 3 <= count <= 5 and sum(h > lo for h, lo in zip(body["high"], body["low"], strict=True)) >= count - 1
        page.wait(lambda: page.page.get_by_text(f"SMA needs 20 candles; this period has {count}.").count() > 0,
                  what="the SMA note")  # fmt: skip
        assert not [s for s in candles["series"] if s["name"] == "SMA 20"]  # said, not drawn half
        page.shot(shots / "fresh-candles.png")
    finally:
        page.close()


def test_a_single_quote_is_a_dot_with_a_note(browser: Any, fresh: DashboardProcess) -> None:
    page = Page(browser, fresh.url + "?coins=%5B%22ONE%22%5D&tab=candles", wait_for_chart=True)
    try:
        page.wait(lambda: any(f["title"] == "ONE candlesticks" for f in page.figures()), what="ONE candle")
        candle = next(f for f in page.figures() if f["title"] == "ONE candlesticks")
        body = next(s for s in candle["series"] if s["glyph"] == "VBar")
        assert body["n"] == 1 and candle["x"][1] > candle["x"][0]
        page.wait(lambda: page.page.get_by_text("One candle so far").count() > 0, what="the single-candle note")
        page.page.locator(".bk-tab", has_text="Prices").first.click()
        page.wait(lambda: "ONE" in page.plotted(), what="ONE on the prices tab")
        marker = next(s for f in page.price_figures() for s in f["series"] if s["glyph"] == "Scatter")
        assert marker["n"] == 1
        page.wait(lambda: page.page.get_by_text("Only one quote so far for ONE").count() > 0, what="the note")
    finally:
        page.close()


def test_a_feed_that_stopped_ten_days_ago_draws_every_period(browser: Any, old: DashboardProcess, shots: Path):
    page = Page(browser, old.url + "?coins=" + ",".join(COINS).replace(",", "%22%2C%22").join(("%5B%22", "%22%5D")))
    try:
        page.wait(lambda: page.text("metric-status") and "Stale" in page.text("metric-status"), what="stale status")
        _every_period_draws_lines(page)
        page.click("24h")
        page.shot(shots / "old-data.png")
        candles = _candles_draw(page)
        assert candles["x"][1] - candles["x"][0] > 20 * 3_600_000  # a day of candles, ten days ago
    finally:
        page.close()
