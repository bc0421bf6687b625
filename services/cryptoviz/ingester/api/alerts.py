"""`GET /api/v1/alerts`: fired alerts with their delivery state per notification target.

The delivery state comes from the notifier's receipts, which the ingester consumes from JetStream;
the dashboard and the operator read it here and never talk to the notifier.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import orjson
import pyarrow as pa
from fastapi import APIRouter, Response

from cryptoviz.core.api_contract import DEFAULT_ALERTS_LIMIT, AlertsAnswer
from cryptoviz.ingester.api.deps import AlertsSince, AnswerFormat, Limit, ReaderDep
from cryptoviz.ingester.api.responses import PROBLEM, TABLE_MEDIA
from cryptoviz.ingester.formats import JSON_OPTIONS, table_response

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


router = APIRouter(prefix="/api/v1", tags=["data"], responses={400: PROBLEM})


@router.get("/alerts", response_model=AlertsAnswer, responses=TABLE_MEDIA)
async def alerts(
    read: ReaderDep, fmt: AnswerFormat, since: AlertsSince = None, limit: Limit = DEFAULT_ALERTS_LIMIT
) -> Response:
    """Alerts fired by the rules in SCRAPER_CONFIG, newest first, with their delivery state per target."""

    def run(cur: duckdb.DuckDBPyConnection) -> Response:  # encoded off the event loop too
        # JSON from the rows as they are (the columns' types are the model's), not validated and dumped
        # through AlertsAnswer: 10,000 alerts in pydantic-core are two long calls that hold the GIL
        table = alerts_table(cur, since, limit)
        return table_response(_flat_for_csv(table) if fmt == "csv" else table, fmt)

    return await read(run)
