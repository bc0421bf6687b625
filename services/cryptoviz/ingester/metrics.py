"""Prometheus metrics of the ingester, on its own registry (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

INGESTED = Counter("cryptoviz_ingested_quotes", "Quotes committed to DuckDB.", registry=REGISTRY)
REJECTED = Counter("cryptoviz_rejected", "Quotes or messages rejected, by reason.", ["reason"], registry=REGISTRY)
DUPLICATES = Counter("cryptoviz_duplicate_quotes", "Quotes skipped as already stored.", registry=REGISTRY)
BATCH_SECONDS = Histogram(
    "cryptoviz_batch_seconds",
    "Time to convert, commit and ack one batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
CANDLES_INGESTED = Counter("cryptoviz_ingested_candles", "Candles committed to DuckDB.", registry=REGISTRY)
CANDLE_DUPLICATES = Counter(
    "cryptoviz_duplicate_candles", "Candles skipped as already stored (or rolled up).", registry=REGISTRY
)
LAG = Gauge(
    "cryptoviz_consumer_lag",
    "Messages not yet acked by the ingester's consumers, by consumer.",
    ["consumer"],
    registry=REGISTRY,
)
DB_BYTES = Gauge("cryptoviz_db_bytes", "Size of the DuckDB file and its WAL.", registry=REGISTRY)
RECORDS = Gauge("cryptoviz_records", "Raw quotes stored.", registry=REGISTRY)
ERRORS = Counter("cryptoviz_consumer_errors", "Consumer loop errors, by exception type.", ["kind"], registry=REGISTRY)
ALERTS = Counter("cryptoviz_alerts_fired", "Alerts fired.", registry=REGISTRY)
API_REFUSED = Counter(
    "cryptoviz_api_refused",
    "API requests and connections refused, by reason (admin access, limits, slow or oversized request heads).",
    ["reason"],
    registry=REGISTRY,
)
