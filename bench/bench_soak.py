"""Accelerated soak of the whole local pipeline: is memory flat, is anything failing?

Starts `cryptoviz dev --replay` on the four weeks of shared 5-minute candles (NATS, ingester,
scraper loop, local market server, dashboard, supervisor) on free ports, at a speed meant to end
the replay at ~80 % of `--minutes` (at most one candle per 0.05 s, the scraper's floor for the
local market). Every candle takes the real path: MarketServer -> `cryptoviz scrape --loop` ->
JetStream -> ingester, paced by `cryptoviz dev` (a candle is served only once the one `--window`
candles back is stored). Meanwhile `--sessions` browser-like clients each hold a dashboard tab
open (a Bokeh websocket session that receives every pushed update, as a browser's does, without
drawing), reload it every ~`--reload` s (a new Panel session server-side, the old one closed) and
read the API (/stats, /latest, /history) every ~`--refresh` s.
Reports errors, request latencies, the candles and quotes replayed and stored (each candle time
is one message, so the stored rows must equal the rows of every candle up to the last stored
one), and the RSS of every process after warm-up (25 % of the run), at 85 % and at the end; the
ratios are end/warm and end/85 %. Nothing is asserted: figures only.

    .venv/bin/python bench/bench_soak.py --minutes 5 [--candles 2000]
"""

from __future__ import annotations

import argparse
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
from cryptoviz.core.nats import free_port
from cryptoviz.scraper.settings import MIN_INTERVAL_LOCAL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from dashboard_tabs import load_panel_models, open_tab, read_metric

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
    """The candles as the replay serves them: per candle time, (symbol, close) of every coin that has one."""
    by_time: dict[datetime, list[tuple[str, float]]] = {}
    for file in sorted(directory.glob("*.csv")):
        symbol = file.name.split("-")[0]
        with file.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                when = datetime.fromisoformat(row["Date"]).astimezone(UTC)
                by_time.setdefault(when, []).append((symbol, float(row["Close"])))
    return sorted(by_time.items())


