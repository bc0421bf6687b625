"""Helpers (no tests here) for the scraper tests: settings for the local market, reading the stream back."""

from __future__ import annotations

import asyncio
import csv
from datetime import UTC, datetime
from pathlib import Path

import nats
from cryptoviz.core import contract
from cryptoviz.core.quote import Quote
from cryptoviz.scraper.run import Settings

BTC_GAP_START = 2013
"""Feed position of 2025-01-19 23:45; BTC has no candle at 2025-01-20 00:00 (three ticks on)."""


def settings_for(market_url: str, nats_url: str, **overrides) -> Settings:
    fields = dict(
        nats_url=nats_url,
        cmc_base_url=market_url,
        coingecko_base_url=market_url,
        binance_base_url=market_url,
        kraken_base_url=market_url,
        coinbase_base_url=market_url,
        market_base_url=market_url,
        cmc_api_key="test-cmc-key",
        publish_deadline=5,
        scrape_timeout=2,
        scrape_retries=3,
        scrape_backoff=0.05,
        scrape_max_retry_after=5,
    )
    fields.update(overrides)
    return Settings(**fields)


def stream_quotes(nats_url: str) -> list[Quote]:
    """Every quote stored in the stream, in stream order."""

    async def read() -> list[Quote]:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            try:
                info = await js.stream_info(contract.STREAM_NAME)
            except nats.js.errors.NotFoundError:
                return []
            quotes: list[Quote] = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(contract.STREAM_NAME, seq)
                quotes += contract.decode_message(msg.data).quotes
            return quotes
        finally:
            await nc.close()

    return asyncio.run(read())


def csv_closes(directory: Path) -> dict[tuple[str, datetime], float]:
    """(symbol, candle time) → Close, read straight from the files (independently of the server)."""
    closes = {}
    for file in directory.glob("*.csv"):
        symbol = file.name.split("-")[0]
        with file.open(newline="") as handle:
            for row in csv.DictReader(handle):
                closes[(symbol, datetime.fromisoformat(row["Date"]).astimezone(UTC))] = float(row["Close"])
    return closes
