"""The few Kubernetes API calls the operator makes, on the `kubernetes` client, as plain dicts.

Calls are blocking, so each runs in a thread; every verb used here is listed in docs/operator.md
so the chart's RBAC grants exactly these.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import kubernetes
from kubernetes.client import ApiException

GROUP, VERSION, PLURAL = "cryptoviz.io", "v1alpha1", "trackedcryptos"
MERGE_PATCH = "application/merge-patch+json"


def load_client_config() -> kubernetes.client.ApiClient:
    """In-cluster service account when running in a pod, else the local kubeconfig."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


def _json(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response.data or b"{}")
    return body


async def _read_or_none(read: Callable[..., Any], name: str, namespace: str) -> dict[str, Any] | None:
    """A `read_namespaced_*` call as a dict; None on 404."""
    try:
        response = await asyncio.to_thread(read, name, namespace, _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return _json(response)


async def _merge_patch(patch_call: Callable[..., Any], name: str, namespace: str, patch: dict[str, Any]) -> None:
    """A `patch_namespaced_*` call as a JSON merge patch (only the given fields change)."""
    await asyncio.to_thread(patch_call, name, namespace, patch, _content_type=MERGE_PATCH, _preload_content=False)


async def _create_once(create: Callable[..., Any], namespace: str, body: dict[str, Any]) -> bool:
    """A `create_namespaced_*` call; False on 409 (an object of that name exists: made before)."""
    try:
        await asyncio.to_thread(create, namespace, body, _preload_content=False)
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise
    return True


class KubeApi:
    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.batch = kubernetes.client.BatchV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)

    async def read_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        """`get configmaps`; None when absent."""
        return await _read_or_none(self.core.read_namespaced_config_map, name, namespace)

    async def create_configmap(self, namespace: str, body: dict[str, Any]) -> None:
        """`create configmaps`."""
        await asyncio.to_thread(self.core.create_namespaced_config_map, namespace, body, _preload_content=False)

    async def patch_configmap(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """`patch configmaps`."""
        await _merge_patch(self.core.patch_namespaced_config_map, name, namespace, patch)

    async def read_cronjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        """`get cronjobs.batch`; None when absent."""
        return await _read_or_none(self.batch.read_namespaced_cron_job, name, namespace)

    async def patch_cronjob(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """`patch cronjobs.batch`."""
        await _merge_patch(self.batch.patch_namespaced_cron_job, name, namespace, patch)

    async def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """`get jobs.batch`; None when absent (never made, or cleaned up by its TTL)."""
        return await _read_or_none(self.batch.read_namespaced_job, name, namespace)

    async def create_job(self, namespace: str, body: dict[str, Any]) -> bool:
        """`create jobs.batch`; False when a Job of that name exists already (made before)."""
        return await _create_once(self.batch.create_namespaced_job, namespace, body)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        """`patch trackedcryptos/status`; the updated object, or None if it is gone."""
        try:
            response = await asyncio.to_thread(
                self.custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"status": status},
                _content_type=MERGE_PATCH,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return _json(response)

    async def any_trackedcrypto(self, namespaces: tuple[str, ...]) -> bool:
        """`list trackedcryptos` (one item at most) in these namespaces, or everywhere for ()."""
        if not namespaces:
            response = await asyncio.to_thread(
                self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL, limit=1, _preload_content=False
            )
            return bool(_json(response).get("items"))
        for namespace in namespaces:
            response = await asyncio.to_thread(
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                limit=1,
                _preload_content=False,
            )
            if _json(response).get("items"):
                return True
        return False

    async def create_event(self, namespace: str, body: dict[str, Any]) -> bool:
        """`create events`; False when an event of that name exists (already reported)."""
        return await _create_once(self.core.create_namespaced_event, namespace, body)
