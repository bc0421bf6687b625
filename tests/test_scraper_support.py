"""Helpers (no tests here) for the scraper tests: settings for the local market, reading the stream back."""

from __future__ import annotations

import asyncio
import csv
from datetime import UTC, datetime
from pathlib import Path

import nats
from cryptoviz.core import contract
from cryptoviz.core.candle import Candle
from cryptoviz.core.quote import Quote
from cryptoviz.scraper.providers import live_specs
from cryptoviz.scraper.settings import BackfillSettings, ScrapeSettings

UNREACHABLE = "http://127.0.0.1:9"
"""The discard port: an ingester that is not there (coverage then knows nothing)."""
BTC_GAP_START = 2013
"""Feed position of 2025-01-19 23:45; BTC has no candle at 2025-01-20 00:00 (three ticks on)."""


def _local(market_url: str, nats_url: str) -> dict[str, object]:
    """Every provider pointed at the local market, a CMC key, no ingester, short deadlines and retries."""
    return dict(
        nats_url=nats_url,
        **{unit.base_url_env.lower(): market_url for unit in live_specs()},
        market_base_url=market_url,
        cmc_api_key="test-cmc-key",
        ingester_url=UNREACHABLE,
        publish_deadline=5,
        scrape_timeout=2,
        scrape_retries=3,
        scrape_backoff=0.05,
        scrape_max_retry_after=5,
    )


def settings_for(market_url: str, nats_url: str, **overrides) -> ScrapeSettings:
    return ScrapeSettings(**{**_local(market_url, nats_url), "gap_fill_lookback": 0, **overrides})


def backfill_settings_for(market_url: str, nats_url: str, **overrides) -> BackfillSettings:
    return BackfillSettings(**{**_local(market_url, nats_url), **overrides})


def _stream_payloads(nats_url: str, prefix: str) -> list[bytes]:
    """The payloads of every message on `prefix`.* in the stream, in stream order."""

    async def read() -> list[bytes]:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            try:
                info = await js.stream_info(contract.STREAM_NAME)
            except nats.js.errors.NotFoundError:
                return []
            payloads = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(contract.STREAM_NAME, seq)
                if msg.subject.startswith(prefix + "."):
                    payloads.append(msg.data)
            return payloads
        finally:
            await nc.close()

    return asyncio.run(read())


def stream_quotes(nats_url: str) -> list[Quote]:
    """Every quote stored in the stream, in stream order."""
    return [
        q for data in _stream_payloads(nats_url, contract.SUBJECT_PREFIX) for q in contract.decode_message(data).quotes
    ]


def stream_candles(nats_url: str) -> list[Candle]:
    """Every candle in the stream (on `cryptoviz.candles.<provider>`), in stream order, repeats included."""
    payloads = _stream_payloads(nats_url, contract.CANDLES_PREFIX)
    return [c for data in payloads for c in contract.decode_candles(data).candles]


def csv_closes(directory: Path) -> dict[tuple[str, datetime], float]:
    """(symbol, candle time) → Close, read straight from the files (independently of the server)."""
    closes = {}
    for file in directory.glob("*.csv"):
        symbol = file.name.split("-")[0]
        with file.open(newline="") as handle:
            for row in csv.DictReader(handle):
                closes[(symbol, datetime.fromisoformat(row["Date"]).astimezone(UTC))] = float(row["Close"])
    return closes
