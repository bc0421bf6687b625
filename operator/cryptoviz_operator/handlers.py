"""Thin kopf wiring: every TrackedCrypto event re-renders from kopf's in-memory index.

No handler needs a finalizer (the delete path is a plain watch-event handler; status refresh is
one background task, not per-object timers, which would add finalizers), so deleting a
TrackedCrypto never blocks, even with the operator down.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
from typing import Any

import click
import kopf

from cryptoviz_operator.ingester import IngesterClient
from cryptoviz_operator.kube import GROUP, PLURAL, VERSION, KubeApi, load_client_config
from cryptoviz_operator.reconcile import Operator
from cryptoviz_operator.settings import Settings, SettingsError

log = logging.getLogger(__name__)

PREFIX = "cryptoviz.io"


def objects_of(index: kopf.Index[Any, Any]) -> list[dict[str, Any]]:
    return [value for _, store in index.items() for value in store]


@kopf.on.startup()  # type: ignore[arg-type]  # kopf passes the `tracked` index as an extra keyword
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, tracked: kopf.Index[Any, Any], **_: Any) -> None:
    """Own prefixes, no cluster-wide scanning (least privilege), then the status refresher."""
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.scanning.disabled = True
    settings.posting.level = logging.WARNING

    try:
        config = Settings.from_env()
    except SettingsError as exc:  # a typo in the Deployment's env: stop with the message, no retry loop
        raise kopf.PermanentError(str(exc)) from None
    kube = KubeApi(load_client_config())
    operator = Operator(config, kube, IngesterClient(config.ingester_url), scope=_kopf_scope())
    await operator.ensure_configmap_exists()
    memo.operator = operator
    memo.refresher = asyncio.create_task(_refresh_forever(operator, tracked), name="cryptoviz-status-refresh")
    log.info(
        "rendering TrackedCryptos into ConfigMap %s/%s%s; status from %s every %ss",
        config.pod_namespace,
        config.configmap_name,
        f", schedule of CronJob {config.cronjob_name}" if config.manage_schedule else "",
        config.ingester_url,
        config.status_refresh_interval,
    )


def _kopf_scope() -> tuple[str, ...] | None:
    """The namespaces `kopf run` watches (its own flags), () for all namespaces; None when unknown
    (namespace patterns, or kopf not started by its CLI)."""
    context = click.get_current_context(silent=True)
    if context is None or "clusterwide" not in context.params:
        return None
    namespaces = tuple(context.params.get("namespaces") or ())
    if os.environ.get("KOPF_RUN_NAMESPACE"):
        namespaces += (os.environ["KOPF_RUN_NAMESPACE"],)
    if context.params["clusterwide"] or not namespaces:
        return ()
    if any(char in namespace for namespace in namespaces for char in "*?[],!"):
        return None
    return namespaces


async def _refresh_forever(operator: Operator, index: kopf.Index[Any, Any]) -> None:
    interval = operator.settings.status_refresh_interval
    await asyncio.sleep(min(interval, 5.0))
    while True:
        try:
            await operator.refresh(lambda: objects_of(index))
        except Exception:  # one failed round (API hiccup) must not end the refresher
            log.exception("status refresh failed; retrying in %ss", interval)
        await asyncio.sleep(interval)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("refresher")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@kopf.index(GROUP, VERSION, PLURAL)
def tracked(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace, name) → the parts of the object the rendering and status need."""
    meta = body.metadata
    snapshot = {
        "metadata": {
            "namespace": meta.namespace,
            "name": meta.name,
            "uid": meta.uid,
            "creationTimestamp": meta.creation_timestamp,
            "generation": meta.get("generation"),
        },
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
        "status": copy.deepcopy(dict(body.get("status") or {})),
    }
    return {(meta.namespace or "", meta.name or ""): snapshot}


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)  # type: ignore[arg-type]  # (the index, as for startup)
async def reconcile(memo: kopf.Memo, tracked: kopf.Index[Any, Any], **_: Any) -> None:
    try:
        await memo.operator.reconcile(lambda: objects_of(tracked))
    except Exception as exc:  # API errors: kopf retries the handler with backoff
        raise kopf.TemporaryError(f"reconcile failed: {exc}", delay=10) from exc


def _is_deletion(type: str, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event(GROUP, VERSION, PLURAL, when=_is_deletion)  # type: ignore[arg-type]  # (the index)
async def gone(memo: kopf.Memo, tracked: kopf.Index[Any, Any], **_: Any) -> None:
    """Deletion: the object has already left the index; render without it. (If this fails,
    the periodic refresh re-renders within STATUS_REFRESH_INTERVAL.)"""
    await memo.operator.reconcile(lambda: objects_of(tracked))
