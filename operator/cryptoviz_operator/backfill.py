"""Backfill Jobs, as pure functions: how deep a TrackedCrypto wants its history, the Job that loads it
(rendered from the scraper CronJob's own pod template), and what its `Backfilled` condition and
`status.history` say, given the Job's state and the ingester's coverage.

A Job is named from the object's uid and the depth, so asking twice (an event and a refresh, a
restart) creates it once; `status.history.days` remembers the depth last started, so a Job cleaned
up by its TTL is not started again, and only a deeper `spec.backfill` starts a new one.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptoviz_operator.kube import GROUP, VERSION
from cryptoviz_operator.status import format_time, parse_time

MAX_DAYS = 365
COMPONENT = "backfill"
CONDITION = "Backfilled"
TRACKEDCRYPTO_LABEL = "cryptoviz.io/trackedcrypto"
_DAYS = re.compile(r"^(0|[1-9][0-9]{0,2}d)$")


def parse_days(value: Any) -> int:
    """`spec.backfill` (`90d`, `0`, or a number of days) as days; ValueError saying what is allowed."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"backfill must be like 30d or 0, not {value!r}")
    if isinstance(value, str):
        if not _DAYS.match(value):
            raise ValueError(f"backfill must be like 30d or 0, not {value!r}")
        value = int(value.rstrip("d"))
    if not 0 <= value <= MAX_DAYS:
        raise ValueError(f"backfill must be between 0 and {MAX_DAYS}d, not {value}")
    return int(value)


def wanted_days(spec: Mapping[str, Any], default: int) -> int:
    """The depth this object asks for: its `spec.backfill`, else the chart's default."""
    raw = spec.get("backfill")
    return default if raw is None else parse_days(raw)


@dataclass(frozen=True)
class JobSettings:
    """How backfill Jobs run (from the operator's environment, set by the chart)."""

    namespace: str
    ttl_seconds: int = 86400
    active_deadline_seconds: int = 3600
    backoff_limit: int = 2


def job_name(obj: Mapping[str, Any], days: int) -> str:
    """`<name>-backfill-<hash of uid and depth>`: unique per object and depth, a valid label value."""
    meta = obj.get("metadata") or {}
    digest = hashlib.sha256(f"{meta.get('uid')}\0{days}".encode()).hexdigest()[:8]
    stem = re.sub(r"[^a-z0-9-]", "-", str(meta.get("name") or "tc"))[:40].strip("-") or "tc"
    return f"{stem}-backfill-{digest}"


def render_job(obj: Mapping[str, Any], days: int, cronjob: Mapping[str, Any], settings: JobSettings) -> dict[str, Any]:
    """The backfill Job of `obj`: the scraper CronJob's pod template (image, env, Secret refs, config
    mount, security context, scheduling) running `cryptoviz backfill` for this one symbol.

    Owned by the TrackedCrypto when it lives in the Job's namespace (deleted with it); otherwise
    owner references cannot cross namespaces and the TTL alone cleans it up.
    """
    meta = obj.get("metadata") or {}
    symbol = str((obj.get("spec") or {}).get("symbol"))
    template = copy.deepcopy(((cronjob.get("spec") or {}).get("jobTemplate") or {}).get("spec", {}).get("template"))
    if not template or not (template.get("spec") or {}).get("containers"):
        raise ValueError("the scraper CronJob has no pod template to run the backfill with")
    labels = {
        **((template.get("metadata") or {}).get("labels") or {}),
        "app.kubernetes.io/component": COMPONENT,
        TRACKEDCRYPTO_LABEL: str(meta.get("name"))[:63],
    }
    template["metadata"] = {**(template.get("metadata") or {}), "labels": labels}
    pod = template["spec"]
    pod["restartPolicy"] = "Never"
    container = pod["containers"][0]
    container["args"] = ["backfill"]
    extra = {"BACKFILL_DAYS": str(days), "BACKFILL_SYMBOLS": symbol}
    container["env"] = [e for e in container.get("env") or [] if e.get("name") not in extra] + [
        {"name": k, "value": v} for k, v in extra.items()
    ]
    job_meta: dict[str, Any] = {
        "name": job_name(obj, days),
        "namespace": settings.namespace,
        "labels": {k: v for k, v in labels.items() if k.startswith(("app.kubernetes.io/", "cryptoviz.io/"))},
        "annotations": {
            "cryptoviz.io/backfill-days": str(days),
            "cryptoviz.io/trackedcrypto-namespace": str(meta.get("namespace")),
        },
    }
    if meta.get("namespace") == settings.namespace:
        job_meta["ownerReferences"] = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "TrackedCrypto",
                "name": meta.get("name"),
                "uid": meta.get("uid"),
                "controller": True,
            }
        ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": job_meta,
        "spec": {
            "backoffLimit": settings.backoff_limit,
            "activeDeadlineSeconds": settings.active_deadline_seconds,
            "ttlSecondsAfterFinished": settings.ttl_seconds,
            "template": template,
        },
    }


