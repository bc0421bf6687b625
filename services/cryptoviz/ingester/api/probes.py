"""Probes on the API port (the kubelet's), and `/metrics` on the metrics port (Prometheus's only)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cryptoviz.core.api_contract import Health, Readiness
from cryptoviz.ingester import metrics, queries
from cryptoviz.ingester.api.deps import ReaderDep, RuntimeDep
from cryptoviz.ingester.formats import json_response

router = APIRouter(tags=["probes"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    """The process is alive and its event loop answers."""
    return json_response({"status": "ok"})


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "Not ready"}})
async def readyz(runtime: RuntimeDep) -> Response:
    """DuckDB is open and the JetStream consumers are attached."""
    checks = {"duckdb": runtime.store_open(), "consumer": runtime.consumer_attached()}
    ready = all(checks.values())
    return json_response({"status": "ready" if ready else "not ready", **checks}, 200 if ready else 503)


metrics_router = APIRouter()


@metrics_router.get("/metrics")
async def prometheus_metrics(runtime: RuntimeDep, read: ReaderDep) -> Response:
    """Prometheus text; the figures that need the database are read when scraped."""
    metrics.DB_BYTES.set(await asyncio.to_thread(runtime.store.db_bytes))
    metrics.RECORDS.set((await read(queries.stats))["records"])
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