def session(
    n: int, dashboard: str, api: str, refresh: float, reload: float, stop: threading.Event, stats: Counter,
    latencies: dict,
) -> None:  # fmt: skip
    """A browser-like client: a tab open on the dashboard receiving its pushed updates, reloaded every
    ~`reload` s (a new server session, the old one closed), plus API reads every ~`refresh` s."""
    import asyncio

    asyncio.set_event_loop(asyncio.new_event_loop())  # this thread's Bokeh client loop
    rng = random.Random(n)
    http = requests.Session()
    symbols = ",".join(rng.sample(sorted(SYMBOLS), 5))
    page, reload_at = None, 0.0
    while not stop.is_set():
        if page is None or time.monotonic() >= reload_at:
            if page is not None:
                page.close()
                page = None
            started = time.monotonic()
            try:
                page = open_tab(dashboard + "/")
                page.document.on_change(lambda _event: stats.update(["pushed changes"]))
                stats["ok"] += 1
            except Exception as exc:  # any failure to open the page is a reported error
                stats[f"page: {type(exc).__name__} {str(exc)[-60:]}"] += 1
            latencies.setdefault("page", []).append(time.monotonic() - started)
            reload_at = time.monotonic() + rng.uniform(0.5, 1.5) * reload
        wait_until = time.monotonic() + rng.uniform(0.5, 1.5) * refresh
        if page is not None and page.connected:
            page._connection._loop_until(lambda: stop.is_set() or time.monotonic() >= wait_until)  # noqa: B023
        elif stop.wait(max(0.0, wait_until - time.monotonic())):
            break
        for name, url, params in (
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
    if page is not None:
        if not page.connected:
            stats["page: disconnected by the server"] += 1
        page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--refresh", type=float, default=10.0, help="seconds between a session's API reads")
    parser.add_argument("--reload", type=float, default=60.0, help="seconds between a session's page reloads")
    parser.add_argument("--window", type=int, default=4, help="candle times in flight (cryptoviz dev --replay-window)")
    parser.add_argument("--candles", type=int, default=None, help="replay only the first N candle times [all]")
    args = parser.parse_args()
    seconds = args.minutes * 60
    ticks = load_ticks(MARKET_5M)[: args.candles]
    rows = sum(len(r) for _, r in ticks)
    period = max(seconds * 0.8 / len(ticks), MIN_INTERVAL_LOCAL)  # market pacing on top of this
    ports = {"api": free_port(), "dashboard": free_port(), "nats": free_port(), "metrics": free_port()}
    state = Path(tempfile.mkdtemp(prefix="cryptoviz-soak-"))
    env = {
        **os.environ,
        "CMC_API_KEY": "",
        "LOG_LEVEL": "WARNING",
        "DASHBOARD_METRICS_PORT": str(ports["metrics"]),
        # every simulated visitor is this machine, and reloads leave sessions behind for a while: no caps
        "DASHBOARD_MAX_SESSIONS": "10000",
        "DASHBOARD_MAX_SESSIONS_PER_CLIENT": "10000",
    }
    command = [
        sys.executable, "-c", "from cryptoviz.cli import main; main()", "dev", "--replay", str(MARKET_5M),
        "--speed", f"{300 / period:g}", "--replay-limit", str(len(ticks)), "--replay-window", str(args.window),
        "--state-dir", str(state),
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
        started = time.monotonic()
        stop, stats, latencies = threading.Event(), Counter(), {}
        clients = [
            threading.Thread(
                target=session,
                args=(n, dashboard, api, args.refresh, args.reload, stop, stats, latencies),
                daemon=True,
            )
            for n in range(args.sessions)
        ]
        load_panel_models()
        for client in clients:
            client.start()
        time.sleep(seconds * 0.25)

        def snapshot() -> dict[str, int | None]:
            pids = json.loads((state / "run.json").read_text())["pids"]
            return {"supervisor": rss_kib(dev.pid), **{name: rss_kib(pid) for name, pid in pids.items()}}

        def held() -> str:
            """The dashboard's sessions, open tabs/closed ones not yet discarded (its /metrics)."""
            try:
                counts = read_metric(f"http://127.0.0.1:{ports['metrics']}/metrics", "cryptoviz_dashboard_sessions", 30)
            except requests.RequestException:
                return "?"
            open_, closed = (f"{counts[s]:.0f}" if s in counts else "?" for s in ("connected", "disconnected"))
            return f"{open_}/{closed}"

        warm = snapshot()
        series, sessions_held = [(time.monotonic() - started, warm)], [held()]
        while time.monotonic() - started < seconds:  # every 5 % of the run, for the RSS curve
            time.sleep(min(seconds * 0.05, seconds - (time.monotonic() - started)))
            series.append((time.monotonic() - started, snapshot()))
            sessions_held.append(held())
        settled = min(series, key=lambda point: abs(point[0] - seconds * 0.85))[1]
        stop.set()
        for client in clients:
            client.join(timeout=30)
        finished = "Replay finished" in "".join(output)
        replay_seconds = time.monotonic() - started
        time.sleep(3)  # let the last batch commit
        end = snapshot()
        coins = requests.get(api + "/api/v1/coins", params={"provider": "replay"}, timeout=30).json()["data"]
        stored = sum(c["records"] for c in coins if c["provider"] == "replay")
        last = max(datetime.fromisoformat(c["last_timestamp"].replace("Z", "+00:00")) for c in coins)
        replayed = [r for when, r in ticks if when <= last]  # a candle time is one message: stored whole or not at all
        duplicates = requests.get(api + "/api/v1/stats", timeout=30).json()["duplicates"]
        restarts = json.loads((state / "run.json").read_text())["restarts"]
    finally:
        dev.send_signal(signal.SIGINT)
        code = dev.wait(timeout=90)
        shutil.rmtree(state, ignore_errors=True)

    expected = sum(len(r) for r in replayed)
    requests_ok, pushed = stats.pop("ok", 0), stats.pop("pushed changes", 0)
    print(
        f"soak: {args.minutes:g} min, {args.sessions} dashboard tabs (Bokeh websocket sessions receiving pushed"
        f" updates, reloaded every ~{args.reload:g}s) also reading the API every ~{args.refresh:g}s"
    )
    print(
        f"replay through MarketServer -> cryptoviz scrape -> JetStream -> ingester, a candle every >= {period:.3f}s: "
        f"{len(replayed):,} of {len(ticks):,} candle times ({'finished' if finished else 'not finished'} "
        f"after {replay_seconds:.0f}s of sessions), {stored:,} quotes stored for {expected:,} replayed of {rows:,} "
        f"(lost or doubled: {stored - expected:+,}; redeliveries recognised as duplicates: {duplicates})"
    )
    print(
        f"requests (page opens + API reads): {requests_ok:,} ok, errors: {dict(stats) or 'none'}; "
        f"model changes pushed to the tabs: {pushed:,}; restarts: {restarts}; dev exit {code}"
    )
    for name, values in sorted(latencies.items()):
        values.sort()
        p50, p99 = values[len(values) // 2], values[int(len(values) * 0.99)]
        print(f"  {name:<8} p50 {p50 * 1000:7.0f} ms   p99 {p99 * 1000:7.0f} ms")
    print("RSS (MiB) over the run (every 5 % after warm-up):")
    for name in warm:
        curve = " ".join(f"{point[name] / 1024:.0f}" if point.get(name) else "-" for _, point in series)
        print(f"  {name:<11} {curve}")
    print(f"  dashboard sessions, open/closed not yet discarded: {' '.join(sessions_held)}")
    print("RSS (MiB) after warm-up (25 %), at 85 %, at the end (100 %):")
    print(f"{'process':<12}{'warm':>9}{'85 %':>9}{'end':>9}{'end/warm':>10}{'end/85 %':>13}")
    for name, before in warm.items():
        mid, after = settled.get(name), end.get(name)
        if before and mid and after:
            print(
                f"{name:<12}{before / 1024:>9.1f}{mid / 1024:>9.1f}{after / 1024:>9.1f}"
                f"{after / before:>10.2f}{after / mid:>13.2f}"
            )


if __name__ == "__main__":
    main()
