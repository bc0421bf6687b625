"""Prometheus metrics of the dashboard server (served at /metrics, like /liveness without auth).

Sessions are the dashboard's memory: each open tab holds one, and a closed tab's session is kept
for `--session-expiry` seconds in case it reconnects. A `disconnected` count that keeps rising
means closed tabs are not being discarded.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from tornado import web

from cryptoviz.dashboard.data import SharedData


class SessionCollector(Collector):
    """Reads the Bokeh server's sessions at scrape time (nothing to keep in sync)."""

    def __init__(self, server: web.Application) -> None:
        self.server = server

    def collect(self) -> Iterator[GaugeMetricFamily]:
        connected = disconnected = 0
        for path in self.server.app_paths:
            for session in self.server.get_sessions(path):
                if session.connection_count:
                    connected += 1
                else:
                    disconnected += 1
        sessions = GaugeMetricFamily(
            "cryptoviz_dashboard_sessions",
            "Dashboard sessions: connected (a tab is open) or disconnected (kept until --session-expiry).",
            labels=["state"],
        )
        sessions.add_metric(["connected"], connected)
        sessions.add_metric(["disconnected"], disconnected)
        yield sessions


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
    def initialize(self, shared: SharedData) -> None:
        self.shared = shared

    def get(self) -> None:
        registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=registry)
        registry.register(SessionCollector(self.application))
        registry.register(SharedDataCollector(self.shared))
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(registry))
