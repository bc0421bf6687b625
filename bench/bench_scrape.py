"""Benchmark: parse + validate + publish one 5,000-coin CoinMarketCap listing (target < 1 s).

Runs the real scraper path (HTTP GET, JSON decode, `make_quote` per coin, contract encoding,
JetStream publish) against a local MarketServer in its own process (5,000-coin listing) and a real
nats-server, and compares, in the same run, publishing with `publish_async` + one wait for all
acks (what the scraper does) against awaiting each publish's ack in turn.

    .venv/bin/python bench/bench_scrape.py [--rounds 5] [--data ../shared/data/market/5m]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import requests
from cryptoviz.core.contract import OutgoingMessage, encode_scrape
from cryptoviz.core.nats import EmbeddedNats
from cryptoviz.dev.market import CsvReplayFeed, MarketServer
from cryptoviz.scraper.http import HttpClient
from cryptoviz.scraper.providers.coinmarketcap import CoinMarketCap
from cryptoviz.scraper.publish import Publisher

COINS = 5000
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "market" / "5m"


async def publish_each_awaited(publisher: Publisher, messages: list[OutgoingMessage]) -> None:
    """The baseline: one round trip per message."""
    await publisher.connect()
    assert publisher.js is not None
    for message in messages:
        await publisher.js.publish(message.subject, message.payload, headers=dict(message.headers))


async def one_round(
    adapter: CoinMarketCap, publisher: Publisher, awaited: bool, per_quote: bool = False
) -> tuple[float, float, int]:
    """Seconds for fetch+parse+validate+encode, seconds to publish, quotes.

    `per_quote` publishes one message per quote instead of the contract's 500-quote chunks, to show
    what publish_async saves when there are many messages.
    """
    started = time.perf_counter()
    fetched = await asyncio.to_thread(adapter.fetch, [], COINS)
    if per_quote:
        messages = [m for q in fetched.quotes for m in encode_scrape("coinmarketcap", [q])]
    else:
        messages = encode_scrape("coinmarketcap", fetched.quotes)
    parsed = time.perf_counter()
    if awaited:
        await publish_each_awaited(publisher, messages)
    else:
        report = await publisher.publish(messages)
        assert report.stored == len(messages), report
    return parsed - started, time.perf_counter() - parsed, len(fetched.quotes)


def serve_market(data: Path, urls: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    """The market in its own process, so rendering its 2 MB answers does not take the scraper's GIL."""
    with MarketServer(CsvReplayFeed(data, start=300)) as market:
        market.add_fault(kind="listing_5000", total=COINS)
        urls.put(market.url)
        stop.wait()


def advance(url: str) -> None:
    """New provider timestamps: new message ids, so no round is deduplicated."""
    requests.post(f"{url}/_control/advance", json={"steps": 1}, timeout=5).raise_for_status()


async def main(rounds: int, data: Path) -> None:
    urls: multiprocessing.Queue = multiprocessing.Queue()
    stop = multiprocessing.Event()
    server = multiprocessing.Process(target=serve_market, args=(data, urls, stop), daemon=True)
    server.start()
    market_url = urls.get(timeout=60)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(Path(tmp)) as nats:
        http = HttpClient("coinmarketcap", requests.Session(), headers={"X-CMC_PRO_API_KEY": "bench"})
        adapter = CoinMarketCap(http, market_url)
        publisher = Publisher(nats.url, deadline=30)
        await publisher.connect()
        await publisher.publish(encode_scrape("coinmarketcap", (await asyncio.to_thread(adapter.fetch, [], 10)).quotes))
        results: dict[bool, list[tuple[float, float, int]]] = {False: [], True: []}
        for _ in range(rounds):
            for awaited in (False, True):
                advance(market_url)
                results[awaited].append(await one_round(adapter, publisher, awaited))
        many = {}
        for awaited in (False, True):
            advance(market_url)
            many[awaited] = (await one_round(adapter, publisher, awaited, per_quote=True))[1]
        await publisher.close()
    stop.set()
    server.join(timeout=10)

    def median(awaited: bool, index: int) -> float:
        return statistics.median(r[index] for r in results[awaited])

    quotes = results[False][0][2]
    parse = median(False, 0)
    fast, slow = median(False, 1), median(True, 1)
    total, total_slow = parse + fast, median(True, 0) + slow
    print(f"listing: {quotes} coins, {rounds} rounds each (medians)")
    print(f"fetch + parse + validate + encode: {parse * 1000:8.1f} ms")
    print(f"publish (publish_async + wait all): {fast * 1000:8.1f} ms")
    print(f"publish (await each publish):       {slow * 1000:8.1f} ms")
    print(f"total scrape: {total * 1000:.1f} ms -> {quotes / total:,.0f} quotes/s (target < 1000 ms)")
    print(f"total with awaited publishes: {total_slow * 1000:.1f} ms")
    print(f"publish ratio awaited/async: {slow / fast:.1f}x; whole scrape ratio: {total_slow / total:.2f}x")
    print(
        f"one message per quote ({quotes} publishes): async {many[False] * 1000:.0f} ms, "
        f"awaited {many[True] * 1000:.0f} ms, ratio {many[True] / many[False]:.1f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.data))
