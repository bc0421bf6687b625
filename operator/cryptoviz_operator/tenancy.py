"""Tenancy, as pure decisions: which namespaces may add coins, how many objects count, what another
namespace may do with a symbol it does not own, how often the shared CronJob may run.

The trust model they implement is in docs/operator.md ("Tenancy"). No message here names an object or
a namespace other than the one it is written to: statuses and Events are readable by that namespace.
A refusal is `(reason, message)`; `render` turns it into the object's Accepted condition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from cryptoviz.core.config import TrackedCoin, format_duration

MIN_INTERVAL_SECONDS = 60
"""The CRD's own minimum `spec.interval` (and the smallest schedule cron can express)."""
CONFIGMAP_LIMIT_BYTES = 1024 * 1024
"""Kubernetes refuses a ConfigMap whose data (keys and values) exceeds 1 MiB."""
MAX_CONFIG_BYTES = CONFIGMAP_LIMIT_BYTES - 1024
"""The rendered scraper config at most (a KiB left for the key name)."""

Refusal = tuple[str, str]
"""(reason, message) of an Accepted=False condition."""


@dataclass(frozen=True)
class Limits:
    """What the cluster admin (the chart's values) allows every tenant."""

    allowed_namespaces: tuple[str, ...] = ()
    """Names or globs (`team-*`); () allows every namespace the operator watches."""
    max_objects: int | None = None
    """TrackedCryptos rendered at most (in allowed namespaces, oldest first, paused and invalid ones too)."""
    schedule_floor_seconds: int = MIN_INTERVAL_SECONDS
    max_config_bytes: int = MAX_CONFIG_BYTES

    def allows(self, namespace: str) -> bool:
        return not self.allowed_namespaces or any(fnmatchcase(namespace, p) for p in self.allowed_namespaces)


def namespace_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")


def admit(ordered: Iterable[Mapping[str, Any]], limits: Limits) -> Iterable[tuple[Mapping[str, Any], Refusal | None]]:
    """Each object (oldest first) with its refusal, if any: outside the allowed namespaces (these count
    for nothing), or beyond the cap (the oldest keep their place, so a newcomer can never push one out)."""
    counted = 0
    for obj in ordered:
        namespace = namespace_of(obj)
        if not limits.allows(namespace):
            yield (
                obj,
                (
                    "NamespaceNotAllowed",
                    f"not in the scraper config: namespace {namespace} is not one the operator renders "
                    "TrackedCryptos from (ALLOWED_NAMESPACES, chart value operator.allowedNamespaces)",
                ),
            )
            continue
        counted += 1
        if limits.max_objects is not None and counted > limits.max_objects:
            yield (
                obj,
                (
                    "TooManyTrackedCryptos",
                    f"not in the scraper config: the operator renders at most {limits.max_objects} TrackedCryptos "
                    "(MAX_TRACKED_CRYPTOS, chart value operator.maxTrackedCryptos), the oldest first, and this one "
                    "is newer; it is added when older ones are deleted or the limit is raised",
                ),
            )
            continue
        yield obj, None


def reader_refusal(entry: TrackedCoin, coin: TrackedCoin) -> Refusal | None:
    """Whether `coin`, from a namespace that does not own the symbol, may share the owner's `entry`.

    Only as it is: every id it names equal to the entry's, no provider the entry lacks, no alerts and no
    notify targets (they would fire for, and notify about, the other namespace's coin). Nothing of it is
    merged, so the owner's entry is the same with or without it. The message names only this object's
    own values, never the owner or its ids.
    """
    conflicts = [p for p in sorted(set(entry.ids) & set(coin.ids)) if entry.ids[p] != coin.ids[p]]
    if conflicts:
        mine = ", ".join(f"ids.{p} {coin.ids[p]!r}" for p in conflicts)
        return (
            "SymbolConflict",
            f"symbol {coin.symbol} is already tracked by another namespace with different ids ({mine} here); "
            "a TrackedCrypto can share that coin only with the same ids: fix or remove them",
        )
    extra = [f"ids.{p}" for p in sorted(set(coin.ids) - set(entry.ids))]
    if coin.providers is not None and (entry.providers is None or not set(coin.providers) <= set(entry.providers)):
        extra.append(f"providers [{', '.join(coin.providers)}]")
    extra += [what for what, value in (("alerts", coin.alerts), ("notify", coin.notify)) if value]
    if extra:
        return (
            "SymbolTrackedElsewhere",
            f"symbol {coin.symbol} is tracked by another namespace, and a TrackedCrypto here cannot change "
            f"that coin's entry: this one would add {', '.join(extra)}; remove them to share its prices as they are",
        )
    return None


def floor_note(interval: int, limits: Limits) -> str:
    """What an Accepted message adds when the object asks for more than the floor allows."""
    floor = limits.schedule_floor_seconds
    if interval >= floor:
        return ""
    return (
        f"; interval {format_duration(interval)} is below the schedule floor of {format_duration(floor)} "
        f"(SCHEDULE_FLOOR, chart value operator.scheduleFloor): it is scraped no more often than every "
        f"{format_duration(floor)}"
    )


def too_large(symbol: str, limits: Limits) -> Refusal:
    return (
        "ConfigTooLarge",
        f"not in the scraper config: with {symbol} it would exceed {limits.max_config_bytes} bytes (a ConfigMap "
        "holds at most 1 MiB); older coins keep their place: delete TrackedCryptos or alerts no longer needed",
    )
