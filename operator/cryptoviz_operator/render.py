"""The decision, as a pure function: all TrackedCrypto objects in scope → the scraper config.

Like prometheus-operator rendering ServiceMonitors into Prometheus' scrape config: select,
validate, render deterministically. No I/O here, so the same objects always give the same
bytes (and hash), whatever order they are listed in; the handlers only write the result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptoviz.core.config import (
    Alert,
    Move,
    ScraperConfig,
    TrackedCoin,
    dump_config,
    parse_config,
    parse_duration,
)
from cryptoviz.core.quote import PROVIDERS
from pydantic import ValidationError

DEFAULT_INTERVAL_SECONDS = 300
"""A TrackedCrypto without `spec.interval` wants its coin scraped every 5 minutes."""
MIN_INTERVAL_SECONDS = 60

ObjectKey = tuple[str, str]
"""(namespace, name) of a TrackedCrypto."""

ALERT_CONDITIONS = {
    "above": "above",
    "below": "below",
    "change24hAbove": "change_24h_above",
    "changeAbove": "change_above",
    "changeBelow": "change_below",
    "staleAfter": "stale_after",
}
"""CR alert field → scraper config alert field (changeAbove/changeBelow keep their {percent, window})."""


@dataclass(frozen=True)
class Decision:
    """Whether one TrackedCrypto made it into the config, and why (for its Accepted condition)."""

    accepted: bool
    reason: str
    message: str
    active: bool = False
    """Accepted and not paused: its coin is in the rendered config."""


@dataclass(frozen=True)
class Rendering:
    config: ScraperConfig
    text: str
    digest: str
    interval_seconds: int
    schedule: str
    decisions: dict[ObjectKey, Decision] = field(default_factory=dict)


@dataclass
class _Claim:
    """The objects sharing one symbol: the first (oldest) one and those compatible with it."""

    owner: ObjectKey
    coin: TrackedCoin
    members: list[ObjectKey]


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _order(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """Older first; ties (and missing timestamps) broken by namespace/name so order never depends on listing."""
    meta = obj.get("metadata") or {}
    return (str(meta.get("creationTimestamp") or ""), *object_key(obj))


def coin_from_spec(spec: Mapping[str, Any]) -> TrackedCoin:
    """Map a TrackedCrypto spec to a scraper config coin; raises ValueError with a readable message."""
    if not isinstance(spec, Mapping):
        raise ValueError("spec must be an object")
    ids = {str(p): str(v) for p, v in (spec.get("ids") or {}).items() if v is not None}
    cmc = ids.get("coinmarketcap")
    if cmc is not None and not (cmc.isdigit() and int(cmc) > 0):
        raise ValueError(f"ids.coinmarketcap must be a positive number, not {cmc!r}")
    alerts = []
    for index, item in enumerate(spec.get("alerts") or []):
        if not isinstance(item, Mapping):
            raise ValueError(f"alerts[{index}] must be an object")
        unknown = set(item) - set(ALERT_CONDITIONS) - {"cooldown"}
        if unknown:
            raise ValueError(f"alerts[{index}] has unknown fields {sorted(unknown)}")
        values = {ALERT_CONDITIONS[k]: v for k, v in item.items() if k in ALERT_CONDITIONS}
        alerts.append({**values, "cooldown": item.get("cooldown") or "1h"})
    try:
        return TrackedCoin.model_validate(
            {
                "symbol": spec.get("symbol"),
                "name": spec.get("displayName") or None,
                "ids": ids,
                "providers": spec.get("providers") or None,
                "alerts": alerts,
                "notify": spec.get("notify") or [],
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        raise ValueError(f"{where}: {first['msg']}") from None


def interval_seconds(spec: Mapping[str, Any]) -> int:
    raw = spec.get("interval")
    if raw in (None, ""):
        return DEFAULT_INTERVAL_SECONDS
    seconds = int(parse_duration(raw))
    if seconds < MIN_INTERVAL_SECONDS:
        raise ValueError(f"interval {raw!r} is shorter than 1m")
    return seconds


def cron_schedule(seconds: int) -> str:
    """The cron schedule running at least every `seconds`: cron can only split hours and days
    evenly, so the interval is rounded down to a divisor of 60 minutes or 24 hours."""
    minutes = max(1, seconds // 60)
    if minutes < 60:
        step = max(d for d in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30) if d <= minutes)
        return "* * * * *" if step == 1 else f"*/{step} * * * *"
    hours = minutes // 60
    if hours < 24:
        step = max(d for d in (1, 2, 3, 4, 6, 8, 12) if d <= hours)
        return "0 * * * *" if step == 1 else f"0 */{step} * * *"
    return "0 0 * * *"


def _conflicting_ids(a: Mapping[Any, str], b: Mapping[Any, str]) -> dict[str, tuple[str, str]]:
    return {p: (a[p], b[p]) for p in sorted(set(a) & set(b)) if a[p] != b[p]}


def _merge(claim: _Claim, coin: TrackedCoin) -> TrackedCoin:
    """One config entry for several compatible objects: union of ids, providers and alerts."""
    base = claim.coin
    providers = sorted(set(base.providers or ()) | set(coin.providers or ()), key=PROVIDERS.index)
    alerts = {_alert_key(a): a for a in (*base.alerts, *coin.alerts)}
    return TrackedCoin(
        symbol=base.symbol,
        name=base.name or coin.name,
        ids={**coin.ids, **base.ids},
        providers=providers or None,
        alerts=[alerts[k] for k in sorted(alerts)],
        notify=sorted(set(base.notify) | set(coin.notify)),
    )


def _alert_key(alert: Alert) -> tuple[str, float, float, float]:
    value = getattr(alert, alert.condition)
    if isinstance(value, Move):
        amount, window = value.percent, value.window_seconds
    elif alert.condition == "stale_after":
        amount, window = parse_duration(value), 0.0
    else:
        amount, window = float(value), 0.0
    return (alert.condition, amount, window, alert.cooldown_seconds)


def _describe(key: ObjectKey) -> str:
    return f"{key[0]}/{key[1]}"


def render(objects: Iterable[Mapping[str, Any]]) -> Rendering:
    """All TrackedCryptos in scope → config, schedule and one decision per object.

    Rules: older objects (creationTimestamp, then namespace/name) claim a symbol first; a later
    object with the same symbol is merged in when its ids agree and both or neither list providers
    (the default provider is the scraper's, unknown here), else not accepted. Paused and
    invalid objects claim nothing. The schedule follows the smallest interval of active objects.
    """
    decisions: dict[ObjectKey, Decision] = {}
    claims: dict[str, _Claim] = {}
    intervals: list[int] = []
    for obj in sorted(objects, key=_order):
        key = object_key(obj)
        spec = obj.get("spec") or {}
        try:
            coin = coin_from_spec(spec)
            interval = interval_seconds(spec)
        except ValueError as exc:
            decisions[key] = Decision(False, "InvalidSpec", f"invalid spec: {exc}")
            continue
        if spec.get("paused"):
            decisions[key] = Decision(True, "Paused", f"paused: {coin.symbol} is not in the scraper config")
            continue
        claim = claims.get(coin.symbol)
        if claim is None:
            claims[coin.symbol] = _Claim(owner=key, coin=coin, members=[key])
        else:
            conflicts = _conflicting_ids(claim.coin.ids, coin.ids)
            if conflicts:
                detail = ", ".join(f"{p} {theirs!r} vs {ours!r}" for p, (theirs, ours) in conflicts.items())
                decisions[key] = Decision(
                    False,
                    "SymbolConflict",
                    f"symbol {coin.symbol} is already tracked by {_describe(claim.owner)} (created earlier) "
                    f"with different ids ({detail}); use the same ids or delete one of them",
                )
                continue
            if (claim.coin.providers is None) != (coin.providers is None):
                decisions[key] = Decision(
                    False,
                    "ProviderConflict",
                    f"symbol {coin.symbol} is already tracked by {_describe(claim.owner)} (created earlier), "
                    "one of you with the scraper's default provider and the other with an explicit "
                    "providers list; list providers on both (or on neither)",
                )
                continue
            claim.coin = _merge(claim, coin)
            claim.members.append(key)
        intervals.append(interval)

    for symbol, claim in claims.items():
        for key in claim.members:
            others = [_describe(k) for k in claim.members if k != key]
            message = f"{symbol} is in the scraper config"
            if others:
                message += f", shared with {', '.join(others)}"
            decisions[key] = Decision(True, "Accepted", message, active=True)

    config = parse_config({"coins": [claims[s].coin.model_dump(mode="json") for s in sorted(claims)]}, "render")
    text = dump_config(config)
    interval = min(intervals, default=DEFAULT_INTERVAL_SECONDS)
    return Rendering(
        config=config,
        text=text,
        digest=hashlib.sha256(text.encode()).hexdigest(),
        interval_seconds=interval,
        schedule=cron_schedule(interval),
        decisions=dict(sorted(decisions.items())),
    )
