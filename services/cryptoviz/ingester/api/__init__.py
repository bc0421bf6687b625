"""The read API (FastAPI), served by the ingester process itself, the only one that opens DuckDB.

Routers per group: `probes` (/healthz, /readyz), `data` and `alerts` (/api/v1/...), `admin`
(/api/v1/admin/..., token-guarded); `/metrics` is a separate app on its own port. Routes get what
they need through dependencies (`deps`): the runtime, a worker-thread reader, the negotiated
format and typed parameters. Every refusal is `{"error": message}` with a 4xx/5xx status, never
FastAPI's 422.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import duckdb
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from cryptoviz import __version__
from cryptoviz.ingester import metrics
from cryptoviz.ingester.api import admin, alerts, data, probes
from cryptoviz.ingester.api.deps import QUERY_SLOTS
from cryptoviz.ingester.cache import AnswerCache
from cryptoviz.ingester.formats import BadRequest, json_response
from cryptoviz.ingester.runtime import Runtime


def _problem(error: dict[str, Any]) -> str:
    """One validation error as the message `params` would have given."""
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, BadRequest):
        return str(cause)
    name = str(error["loc"][-1]) if error.get("loc") else "request"
    if error.get("type") == "string_too_long":
        limit = (error.get("ctx") or {}).get("max_length", 0)
        return f"{name} is too long: at most {limit:,} characters, not {len(str(error.get('input', ''))):,}"
    return f"{name}: {error.get('msg', 'invalid')}"


def _handlers(app: FastAPI, runtime: Runtime) -> None:
    @app.exception_handler(BadRequest)
    async def _bad_request(_: Request, exc: BadRequest) -> Response:
        metrics.API_REFUSED.labels(reason="bad_parameter").inc()
        return json_response({"error": str(exc)}, 400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        metrics.API_REFUSED.labels(reason="bad_parameter").inc()
        return json_response({"error": "; ".join(_problem(e) for e in exc.errors()) or "invalid request"}, 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        response = json_response({"error": str(exc.detail)}, exc.status_code)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(duckdb.Error)
    async def _db(_: Request, exc: duckdb.Error) -> Response:
        runtime.log.error("query failed: %s", exc)
        return json_response({"error": "database unavailable, try again"}, 503)


def _openapi_without_422(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI documents a 422 on every route with parameters; this API answers 400 instead."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation["responses"].pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
        return app.openapi_schema

    return openapi


def create_app(runtime: Runtime) -> FastAPI:
    # /docs and /redoc with Swagger UI and ReDoc served from the package's own files: no CDN, so they
    # work offline and behind a NetworkPolicy that allows no egress
    app = FastAPIOffline(
        title="CryptoViz ingester API",
        version=__version__,
        description="Read-only snapshots of the quotes stored by the ingester (DuckDB), and token-guarded backups.",
    )
    app.state.runtime = runtime
    app.state.history_cache = AnswerCache()
    app.state.backup_slot = admin.BackupSlot()
    app.state.query_slots = asyncio.Semaphore(QUERY_SLOTS)
    _handlers(app, runtime)
    app.include_router(probes.router)
    app.include_router(data.router)
    app.include_router(alerts.router)
    app.include_router(admin.router)
    app.openapi = _openapi_without_422(app)  # type: ignore[method-assign]
    return app


def create_metrics_app(runtime: Runtime) -> FastAPI:
    """`/metrics` alone, for the metrics port: what Prometheus may reach, and nothing else."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    app.state.query_slots = asyncio.Semaphore(1)
    app.include_router(probes.metrics_router)
    return app
