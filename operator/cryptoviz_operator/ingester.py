"""Reading the ingester's HTTP API (`/api/v1/latest`, `/api/v1/alerts`, `/api/v1/coverage`) for
status, alert Events and backfill progress, through the one typed client (`core.api_client`).

The operator's decision functions work on plain rows (as the API's JSON has them), so the answers
are handed on as dicts of JSON values.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from cryptoviz.core.api_client import AsyncIngesterClient, IngesterError

__all__ = ["IngesterClient", "IngesterError"]

COVERAGE_MIN_GAP = 3600


class IngesterClient:
    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.api = AsyncIngesterClient(base_url, timeout)
        self.base_url = self.api.base_url

    async def latest(self, symbols: Iterable[str]) -> list[dict[str, Any]]:
        """The newest quote of every coin (one row per provider/coin) for these symbols."""
        answer = await self.api.latest(symbols)
        return [row.model_dump(mode="json") for row in answer.data]

    async def alerts(self, since: datetime) -> list[dict[str, Any]]:
        """Alerts the ingester fired at or after `since`."""
        answer = await self.api.alerts(since)
        return [row.model_dump(mode="json") for row in answer.data]

    async def coverage(self, symbols: Iterable[str], since: datetime) -> list[dict[str, Any]]:
        """Every stored series of these symbols since `since`: first/last time and gaps of an hour or more."""
        answer = await self.api.coverage(symbols, since=since, min_gap=COVERAGE_MIN_GAP)
        return [row.model_dump(mode="json") for row in answer.data]
