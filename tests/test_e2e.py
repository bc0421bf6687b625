"""The whole system as a user runs it: `cryptoviz dev --replay` on the shared candles, checked in a real browser."""

from __future__ import annotations

import itertools
import os
import re
import signal
from pathlib import Path

import pytest
from support.dev import (
    CHROMIUM,
    CHROMIUM_ARGS,
    dev_running,
    expected_replay,
    pid_alive,
    stored_candles,
    wait_for,
)

LIMIT = 24
"""Candle times replayed: enough to watch the dashboard move, few enough for the test budget.
At --speed 300 (one a second) the replay outlasts the dashboard's start and first page load."""


def replayed_candles(expected) -> int:
    """Candles a replay stores: each tick sends every coin's candle that ended at it (opened the tick before)."""
    times = sorted({when for _, when, _ in expected.candles})
    seen = {(symbol, when) for symbol, when, _ in expected.candles}
    return sum((s, a) in seen and (s, b) in seen for s in expected.per_symbol for a, b in itertools.pairwise(times))


def _records(page) -> int:
    texts = page.get_by_test_id("metric-records").all_inner_texts()  # no waiting: polled by wait_for
    digits = re.sub(r"[^0-9]", "", texts[0]) if texts else ""
    return int(digits) if digits else 0


@pytest.mark.browser
def test_replay_flows_into_the_api_and_the_dashboard_exactly(tmp_path: Path, market_5m: Path):
    from playwright.sync_api import expect, sync_playwright

    expected = expected_replay(market_5m, LIMIT)
    with dev_running(
        tmp_path / "state", "--replay", str(market_5m), "--speed", "300", "--replay-limit", str(LIMIT)
    ) as run:
        assert "Provider   replay" in run.text
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(run.dashboard, wait_until="domcontentloaded")
                first = wait_for(lambda: _records(page), 60, "the dashboard to show stored records")
                body = page.locator("body")
                for symbol in sorted(expected.per_symbol):
                    expect(body).to_contain_text(symbol, timeout=30_000)
                # The replay advances; the page follows by itself, without a reload.
                wait_for(lambda: _records(page) > first, 60, "the record count to grow without a reload")

                # The ingester goes away: a banner, the last data stays; it comes back: the banner goes.
                os.kill(run.process.pid, signal.SIGSTOP)  # hold the supervisor (and the replay) a moment
                try:
                    os.kill(run.pid("ingester"), signal.SIGKILL)
                    banner = page.locator(".cv-banner-unreachable")
                    expect(banner).to_be_visible(timeout=30_000)
                    shown = _records(page)
                    assert shown >= first, "the last data must stay visible"
                finally:
                    os.kill(run.process.pid, signal.SIGCONT)  # it restarts the ingester; the replay goes on
                expect(banner).to_have_count(0, timeout=60_000)

                candles = replayed_candles(expected)
                wait_for(lambda: run.stats()["records"] == expected.rows, 90, f"{expected.rows} stored rows")
                wait_for(lambda: run.stats()["candles"] == candles, 30, f"{candles} stored candles")
                # Total records: quotes, and the candles each tick sent for the one before it.
                wait_for(lambda: _records(page) == expected.rows + candles, 30, "the page to show the final count")
            finally:
                browser.close()

        stats = run.stats()
        assert stats["records"] == expected.rows and stats["providers"] == ["replay"] and not stats["simulated"]
        assert stored_candles(run, expected) == expected.candles
        pids = [p for p in run.run_info()["pids"].values() if p]
        assert run.stop() == 0, run.text
        assert not [p for p in pids if pid_alive(p)], "processes left behind after Ctrl-C"
