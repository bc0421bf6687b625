"""Alert rules as pure decisions: which rule a quote (and its window) meets, when data is stale,
and the identity of a firing. No I/O here; `alerts.AlertEngine` feeds them and stores the result.

A firing's `alert_id` derives from its rule and its trigger time, so publishing the same stored
alert again (the outbox after a crash) gives JetStream the same `Nats-Msg-Id` and the notifier
the same dedup key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptoviz.core.config import ScraperConfig, format_duration, parse_duration

PRICE_CONDITIONS = ("above", "below")
WINDOW_CONDITIONS = ("change_above", "change_below")
STALE = "stale_after"


@dataclass(frozen=True, slots=True)
class Rule:
    symbol: str
    condition: str
    threshold: float
    """USD for above/below, percent for the change rules, seconds without a quote for stale_after."""
    cooldown: timedelta
    window: timedelta | None = None
    name: str | None = None
    notify: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, float, float | None]:
        """What the cooldown is remembered by (also for rows stored before window rules existed)."""
        return (self.symbol, self.condition, self.threshold, self.window_seconds)

    @property
    def window_seconds(self) -> float | None:
        return self.window.total_seconds() if self.window is not None else None

    @property
    def rule_id(self) -> str:
        """Readable and stable: `BTC above 100000`, `ETH change_above 5% 1h`, `SOL stale_after 900s`."""
        if self.condition in WINDOW_CONDITIONS:
            return f"{self.symbol} {self.condition} {self.threshold:g}% {format_duration(self.window_seconds or 0)}"
        if self.condition == STALE:
            return f"{self.symbol} {self.condition} {format_duration(self.threshold)}"
        return f"{self.symbol} {self.condition} {self.threshold:g}"


@dataclass(frozen=True, slots=True)
class Window:
    """The lowest and highest stored price of one coin within a rule's window, the current price included."""

    low: float
    high: float


def rules_from_config(config: ScraperConfig) -> list[Rule]:
    rules = []
    for coin in config.coins:
        for alert in coin.alerts:
            condition = alert.condition
            value = getattr(alert, condition)
            window = None
            if condition in WINDOW_CONDITIONS:
                threshold, window = float(value.percent), timedelta(seconds=value.window_seconds)
            elif condition == STALE:
                threshold = parse_duration(value)
            else:
                threshold = float(value)
            rules.append(
                Rule(
                    coin.symbol,
                    condition,
                    threshold,
                    timedelta(seconds=alert.cooldown_seconds),
                    window,
                    coin.name,
                    tuple(coin.notify),
                )
            )
    return rules


def move_percent(price: float, window: Window, condition: str) -> float:
    """The rise from the window's low (change_above) or the fall from its high (change_below), in percent;
    a fall is negative."""
    if condition == "change_above":
        return (price - window.low) / window.low * 100.0 if window.low > 0 else 0.0
    return (price - window.high) / window.high * 100.0 if window.high > 0 else 0.0


def observe(rule: Rule, quote: Mapping, window: Window | None = None) -> float | None:
    """The observed value when the rule is met by this quote, else None (stale rules never are)."""
    price = quote["price"]
    if rule.condition == "above":
        return price if price > rule.threshold else None
    if rule.condition == "below":
        return price if price < rule.threshold else None
    if rule.condition == "change_24h_above":
        change = quote.get("percent_change_24h")
        return change if change is not None and abs(change) > rule.threshold else None
    if rule.condition in WINDOW_CONDITIONS and window is not None:
        move = move_percent(price, window, rule.condition)
        met = move >= rule.threshold if rule.condition == "change_above" else -move >= rule.threshold
        return move if met else None
    return None


def cooled_down(rule: Rule, last_fired: datetime | None, now: datetime) -> bool:
    return last_fired is None or now - last_fired >= rule.cooldown


def stale_since(last_seen: datetime | None, started_at: datetime) -> datetime:
    """When a coin's data went quiet: its newest quote's arrival, or the ingester's start if it has none
    (a coin never quoted is stale too, once the ingester has waited that long)."""
    return max(last_seen, started_at) if last_seen is not None else started_at


def is_stale(rule: Rule, last_seen: datetime | None, started_at: datetime, now: datetime) -> bool:
    return now - stale_since(last_seen, started_at) >= timedelta(seconds=rule.threshold)


def message(rule: Rule, price: float | None, observed: float | None, quiet_for: timedelta | None = None) -> str:
    """One plain-text line, as stored in `alerts.message` and shown in Events."""
    shown = f"{price:,.6g} USD" if price is not None else "no price"
    if rule.condition == "change_24h_above":
        return f"{rule.symbol} moved {observed:+.2f}% in 24h (more than {rule.threshold:g}%), price {shown}"
    if rule.condition in WINDOW_CONDITIONS:
        direction = "rose" if rule.condition == "change_above" else "fell"
        span = format_duration(rule.window_seconds or 0)
        move = abs(observed or 0)
        return f"{rule.symbol} {direction} {move:.2f}% within {span} (at least {rule.threshold:g}%), price {shown}"
    if rule.condition == STALE:
        quiet = format_duration((quiet_for or timedelta()).total_seconds() // 60 * 60)
        limit = format_duration(rule.threshold)
        return f"{rule.symbol} has had no new quote for {quiet} (stale after {limit}), last price {shown}"
    return f"{rule.symbol} price {shown} is {rule.condition} {rule.threshold:,.6g} USD"


def alert_id(rule_id: str, fired_at: datetime) -> str:
    """The identity of one firing: `Nats-Msg-Id` of its message and the notifier's dedup key (KV-safe)."""
    digest = hashlib.sha256(f"{rule_id}\0{fired_at.isoformat()}".encode()).hexdigest()
    return f"a{digest[:31]}"


def newest_per_symbol(latest: Iterable[Mapping]) -> dict[str, Mapping]:
    by_symbol: dict[str, Mapping] = {}
    for quote in latest:
        current = by_symbol.get(quote["symbol"])
        if current is None or quote["timestamp"] > current["timestamp"]:
            by_symbol[quote["symbol"]] = quote
    return by_symbol
