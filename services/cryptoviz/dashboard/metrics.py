"""Prometheus metrics of the dashboard server, on their own port (`--metrics-port`).

Not on the app's port: the Ingress publishes everything under the dashboard's prefix, and these
figures (open tabs per pod, memory) are for Prometheus, not for the internet.

Sessions are the dashboard's memory: each open tab holds one, and a closed tab's session is kept
for `--session-expiry` seconds in case it reconnects. A `disconnected` count that keeps rising
means closed tabs are not being discarded.
"""

from __future__ import annotations

from collections.abc import Iterator

from bokeh.server.server import Server
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from tornado import web

from cryptoviz.dashboard.data import SharedData


class SessionCollector(Collector):
    """Reads the Bokeh server's sessions at scrape time (nothing to keep in sync)."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def collect(self) -> Iterator[GaugeMetricFamily]:
        sessions = self.server.get_sessions()
        connected = sum(1 for session in sessions if session.connection_count)
        family = GaugeMetricFamily(
            "cryptoviz_dashboard_sessions",
            "Dashboard sessions: connected (a tab is open) or disconnected (a closed tab's, kept until"
            " --session-expiry, or a page whose websocket has not connected yet).",
            labels=["state"],
        )
        family.add_metric(["connected"], connected)
        family.add_metric(["disconnected"], len(sessions) - connected)
        yield family


class SharedDataCollector(Collector):
    """The process-wide cache every session reads from."""

    def __init__(self, shared: SharedData) -> None:
        self.shared = shared

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "cryptoviz_dashboard_ingester_reachable",
            "1 if the last read of the ingester API succeeded.",
            value=1 if self.shared.reachable else 0,
        )


class MetricsHandler(web.RequestHandler):
    def initialize(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(self.registry))


def serve_metrics(server: Server, shared: SharedData, port: int, address: str) -> None:
    """Listen on `port` (on the server's event loop, so sessions are read from their own thread)."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    registry.register(SessionCollector(server))
    registry.register(SharedDataCollector(shared))
    web.Application([("/metrics", MetricsHandler, {"registry": registry})]).listen(port, address=address)
