"""Reading the ingester's HTTP API (`/api/v1/latest`, `/api/v1/alerts`, `/api/v1/coverage`) for
status, alert Events and backfill progress."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import aiohttp

MAX_SYMBOLS = 200
"""Symbols per request the API takes at most (`cryptoviz.ingester.params.MAX_SYMBOLS`, not imported: that
module brings the API's dependencies, which the operator's process does not need)."""


class IngesterError(RuntimeError):
    """The ingester could not be reached or answered something unusable."""


class IngesterClient:
    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _rows(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        url = f"{self.base_url}{path}"
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout) as session,
                session.get(url, params=params, headers={"Accept": "application/json"}) as response,
            ):
                if response.status != 200:
                    detail = (await response.text())[:200]
                    raise IngesterError(f"GET {path} answered HTTP {response.status}: {detail}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise IngesterError(f"GET {path} failed: {exc or type(exc).__name__}") from None
        rows = body.get("data") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise IngesterError(f"GET {path} answered without a data list")
        return [row for row in rows if isinstance(row, dict)]

    async def latest(self, symbols: Iterable[str]) -> list[dict[str, Any]]:
        """The newest quote of every coin (one row per provider/coin) for these symbols."""
        rows: list[dict[str, Any]] = []
        for chunk in _chunks(symbols):
            rows += await self._rows("/api/v1/latest", {"symbols": chunk})
        return rows

    async def alerts(self, since: datetime) -> list[dict[str, Any]]:
        """Alerts the ingester fired at or after `since`."""
        return await self._rows("/api/v1/alerts", {"since": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})

    async def coverage(self, symbols: Iterable[str], since: datetime) -> list[dict[str, Any]]:
        """Every stored series of these symbols since `since`: first/last time and gaps of an hour or more."""
        rows: list[dict[str, Any]] = []
        for chunk in _chunks(symbols):
            params = {
                "symbols": chunk,
                "since": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "min_gap": "3600",
            }
            rows += await self._rows("/api/v1/coverage", params)
        return rows


def _chunks(symbols: Iterable[str]) -> list[str]:
    """`symbols=` values of at most the API's MAX_SYMBOLS (200) symbols each, sorted, without duplicates."""
    wanted = sorted(set(symbols))
    return [",".join(wanted[start : start + MAX_SYMBOLS]) for start in range(0, len(wanted), MAX_SYMBOLS)]
