"""Shared helpers of the ingester tests (no tests here): the real `cryptoviz ingest` as a
subprocess on free ports, quotes built from the shared market CSVs, JetStream publishing."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import requests
from cryptoviz.core import contract
from cryptoviz.core.candle import Candle, make_candle
from cryptoviz.core.nats import ensure_stream, free_port
from cryptoviz.core.quote import Quote, make_quote
from support.process import ServiceProcess

CRYPTOVIZ = str(Path(sys.executable).parent / "cryptoviz")


def market_quotes(market_dir: Path, provider: str = "replay", rows: int | None = None) -> list[Quote]:
    """One quote per CSV row: symbol from the file name (BTC-USD_5m.csv → BTC), price = Close."""
    quotes = []
    received = datetime(2026, 1, 1, tzinfo=UTC)
    for path in sorted(market_dir.glob("*.csv")):
        symbol = path.name.split("-")[0]
        with path.open() as handle:
            for index, row in enumerate(csv.DictReader(handle)):
                if rows is not None and index >= rows:
                    break
                quotes.append(
                    make_quote(
                        provider=provider,
                        coin_id=symbol.lower() + "-usd",
                        symbol=symbol,
                        name=symbol.title(),
                        price=row["Close"],
                        timestamp=row["Date"],
                        received_at=received,
                        volume_24h=row["Volume"],
                    )
                )
    return quotes


def market_candles(
    market_dir: Path, provider: str = "binance", rows: int | None = None, symbols: Iterable[str] | None = None
) -> list[Candle]:
    """One 5-minute candle per CSV row (symbol from the file name), as a provider's history gives them."""
    wanted = set(symbols) if symbols is not None else None
    candles = []
    received = datetime(2026, 1, 1, tzinfo=UTC)
    for path in sorted(market_dir.glob("*.csv")):
        symbol = path.name.split("-")[0]
        if wanted is not None and symbol not in wanted:
            continue
        with path.open() as handle:
            for index, row in enumerate(csv.DictReader(handle)):
                if rows is not None and index >= rows:
                    break
                candles.append(
                    make_candle(
                        provider=provider,
                        coin_id=symbol + "USDT",
                        symbol=symbol,
                        name=symbol.title(),
                        interval=300,
                        open_time=row["Date"],
                        open=row["Open"],
                        high=row["High"],
                        low=row["Low"],
                        close=row["Close"],
                        volume=row["Volume"],
                        received_at=received,
                        now=received,
                    )
                )
    return candles


def synthetic_quotes(count: int, coins: int = 20, provider: str = "demo", start: datetime | None = None) -> list[Quote]:
    """`count` distinct quotes: `coins` coins, one per second each."""
    base = start or datetime(2025, 6, 1, tzinfo=UTC)
    quotes = []
    for i in range(count):
        coin, step = i % coins, i // coins
        quotes.append(
            Quote(
                provider=provider,
                coin_id=f"coin-{coin}",
                symbol=f"C{coin}",
                name=f"Coin {coin}",
                price=100.0 + coin + step * 0.001,
                timestamp=base + timedelta(seconds=step),
                received_at=base + timedelta(seconds=step),
            )
        )
    return quotes


def scrapes(quotes: Iterable[Quote]) -> list[contract.OutgoingMessage]:
    """Group quotes by (provider, timestamp) into scrapes, encoded as contract messages."""
    groups: dict[tuple[str, datetime], list[Quote]] = {}
    for q in quotes:
        groups.setdefault((q.provider, q.timestamp), []).append(q)
    messages = []
    for (provider, ts), group in sorted(groups.items()):
        messages.extend(contract.encode_scrape(provider, group, scraped_at=ts))
    return messages


def chunked(quotes: list[Quote], size: int = 500) -> list[contract.OutgoingMessage]:
    """Chunks of `size` quotes in input order (for bulk streams)."""
    messages = []
    for start in range(0, len(quotes), size):
        chunk = quotes[start : start + size]
        messages.extend(contract.encode_scrape(chunk[0].provider, chunk))
    return messages


async def publish_async(url: str, messages: list[contract.OutgoingMessage], *, raw: bool = False) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        pending = []
        for message in messages:
            pending.append(js.publish(message.subject, message.payload, headers=message.headers))
            if len(pending) >= 200:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await nc.close()


