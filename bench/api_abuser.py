"""Abusive clients of the ingester API (used by tests/test_api_limits.py and bench/bench_api_abuse.py).

`--clients` concurrent aiohttp clients send, as fast as they can for `--seconds`, the largest
questions the API accepts (200 symbols of 20 characters, the widest windows at 10,000 points, every
format, a new `end` each time so no cached answer helps) and the oversized ones it refuses
(symbol lists of 14 KB and more, thousands of entries). Prints `started` as the clients start, then
`requests=N` and the statuses seen.

    .venv/bin/python bench/api_abuser.py http://127.0.0.1:8000 --clients 30 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections import Counter

import aiohttp

LONGEST = ",".join([f"{i:0>20}" for i in range(186)] + ["BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT"] * 2)
HUGE = ",".join(f"S{i}" for i in range(3_000))  # ~14 KB: once de-duplicated O(n²) on the event loop


def questions(seq: int) -> tuple[str, dict[str, str]]:
    end = f"{1_736_726_400 + 86_400 * 30 + seq}"
    fmt = ("json", "csv", "arrow", "parquet")[seq % 4]
    every = [
        (
            "/api/v1/history",
            {"symbols": LONGEST, "points": "10000", "start": "2024-01-01T00:00:00Z", "end": end, "format": fmt},
        ),
        ("/api/v1/latest", {"symbols": LONGEST, "format": fmt}),
        ("/api/v1/coverage", {"symbols": LONGEST, "since": "2024-01-01", "until": "2025-02-04", "min_gap": "173"}),
        ("/api/v1/history", {"symbols": HUGE}),
        ("/api/v1/latest", {"symbols": "A," * 6_000}),
        ("/api/v1/alerts", {"limit": "10000", "since": "86400"}),
    ]
    return every[seq % len(every)]


async def client(url: str, deadline: float, counter: itertools.count, statuses: Counter[str]) -> None:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < deadline:
            path, params = questions(next(counter))
            try:
                async with session.get(url + path, params=params) as response:
                    await response.read()
                    statuses[str(response.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1


async def main(url: str, clients: int, seconds: float) -> None:
    statuses: Counter[str] = Counter()
    counter = itertools.count()
    deadline = time.monotonic() + seconds
    print("started", flush=True)  # the caller starts measuring now
    await asyncio.gather(*(client(url, deadline, counter, statuses) for _ in range(clients)))
    print(f"requests={sum(statuses.values())} statuses={dict(sorted(statuses.items()))}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(main(args.url.rstrip("/"), args.clients, args.seconds))
