"""Prometheus metrics of `cryptoviz notify`, on its own registry, served on NOTIFY_METRICS_PORT."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

DELIVERED = Counter("cryptoviz_notify_delivered", "Notifications delivered, by target.", ["target"], registry=REGISTRY)
FAILED = Counter(
    "cryptoviz_notify_failed",
    "Notifications given up for good (dead-lettered), by target and reason.",
    ["target", "reason"],
    registry=REGISTRY,
)
RETRIED = Counter(
    "cryptoviz_notify_retried", "Temporary failures that will be retried, by target.", ["target"], registry=REGISTRY
)
SKIPPED = Counter(
    "cryptoviz_notify_skipped",
    "Deliveries skipped because they were already made (a redelivery or restart).",
    registry=REGISTRY,
)
LATENCY = Histogram(
    "cryptoviz_notify_latency_seconds",
    "Alert fired (ingester) → delivered (target accepted).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
SEND_SECONDS = Histogram(
    "cryptoviz_notify_send_seconds",
    "One Apprise send, by target.",
    ["target"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
IN_FLIGHT = Gauge("cryptoviz_notify_in_flight", "Alerts fetched and not yet settled.", registry=REGISTRY)
ERRORS = Counter("cryptoviz_notify_errors", "Loop errors, by exception type.", ["kind"], registry=REGISTRY)
