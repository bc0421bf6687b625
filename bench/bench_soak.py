"""Accelerated soak of the whole local pipeline: is memory flat, is anything failing?

Starts `cryptoviz dev --demo` (NATS, ingester, scraper loop, dashboard, supervisor) on free
ports, then for `--minutes`:
- replays the four weeks of shared 5-minute candles into JetStream as contract messages of
  provider `replay` (one message per candle time, the scraper's own format; the scraper's loop
  cannot go below one scrape per second, so the bench publishes itself), paced to finish at
  ~80 % of the run;
- runs `--sessions` browser-like clients, each reloading the dashboard page (a new Panel
  session server-side) and reading the API (/stats, /latest, /history) every `--refresh` s.
Reports errors, request latencies, the replay rows stored, and the RSS of every process after
warm-up (25 % of the run), once the replay is over (85 %, data volume constant from here) and at
the end; the ratios are end/warm and end/settled. Nothing is asserted: figures only.

    .venv/bin/python bench/bench_soak.py --minutes 5
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import requests
from cryptoviz.core import contract
from cryptoviz.core.nats import connect, ensure_stream, free_port
from cryptoviz.core.quote import make_quote

ROOT = Path(__file__).resolve().parent.parent
MARKET_5M = Path(os.environ.get("CRYPTOVIZ_SHARED", ROOT.parent / "shared")) / "data" / "market" / "5m"
SYMBOLS = {
    "ADA": "cardano", "AVAX": "avalanche-2", "BNB": "binancecoin", "BTC": "bitcoin", "DOGE": "dogecoin",
    "DOT": "polkadot", "ETH": "ethereum", "LINK": "chainlink", "LTC": "litecoin", "MATIC": "matic-network",
    "SOL": "solana", "USDC": "usd-coin", "USDT": "tether", "XRP": "ripple",
}  # fmt: skip


def rss_kib(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def load_ticks(directory: Path) -> list[tuple[datetime, list[tuple[str, float]]]]:
    by_time: dict[datetime, list[tuple[str, float]]] = {}
    for file in sorted(directory.glob("*.csv")):
        symbol = file.name.split("-")[0]
        with file.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                when = datetime.fromisoformat(row["Date"]).astimezone(UTC)
                by_time.setdefault(when, []).append((symbol, float(row["Close"])))
    return sorted(by_time.items())


async def publish_replay(nats_url: str, ticks, seconds: float, stop: threading.Event, done: dict) -> None:
    """One contract message per candle time, paced to take `seconds`."""
    nc = await connect(nats_url, name="bench-soak")
    js = nc.jetstream()
    await ensure_stream(js)
    started = time.monotonic()
    try:
        for n, (when, rows) in enumerate(ticks):
            if stop.is_set():
                break
            quotes = [
                make_quote(
                    provider="replay", coin_id=SYMBOLS.get(s, s.lower()), symbol=s, name=s, price=p, timestamp=when
                )
                for s, p in rows
            ]
            for message in contract.encode_scrape("replay", quotes):
                await js.publish(message.subject, message.payload, headers=message.headers)
            done["quotes"] += len(quotes)
            ahead = started + seconds * (n + 1) / len(ticks) - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
    finally:
        await nc.close()


def session(
    n: int, dashboard: str, api: str, refresh: float, stop: threading.Event, stats: Counter, latencies: dict
) -> None:
    """A browser-like client: reload the page, read the API, wait, again."""
    rng = random.Random(n)
    http = requests.Session()
    symbols = ",".join(rng.sample(sorted(SYMBOLS), 5))
    while not stop.wait(rng.uniform(0.5, 1.5) * refresh):
        for name, url, params in (
            ("page", dashboard + "/", None),
            ("stats", api + "/api/v1/stats", None),
            ("latest", api + "/api/v1/latest", None),
            ("history", api + "/api/v1/history", {"symbols": symbols, "points": 500, "start": "2025-01-13T00:00:00Z"}),
        ):
            started = time.monotonic()
            try:
                response = http.get(url, params=params, timeout=30)
                stats["ok" if response.status_code == 200 else f"{name}: HTTP {response.status_code}"] += 1
            except requests.RequestException as exc:
                stats[f"{name}: {type(exc).__name__} {str(exc)[-60:]}"] += 1
            latencies.setdefault(name, []).append(time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--refresh", type=float, default=10.0, help="seconds between a session's reloads")
    args = parser.parse_args()
    seconds = args.minutes * 60
    ticks = load_ticks(MARKET_5M)
    rows = sum(len(r) for _, r in ticks)
    ports = {"api": free_port(), "dashboard": free_port(), "nats": free_port()}
    state = Path(tempfile.mkdtemp(prefix="cryptoviz-soak-"))
    env = {**os.environ, "RETENTION_DAYS": "0", "CMC_API_KEY": "", "LOG_LEVEL": "WARNING"}
    command = [
        sys.executable, "-c", "from cryptoviz.cli import main; main()", "dev", "--demo", "--state-dir", str(state),
        "--api-port", str(ports["api"]), "--dashboard-port", str(ports["dashboard"]), "--nats-port", str(ports["nats"]),
    ]  # fmt: skip
    dev = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(dev.stdout), daemon=True).start()
    api, dashboard = f"http://127.0.0.1:{ports['api']}", f"http://127.0.0.1:{ports['dashboard']}"
    try:
        give_up = time.monotonic() + 240
        while "Press Ctrl-C" not in "".join(output):
            if dev.poll() is not None or time.monotonic() > give_up:
                raise SystemExit("cryptoviz dev did not come up:\n" + "".join(output))
            time.sleep(0.5)
        info = json.loads((state / "run.json").read_text())
        stop, stats, published, latencies = threading.Event(), Counter(), {"quotes": 0}, {}
        publisher = threading.Thread(
            target=lambda: asyncio.run(publish_replay(info["nats_url"], ticks, seconds * 0.8, stop, published))
        )
        publisher.start()
        clients = [
            threading.Thread(
                target=session, args=(n, dashboard, api, args.refresh, stop, stats, latencies), daemon=True
            )
            for n in range(args.sessions)
        ]
        for client in clients:
            client.start()
        time.sleep(seconds * 0.25)

        def snapshot() -> dict[str, int | None]:
            pids = json.loads((state / "run.json").read_text())["pids"]
            return {"supervisor": rss_kib(dev.pid), **{name: rss_kib(pid) for name, pid in pids.items()}}

        warm = snapshot()
        time.sleep(seconds * 0.6)  # the replay ends at 80 %: from here on the data volume is constant
        settled = snapshot()
        time.sleep(seconds * 0.15)
        stop.set()
        publisher.join(timeout=60)
        time.sleep(3)  # let the last batch commit
        end = snapshot()
        coins = requests.get(api + "/api/v1/coins", params={"provider": "replay"}, timeout=30).json()["data"]
        stored = sum(c["records"] for c in coins if c["provider"] == "replay")
        restarts = json.loads((state / "run.json").read_text())["restarts"]
    finally:
        dev.send_signal(signal.SIGINT)
        code = dev.wait(timeout=90)
        shutil.rmtree(state, ignore_errors=True)

    requests_ok = stats.pop("ok", 0)
    print(f"soak: {args.minutes:g} min, {args.sessions} sessions refreshing every ~{args.refresh:g}s")
    print(f"replay: {published['quotes']:,} of {rows:,} quotes published ({len(ticks):,} candle times), "
          f"{stored:,} stored (lost or doubled: {stored - published['quotes']:+,})")  # fmt: skip
    print(f"requests: {requests_ok:,} ok, errors: {dict(stats) or 'none'}; restarts: {restarts}; dev exit {code}")
    for name, values in sorted(latencies.items()):
        values.sort()
        p50, p99 = values[len(values) // 2], values[int(len(values) * 0.99)]
        print(f"  {name:<8} p50 {p50 * 1000:7.0f} ms   p99 {p99 * 1000:7.0f} ms")
    print("RSS (MiB) after warm-up (25 %), once the replay is over (85 %), at the end (100 %):")
    print(f"{'process':<12}{'warm':>9}{'settled':>9}{'end':>9}{'end/warm':>10}{'end/settled':>13}")
    for name, before in warm.items():
        mid, after = settled.get(name), end.get(name)
        if before and mid and after:
            print(
                f"{name:<12}{before / 1024:>9.1f}{mid / 1024:>9.1f}{after / 1024:>9.1f}"
                f"{after / before:>10.2f}{after / mid:>13.2f}"
            )


if __name__ == "__main__":
    main()
