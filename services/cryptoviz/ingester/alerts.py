"""Price alerts: the rules of SCRAPER_CONFIG's coins[].alerts, evaluated on every commit and on a clock.

Price, 24h-change and window rules (`change_above` / `change_below`: a move of `percent` within
`window`) are decided from the newest committed quote of their symbol, inside the batch's
transaction (so an alert is committed with the quotes that fired it). Stale rules (`stale_after`:
no new quote for that long) have no batch to ride on: a timer decides them. Either way a rule
fires only when it has not fired within its cooldown (remembered across restarts through the
`alerts` table), and the stored rows go to the JetStream outbox (`outbox.Outbox`). The config file
is re-read when it changes (the operator rewrites the mounted ConfigMap).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import duckdb

from cryptoviz.core.config import ConfigError, load_config
from cryptoviz.ingester import metrics
from cryptoviz.ingester.rules import (
    STALE,
    WINDOW_CONDITIONS,
    Rule,
    Window,
    alert_id,
    cooled_down,
    is_stale,
    message,
    newest_per_symbol,
    observe,
    rules_from_config,
    stale_since,
)
from cryptoviz.ingester.store import Store

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
STALE_CHECK_MAX_SECONDS = 15.0
"""Stale rules are checked at least this often (more often for short `stale_after`)."""

_WINDOW_SQL = """
SELECT min(price), max(price) FROM crypto_prices
WHERE provider = $provider AND coin_id = $coin_id AND timestamp BETWEEN $start AND $end
"""
_LAST_SEEN_SQL = """
SELECT symbol, arg_max(provider, received_at), arg_max(coin_id, received_at), arg_max(name, received_at),
       arg_max(price, received_at), arg_max(percent_change_24h, received_at), arg_max(timestamp, received_at),
       max(received_at)
FROM coins GROUP BY symbol
"""


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def alert_row(rule: Rule, quote: Mapping | None, fired_at: datetime, observed: float | None, text: str) -> dict:
    """An `alerts` row (see schema.ALERT_COLUMNS)."""
    quote = quote or {}
    rid = rule.rule_id
    return {
        "alert_id": alert_id(rid, fired_at),
        "rule_id": rid,
        "symbol": rule.symbol,
        "name": rule.name or quote.get("name"),
        "condition": rule.condition,
        "threshold": rule.threshold,
        "window_seconds": rule.window_seconds,
        "price": quote.get("price"),
        "change_24h": quote.get("percent_change_24h"),
        "change_pct": observed if rule.condition in WINDOW_CONDITIONS else None,
        "fired_at": fired_at,
        "message": text,
        "provider": quote.get("provider"),
        "coin_id": quote.get("coin_id"),
        "quote_timestamp": quote.get("timestamp"),
        "notify": list(rule.notify),
    }


class AlertEngine:
    def __init__(self, path: str | None, store: Store, clock: Clock = utc_now) -> None:
        self.path = path
        self.store = store
        self.clock = clock
        self.started_at = clock()
        self.rules: list[Rule] = []
        self._mtime: float | None = None
        self._last_fired: dict[tuple, datetime] = {}
        self._reload()
        self._load_history()

    def _reload(self) -> None:
        """(Re)read the rules when the file changed; a broken file keeps the previous rules."""
        if not self.path:
            return
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError as exc:
            if self._mtime is not None:
                log.warning("alert rules file %s unreadable (%s); keeping %d rules", self.path, exc, len(self.rules))
            self._mtime = None
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            self.rules = rules_from_config(load_config(self.path))
            log.info("loaded %d alert rules from %s", len(self.rules), self.path)
        except ConfigError as exc:
            log.error("alert rules not reloaded: %s", exc)

    def _load_history(self) -> None:
        rows = (
            self.store.reader()
            .execute("SELECT symbol, condition, threshold, window_seconds, max(fired_at) FROM alerts GROUP BY ALL")
            .fetchall()
        )
        self._last_fired = {(s, c, t, w): fired for s, c, t, w, fired in rows}

    @property
    def stale_check_seconds(self) -> float | None:
        """How often the clock-driven check should run; None without stale rules."""
        stale = [r.threshold for r in self.rules if r.condition == STALE]
        return min(STALE_CHECK_MAX_SECONDS, max(1.0, min(stale) / 4)) if stale else None

    def due(self, latest: list[dict], conn: duckdb.DuckDBPyConnection) -> list[dict]:
        """The alerts the newest quotes of a batch fire, as `alerts` rows.

        Called by the store inside the batch's transaction (`conn`), so an alert is committed with
        the quotes that fired it and a window sees them; a crash before the acks cannot lose it (the
        redelivery is all duplicates and fires nothing). Remembers nothing: `committed` does.
        """
        self._reload()
        if not self.rules:
            return []
        now = self.clock()
        by_symbol = newest_per_symbol(latest)
        windows: dict[tuple, Window | None] = {}
        fired = []
        for rule in self.rules:
            quote = by_symbol.get(rule.symbol)
            if quote is None or rule.condition == STALE:
                continue
            window = None
            if rule.condition in WINDOW_CONDITIONS:
                key = (quote["provider"], quote["coin_id"], rule.window)
                if key not in windows:
                    windows[key] = _window(conn, quote, rule.window)
                window = windows[key]
            observed = observe(rule, quote, window)
            if observed is None or not cooled_down(rule, self._last_fired.get(rule.key), now):
                continue
            fired.append(alert_row(rule, quote, now, observed, message(rule, quote["price"], observed)))
        return fired

    def stale_due(self) -> list[dict]:
        """The stale rules whose coin has had no new quote for their `stale_after` (clock-driven)."""
        self._reload()
        stale_rules = [r for r in self.rules if r.condition == STALE]
        if not stale_rules:
            return []
        now = self.clock()
        seen = {row[0]: row for row in self.store.reader().execute(_LAST_SEEN_SQL).fetchall()}
        fired = []
        for rule in stale_rules:
            row = seen.get(rule.symbol)
            last_seen = row[7] if row else None
            if not is_stale(rule, last_seen, self.started_at, now):
                continue
            if not cooled_down(rule, self._last_fired.get(rule.key), now):
                continue
            quote = None
            if row:
                keys = ("provider", "coin_id", "name", "price", "percent_change_24h", "timestamp")
                quote = dict(zip(keys, row[1:7], strict=True))
            quiet = now - stale_since(last_seen, self.started_at)
            text = message(rule, quote["price"] if quote else None, None, quiet)
            fired.append(alert_row(rule, quote, now, None, text))
        return fired

    def committed(self, fired: list[dict]) -> None:
        """After the commit: start the cooldowns and count (`log_fired` logs them)."""
        for alert in fired:
            self._last_fired[(alert["symbol"], alert["condition"], alert["threshold"], alert["window_seconds"])] = (
                alert["fired_at"]
            )
        metrics.ALERTS.inc(len(fired))

    @staticmethod
    def log_fired(fired: list[dict]) -> None:
        for alert in fired:
            log.info("alert fired: %s", alert["message"], extra={"symbol": alert["symbol"], "rule": alert["rule_id"]})


def _window(conn: duckdb.DuckDBPyConnection, quote: Mapping, window: timedelta | None) -> Window | None:
    end = quote["timestamp"]
    low, high = conn.execute(
        _WINDOW_SQL,
        {"provider": quote["provider"], "coin_id": quote["coin_id"], "start": end - window, "end": end},
    ).fetchall()[0]
    if low is None or high is None:
        return None
    return Window(low=min(low, quote["price"]), high=max(high, quote["price"]))
