"""`GET /api/v1/alerts`: fired alerts with their delivery state per notification target.

The delivery state comes from the notifier's receipts, which the ingester consumes from JetStream;
the dashboard and the operator read it here and never talk to the notifier.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import duckdb
import orjson
import pyarrow as pa
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from cryptoviz.ingester import params
from cryptoviz.ingester.formats import FORMATS, JSON_OPTIONS, json_response, negotiate, table_response

if TYPE_CHECKING:
    from cryptoviz.ingester.service import Runtime

DeliveryState = Literal["pending", "retrying", "delivered", "partial", "failed"]


class Delivery(BaseModel):
    target: str = Field(description="Target name: `default` (NOTIFY_URLS) or a NOTIFY_TARGETS_FILE name, `/n` per URL.")
    status: Literal["delivered", "retrying", "failed"]
    attempts: int
    reason: str | None = Field(None, description="Why the last attempt failed (never the URL).")
    updated_at: datetime
    delivered_at: datetime | None = None
    latency_seconds: float | None = Field(None, description="Fired → delivered.")


class FiredAlert(BaseModel):
    symbol: str
    condition: str = Field(description="above, below, change_24h_above, change_above, change_below, stale_after.")
    threshold: float = Field(description="USD (above/below), percent (change rules) or seconds (stale_after).")
    price: float | None
    change_24h: float | None
    fired_at: datetime
    message: str | None
    provider: str | None
    coin_id: str | None
    alert_id: str
    rule_id: str | None
    name: str | None
    window_seconds: float | None
    change_pct: float | None = Field(description="The move that fired a change_above/change_below rule.")
    notify: list[str] = Field(description="Named targets of this coin (NOTIFY_URLS' `default` always applies).")
    published: bool = Field(description="In the JetStream alerts stream (else still in the ingester's outbox).")
    delivery: DeliveryState = Field(
        description="pending (no receipt for every target yet), retrying, delivered (everywhere), partial "
        "(some targets failed for good), failed (all did, or no target is configured)."
    )
    deliveries: list[Delivery]


class AlertsAnswer(BaseModel):
    data: list[FiredAlert]


_ALERTS_SQL = """
WITH picked AS (
    SELECT * FROM alerts WHERE $since IS NULL OR fired_at >= $since ORDER BY fired_at DESC LIMIT $limit
), d AS (
    SELECT alert_id,
           list({'target': target, 'status': status, 'attempts': attempts, 'reason': reason,
                 'updated_at': updated_at, 'delivered_at': delivered_at, 'latency_seconds': latency_seconds}
                ORDER BY target) AS deliveries,
           count(*) AS n, count(*) FILTER (WHERE status = 'delivered') AS ok,
           count(*) FILTER (WHERE status = 'failed') AS bad, max(targets) AS expected
    FROM alert_deliveries WHERE alert_id IN (SELECT alert_id FROM picked) GROUP BY alert_id
)
SELECT p.symbol, p.condition, p.threshold, p.price, p.change_24h, p.fired_at, p.message, p.provider, p.coin_id,
       p.alert_id, p.rule_id, p.name, p.window_seconds, p.change_pct, coalesce(p.notify, []) AS notify,
       p.published_at IS NOT NULL AS published,
       CASE WHEN d.n IS NULL THEN 'pending'
            WHEN d.ok + d.bad < greatest(d.n, coalesce(d.expected, 0)) THEN
                 CASE WHEN d.n > d.ok + d.bad THEN 'retrying' ELSE 'pending' END
            WHEN d.bad = 0 THEN 'delivered'
            WHEN d.ok = 0 THEN 'failed'
            ELSE 'partial' END AS delivery,
       coalesce(d.deliveries, []) AS deliveries
FROM picked p LEFT JOIN d USING (alert_id)
ORDER BY p.fired_at DESC, p.alert_id
"""


def alerts_table(cur: duckdb.DuckDBPyConnection, since: datetime | None, limit: int) -> pa.Table:
    return cur.sql(_ALERTS_SQL, params={"since": since, "limit": limit}).to_arrow_table()


def _flat_for_csv(table: pa.Table) -> pa.Table:
    """CSV has no nested type: the deliveries as one JSON text per alert."""
    index = table.column_names.index("deliveries")
    text = [orjson.dumps(v, option=JSON_OPTIONS).decode() for v in table.column("deliveries").to_pylist()]
    return table.set_column(index, "deliveries", pa.array(text, pa.string()))


def router(runtime: Runtime, responses: dict) -> APIRouter:
    api = APIRouter()

    @api.get(
        "/api/v1/alerts",
        tags=["data"],
        responses={**responses, 200: {**responses[200], "model": AlertsAnswer}},
    )
    async def alerts(
        request: Request,
        since: str | None = Query(None, description="Only alerts fired at or after this (ISO-8601 or epoch s)."),
        limit: str | None = Query(None, description="Most rows, newest first, 1..10000 (1000)."),
        format: str | None = Query(None, description=f"Answer format: {', '.join(FORMATS)} (else by Accept)."),
    ) -> Response:
        """Alerts fired by the rules in SCRAPER_CONFIG, newest first, with their delivery state per target."""
        fmt = negotiate(format, request.headers.get("accept"))
        since_ts = params.timestamp(since, "since")
        count = params.integer(limit, "limit", 1000, 1, 10_000)
        table = await asyncio.to_thread(lambda: alerts_table(runtime.store.reader(), since_ts, count))
        if fmt == "json":
            answer = AlertsAnswer.model_validate({"data": table.to_pylist()})
            return json_response(answer.model_dump())
        return table_response(_flat_for_csv(table) if fmt == "csv" else table, fmt)

    return api
