"""The one place a dashboard process talks to the ingester.

Every browser session reads through one `SharedData` per server process: a TTL cache
with single-flight loading, keyed by the data version, so N sessions cost one API query
per refresh instead of N. A background thread follows the ingester's `/api/v1/events`
stream (falling back to polling `/api/v1/stats`) and bumps the version on each commit;
sessions notice the new version on their next tick and refresh from the cache. The ingester is
asked through the one typed client (`core.api_client`); `/history` rows as plain dicts (no pyarrow in
this image, and a model per row would cost more than the parse).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from cryptoviz.core.api_client import IngesterClient, IngesterRejected, IngesterUnavailable
from cryptoviz.core.config import SYMBOL_PATTERN
from cryptoviz.dashboard.logic import assign_groups

log = logging.getLogger(__name__)

_QUERYABLE = re.compile(SYMBOL_PATTERN)
HISTORY_POINTS = 300
"""Buckets per series asked of the API: enough for a 1080 px wide chart, cheap to draw."""


class TTLCache:
    """Thread-safe TTL cache; concurrent misses on one key run the loader once.

    Failures are remembered for `error_ttl` so a down ingester is not hammered by every session.
    """

    def __init__(self, max_entries: int = 256, error_ttl: float = 1.0) -> None:
        self.max_entries = max_entries
        self.error_ttl = error_ttl
        self._entries: OrderedDict[Any, tuple[float, Any, Exception | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Any, threading.Lock] = {}

    def get(self, key: Any, ttl: float, loader: Callable[[], Any]) -> Any:
        hit = self._lookup(key)
        if hit is not None:
            return _unwrap(hit)
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            hit = self._lookup(key)
            if hit is not None:
                return _unwrap(hit)
            try:
                value, error, keep = loader(), None, ttl
            except IngesterUnavailable as exc:
                value, error, keep = None, exc, self.error_ttl
            with self._lock:
                self._entries[key] = (time.monotonic() + keep, value, error)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    old, _ = self._entries.popitem(last=False)
                    self._key_locks.pop(old, None)
            return _unwrap((value, error))

    def _lookup(self, key: Any) -> tuple[Any, Exception | None] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] < time.monotonic():
                return None
            return entry[1], entry[2]

    def drop(self, stale: Callable[[Any], bool]) -> None:
        """Forget entries whose key is `stale` (e.g. of an older data version)."""
        with self._lock:
            for key in [k for k in self._entries if stale(k)]:
                del self._entries[key]
                self._key_locks.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _unwrap(hit: tuple[Any, Exception | None]) -> Any:
    value, error = hit
    if error is not None:
        raise error
    return value


@dataclass
class Snapshot:
    """What every session needs on a refresh, fetched once per data version."""

    stats: dict[str, Any]
    latest: pd.DataFrame
    alerts: pd.DataFrame


class SharedData:
    """Per-process state shared by all sessions: the cache, the data version, reachability."""

    def __init__(self, client: IngesterClient, cache_ttl: float = 30.0, poll_interval: float = 1.0) -> None:
        self.client = client
        self.history_ttl = cache_ttl
        self.latest_ttl = max(1.0, cache_ttl / 6)
        self.poll_interval = poll_interval
        self.cache = TTLCache()
        self.version = 0
        self.reachable = True
        self.error = ""
        self.unreachable_since: datetime | None = None
        self.last_stats: dict[str, Any] | None = None
        self.groups: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---- reading (sessions) ------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        version = self.version
        stats = self.cache.get(("stats", version), self.latest_ttl, self._load_stats)
        latest = self.cache.get(("latest", version), self.latest_ttl, self._load_latest)
        alerts = self.cache.get(("alerts", version), self.latest_ttl, self._load_alerts)
        return Snapshot(stats=stats, latest=latest, alerts=alerts)

    def history(
        self, symbols: tuple[str, ...], start: datetime | None, end: datetime | None, points: int = HISTORY_POINTS
    ) -> pd.DataFrame:
        symbols = tuple(s for s in symbols if _QUERYABLE.match(s))  # the API rejects other tickers
        if not symbols:
            return _empty_history()
        key = ("history", self.version, symbols, _iso(start), _iso(end), points)
        return self.cache.get(key, self.history_ttl, lambda: self._load_history(symbols, start, end, points))

    def _load_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.client.stats().model_dump(mode="json")
        stats["fetched_at"] = time.monotonic()  # ages are computed from seconds_since_last_data + this
        return stats

    def _load_latest(self) -> pd.DataFrame:
        frame = pd.DataFrame([row.model_dump(mode="json") for row in self.client.latest().data])
        if frame.empty:
            return frame
        for col in ("timestamp", "received_at"):
            if col in frame:
                frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
        with self._lock:
            prices = dict(zip(frame["symbol"], pd.to_numeric(frame["price"], errors="coerce"), strict=True))
            self.groups = assign_groups(prices, self.groups)
        return frame.assign(group=frame["symbol"].map(self.groups))

    def _load_alerts(self) -> pd.DataFrame:
        since = datetime.now(UTC) - pd.Timedelta(hours=24)
        try:
            frame = pd.DataFrame([row.model_dump(mode="json") for row in self.client.alerts(since=since).data])
        except IngesterRejected as exc:  # an ingester without alerts must not hide the prices
            log.info("alerts not available: %s", exc)
            return pd.DataFrame()
        if not frame.empty and "fired_at" in frame:
            frame["fired_at"] = pd.to_datetime(frame["fired_at"], utc=True, format="ISO8601")
        return frame

    def _load_history(
        self, symbols: tuple[str, ...], start: datetime | None, end: datetime | None, points: int
    ) -> pd.DataFrame:
        try:
            frame = pd.DataFrame(self.client.history_rows(symbols, start, end, points))
        except IngesterRejected as exc:  # e.g. none of the symbols has data any more
            log.info("history not available: %s", exc)
            return _empty_history()
        if frame.empty:
            return _empty_history()
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
        for col in ("open", "high", "low", "close", "price", "volume_24h"):
            if col in frame:
                frame[col] = pd.to_numeric(frame[col], errors="coerce")
        if "close" not in frame:
            frame["close"] = frame["price"]
        return frame.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)

    # ---- watching (one background thread) ----------------------------------------------
    def start(self) -> SharedData:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="ingester-watch", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _bump(self) -> None:
        with self._lock:
            self.version += 1
            oldest = self.version - 1  # sessions still reading the previous version may finish
        self.cache.drop(lambda key: isinstance(key, tuple) and isinstance(key[1], int) and key[1] < oldest)

    def _check_stats(self) -> dict[str, Any] | None:
        """Fetch stats; record reachability; bump the version when the data changed."""
        try:
            stats = self._load_stats()
        except (IngesterUnavailable, IngesterRejected) as exc:
            if self.reachable:
                log.warning("ingester unreachable: %s", exc)
                self.unreachable_since = datetime.now(UTC)
            self.reachable, self.error = False, str(exc)
            return None
        changed = not self.reachable or self.last_stats is None or _data_mark(stats) != _data_mark(self.last_stats)
        if not self.reachable:
            log.info("ingester reachable again")
        self.reachable, self.error, self.unreachable_since = True, "", None
        self.last_stats = stats
        if changed:
            self.cache.get(("stats", self.version + 1), self.latest_ttl, lambda: stats)
            self._bump()
        return stats

    def _watch(self) -> None:
        while not self._stop.is_set():
            if self._check_stats() is not None and not self._follow_events():
                # no SSE (old ingester, proxy buffering): poll the cheap stats endpoint instead
                self._stop.wait(self.poll_interval)
                continue
            self._stop.wait(self.poll_interval)

    def _follow_events(self) -> bool:
        """Block on the SSE stream, re-checking stats on each commit. False if SSE is unusable."""
        try:
            with self.client.events() as commits:
                for _ in commits:
                    if self._stop.is_set():
                        return True
                    self._check_stats()
        except IngesterRejected:  # no SSE here (an old ingester, a proxy): poll instead
            return False
        except IngesterUnavailable as exc:  # reachability is re-checked by the caller's next stats call
            log.info("event stream ended: %s", exc)
        return True


def data_age(stats: dict[str, Any] | None) -> float | None:
    """Seconds since the ingester last received data, as of now (None without data)."""
    if not stats or stats.get("seconds_since_last_data") is None:
        return None
    return float(stats["seconds_since_last_data"]) + time.monotonic() - stats.get("fetched_at", time.monotonic())


def _data_mark(stats: dict[str, Any]) -> tuple[Any, ...]:
    """What changes when data is stored: a backfill stores candles only (`records` counts quotes)."""
    return stats.get("records"), stats.get("candles"), stats.get("last_update"), stats.get("coins")


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ") if value.tzinfo else value.isoformat()


def _empty_history() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": pd.Series(dtype=str),
            "timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
            **{c: pd.Series(dtype=float) for c in ("open", "high", "low", "close", "price")},
        }
    )
