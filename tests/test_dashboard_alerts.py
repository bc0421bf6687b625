"""The dashboard's alerts panel (issue 16) in real Chromium, on a real pipeline: nats-server →
`cryptoviz ingest` with alert rules over the shared 5-minute prices → `cryptoviz notify` delivering to a
loopback webhook (one target answers 400) → `cryptoviz dashboard`. The panel lists what the API's
`/api/v1/alerts` says, row for row, and follows the delivery receipts without any new market data.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import test_dashboard_browser
from cryptoviz.core.nats import EmbeddedNats
from cryptoviz.dashboard.alerts_panel import alerts_html
from dashboard_pages import DashboardProcess, Page, fresh_quotes, publish
from support.notify import NotifyProcess, Receiver
from test_ingest_harness import Ingester, chunked

pytestmark = pytest.mark.browser

playwright = test_dashboard_browser.playwright
browser = test_dashboard_browser.browser


def _rows(page: Page) -> list[dict[str, Any]]:
    """The panel's rows as the browser has them (Playwright's locators pierce Panel's shadow roots)."""
    return page.page.locator("[data-testid=alert-row]").evaluate_all(
        """rows => rows.map(tr => ({id: tr.dataset.alert, symbol: tr.dataset.symbol, delivery: tr.dataset.delivery,
             text: tr.innerText,
             targets: [...tr.querySelectorAll('[data-testid=alert-target]')].map(t => t.dataset.status),
             visible: tr.getBoundingClientRect().height > 0,
             inside: [...tr.querySelectorAll('td')].every(td => td.getBoundingClientRect().right <= innerWidth)}))"""
    )


def _states(page: Page) -> dict[str, str]:
    return {row["symbol"]: row["delivery"] for row in _rows(page)}


def shots_dir(tmp_path: Path) -> Path:
    """docs/screenshots when regenerating them (DASHBOARD_SCREENSHOT_DIR, docs/dashboard.md), else the test's."""
    target = Path(os.environ.get("DASHBOARD_SCREENSHOT_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
def fired(tmp_path: Path, market_5m: Path) -> Iterator[tuple[Ingester, EmbeddedNats]]:
    """Twenty fresh minutes of the 14 coins; rules on BTC (to `default`) and ETH (also to `team`)."""
    quotes = fresh_quotes(market_5m, 20, datetime.now(UTC).replace(microsecond=0))
    first = {q.symbol: q.price for q in reversed(quotes)}  # each coin's first price
    config = tmp_path / "scraper.yaml"
    config.write_text(
        "version: 1\ncoins:\n"
        f"  - symbol: BTC\n    alerts: [{{above: {first['BTC'] * 0.5:.2f}, cooldown: 1h}}]\n"
        f"  - symbol: ETH\n    alerts: [{{below: {first['ETH'] * 2:.2f}, cooldown: 1h}}]\n    notify: [team]\n"
    )
    nats = EmbeddedNats(tmp_path / "nats").start()
    ingester = Ingester(nats.url, tmp_path / "cv.duckdb", tmp_path / "ingester.log", SCRAPER_CONFIG=str(config))
    try:
        ingester.start()
        publish(nats.url, chunked(quotes))
        ingester.wait_records(len(quotes), timeout=120)
        yield ingester, nats
    finally:
        ingester.stop()
        nats.stop()


@pytest.fixture
def board(fired: tuple[Ingester, EmbeddedNats], tmp_path: Path) -> Iterator[DashboardProcess]:
    dashboard = DashboardProcess(fired[0].url, tmp_path / "dashboard.log", CACHE_TTL="6")  # alerts re-read each 1 s
    try:
        yield dashboard.start()
    finally:
        dashboard.stop()


def test_the_panel_shows_each_alert_and_follows_its_delivery(
    browser: Any, playwright: Any, fired: tuple[Ingester, EmbeddedNats], board: DashboardProcess, tmp_path: Path
) -> None:
    ingester, nats = fired
    alerts = ingester.json("/api/v1/alerts")["data"]
    assert sorted(a["symbol"] for a in alerts) == ["BTC", "ETH"]
    desktop = Page(browser, board.url, height=1600)
    phone = Page(browser, board.url, device=playwright.devices["iPhone 13"])
    with contextlib.ExitStack() as pages, Receiver() as receiver:
        pages.callback(desktop.close)
        pages.callback(phone.close)
        receiver.script["/team"] = [400]  # the team's webhook refuses: dead-lettered, `default` still delivered
        (tmp_path / "targets.yaml").write_text(f"team: ['{receiver.json_url('/team')}']\n")
        notifier = NotifyProcess(
            nats.url,
            tmp_path / "notify.log",
            receiver.base,
            NOTIFY_URLS=receiver.json_url(),
            NOTIFY_TARGETS_FILE=str(tmp_path / "targets.yaml"),
        )
        try:
            desktop.wait(lambda: _states(desktop) == {"BTC": "pending", "ETH": "pending"}, 30, "pending alerts")
            records = ingester.json("/api/v1/stats")["records"]
            notifier.start()
            # no new market data from here on: the receipts alone must reach the open page
            for tab in (desktop, phone):
                tab.wait(lambda t=tab: _states(t) == {"BTC": "delivered", "ETH": "partial"}, 60, "delivery states")
            assert ingester.json("/api/v1/stats")["records"] == records
            desktop.shot(shots_dir(tmp_path) / "alerts-desktop.png")
            assert all(row["inside"] for row in _rows(phone)), "alerts cut off on the phone"
            phone.page.locator("[data-testid=alerts]").scroll_into_view_if_needed()
            phone.page.screenshot(path=str(shots_dir(tmp_path) / "alerts-phone.png"))
        finally:
            notifier.stop()
        answer = {a["alert_id"]: a for a in ingester.json("/api/v1/alerts")["data"]}
        rows = _rows(desktop)
        assert sorted(row["id"] for row in rows) == sorted(answer) and all(row["visible"] for row in rows)
        for row in rows:
            alert = answer[row["id"]]
            assert row["delivery"] == alert["delivery"]
            assert row["targets"] == [d["status"] for d in alert["deliveries"]]
            assert alert["message"] in row["text"] and alert["symbol"] in row["text"]
            assert f"${alert['price']:,.0f}" in row["text"]  # BTC and ETH: whole dollars
        eth = next(row for row in rows if row["symbol"] == "ETH")
        assert (
            eth["targets"] == ["delivered", "failed"]
            and "✗ team (1 try) HTTP 400" in eth["text"]
            and "Partly failed" in eth["text"]
        )
        assert "2 fired" in desktop.page.locator("[data-testid=alerts] h3").inner_text()
    assert "Traceback" not in board.log()


def test_hostile_alert_text_is_escaped_and_nothing_fired_hides_the_panel() -> None:
    hostile = "<img src=x onerror=alert(1)>"
    frame = pd.DataFrame(
        [{"symbol": "XSS", "fired_at": pd.Timestamp("2025-01-01T00:00Z"), "message": hostile, "price": 0.5,
          "delivery": "failed", "alert_id": "a'1", "deliveries": [{"target": hostile, "status": "failed",
          "attempts": 3, "reason": hostile}]}]
    )  # fmt: skip
    markup = alerts_html(frame, "UTC")
    assert "<img" not in markup and "&lt;img" in markup and "data-alert='a&#x27;1'" in markup
    assert "3 tries" in markup and "Failed" in markup
    assert alerts_html(pd.DataFrame(), "UTC") == ""
