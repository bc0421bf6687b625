"""What the ingester already holds: a typed client for `GET /api/v1/coverage`.

The scraper asks it which times are missing per coin and provider before fetching history, which
makes backfills resumable and lets each scrape close the holes an outage left. The ingester is
only a hint here: when it cannot be reached (or is too old to have the endpoint) the answer is
None, "nothing known": a backfill then fetches the whole depth (JetStream and the ingester drop
what they already have), a scrape leaves its holes to a later run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

import requests
from pydantic import AwareDatetime, BaseModel, ValidationError

from cryptoviz.core.quote import format_ts
from cryptoviz.scraper.history import Span

log = logging.getLogger("cryptoviz.scraper.coverage")

SYMBOLS_PER_CALL = 200
MAX_SPAN = timedelta(days=400)
"""The longest window the ingester answers for; anything older is fetched without asking."""
MIN_GAP = 900.0
"""Holes shorter than this (seconds) are not gaps: three 5-minute scrapes."""


class GapModel(BaseModel):
    start: AwareDatetime
    end: AwareDatetime
    seconds: float


class SeriesModel(BaseModel):
    """One stored (provider, coin_id) series of a symbol."""

    symbol: str
    provider: str
    coin_id: str
    first: AwareDatetime | None = None
    last: AwareDatetime | None = None
    quotes: int = 0
    candles: int = 0
    gaps: list[GapModel] = []

    def spans(self) -> list[Span]:
        return [Span(g.start, g.end) for g in self.gaps]


class CoverageModel(BaseModel):
    since: AwareDatetime
    until: AwareDatetime
    min_gap_seconds: float
    data: list[SeriesModel]


Coverage = dict[tuple[str, str], SeriesModel]
"""(provider, coin_id) → what is stored of it."""


class CoverageClient:
    """One ingester; `fetch` never raises: problems are a warning and None."""

    def __init__(self, base_url: str, session: requests.Session | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.timeout = timeout

    def fetch(
        self, symbols: Iterable[str], provider: str, since: datetime, until: datetime, min_gap: float = MIN_GAP
    ) -> Coverage | None:
        """What is stored of these symbols at `provider`, asked SYMBOLS_PER_CALL at a time (URLs stay short)."""
        wanted = sorted(set(symbols))
        out: Coverage = {}
        for start in range(0, len(wanted), SYMBOLS_PER_CALL):
            part = self._fetch(wanted[start : start + SYMBOLS_PER_CALL], provider, since, until, min_gap)
            if part is None:
                return None
            out.update(part)
        return out

    def _fetch(
        self, symbols: list[str], provider: str, since: datetime, until: datetime, min_gap: float
    ) -> Coverage | None:
        params = {
            "symbols": ",".join(symbols),
            "provider": provider,
            "since": format_ts(since),
            "until": format_ts(until),
            "min_gap": f"{min_gap:g}",
        }
        url = f"{self.base_url}/api/v1/coverage"
        try:
            response = self.session.get(url, params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            log.warning(
                "coverage: cannot ask the ingester at %s (%s); nothing known of what it stores", url, type(exc).__name__
            )
            return None
        if response.status_code == 404:
            log.warning(
                "coverage: the ingester at %s has no /api/v1/coverage (older); nothing known of what it stores",
                url,
            )
            return None
        if response.status_code != 200:
            log.warning(
                "coverage: the ingester answered HTTP %d (%s); nothing known of what it stores",
                response.status_code,
                response.text[:200],
            )
            return None
        try:
            answer = CoverageModel.model_validate_json(response.content)
        except ValidationError as exc:
            log.warning(
                "coverage: unreadable answer from the ingester (%d problems); nothing known of what it stores",
                exc.error_count(),
            )
            return None
        return {(row.provider, row.coin_id): row for row in answer.data if row.provider == provider}
