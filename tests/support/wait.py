"""Waiting for conditions instead of sleeping for fixed times."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import requests

T = TypeVar("T")

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