@dataclass(frozen=True)
class JobState:
    """What a Job says about itself: Running, Complete or Failed, and why."""

    name: str
    phase: str
    message: str = ""


def job_state(job: Mapping[str, Any]) -> JobState:
    name = str((job.get("metadata") or {}).get("name"))
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return JobState(name, "Complete")
        if condition.get("type") == "Failed":
            return JobState(name, "Failed", str(condition.get("message") or condition.get("reason") or "failed"))
    return JobState(name, "Running")


@dataclass(frozen=True)
class Coverage:
    """The ingester's coverage of one symbol: every stored series' first time, last time and gaps."""

    series: tuple[Mapping[str, Any], ...] = ()
    error: str | None = None

    @property
    def first(self) -> datetime | None:
        firsts = [t for t in (parse_time(s.get("first")) for s in self.series) if t is not None]
        return min(firsts, default=None)

    def covered_days(self, since: datetime, until: datetime) -> float:
        """Days of [since, until] the best-covered series holds (its span minus its gaps)."""
        return max((_covered(s, since, until) for s in self.series), default=0.0) / 86400


def _covered(series: Mapping[str, Any], since: datetime, until: datetime) -> float:
    first, last = parse_time(series.get("first")), parse_time(series.get("last"))
    if first is None or last is None:
        return 0.0
    seconds = _overlap(first, last, since, until)
    for gap in series.get("gaps") or []:
        start, end = parse_time(gap.get("start")), parse_time(gap.get("end"))
        if start is not None and end is not None:
            seconds -= _overlap(start, end, since, until)
    return max(seconds, 0.0)


def _overlap(start: datetime, end: datetime, since: datetime, until: datetime) -> float:
    return max((min(end, until) - max(start, since)).total_seconds(), 0.0)


@dataclass(frozen=True)
class Plan:
    """What to do for one object: create a Job (for `days`) or not, and its status parts."""

    condition: tuple[str, str, str] | None
    """(status, reason, message) of `Backfilled`; None keeps the current one."""
    history: dict[str, Any]
    create_days: int | None = None


def progress(coverage: Coverage | None, days: int, now: datetime) -> str:
    if coverage is None:
        return "coverage not known yet"
    if coverage.error is not None:
        return f"coverage unknown: {coverage.error}"
    first = coverage.first
    if first is None:
        return "no history stored yet"
    covered = min(days, math.floor(coverage.covered_days(now - timedelta(days=days), now) + 0.5))
    return f"history from {first:%Y-%m-%d}, {covered} of {days} days"


def plan(
    obj: Mapping[str, Any],
    *,
    active: bool,
    inactive_reason: str,
    days: int,
    job: JobState | None,
    coverage: Coverage | None,
    now: datetime,
) -> Plan:
    """The backfill decision for one object (no I/O). `job` is the state of the Job recorded in
    `status.history.job` (None when it is gone or was never made)."""
    status = obj.get("status") or {}
    history = dict(status.get("history") or {})
    if coverage is not None and coverage.error is None and coverage.first is not None:
        history["from"] = format_time(coverage.first)
    done = int(history.get("days") or 0)
    previous = next((c for c in status.get("conditions") or [] if c.get("type") == CONDITION), None)
    if not active:
        keep = previous is not None and previous.get("reason") in ("Complete", "Failed")
        condition = None if keep else ("False", inactive_reason, f"not backfilled: {inactive_reason.lower()}")
        return Plan(condition, history)
    if days > done:
        name = job_name(obj, days)
        history.update(days=days, job=name)
        return Plan(("False", "Running", f"backfill of {days} days started (job {name})"), history, create_days=days)
    if done == 0:
        where = "spec.backfill is 0" if "backfill" in (obj.get("spec") or {}) else "the chart's backfill.days is 0"
        return Plan(("False", "Disabled", f"backfill is off ({where})"), history)
    shown = progress(coverage, done, now)
    name = job.name if job is not None else str(history.get("job"))
    if job is None:  # finished before (not read again), cleaned up by its TTL, or deleted
        reason = previous.get("reason") if previous is not None else None
        if reason == "Complete":
            return Plan(("True", "Complete", f"{shown} (job {name} complete)"), history)
        if reason == "Failed":
            return Plan(None, history)
        return Plan(("Unknown", "JobGone", f"backfill job {name} is gone; {shown}"), history)
    if job.phase == "Complete":
        return Plan(("True", "Complete", f"{shown} (job {name} complete)"), history)
    if job.phase == "Failed":
        return Plan(("False", "Failed", f"job {name} failed: {job.message}; {shown}"), history)
    return Plan(("False", "Running", f"backfill of {done} days running (job {name}): {shown}"), history)


def needs_job_state(obj: Mapping[str, Any]) -> str | None:
    """The Job worth reading for this object: its recorded one, unless that already finished."""
    status = obj.get("status") or {}
    name = (status.get("history") or {}).get("job")
    previous = next((c for c in status.get("conditions") or [] if c.get("type") == CONDITION), None)
    if not name or (previous is not None and previous.get("reason") in ("Complete", "Failed", "JobGone")):
        return None
    return str(name)
