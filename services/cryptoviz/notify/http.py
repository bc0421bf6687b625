"""The notifier's small HTTP side: Prometheus /metrics, /healthz (alive), /readyz (consumer attached)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cryptoviz.notify import metrics


def health_app(ready: Callable[[], bool]) -> web.Application:
    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok = ready()
        return web.json_response({"status": "ready" if ok else "not ready"}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
