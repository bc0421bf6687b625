"""Waiting for conditions instead of sleeping for fixed times.

A test that needs something to have happened polls for it with `wait_for`; it never sleeps a fixed
time over 0.2 s hoping it did. The only longer sleeps are deliberate pacing, listed in PACED with
why (tests/test_tiers.py fails on any other): they make time pass on purpose, and waiting for a
condition instead would change what the test does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import requests

T = TypeVar("T")

MAX_FIXED_SLEEP = 0.2
"""Seconds a test may sleep for a fixed time without being listed in PACED (a poll interval)."""

PACED: dict[tuple[str, str], str] = {
    ("support/wait.py", "time.sleep(interval)"): "wait_for's own poll interval (0.1 s unless asked)",
    ("test_ingest_harness.py", "time.sleep(seconds / slices)"): "publish pacing: messages spread over a given time",
    ("test_ingest_harness.py", "time.sleep(rng.uniform(*pause))"): "chaos: random pauses between SIGKILLs",
    ("test_faults.py", "time.sleep(rng.uniform(0.3, 2.0))"): (
        "chaos: a random pause so each kill lands anywhere (fetching, committing, acking)"
    ),
    ("test_scraper.py", "time.sleep(restart_after)"): "an outage of a given length: NATS stays down that long",
    ("test_scraper.py", "asyncio.sleep(asked + 1.5 - time.monotonic())"): (
        "an outage's timeline: the market moves on 1.5 s into it"
    ),
    ("test_scraper.py", "asyncio.sleep(asked + 2.5 - time.monotonic())"): "an outage's timeline: NATS returns at 2.5 s",
    ("test_dashboard_browser.py", "time.sleep(5)"): "a measuring window: the server's CPU over 5 s of 24 idle tabs",
    ("test_ingester_shutdown.py", "asyncio.sleep(3600)"): "a task that never ends by itself: what shutdown must cancel",
}
"""(file under tests/, the call as written) → why it sleeps longer than MAX_FIXED_SLEEP."""

TRANSIENT = (requests.RequestException, OSError, ValueError, KeyError)
"""What a condition may raise while the thing it watches is still coming up: retried, not fatal."""


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """The first truthy value of `condition()`, polled every `interval` s; AssertionError after `timeout` s."""
    give_up = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
        except TRANSIENT as exc:
            last_error, value = exc, None
        if value:
            return value
        if time.monotonic() >= give_up:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last error: {last_error})")
        time.sleep(interval)
