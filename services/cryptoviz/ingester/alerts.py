"""Price alerts: the rules of SCRAPER_CONFIG's coins[].alerts, evaluated on every commit.

A rule fires when the newest committed quote of its symbol meets the condition and the rule
has not fired within its cooldown (remembered across restarts through the `alerts` table).
Each firing is stored in the same transaction as the batch that fired it, then published on
core NATS `cryptoviz.alerts.<SYMBOL>` as JSON. The config file is re-read when it changes (the
operator rewrites the mounted ConfigMap).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from nats.aio.client import Client

from cryptoviz.core import contract
from cryptoviz.core.config import ConfigError, load_config
from cryptoviz.ingester import metrics
from cryptoviz.ingester.formats import JSON_OPTIONS
from cryptoviz.ingester.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rule:
    symbol: str
    condition: str
    threshold: float
    cooldown: timedelta

    def check(self, quote: dict) -> float | None:
        """The observed value when the rule is met, else None."""
        if self.condition == "above" and quote["price"] > self.threshold:
            return quote["price"]
        if self.condition == "below" and quote["price"] < self.threshold:
            return quote["price"]
        change = quote.get("percent_change_24h")
        if self.condition == "change_24h_above" and change is not None and abs(change) > self.threshold:
            return change
        return None

    def message(self, quote: dict) -> str:
        if self.condition == "change_24h_above":
            return (
                f"{self.symbol} moved {quote['percent_change_24h']:+.2f}% in 24h "
                f"(more than {self.threshold:g}%), price {quote['price']:,.6g} USD"
            )
        return f"{self.symbol} price {quote['price']:,.6g} USD is {self.condition} {self.threshold:,.6g} USD"


def rules_from_config(path: str | None) -> list[Rule]:
    config = load_config(path)
    rules = []
    for coin in config.coins:
        for alert in coin.alerts:
            for condition in ("above", "below", "change_24h_above"):
                value = getattr(alert, condition)
                if value is not None:
                    rules.append(Rule(coin.symbol, condition, float(value), timedelta(seconds=alert.cooldown_seconds)))
    return rules


class AlertEngine:
    def __init__(self, path: str | None, store: Store, nc: Client | None) -> None:
        self.path = path
        self.store = store
        self.nc = nc
        self.rules: list[Rule] = []
        self._mtime: float | None = None
        self._last_fired: dict[tuple[str, str, float], datetime] = {}
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
            self.rules = rules_from_config(self.path)
            log.info("loaded %d alert rules from %s", len(self.rules), self.path)
        except ConfigError as exc:
            log.error("alert rules not reloaded: %s", exc)

    def _load_history(self) -> None:
        rows = (
            self.store.reader()
            .execute("SELECT symbol, condition, threshold, max(fired_at) FROM alerts GROUP BY ALL")
            .fetchall()
        )
        self._last_fired = {(s, c, t): fired for s, c, t, fired in rows}

    def due(self, latest: list[dict]) -> list[dict]:
        """The alerts the newest quotes of a batch fire, as `alerts` rows.

        Called by the store inside the batch's transaction, so an alert is committed with the
        quotes that fired it (a crash before the acks cannot lose it: the redelivery is all
        duplicates and fires nothing). Remembers nothing: `announce` does, after the commit.
        """
        self._reload()
        if not self.rules:
            return []
        now = datetime.now(UTC).replace(tzinfo=None)
        by_symbol: dict[str, dict] = {}
        for quote in latest:
            current = by_symbol.get(quote["symbol"])
            if current is None or quote["timestamp"] > current["timestamp"]:
                by_symbol[quote["symbol"]] = quote
        fired = []
        for rule in self.rules:
            quote = by_symbol.get(rule.symbol)
            if quote is None or rule.check(quote) is None:
                continue
            last = self._last_fired.get((rule.symbol, rule.condition, rule.threshold))
            if last is not None and now - last < rule.cooldown:
                continue
            fired.append(
                {
                    "symbol": rule.symbol,
                    "condition": rule.condition,
                    "threshold": rule.threshold,
                    "price": quote["price"],
                    "change_24h": quote.get("percent_change_24h"),
                    "fired_at": now,
                    "message": rule.message(quote),
                    "provider": quote["provider"],
                    "coin_id": quote["coin_id"],
                    "quote_timestamp": quote["timestamp"],
                }
            )
        return fired

    async def announce(self, fired: list[dict]) -> None:
        """After the commit: start the cooldowns, count, log and publish the stored alerts."""
        for alert in fired:
            self._last_fired[(alert["symbol"], alert["condition"], alert["threshold"])] = alert["fired_at"]
            metrics.ALERTS.inc()
            log.info("alert fired: %s", alert["message"], extra={"symbol": alert["symbol"]})
            if self.nc is not None and self.nc.is_connected:
                payload = orjson.dumps(alert, option=JSON_OPTIONS)
                await self.nc.publish(f"{contract.ALERTS_PREFIX}.{alert['symbol']}", payload)
