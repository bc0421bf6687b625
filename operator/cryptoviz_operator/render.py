"""The decision, as a pure function: all TrackedCrypto objects in scope → the scraper config.

Like prometheus-operator rendering ServiceMonitors into Prometheus' scrape config: select,
validate, render deterministically. No I/O here, so the same objects always give the same
bytes (and hash), whatever order they are listed in; the handlers only write the result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptoviz.core.config import Alert, Move, ScraperConfig, TrackedCoin, dump_config, parse_duration
from cryptoviz.core.quote import PROVIDERS
from pydantic import ValidationError

from cryptoviz_operator import tenancy
from cryptoviz_operator.tenancy import MIN_INTERVAL_SECONDS, Limits

DEFAULT_INTERVAL_SECONDS = 300
"""A TrackedCrypto without `spec.interval` wants its coin scraped every 5 minutes."""
NAMED_SHARERS = 3
"""Objects sharing a symbol named in an Accepted message at most (then "and N more")."""

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
    interval_seconds: int | None = None
    """How often its coin is scraped at most (its interval, or the schedule floor if that is longer)."""


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
    """One symbol's config entry: owned by the namespace of its oldest object, merged from that namespace's
    compatible objects (`members`); `readers` are other namespaces' objects sharing it as it is."""

    owner: ObjectKey
    coin: TrackedCoin
    members: list[ObjectKey]
    readers: list[ObjectKey] = field(default_factory=list)


@dataclass(frozen=True)
class _Candidate:
    key: ObjectKey
    coin: TrackedCoin
    interval: int


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


_SCHEDULES = (
    *((m * 60, "* * * * *" if m == 1 else f"*/{m} * * * *") for m in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)),
    *((h * 3600, "0 * * * *" if h == 1 else f"0 */{h} * * *") for h in (1, 2, 3, 4, 6, 8, 12)),
    (86400, "0 0 * * *"),
)
"""(period, cron schedule) of every period cron runs evenly (divisors of an hour or a day), shortest first."""


def cron_schedule(seconds: int, floor_seconds: int = MIN_INTERVAL_SECONDS) -> str:
    """The cron schedule running at least every `seconds` (rounded down to an even period), but never
    more often than every `floor_seconds` (then rounded up instead)."""
    period, schedule = max((p for p in _SCHEDULES if p[0] <= max(seconds, 60)), default=_SCHEDULES[0])
    if period < floor_seconds:
        period, schedule = min((p for p in _SCHEDULES if p[0] >= floor_seconds), default=_SCHEDULES[-1])
    return schedule


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


def _accepted_message(claim: _Claim, key: ObjectKey, reader: bool) -> str:
    """Names of at most NAMED_SHARERS objects (all of this namespace): linear in the sharers, not quadratic."""
    symbol = claim.coin.symbol
    if reader:
        return f"{symbol} is in the scraper config, as tracked by another namespace (its ids, providers and alerts)"
    message = f"{symbol} is in the scraper config"
    others = len(claim.members) - 1
    if others:
        named = [_describe(k) for k in claim.members[: NAMED_SHARERS + 1] if k != key][:NAMED_SHARERS]
        message += f", shared with {', '.join(named)}" + (
            f" and {others - len(named)} more" if others > len(named) else ""
        )
    if claim.readers:
        message += "; TrackedCryptos in other namespaces also read it"
    return message


def _merge_member(claims: dict[str, _Claim], candidate: _Candidate) -> Decision | None:
    """Add an object of the owning namespace to its symbol's entry; a Decision if it cannot be."""
    key, coin = candidate.key, candidate.coin
    claim = claims.get(coin.symbol)
    if claim is None:
        claims[coin.symbol] = _Claim(owner=key, coin=coin, members=[key])
        return None
    conflicts = _conflicting_ids(claim.coin.ids, coin.ids)
    if conflicts:
        detail = ", ".join(f"{p} {theirs!r} vs {ours!r}" for p, (theirs, ours) in conflicts.items())
        return Decision(
            False,
            "SymbolConflict",
            f"symbol {coin.symbol} is already tracked by {_describe(claim.owner)} (created earlier) "
            f"with different ids ({detail}); use the same ids or delete one of them",
        )
    if (claim.coin.providers is None) != (coin.providers is None):
        return Decision(
            False,
            "ProviderConflict",
            f"symbol {coin.symbol} is already tracked by {_describe(claim.owner)} (created earlier), "
            "one of you with the scraper's default provider and the other with an explicit "
            "providers list; list providers on both (or on neither)",
        )
    claim.coin = _merge(claim, coin)
    claim.members.append(key)
    return None


