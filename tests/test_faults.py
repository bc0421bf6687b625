"""Fault drills on the whole pipeline (`cryptoviz dev --replay`): what real deployments meet.

Each drill replays the first candles of the shared data and then checks the stored rows
against the CSV files themselves: every (coin, time, close) exactly once, nothing else.
`CRYPTOVIZ_DRILL_KILLS` sets how often the ingester is SIGKILLed (default 20, the issue's figure;
fewer for a quick local run: `CRYPTOVIZ_DRILL_KILLS=3 pytest tests/test_faults.py`).
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import requests
from support.dev import dev_running, expected_replay, stored_candles, wait_for

KILLS = int(os.environ.get("CRYPTOVIZ_DRILL_KILLS", "20"))
FAST_RECOVERY = {"ACK_WAIT": "2", "SCRAPE_BACKOFF": "0.2", "SCRAPE_TIMEOUT": "1"}


def _serving(run) -> bool:
    return bool(run.stats())


def _assert_exact(run, expected) -> None:
    wait_for(lambda: run.stats()["records"] >= expected.rows, 120, f"{expected.rows} rows stored")
    wait_for(lambda: run.stats()["consumer_lag"] == 0, 60, "every message acked")  # no duplicate can follow
    assert run.stats()["records"] == expected.rows
    stored = stored_candles(run, expected)
    assert stored == expected.candles, (
        f"missing {sorted(expected.candles - stored)[:5]}, unexpected {sorted(stored - expected.candles)[:5]}"
    )


def test_ingester_sigkilled_during_replay_loses_nothing_and_doubles_nothing(tmp_path: Path, market_5m: Path):
    limit = 8 + 2 * KILLS
    expected = expected_replay(market_5m, limit)
    rng = random.Random(7)
    args = ("--replay", str(market_5m), "--speed", "600", "--replay-limit", str(limit), "--no-dashboard")
    with dev_running(tmp_path / "state", *args, env=FAST_RECOVERY) as run:
        for n in range(KILLS):
            wait_for(lambda: _serving(run), 60, f"the ingester to serve again (kill {n})")
            time.sleep(rng.uniform(0.3, 2.0))  # land anywhere: fetching, committing, acking
            victim = run.pid("ingester")
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda victim=victim: run.pid("ingester") != victim, 60, "the supervisor to restart it")
        _assert_exact(run, expected)
        assert run.run_info()["restarts"]["ingester"] == KILLS
        assert run.text.count("! ingester exited with code -9") == KILLS
        assert run.stop() == 0


def test_nats_killed_during_scraping_then_back_every_scrape_stored_once(tmp_path: Path, market_5m: Path):
    expected = expected_replay(market_5m, 18)
    env = {**FAST_RECOVERY, "PUBLISH_DEADLINE": "2"}
    args = ("--replay", str(market_5m), "--speed", "600", "--replay-limit", "18", "--no-dashboard")
    with dev_running(tmp_path / "state", *args, env=env) as run:
        wait_for(lambda: run.stats()["records"] >= 3 * 14, 60, "a few candles stored")
        # 1. Killed and restarted at once by the supervisor: the scraper's publish retries ride it out.
        os.kill(run.pid("nats"), signal.SIGKILL)
        wait_for(lambda: "nats-server is back" in run.text, 30, "NATS restarted")
        wait_for(lambda: run.stats()["records"] >= 8 * 14, 60, "ingest to resume")
        # 2. Hung for longer than PUBLISH_DEADLINE, then killed: each scrape gives up with the
        #    documented message (exit status 3 for --once; the loop carries on), NATS is restarted.
        victim = run.pid("nats")
        os.kill(victim, signal.SIGSTOP)
        try:
            scraper_log = run.state_dir / "logs" / "scraper.log"
            wait_for(lambda: "PUBLISH_DEADLINE=2s" in scraper_log.read_text(), 30, "the scraper to give up on NATS")
        finally:
            os.kill(victim, signal.SIGKILL)
        wait_for(lambda: run.text.count("nats-server is back") == 2, 30, "NATS restarted again")
        _assert_exact(run, expected)
        assert run.run_info()["restarts"]["scraper"] == 0  # in a loop it reports and carries on
        assert run.stop() == 0


FAULTS = [
    {"kind": "http_429", "retry_after": 1, "count": 2},
    {"kind": "http_5xx", "status": 503, "count": 2},
    {"kind": "http_5xx", "status": 500, "count": 1},
    {"kind": "timeout", "delay": 2.5, "count": 1},
    {"kind": "truncated", "count": 2},
    {"kind": "coingecko_429_200", "count": 1},
    {"kind": "nulls", "symbols": ["BTC"], "count": 2},
    {"kind": "nan", "symbols": ["ETH"], "count": 2},
    {"kind": "negative", "symbols": ["SOL"], "count": 2},
    {"kind": "strings", "count": 2},
    {"kind": "duplicate_symbols", "symbols": ["ADA"], "count": 2},
]


def test_provider_fault_matrix_keeps_running_counts_rejects_and_keeps_what_is_valid(tmp_path: Path, market_5m: Path):
    limit = 20
    expected = expected_replay(market_5m, limit)
    args = ("--replay", str(market_5m), "--speed", "600", "--replay-limit", str(limit), "--no-dashboard")
    with dev_running(tmp_path / "state", *args, env=FAST_RECOVERY) as run:
        market = run.run_info()["market_url"]
        wait_for(lambda: run.stats()["records"] >= 2 * 14, 60, "the first candles stored")
        for fault in FAULTS:
            requests.post(f"{market}/_control/fault", json=fault, timeout=5).raise_for_status()
            wait_for(
                lambda: not requests.get(f"{market}/_control/state", timeout=5).json()["faults"],
                60,
                f"fault {fault['kind']} to be met by the scraper",
            )
        _assert_exact(run, expected)
        info = run.run_info()
        restarts = {"ingester": 0, "scraper": 0, "notify": 0}
        assert info["restarts"] == restarts, "a provider fault must not crash anything"
        log = (run.state_dir / "logs" / "scraper.log").read_text()
        for reason in ("missing_price", "nonfinite_price", "nonpositive_price"):
            assert f"{reason}=" in log, f"rejections for {reason} not counted in the scraper's log"
        assert run.stop() == 0
