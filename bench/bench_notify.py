"""Fire → delivered: 1,000 alerts fired in one batch, delivered to a local JSON webhook, p50/p99/max.

The real pipeline: `cryptoviz ingest` fires 1,000 rules (50 coins × 20 price levels) on one committed
batch, its outbox publishes them to JetStream, `cryptoviz notify` delivers each through Apprise to a
loopback webhook (json://). Latency is the receiver's arrival time minus the alert's `fired_at`. The
baseline in the same run: a plain loop of 1,000 Apprise sends to the same webhook (no NATS, no
dedup, no receipts): what the notifier's extra guarantees cost against sending by hand.

One warm-up alert goes the whole way first (delivered and its receipt stored), so the batch meets
running services, as it would in operation, not a fresh ingester's one-time costs (pandas imported
behind pyarrow at its first batch, the receipt writer's first statement: ≈ 0.6 s of CPU on the 2-core
machine, in the middle of the measurement). The load average is printed: figures compare only
between runs at similar load.

The notifier runs as the chart deploys it: `notify.replicas` processes (read from the chart's
values.yaml, 2) sharing one durable consumer, each with NOTIFY_REPLICAS set; `--replicas 1` measures a
single process.

    .venv/bin/python bench/bench_notify.py [--coins 50 --levels 20 --concurrency 8 --replicas N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import apprise
import yaml
from cryptoviz.core.nats import EmbeddedNats
from cryptoviz.core.quote import Quote
from support.notify import NotifyProcess, Receiver
from test_ingest_harness import Ingester, chunked, publish

CHART_VALUES = Path(__file__).resolve().parent.parent / "charts" / "cryptoviz" / "values.yaml"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _baseline(receiver: Receiver, count: int) -> float:
    """Seconds for `count` sequential Apprise sends to the same webhook."""
    sender = apprise.Apprise()
    sender.add(receiver.json_url("/baseline"))
    started = time.perf_counter()
    for i in range(count):
        sender.notify(body=f"baseline {i}", title="baseline")
    return time.perf_counter() - started


def _warm_up(url: str, ingester: Ingester, receiver: Receiver) -> None:
    """One alert through ingest, outbox, notifier, webhook and receipt; then the receiver starts empty."""
    ts = datetime.now(UTC).replace(microsecond=0)
    publish(url, chunked([Quote("demo", "warm", "WARM", "Warm-up", 2.0, ts, ts)]))
    receiver.wait(lambda: len(receiver.on("/hook")) >= 1, timeout=60, what="the warm-up delivery")
    give_up = time.monotonic() + 30
    while ingester.json("/api/v1/alerts", limit="1")["data"][0]["delivery"] != "delivered":
        if time.monotonic() > give_up:
            raise TimeoutError("the warm-up receipt was not stored within 30 s")
        time.sleep(0.05)
    with receiver.lock:
        receiver.requests.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coins", type=int, default=50)
    parser.add_argument("--levels", type=int, default=20, help="price rules per coin (all fire at once)")
    parser.add_argument("--concurrency", type=int, default=8, help="NOTIFY_CONCURRENCY")
    chart_replicas = yaml.safe_load(CHART_VALUES.read_text())["notify"]["replicas"]
    parser.add_argument(
        "--replicas", type=int, default=chart_replicas, help="notifier processes (default: the chart's notify.replicas)"
    )
    args = parser.parse_args()
    count = args.coins * args.levels
    with tempfile.TemporaryDirectory() as tmp_name, Receiver() as receiver:
        tmp = Path(tmp_name)
        rules = ", ".join(f"{{above: {level}, cooldown: 1h}}" for level in range(1, args.levels + 1))
        config = tmp / "scraper.yaml"
        config.write_text(
            "version: 1\ncoins:\n"
            + "".join(f"  - {{symbol: C{c}, alerts: [{rules}]}}\n" for c in range(args.coins))
            + "  - {symbol: WARM, alerts: [{above: 1, cooldown: 1h}]}\n"
        )
        server = EmbeddedNats(tmp / "nats").start()
        ingester = Ingester(server.url, tmp / "db.duckdb", tmp / "ingester.log", SCRAPER_CONFIG=str(config))
        notifiers = [
            NotifyProcess(
                server.url,
                tmp / f"notify-{replica}.log",
                receiver.base,
                NOTIFY_URLS=receiver.json_url(),
                NOTIFY_CONCURRENCY=str(args.concurrency),
                NOTIFY_REPLICAS=str(args.replicas),
                LOG_LEVEL="INFO",
            )
            for replica in range(args.replicas)
        ]
        try:
            ingester.start()
            for notifier in notifiers:
                notifier.start()
            _warm_up(server.url, ingester, receiver)
            ts = datetime.now(UTC).replace(microsecond=0)
            publish(
                server.url,
                chunked([Quote("demo", f"c{c}", f"C{c}", f"Coin {c}", 1000.0, ts, ts) for c in range(args.coins)]),
            )
            receiver.wait(lambda: len(receiver.on("/hook")) >= count, timeout=120, what=f"{count} deliveries")
            alerts = ingester.json("/api/v1/alerts", limit=str(count + 1))["data"]
            fired = {
                a["alert_id"]: datetime.fromisoformat(a["fired_at"].replace("Z", "+00:00")).timestamp() for a in alerts
            }
            latencies = []
            for entry, post in zip(receiver.on("/hook"), receiver.json_posts(), strict=True):
                ref = next(line[5:] for line in post["message"].splitlines() if line.startswith("Ref: "))
                latencies.append(entry["at"] - fired[ref])
            baseline = _baseline(receiver, count)
        finally:
            for notifier in notifiers:
                notifier.stop()
            ingester.stop()
            server.stop()
    p99 = _percentile(latencies, 0.99)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"{count} alerts fired in one batch → delivered to a local webhook "
        f"({args.replicas} notifier {'replica' if args.replicas == 1 else 'replicas'}, "
        f"NOTIFY_CONCURRENCY={args.concurrency} each)"
    )
    print(f"  load average {load} (1, 5, 15 min)")
    print(
        f"  fire → delivered: min {min(latencies):.3f} s, p50 {statistics.median(latencies):.3f} s, "
        f"p99 {p99:.3f} s, max {max(latencies):.3f} s"
    )
    print(f"  baseline, {count} sequential Apprise sends by hand: {baseline:.3f} s in all")
    print(f"  p99 / baseline: {p99 / baseline:.2f} (target: p99 < 2 s: {'met' if p99 < 2 else 'NOT met'})")


if __name__ == "__main__":
    main()
