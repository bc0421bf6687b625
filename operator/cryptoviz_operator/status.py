"""What a TrackedCrypto's status should say, computed without I/O from the render decision and
what the ingester last told us. Messages are deterministic so an unchanged world writes nothing."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptoviz_operator.render import Decision, ObjectKey, interval_seconds, object_key

if TYPE_CHECKING:
    from cryptoviz_operator.backfill import Plan

INGESTER_REASONS = frozenset({"QuotesReceived", "NoData", "Stale", "IngesterUnreachable"})
"""Ready reasons only the status refresh (which talks to the ingester) can establish."""
STALE_AFTER_INTERVALS = 3
MIN_STALE_SECONDS = 300


@dataclass(frozen=True)
class IngestView:
    """One answer (or failure) of the ingester's /api/v1/latest, grouped by symbol."""

    url: str
    error: str | None = None
    quotes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime, precise: bool = False) -> str:
    """RFC 3339 in UTC; `precise` keeps microseconds (for values compared later, like firedAt)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ" if precise else "%Y-%m-%dT%H:%M:%SZ")


def quote_time(quote: Mapping[str, Any]) -> datetime:
    """The provider time of a quote `pick_quote` chose (it keeps only quotes whose time parses)."""
    parsed = parse_time(quote["timestamp"])
    if parsed is None:
        raise ValueError(f"quote without a timestamp: {quote!r:.200}")
    return parsed


def pick_quote(rows: list[dict[str, Any]], ids: Mapping[str, Any]) -> dict[str, Any] | None:
    """The quote that stands for this coin: one whose coin id matches `spec.ids` if any, the newest."""
    usable = [r for r in rows if isinstance(r.get("price"), int | float) and parse_time(r.get("timestamp"))]
    matching = [r for r in usable if str(ids.get(str(r.get("provider")), "")) == str(r.get("coin_id"))]
    candidates = matching or usable
    return max(candidates, key=lambda r: (parse_time(r["timestamp"]), str(r.get("provider")))) if candidates else None


def _condition(
    kind: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    previous: Mapping[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    unchanged = previous is not None and previous.get("status") == status
    condition = {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": (previous or {}).get("lastTransitionTime") if unchanged else now,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def find_condition(status: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == kind:
            return condition
    return None


def _ready(
    obj: Mapping[str, Any], decision: Decision, ingest: IngestView | None, quote: dict[str, Any] | None, now: datetime
) -> tuple[str, str, str] | None:
    """(status, reason, message) of Ready; None keeps the current one (no ingester answer yet)."""
    symbol = str((obj.get("spec") or {}).get("symbol"))
    if not decision.accepted:
        return ("False", "NotAccepted", f"not accepted: {decision.reason}")
    if not decision.active:
        return ("False", "Paused", f"paused: {symbol} is not scraped")
    if ingest is None:
        return None
    if ingest.error is not None:
        return ("False", "IngesterUnreachable", f"ingester at {ingest.url} unreachable: {ingest.error}")
    if quote is None:
        return ("False", "NoData", f"the ingester has no quotes for {symbol} yet")
    seen = parse_time(quote.get("received_at")) or parse_time(quote["timestamp"])
    interval = decision.interval_seconds  # the schedule floor may make it longer than spec.interval
    if interval is None:
        try:
            interval = interval_seconds(obj.get("spec") or {})
        except ValueError:
            interval = 0
    stale_after = timedelta(seconds=max(STALE_AFTER_INTERVALS * interval, MIN_STALE_SECONDS))
    when = format_time(quote_time(quote))
    if seen is not None and now - seen > stale_after:
        return ("False", "Stale", f"no new quote for {symbol} since {when} (more than {stale_after})")
    return ("True", "QuotesReceived", f"{symbol} last quoted at {when} by {quote.get('provider')}")


def desired_status(
    obj: Mapping[str, Any],
    decision: Decision,
    ingest: IngestView | None,
    now: datetime,
    backfilled: tuple[str, str, str] | None = None,
    history: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The status fields the operator owns (conditions, observedGeneration, price, change24h, lastSeen,
    history). `backfilled` is the Backfilled condition's (status, reason, message), None to keep it."""
    current = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    stamp = format_time(now)
    spec = obj.get("spec") or {}
    quote = None
    if ingest is not None and ingest.error is None:
        quote = pick_quote(ingest.quotes.get(str(spec.get("symbol")), []), spec.get("ids") or {})

    accepted = _condition(
        "Accepted",
        "True" if decision.accepted else "False",
        decision.reason,
        decision.message,
        generation,
        find_condition(current, "Accepted"),
        stamp,
    )
    previous_ready = find_condition(current, "Ready")
    ready = _ready(obj, decision, ingest, quote, now)
    if ready is None:
        ready = (
            (previous_ready["status"], previous_ready["reason"], previous_ready.get("message", ""))
            if previous_ready is not None and previous_ready.get("reason") in INGESTER_REASONS
            else ("Unknown", "Pending", "waiting for the first status refresh from the ingester")
        )
    status: dict[str, Any] = {
        "conditions": [accepted, _condition("Ready", *ready, generation, previous_ready, stamp)],
    }
    previous_backfilled = find_condition(current, "Backfilled")
    if backfilled is not None:
        status["conditions"].append(_condition("Backfilled", *backfilled, generation, previous_backfilled, stamp))
    elif previous_backfilled is not None:
        status["conditions"].append(previous_backfilled)
    if history:
        status["history"] = dict(history)
    if generation is not None:
        status["observedGeneration"] = generation
    if quote is not None:
        status["price"] = float(quote["price"])
        change = quote.get("percent_change_24h")
        if isinstance(change, int | float) and math.isfinite(change):
            status["change24h"] = round(float(change), 4)
        status["lastSeen"] = format_time(quote_time(quote))
    return status


