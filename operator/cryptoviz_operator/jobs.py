"""Backfill Jobs against the cluster and the ingester: the thin I/O around `backfill`'s decisions."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptoviz_operator import backfill
from cryptoviz_operator.ingester import IngesterClient, IngesterError
from cryptoviz_operator.kube import KubeApi
from cryptoviz_operator.render import Decision, ObjectKey, object_key
from cryptoviz_operator.settings import Settings

log = logging.getLogger(__name__)

COVERAGE_LOOKBACK = timedelta(days=399)
"""How far back the ingester is asked for coverage (it answers at most 400 days): `status.history.from`
is the first stored time within it."""


def _now() -> datetime:
    return datetime.now(UTC)


class Backfills:
    """Starts each TrackedCrypto's backfill Job once and follows it; keeps the last coverage seen."""

    def __init__(self, settings: Settings, kube: KubeApi, ingester: IngesterClient) -> None:
        self.settings = settings
        self.kube = kube
        self.ingester = ingester
        self.coverage: dict[str, backfill.Coverage] | None = None
        """Per symbol, from the last status refresh (None before the first)."""
        self.jobs = backfill.JobSettings(
            namespace=settings.pod_namespace,
            ttl_seconds=settings.backfill_ttl_seconds,
            active_deadline_seconds=settings.backfill_active_deadline_seconds,
            backoff_limit=settings.backfill_backoff_limit,
        )

    async def refresh_coverage(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """One coverage request for the symbols of every object that wants (or has) history."""
        self.coverage = await self._fetch_coverage(self._backfilling(objects))

    def _backfilling(self, objects: Iterable[Mapping[str, Any]]) -> set[str]:
        """Symbols of the objects that want history (their coverage is worth asking for)."""
        symbols = set()
        for obj in objects:
            spec = obj.get("spec") or {}
            try:
                days = backfill.wanted_days(spec, self.settings.backfill_days)
            except ValueError:
                continue
            if days or (obj.get("status") or {}).get("history"):
                symbols.add(str(spec.get("symbol")))
        return symbols

    async def sync(
        self, objects: list[dict[str, Any]], decisions: Mapping[ObjectKey, Decision]
    ) -> dict[ObjectKey, backfill.Plan]:
        """Each object's backfill plan; starts the Jobs the plans ask for (at most once: idempotent names),
        at most `BACKFILL_CONCURRENCY` running at a time (the others are Queued, oldest first), so a
        hundred TrackedCryptos applied at once do not start a hundred pods against the providers' limits."""
        plans: dict[ObjectKey, backfill.Plan] = {}
        now = _now()
        cronjob: Mapping[str, Any] | None = None
        waiting: list[tuple[dict[str, Any], backfill.Plan, dict[str, Any]]] = []
        for obj in objects:
            key = object_key(obj)
            decision = decisions[key]
            spec = obj.get("spec") or {}
            history = dict((obj.get("status") or {}).get("history") or {})
            try:
                days = backfill.wanted_days(spec, self.settings.backfill_days)
            except ValueError as exc:
                plans[key] = backfill.Plan(("False", "InvalidSpec", f"invalid spec: {exc}"), history)
                continue
            job = None
            name = backfill.needs_job_state(obj) if decision.active else None
            if name is not None:
                found = await self.kube.read_job(self.jobs.namespace, name)
                job = backfill.job_state(found) if found is not None else None
            coverage = self.coverage.get(str(spec.get("symbol"))) if self.coverage is not None else None
            plan = backfill.plan(
                obj,
                active=decision.active,
                inactive_reason="Paused" if decision.accepted else "NotAccepted",
                days=days,
                job=job,
                coverage=coverage,
                now=now,
            )
            if plan.create_days is not None:
                waiting.append((obj, plan, history))
            plans[key] = plan
        running = sum(
            1 for p in plans.values() if p.create_days is None and p.condition and p.condition[1] == "Running"
        )
        waiting.sort(key=lambda item: (str(item[0]["metadata"].get("creationTimestamp") or ""), *object_key(item[0])))
        for obj, plan, history in waiting:  # oldest first: a fair queue
            if running >= self.settings.backfill_concurrency:
                message = f"waiting: {running} backfill Jobs are running (at most {self.settings.backfill_concurrency})"
                plans[object_key(obj)] = backfill.Plan(("False", "Queued", message), history)
                continue
            cronjob = cronjob or await self.kube.read_cronjob(self.jobs.namespace, self.settings.cronjob_name)
            plans[object_key(obj)] = await self._start_backfill(obj, plan, cronjob, history)
            running += 1
        return plans

    async def _start_backfill(
        self, obj: Mapping[str, Any], plan: backfill.Plan, cronjob: Mapping[str, Any] | None, before: dict[str, Any]
    ) -> backfill.Plan:
        ns, name = self.jobs.namespace, self.settings.cronjob_name
        if cronjob is None:
            message = f"cannot start a backfill: the scraper CronJob {ns}/{name} (its pod template) is missing"
            return backfill.Plan(("False", "NoScraperTemplate", message), before)
        try:
            body = backfill.render_job(obj, int(plan.create_days or 0), cronjob, self.jobs)
        except ValueError as exc:
            return backfill.Plan(("False", "NoScraperTemplate", f"cannot start a backfill: {exc}"), before)
        job = body["metadata"]["name"]
        if await self.kube.create_job(ns, body):
            namespace, tc = object_key(obj)
            log.info("started backfill Job %s/%s: %s days of %s/%s", ns, job, plan.create_days, namespace, tc)
        return plan

    async def _fetch_coverage(self, symbols: set[str]) -> dict[str, backfill.Coverage] | None:
        if not symbols:
            return None
        try:
            rows = await self.ingester.coverage(symbols, _now() - COVERAGE_LOOKBACK)
        except IngesterError as exc:
            return {symbol: backfill.Coverage(error=str(exc)) for symbol in symbols}
        series: dict[str, list[dict[str, Any]]] = {symbol: [] for symbol in symbols}
        for row in rows:
            series.setdefault(str(row.get("symbol")), []).append(row)
        return {symbol: backfill.Coverage(tuple(found)) for symbol, found in series.items()}