def publish(url: str, messages: list[contract.OutgoingMessage]) -> None:
    asyncio.run(publish_async(url, messages))


def publish_raw(url: str, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
    asyncio.run(publish_async(url, [contract.OutgoingMessage(subject, payload, headers or {})]))


def publish_slowly(url: str, messages: list[contract.OutgoingMessage], seconds: float, slices: int = 40) -> None:
    """Spread the publishes over `seconds` so kills land while messages flow."""
    size = max(1, len(messages) // slices)
    for start in range(0, len(messages), size):
        publish(url, messages[start : start + size])
        time.sleep(seconds / slices)


def kill_while_publishing(
    ingester: Ingester,
    url: str,
    messages: list,
    *,
    seconds: float,
    kills: int,
    seed: int,
    pause: tuple[float, float] = (0.05, 0.5),
) -> int:
    """Publish slowly while SIGKILLing and restarting the ingester at random moments; kills made."""
    publisher = threading.Thread(target=publish_slowly, args=(url, messages, seconds))
    rng = random.Random(seed)
    made = 0
    ingester.start()
    publisher.start()
    while publisher.is_alive() or made < kills:
        time.sleep(rng.uniform(*pause))
        ingester.kill()
        made += 1
        ingester.start()
    publisher.join()
    return made


async def dead_letters(url: str, expected: int) -> list:
    """Up to `expected` messages parked on `cryptoviz.deadletter.>` (waits at most 20 s for them)."""
    nc = await nats.connect(url)
    try:
        sub = await nc.jetstream().pull_subscribe(f"{contract.DEADLETTER_PREFIX}.>", stream=contract.STREAM_NAME)
        messages = []
        give_up = time.monotonic() + 20
        while len(messages) < expected and time.monotonic() < give_up:
            with contextlib.suppress(nats.errors.TimeoutError):
                messages.extend(await sub.fetch(10, timeout=1))
        return messages
    finally:
        await nc.close()


class Ingester(ServiceProcess):
    """`cryptoviz ingest` as a real subprocess on a free port."""

    def __init__(self, nats_url: str, db_path: Path, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"
        self.env = {
            **os.environ,
            "NATS_URL": nats_url,
            "DUCKDB_PATH": str(db_path),
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.port),
            "INGESTER_METRICS_PORT": str(self.metrics_port),
            "BATCH_SIZE": "5000",
            "BATCH_TIMEOUT": "0.2",
            "ACK_WAIT": "2",
            "RETENTION_DAYS": "0",
            "LOG_FORMAT": "json",
            **env,
        }
        super().__init__(log_path)

    def start(self, wait: bool = True, timeout: float = 30.0) -> Ingester:
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen([CRYPTOVIZ, "ingest"], env=self.env, stdout=log, stderr=log)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            if self.process.poll() is not None:
                raise RuntimeError(f"ingester exited {self.process.returncode}: {self.log()[-2000:]}")
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"ingester not ready in {timeout}s: {self.log()[-2000:]}")

    def get(self, path: str, **params) -> requests.Response:
        """GET from the API; `/metrics` is read where it is served, on the metrics port."""
        base = self.metrics_url if path == "/metrics" else self.url
        return requests.get(base + path, params=params, timeout=30)

    def json(self, path: str, **params) -> dict:
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_lag_zero(self, timeout: float = 30.0) -> dict:
        """/stats once every message fetched has been acked (nothing pending, nothing in flight)."""
        give_up = time.monotonic() + timeout
        while True:
            stats = self.json("/api/v1/stats")
            if stats["consumer_lag"] == 0 or time.monotonic() > give_up:
                return stats
            time.sleep(0.2)

    def wait_records(self, count: int, timeout: float = 60.0, key: str = "records") -> dict:
        """/stats once its `key` (records, candles, duplicates, ...) reaches `count`."""
        give_up = time.monotonic() + timeout
        stats = {}
        while time.monotonic() < give_up:
            stats = self.json("/api/v1/stats")
            if stats[key] >= count:
                return stats
            time.sleep(0.2)
        raise TimeoutError(f"only {stats.get(key)} of {count} {key} after {timeout}s")
