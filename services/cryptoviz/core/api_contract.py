"""The ingester's HTTP API as a contract: the limits of its parameters and the shape of its answers.

The server declares these models as its response models (so `/openapi.json` documents every 200)
and the one client (`core.api_client`) parses answers into them. Nothing here needs FastAPI or
DuckDB, so every component can import it. Models ignore fields they do not know, so a newer
ingester never breaks an older client; the API tests check that answers carry exactly these fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

MAX_SYMBOLS = 200
"""Symbols per request at most (the client splits longer lists)."""
MAX_SYMBOL_LENGTH = 20
SYMBOLS_MAX_CHARS = MAX_SYMBOLS * (MAX_SYMBOL_LENGTH + 2)
"""Longest `symbols=` value: 200 tickers of 20 characters with a comma and a space each."""
TEXT_MAX_CHARS = 64
"""Longest value of the other text parameters (timestamps, provider, format)."""
MAX_POINTS = 10_000
DEFAULT_POINTS = 1000
ALERTS_LIMIT = (1, 10_000)
DEFAULT_ALERTS_LIMIT = 1000
MIN_GAP_RANGE = (60, 30 * 86400)
DEFAULT_MIN_GAP = 900
MAX_GAPS = 500
"""Gaps listed per series at most (`gaps_truncated` tells when there were more)."""
MAX_SERIES = 1000
"""Series per coverage answer at most (without `symbols` a store of many coins could be all of them)."""
FORMATS = ("json", "csv", "arrow", "parquet")
MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
}


class Problem(BaseModel):
    """Every refusal: 400 for a bad parameter, 401/403 for admin access, 409, 503, 507."""

    error: str = Field(description="What is wrong and how to fix it.")


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    duckdb: bool = Field(description="The DuckDB file is open.")
    consumer: bool = Field(description="The JetStream consumers are attached and connected.")


class Coin(BaseModel):
    """One stored (provider, coin_id) series."""

    symbol: str
    name: str | None
    provider: str
    coin_id: str
    records: int = Field(description="Raw quotes stored.")
    first_timestamp: datetime | None
    last_timestamp: datetime | None
    last_price: float | None
    simulated: bool = Field(description="Made-up prices (provider demo).")
    candles: int = Field(description="Candles stored (not rolled up).")


class CoinsAnswer(BaseModel):
    data: list[Coin]


class LatestQuote(BaseModel):
    """The newest quote of one series (its newest candle's close while it has no quote)."""

    provider: str
    coin_id: str
    name: str | None
    symbol: str
    price: float | None
    percent_change_24h: float | None
    market_cap: float | None
    timestamp: datetime | None = Field(description="Provider time of the quote.")
    volume_24h: float | None
    percent_change_1h: float | None
    percent_change_7d: float | None
    rank: int | None
    received_at: datetime | None = Field(description="When the scraper got it.")
    simulated: bool


class LatestAnswer(BaseModel):
    data: list[LatestQuote]


class HistoryBucket(BaseModel):
    """OHLC of one series over one bucket, from quotes or else the finest candles."""

    symbol: str
    provider: str
    coin_id: str
    name: str | None
    timestamp: datetime = Field(description="Start of the bucket.")
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    price: float | None = Field(description="= close.")
    volume_24h: float | None = Field(description="Last in the bucket; null where candles served it.")
    samples: int = Field(description="Quotes, or candles, merged into the bucket.")


class HistoryAnswer(BaseModel):
    bucket_seconds: int
    start: datetime
    end: datetime
    unknown_symbols: list[str] | None = Field(None, description="Requested symbols without data (absent: none).")
    data: list[HistoryBucket]


class CoverageGap(BaseModel):
    start: datetime = Field(description="End of the covered time before the hole.")
    end: datetime = Field(description="Start of the covered time after it.")
    seconds: float


class SeriesCoverage(BaseModel):
    """One stored (provider, coin_id) series over the window."""

    symbol: str
    provider: str
    coin_id: str
    first: datetime | None = Field(None, description="First covered time in the window (null: no data in it).")
    last: datetime | None = Field(None, description="Last covered time in the window.")
    quotes: int = Field(0, description="Quotes in the window (raw and rolled up).")
    candles: int = Field(0, description="Candles in the window (raw and rolled up).")
    gaps: list[CoverageGap] = Field(default_factory=list, description="Holes longer than min_gap, earliest first.")
    gaps_truncated: bool = Field(False, description=f"More than {MAX_GAPS} gaps: only the first are listed.")


class CoverageResponse(BaseModel):
    since: datetime
    until: datetime
    min_gap_seconds: int
    data: list[SeriesCoverage]
    unknown_symbols: list[str] = Field(default_factory=list, description="Requested symbols with no stored series.")
    series_truncated: bool = Field(False, description=f"More than {MAX_SERIES} series: ask for fewer symbols.")


class Stats(BaseModel):
    records: int = Field(description="Raw quotes stored.")
    candles: int = Field(description="Candles stored (not rolled up).")
    coins: int = Field(description="Stored (provider, coin_id) series.")
    first_update: datetime | None
    last_update: datetime | None = Field(description="Newest provider timestamp.")
    providers: list[str]
    simulated: bool = Field(description="Some series is simulated (demo).")
    seconds_since_last_data: float | None = Field(description="Since the newest received_at.")
    ingest_rate: float = Field(description="Quotes stored per second over the last minute.")
    consumer_lag: int | None = Field(description="Messages not yet acked (quotes and candles).")
    candle_lag: int | None
    db_bytes: int
    rejected: int
    duplicates: int
    candle_duplicates: int


class CommitEvent(BaseModel):
    """The data of an `event: commit` on /api/v1/events."""

    records: int = Field(description="Quotes stored by the commit (0 for candle batches).")
    candles: int | None = Field(None, description="Candles stored or replaced (candle batches only).")
    last_update: datetime | None
    symbols: list[str]


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
