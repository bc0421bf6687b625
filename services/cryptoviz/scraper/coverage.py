"""What the ingester already holds: `GET /api/v1/coverage` through the typed client (core.api_client).

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

from cryptoviz.core.api_client import IngesterClient, IngesterError
from cryptoviz.core.api_contract import SeriesCoverage
from cryptoviz.scraper.history import Span

log = logging.getLogger("cryptoviz.scraper.coverage")

MAX_SPAN = timedelta(days=400)
"""The longest window the ingester answers for; anything older is fetched without asking."""
MIN_GAP = 900
"""Holes shorter than this (seconds) are not gaps: three 5-minute scrapes."""

Coverage = dict[tuple[str, str], SeriesCoverage]
"""(provider, coin_id) → what is stored of it."""


def spans(series: SeriesCoverage) -> list[Span]:
    """The series' gaps as history spans."""
    return [Span(g.start, g.end) for g in series.gaps]


class CoverageClient:
    """One ingester; `fetch` never raises: problems are a warning and None."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.client = IngesterClient(base_url, timeout=timeout)

    def fetch(
        self, symbols: Iterable[str], provider: str, since: datetime, until: datetime, min_gap: int = MIN_GAP
    ) -> Coverage | None:
        """What is stored of these symbols at `provider` (asked in chunks the API accepts, URLs stay short)."""
        wanted = sorted(set(symbols))
        if not wanted:
            return {}
        try:
            answer = self.client.coverage(wanted, since, until, min_gap, provider)
        except IngesterError as exc:
            older = " (older: no /api/v1/coverage)" if exc.status == 404 else ""
            log.warning("coverage: cannot ask the ingester%s: %s; nothing known of what it stores", older, exc)
            return None
        return {(row.provider, row.coin_id): row for row in answer.data if row.provider == provider}
