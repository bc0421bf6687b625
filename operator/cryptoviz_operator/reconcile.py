"""Applying the rendering: the ConfigMap, the CronJob schedule, backfill Jobs, every object's status, Events.

Everything is compare-then-write, so re-running (another handler, a restart, the periodic
refresh) with the same TrackedCryptos writes nothing. One lock serialises all of it: the last
run always renders from the newest view of all objects.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptoviz.core.config import ScraperConfig
from cryptoviz.ingester.rules import rules_from_config

from cryptoviz_operator import backfill
from cryptoviz_operator.ingester import IngesterClient, IngesterError
from cryptoviz_operator.jobs import Backfills
from cryptoviz_operator.kube import GROUP, VERSION, KubeApi
from cryptoviz_operator.render import (
    ALERT_CONDITIONS,
    Decision,
    ObjectKey,
    Rendering,
    coin_from_spec,
    object_key,
    render,
    render_cached,
)
from cryptoviz_operator.settings import Settings
from cryptoviz_operator.status import (
    IngestView,
    alert_statuses,
    format_time,
    parse_time,
    status_work,
)

log = logging.getLogger(__name__)

CONFIG_KEY = "scraper.yaml"
DIGEST_ANNOTATION = "cryptoviz.io/config-hash"
COINS_ANNOTATION = "cryptoviz.io/coins"
MANAGED_LABELS = {"app.kubernetes.io/managed-by": "cryptoviz-operator", "app.kubernetes.io/part-of": "cryptoviz"}
COMPONENT = "cryptoviz-operator"
ALERT_LOOKBACK = timedelta(hours=1)
"""On start, alerts fired this long ago are still surfaced (once: each object remembers its last); and
alerts this recent are re-read every refresh, so status.alerts follows their delivery receipts."""


def _now() -> datetime:
    return datetime.now(UTC)


def _event_name(name: str, *parts: object) -> str:
    digest = hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:16]
    return f"{name[:200]}.{digest}"


class Operator:
    """The operator's state: what it last wrote, so unchanged inputs cost no API writes."""

    def __init__(
        self, settings: Settings, kube: KubeApi, ingester: IngesterClient, scope: tuple[str, ...] | None = None
    ) -> None:
        self.settings = settings
        self.scope = scope
        """Namespaces kopf watches, () for all, None if unknown (see `_nothing_in_scope`)."""
        self.kube = kube
        self.ingester = ingester
        self.lock = asyncio.Lock()
        self.indexed = False
        """Set once kopf has called a handler, i.e. its index holds every object in scope."""
        self.requested = 0
        self.completed = 0
        """Reconcile requests made / covered by a finished run (see `reconcile`)."""
        self.written: dict[ObjectKey, tuple[str, dict[str, Any]]] = {}
        """(uid, status) as last written; newer than the index until the watch event arrives."""
        self.config_digest: str | None = None
        self.schedule: str | None = None
        self.cronjob_missing_logged = False
        self.ingest: IngestView | None = None
        self.rendered: tuple[str, Rendering] | None = None
        """(fingerprint of the objects' identities and specs, their rendering), to skip unchanged renders."""
        self.backfills = Backfills(settings, kube, ingester)
        self.alerts_since = _now() - ALERT_LOOKBACK

    # -- the view of objects -------------------------------------------------------------------

    def _with_written_status(self, objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        result = []
        alive: set[ObjectKey] = set()
        for obj in objects:
            key = object_key(obj)
            alive.add(key)
            uid = (obj.get("metadata") or {}).get("uid")
            written = self.written.get(key)
            if written is not None and written[0] == uid:
                obj = {**obj, "status": written[1]}
            result.append(dict(obj))
        for key in set(self.written) - alive:
            del self.written[key]
        return result

    # -- entry points --------------------------------------------------------------------------

    async def ensure_configmap_exists(self) -> None:
        """At startup: create the ConfigMap (no coins yet) if missing so the scraper can mount it.
        Never overwrites: the handlers render the real content once kopf has listed everything."""
        async with self.lock:
            ns, name = self.settings.pod_namespace, self.settings.configmap_name
            if await self.kube.read_configmap(ns, name) is None:
                await self._write_configmap(None, render([]))

    async def reconcile(self, objects: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        """Render all objects and bring the ConfigMap, schedule and statuses in line.

        `objects` is read under the lock, so a run sees every event that asked for it. Requests
        queued behind a run that started after them are already covered and return at once:
        N objects resumed at startup cost one render, not N.
        """
        self.requested += 1
        ticket = self.requested
        async with self.lock:
            self.indexed = True
            if self.completed >= ticket:
                return
            covers = self.requested
            await self._reconcile(self._with_written_status(objects()), verify=False)
            self.completed = covers

    async def refresh(self, objects: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        """Periodic: ask the ingester for prices and alerts (of accepted objects only: refused ones, e.g.
        from a namespace not allowed, cost no requests), then reconcile everything, re-reading the
        ConfigMap/CronJob even if this process wrote them (self-healing)."""
        if not self.indexed and not await self._nothing_in_scope(objects):
            return  # kopf has not finished listing; a partial view must not be rendered
        async with self.lock:
            self.indexed = True
            view = self._with_written_status(objects())
            decisions = (await self.render(view)).decisions
            accepted = [o for o in view if decisions[object_key(o)].accepted]  # not others' symbols
            symbols = {str((o.get("spec") or {}).get("symbol")) for o in accepted}
            self.ingest = await self._fetch_latest(symbols) if symbols else None
            await self.backfills.refresh_coverage(accepted)
            rendering = await self._reconcile(view, verify=True)
            if symbols:
                await self._surface_alerts(self._with_written_status(view), rendering)

    async def render(self, objects: list[dict[str, Any]]) -> Rendering:
        """The rendering of `objects`, in a worker thread: thousands of objects take seconds, during which
        kopf's loop (watch events, the liveness probe) keeps running; callers hold the lock, so renders
        still happen one at a time, in order. Reused while no object's identity or spec changed."""
        self.rendered = await asyncio.to_thread(render_cached, objects, self.settings.limits, self.rendered)
        return self.rendered[1]

    # -- internals -----------------------------------------------------------------------------

    async def _nothing_in_scope(self, objects: Callable[[], Iterable[Mapping[str, Any]]]) -> bool:
        """True when there is no TrackedCrypto at all, so no handler will ever run: then the
        refresh renders the empty config (e.g. every object was deleted while the operator was
        down). One LIST call, made only while no handler has run yet."""
        if self.scope is None or list(objects()):
            return False
        try:
            return not await self.kube.any_trackedcrypto(self.scope)
        except Exception as exc:  # e.g. RBAC: never wipe the config on a failed check
            log.warning("cannot list TrackedCryptos (%s); the ConfigMap is left as it is", exc)
            return False

    async def _reconcile(self, objects: list[dict[str, Any]], *, verify: bool) -> Rendering:
        rendering = await self.render(objects)
        if verify or rendering.digest != self.config_digest:
            await self._ensure_configmap(rendering)
        if self.settings.manage_schedule and (verify or rendering.schedule != self.schedule):
            await self._ensure_schedule(rendering.schedule)
        plans = await self.backfills.sync(objects, rendering.decisions)
        await self._sync_statuses(objects, rendering.decisions, plans)
        return rendering

    async def _write_configmap(self, current: Mapping[str, Any] | None, rendering: Rendering) -> None:
        ns, name = self.settings.pod_namespace, self.settings.configmap_name
        annotations = {DIGEST_ANNOTATION: rendering.digest, COINS_ANNOTATION: str(len(rendering.config.coins))}
        if current is None:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": ns, "labels": MANAGED_LABELS, "annotations": annotations},
                "data": {CONFIG_KEY: rendering.text},
            }
            await self.kube.create_configmap(ns, body)
        else:
            patch = {"metadata": {"annotations": annotations}, "data": {CONFIG_KEY: rendering.text}}
            await self.kube.patch_configmap(ns, name, patch)
        symbols = ",".join(c.symbol for c in rendering.config.coins) or "(none: the scraper's top N)"
        log.info("ConfigMap %s/%s now tracks %s (hash %s)", ns, name, symbols, rendering.digest[:12])

    async def _ensure_configmap(self, rendering: Rendering) -> None:
        current = await self.kube.read_configmap(self.settings.pod_namespace, self.settings.configmap_name)
        up_to_date = (
            current is not None
            and (current.get("data") or {}).get(CONFIG_KEY) == rendering.text
            and ((current.get("metadata") or {}).get("annotations") or {}).get(DIGEST_ANNOTATION) == rendering.digest
        )
        if not up_to_date:
            await self._write_configmap(current, rendering)
        self.config_digest = rendering.digest

    async def _ensure_schedule(self, schedule: str) -> None:
        ns, name = self.settings.pod_namespace, self.settings.cronjob_name
        cronjob = await self.kube.read_cronjob(ns, name)
        if cronjob is None:
            if not self.cronjob_missing_logged:
                log.warning("CronJob %s/%s not found: its schedule is not managed until it exists", ns, name)
                self.cronjob_missing_logged = True
            return
        self.cronjob_missing_logged = False
        if (cronjob.get("spec") or {}).get("schedule") != schedule:
            await self.kube.patch_cronjob(ns, name, {"spec": {"schedule": schedule}})
            log.info("CronJob %s/%s schedule set to %r", ns, name, schedule)
        self.schedule = schedule

    async def _patch_status(self, obj: Mapping[str, Any], changes: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = object_key(obj)
        patched = await self.kube.patch_status(key[0], key[1], changes)
        if patched is None:
            self.written.pop(key, None)
            return
        merged = {**(obj.get("status") or {}), **changes}
        self.written[key] = (str(meta.get("uid")), patched.get("status") or merged)

    async def _sync_statuses(
        self,
        objects: list[dict[str, Any]],
        decisions: Mapping[ObjectKey, Decision],
        plans: Mapping[ObjectKey, backfill.Plan],
    ) -> None:
        work = await asyncio.to_thread(status_work, objects, decisions, plans, self.ingest, _now())
        for obj, changes, warning in work:
            if changes:
                await self._patch_status(obj, changes)
            if warning is not None:
                meta = obj.get("metadata") or {}
                await self._event(obj, "Warning", warning.reason, warning.message, meta.get("generation"))

    async def _event(self, obj: Mapping[str, Any], kind: str, reason: str, message: str, *identity: object) -> None:
        """An Event on the object; its name derives from `identity`, so re-reporting the same
        thing (e.g. after a restart) is a no-op instead of a duplicate."""
        meta = obj.get("metadata") or {}
        namespace, name = object_key(obj)
        stamp = format_time(_now())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": _event_name(name, meta.get("uid"), reason, message, *identity),
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "TrackedCrypto",
                "name": name,
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": kind,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
        }
        if await self.kube.create_event(namespace, body):
            log.info("Event %s on %s/%s: %s", reason, namespace, name, message)

    async def _fetch_latest(self, symbols: set[str]) -> IngestView:
        url = self.ingester.base_url
        try:
            rows = await self.ingester.latest(symbols)
        except IngesterError as exc:
            if self.ingest is None or self.ingest.error is None:
                log.warning("ingester at %s unreachable: %s", url, exc)
            return IngestView(url=url, error=str(exc))
        quotes: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            quotes.setdefault(str(row.get("symbol")), []).append(row)
        return IngestView(url=url, quotes=quotes)

    async def _surface_alerts(self, objects: list[dict[str, Any]], rendering: Rendering) -> None:
        """Alerts are evaluated by the ingester (it reads the same config); here each one becomes
        an Event on every active object that asked for it, then `status.lastAlert` and
        `status.alerts` in one patch, so a reader never sees one updated without the other."""
        try:
            rows = await self.ingester.alerts(min(self.alerts_since, _now() - ALERT_LOOKBACK))
        except IngesterError as exc:
            log.debug("alerts not fetched: %s", exc)
            return
        fired_rows = sorted(
            ((fired_at, r) for r in rows if (fired_at := parse_time(r.get("fired_at"))) is not None),
            key=lambda pair: pair[0],
        )
        active = [obj for obj in objects if rendering.decisions[object_key(obj)].active]
        for obj in active:
            status = obj.get("status") or {}
            changes: dict[str, Any] = {}
            for fired, row in fired_rows:
                if _wants(obj, row) and (last_alert := await self._surface_alert(obj, row, fired, changes)):
                    changes["lastAlert"] = last_alert
            desired = alert_statuses(_rules_of(obj), rows, status.get("alerts"))
            if desired and desired != status.get("alerts"):
                changes["alerts"] = desired
            if changes:
                await self._patch_status(obj, changes)
                obj["status"] = {**status, **changes}
        if fired_rows:
            self.alerts_since = max(self.alerts_since, fired_rows[-1][0])

    async def _surface_alert(
        self, obj: dict[str, Any], row: Mapping[str, Any], fired: datetime, pending: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The Event for one fired alert and the `status.lastAlert` it makes, or None when this object
        already showed it (or did not exist yet); `pending` holds this round's unwritten changes."""
        meta = obj.get("metadata") or {}
        shown = pending.get("lastAlert") or (obj.get("status") or {}).get("lastAlert") or {}
        last = parse_time(shown.get("firedAt"))
        created = parse_time(meta.get("creationTimestamp"))
        if (last is not None and fired <= last) or (created is not None and fired < created):
            return None
        message = str(row.get("message") or f"{row.get('symbol')} {row.get('condition')} {row.get('threshold')}")
        await self._event(obj, "Normal", "AlertFired", message, row.get("condition"), row.get("threshold"), fired)
        last_alert = {
            "condition": str(row.get("condition")),
            "threshold": float(row.get("threshold") or 0.0),
            "firedAt": format_time(fired, precise=True),
            "message": message,
        }
        if isinstance(row.get("price"), int | float):
            last_alert["price"] = float(row["price"])
        return last_alert


def _rules_of(obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(rule id, condition) of each rule in this object's spec.alerts, as the ingester names them."""
    try:
        coin = coin_from_spec(obj.get("spec") or {})
    except ValueError:
        return []
    return [(r.rule_id, r.condition) for r in rules_from_config(ScraperConfig(coins=[coin]))]


def _wants(obj: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    """Whether this object's spec.alerts has the rule the ingester fired."""
    spec = obj.get("spec") or {}
    if spec.get("symbol") != row.get("symbol"):
        return False
    if row.get("rule_id"):
        return any(rule_id == row["rule_id"] for rule_id, _ in _rules_of(obj))
    threshold = row.get("threshold")
    if not isinstance(threshold, int | float):
        return False
    for alert in spec.get("alerts") or []:
        for cr_field, condition in ALERT_CONDITIONS.items():
            value = alert.get(cr_field)
            if (
                condition == row.get("condition")
                and isinstance(value, int | float)
                and math.isclose(float(value), float(threshold), rel_tol=1e-9)
            ):
                return True
    return False