def _comparable(value: Any) -> Any:
    """Drop transition times: a condition that only differs by them has not changed."""
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k != "lastTransitionTime"}
    return value


def status_changes(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that brings `current` to `desired` (empty when nothing changed)."""
    return {k: v for k, v in desired.items() if _comparable(current.get(k)) != _comparable(v)}


def _latest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def alert_statuses(
    rules: list[tuple[str, str]], rows: Sequence[Mapping[str, Any]], previous: Any
) -> list[dict[str, Any]]:
    """`status.alerts`: per rule (rule id, condition) of the spec, its last firing and last delivery.

    `rows` are the ingester's recent alerts (with their delivery state); what they no longer cover is
    kept from `previous`, so an entry only ever moves forward.
    """
    before = {e["rule"]: e for e in previous or [] if isinstance(e, dict) and isinstance(e.get("rule"), str)}
    result = []
    for rule_id, condition in rules:
        old = before.get(rule_id, {})
        mine = [
            (fired_at, r)
            for r in rows
            if r.get("rule_id") == rule_id and (fired_at := parse_time(r.get("fired_at"))) is not None
        ]
        entry: dict[str, Any] = {"rule": rule_id, "condition": condition}
        old_fired = parse_time(old.get("lastFiredAt"))
        newest = max(mine, key=lambda pair: pair[0]) if mine else None
        if newest is not None and (old_fired is None or newest[0] >= old_fired):
            fired, row = newest
            entry["lastFiredAt"] = format_time(fired)
            entry["lastMessage"] = str(row.get("message") or "")[:1024]
            entry["delivery"] = str(row.get("delivery") or "pending")
        else:
            entry.update({k: old[k] for k in ("lastFiredAt", "lastMessage", "delivery") if k in old})
        delivered = [
            parse_time(d.get("delivered_at"))
            for _, row in mine
            for d in row.get("deliveries") or []
            if isinstance(d, dict) and d.get("status") == "delivered"
        ]
        last_delivered = _latest(parse_time(old.get("lastDeliveredAt")), *delivered)
        if last_delivered is not None:
            entry["lastDeliveredAt"] = format_time(last_delivered)
        result.append(entry)
    return result


def status_work(
    objects: list[dict[str, Any]],
    decisions: Mapping[ObjectKey, Decision],
    plans: Mapping[ObjectKey, Plan],
    ingest: IngestView | None,
    now: datetime,
) -> list[tuple[dict[str, Any], dict[str, Any], Decision | None]]:
    """(object, status patch, refusal to report as a Warning Event) for every object with something to
    write: the status it should have differs, or it is newly refused (or refused for another reason)."""
    work = []
    for obj in objects:
        key = object_key(obj)
        decision = decisions[key]
        current = obj.get("status") or {}
        plan = plans[key]
        changes = status_changes(current, desired_status(obj, decision, ingest, now, plan.condition, plan.history))
        warning = None
        if not decision.accepted:
            before = find_condition(current, "Accepted") or {}
            if (before.get("status"), before.get("reason"), before.get("message")) != (
                "False",
                decision.reason,
                decision.message,
            ):
                warning = decision
        if changes or warning is not None:
            work.append((obj, changes, warning))
    return work