def _candidates(
    objects: Iterable[Mapping[str, Any]], limits: Limits, decisions: dict[ObjectKey, Decision]
) -> list[_Candidate]:
    """The admitted, valid, active objects, oldest first; a decision for every other one."""
    candidates = []
    for obj, refusal in tenancy.admit(sorted(objects, key=_order), limits):
        key = object_key(obj)
        if refusal is not None:
            decisions[key] = Decision(False, *refusal)
            continue
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
        candidates.append(_Candidate(key, coin, interval))
    return candidates


def _config(claims: Iterable[_Claim]) -> ScraperConfig:
    return ScraperConfig(coins=sorted((c.coin for c in claims), key=lambda coin: coin.symbol))


def _fit(claims: list[_Claim], limit: int) -> tuple[list[_Claim], ScraperConfig, str]:
    """The oldest claims whose config fits in `limit` bytes, that config and its text."""
    config = _config(claims)
    text = dump_config(config)
    if len(text.encode()) <= limit:
        return claims, config, text
    empty = len(dump_config(ScraperConfig()).encode()) - len(" []")  # "coins: []" → "coins:" + entries
    total, kept = empty, 0
    for claim in claims:
        total += len(dump_config(ScraperConfig(coins=[claim.coin])).encode()) - empty
        if total > limit:
            break
        kept += 1
    while True:  # the sum of entries is the document's size; re-check rather than trust it
        config = _config(claims[:kept])
        text = dump_config(config)
        if len(text.encode()) <= limit or kept == 0:
            return claims[:kept], config, text
        kept -= 1


def render(objects: Iterable[Mapping[str, Any]], limits: Limits | None = None) -> Rendering:
    """All TrackedCryptos in scope → config, schedule and one decision per object.

    Rules (docs/operator.md): objects outside the allowed namespaces or beyond the cap are refused; of
    the others, oldest first (creationTimestamp, then namespace/name), the oldest with a symbol gives
    its namespace that symbol's entry. Later objects of that namespace are merged in when their ids
    agree and both or neither list providers (the default provider is the scraper's, unknown here);
    other namespaces' objects share the finished entry only as it is. Paused and invalid objects claim
    nothing. Entries that would not fit in a ConfigMap are left out, newest first. The schedule follows
    the smallest interval of the objects in the config, never below the floor.
    """
    limits = limits or Limits()
    decisions: dict[ObjectKey, Decision] = {}
    candidates = _candidates(objects, limits, decisions)
    owners: dict[str, str] = {}
    for candidate in candidates:
        owners.setdefault(candidate.coin.symbol, candidate.key[0])
    claims: dict[str, _Claim] = {}
    for candidate in candidates:
        if candidate.key[0] == owners[candidate.coin.symbol]:
            refused = _merge_member(claims, candidate)
            if refused is not None:
                decisions[candidate.key] = refused
    for candidate in candidates:
        claim = claims[candidate.coin.symbol]
        if candidate.key[0] != owners[candidate.coin.symbol]:
            refusal = tenancy.reader_refusal(claim.coin, candidate.coin)
            if refusal is not None:
                decisions[candidate.key] = Decision(False, *refusal)
            else:
                claim.readers.append(candidate.key)

    fitted, config, text = _fit(list(claims.values()), limits.max_config_bytes)
    for claim in list(claims.values())[len(fitted) :]:
        for key in (*claim.members, *claim.readers):
            decisions[key] = Decision(False, *tenancy.too_large(claim.coin.symbol, limits))
    intervals = {c.key: c.interval for c in candidates}
    floor = limits.schedule_floor_seconds
    for claim in fitted:
        for key, reader in (*((k, False) for k in claim.members), *((k, True) for k in claim.readers)):
            message = _accepted_message(claim, key, reader) + tenancy.floor_note(intervals[key], limits)
            decisions[key] = Decision(
                True, "Accepted", message, active=True, interval_seconds=max(intervals[key], floor)
            )
    active = [d.interval_seconds for d in decisions.values() if d.active and d.interval_seconds]
    interval = min(active, default=max(DEFAULT_INTERVAL_SECONDS, floor))
    return Rendering(
        config=config,
        text=text,
        digest=hashlib.sha256(text.encode()).hexdigest(),
        interval_seconds=interval,
        schedule=cron_schedule(interval, floor),
        decisions=dict(sorted(decisions.items())),
    )


def render_cached(
    objects: list[dict[str, Any]], limits: Limits, previous: tuple[str, Rendering] | None
) -> tuple[str, Rendering]:
    """(fingerprint, rendering) of `objects`: `previous` again when their identities and specs (all that
    `render` reads) are the same, so a status refresh of thousands of unchanged objects renders nothing."""
    identities = sorted(
        (object_key(o), str((o.get("metadata") or {}).get("creationTimestamp") or ""), o.get("spec")) for o in objects
    )
    fingerprint = hashlib.sha256(json.dumps(identities, sort_keys=True, default=str).encode()).hexdigest()
    if previous is not None and previous[0] == fingerprint:
        return previous
    return fingerprint, render(objects, limits)
