"""`cryptoviz notify` end to end: the real ingester and notifier, a real nats-server, and loopback
stand-ins for a JSON webhook (Apprise `json://`), the Telegram Bot API and a Slack webhook."""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptoviz.core.quote import Quote
from support.notify import SLACK_TOKENS, TELEGRAM_TOKEN, NotifyProcess, Receiver, metric_value
from test_ingest_harness import CRYPTOVIZ, Ingester, chunked, publish

pytestmark = pytest.mark.timeout(240)


def _config(tmp_path: Path, coins: str) -> Path:
    path = tmp_path / "scraper.yaml"
    path.write_text("version: 1\ncoins:\n" + coins)
    return path


def _targets(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "targets.yaml"
    path.write_text(text)
    return path


def _quote(symbol: str, price: float, ts: datetime, name: str | None = None) -> Quote:
    now = datetime.now(UTC)
    return Quote("demo", symbol.lower(), symbol, name or symbol.title(), price, ts, now)


def _settled_alerts(ingester: Ingester, count: int, targets: int, timeout: float = 60.0) -> list[dict]:
    """Wait until `count` alerts each have a final receipt from `targets` targets; return them."""
    give_up = time.monotonic() + timeout
    alerts: list[dict] = []
    while time.monotonic() < give_up:
        alerts = ingester.json("/api/v1/alerts", limit="10000")["data"]
        final = [a for a in alerts if len([d for d in a["deliveries"] if d["status"] != "retrying"]) == targets]
        if len(alerts) == count and len(final) == count:
            return alerts
        time.sleep(0.2)
    raise TimeoutError(f"{len(alerts)} alerts, not {count} settled on {targets} targets: {alerts[:2]}")


def test_an_alert_reaches_webhook_telegram_and_slack_once_and_the_api_says_so(nats_server, tmp_path: Path):
    config = _config(tmp_path, "  - symbol: C1\n    alerts: [{above: 150, cooldown: 1h}]\n    notify: [team]\n")
    with Receiver() as receiver:
        targets = _targets(tmp_path, f"team: ['{receiver.telegram_url()}', '{receiver.slack_url()}']\n")
        ingester = Ingester(nats_server.url, tmp_path / "db.duckdb", tmp_path / "i.log", SCRAPER_CONFIG=str(config))
        notifier = NotifyProcess(
            nats_server.url,
            tmp_path / "n.log",
            receiver.base,
            NOTIFY_URLS=receiver.json_url(),
            NOTIFY_TARGETS_FILE=str(targets),
            DASHBOARD_URL="https://prices.example.com/cryptoviz",
        )
        try:
            ingester.start()
            notifier.start()
            ts = datetime(2025, 6, 1, tzinfo=UTC)
            publish(nats_server.url, chunked([_quote("C1", 160.0, ts, name="Coin One")]))
            answer = _settled_alerts(ingester, 1, 3)
            metrics = notifier.metrics()
        finally:
            notifier.stop()
            ingester.stop()
        assert len(receiver.json_posts()) == len(receiver.telegram()) == len(receiver.slack()) == 1
    post = receiver.json_posts()[0]
    assert "C1 price 160 USD is above 150 USD" in post["message"]
    assert "https://prices.example.com/cryptoviz/?coins=C1&period=24h" in post["message"]
    telegram = receiver.telegram()[0]
    assert str(telegram["chat_id"]) == "4242" and telegram["parse_mode"] == "HTML"
    assert '<a href="https://prices.example.com/cryptoviz/?coins=C1&amp;period=24h">' in telegram["text"]
    assert "Coin One" in json.dumps(receiver.slack()[0])
    (alert,) = answer
    assert alert["delivery"] == "delivered" and alert["published"] is True and alert["notify"] == ["team"]
    assert sorted(d["target"] for d in alert["deliveries"]) == ["default", "team/1", "team/2"]
    assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in alert["deliveries"])
    assert metric_value(metrics, "cryptoviz_notify_delivered_total") == 3
    assert metric_value(metrics, "cryptoviz_notify_latency_seconds_count") == 3
    _assert_no_secret_logged(notifier.log(), receiver)


def _assert_no_secret_logged(log: str, receiver: Receiver) -> None:
    """At LOG_LEVEL=DEBUG, with Apprise and urllib3 inside, no token or URL path reaches the log."""
    assert "targets: default" in log  # the log was written
    for secret in (TELEGRAM_TOKEN.split(":")[1], *SLACK_TOKENS, "/hook", f":{receiver.port}"):
        assert secret not in log, secret


async def _dead_letters(url: str) -> list:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe("cryptoviz.notify.deadletter.>", stream="CRYPTOVIZ_ALERTS")
        found: list = []
        while True:
            try:
                found += await sub.fetch(10, timeout=2)
            except TimeoutError:
                return found
    finally:
        await nc.close()


def test_a_500_is_retried_into_one_delivery_and_a_400_is_dead_lettered_while_the_others_get_theirs(
    nats_server, tmp_path: Path
):
    config = _config(tmp_path, "  - symbol: C1\n    alerts: [{below: 50, cooldown: 1h}]\n    notify: [team, nobody]\n")
    with Receiver() as receiver:
        receiver.script = {"/flaky": [500], "/refuses": [400, 400, 400]}
        targets = _targets(tmp_path, f"team: '{receiver.json_url('/team')}'\n")
        urls = f"{receiver.json_url('/flaky')}, {receiver.json_url('/refuses')}"
        ingester = Ingester(nats_server.url, tmp_path / "db.duckdb", tmp_path / "i.log", SCRAPER_CONFIG=str(config))
        notifier = NotifyProcess(
            nats_server.url, tmp_path / "n.log", receiver.base, NOTIFY_URLS=urls, NOTIFY_TARGETS_FILE=str(targets)
        )
        try:
            ingester.start()
            notifier.start()
            publish(nats_server.url, chunked([_quote("C1", 40.0, datetime(2025, 6, 1, tzinfo=UTC))]))
            (alert,) = _settled_alerts(ingester, 1, 4)
            dead = asyncio.run(_dead_letters(nats_server.url))
            metrics = notifier.metrics()
        finally:
            notifier.stop()
            ingester.stop()
        assert len(receiver.on("/flaky")) == 1 and len(receiver.on("/team")) == 1
        assert receiver.on("/refuses") == [] and receiver.script["/refuses"] == [400, 400]  # tried once only
    by_target = {d["target"]: d for d in alert["deliveries"]}
    assert by_target["default/1"]["status"] == "delivered" and by_target["default/1"]["attempts"] == 2
    assert by_target["default/2"]["status"] == "failed" and by_target["default/2"]["reason"] == "HTTP 400 Bad Request"
    assert by_target["team"]["status"] == "delivered" and by_target["team"]["attempts"] == 1
    assert by_target["nobody"]["status"] == "failed" and "no target named 'nobody'" in by_target["nobody"]["reason"]
    assert alert["delivery"] == "partial"
    assert sorted(m.headers["Cryptoviz-Target"] for m in dead) == ["default/2", "nobody"]
    assert {m.headers["Cryptoviz-Target"]: m.headers["Cryptoviz-Reason"] for m in dead}["default/2"] == (
        "HTTP 400 Bad Request"
    )
    assert all(json.loads(m.data)["alert_id"] == alert["alert_id"] for m in dead)
    assert metric_value(metrics, "cryptoviz_notify_retried_total", target="default/1") == 1
    assert metric_value(metrics, "cryptoviz_notify_failed_total") == 2
    assert metric_value(metrics, "cryptoviz_notify_delivered_total") == 2


def _path(market_5m: Path, symbol: str, rows: int, skip: int = 0) -> list[tuple[datetime, float]]:
    with (market_5m / f"{symbol}-USD_5m.csv").open() as handle:
        data = list(csv.DictReader(handle))[skip : skip + rows]
    return [(datetime.fromisoformat(r["Date"]), float(r["Close"])) for r in data]


def _expected(path: list[tuple[datetime, float]], above: float, rise: float, window: timedelta) -> tuple[int, int]:
    """Reference count of firings with cooldown 0: one per step meeting each rule."""
    above_count = sum(price > above for _, price in path)
    rises = 0
    for ts, price in path:
        low = min(p for t, p in path if ts - window <= t <= ts)
        rises += (price - low) / low * 100 >= rise
    return above_count, rises


def test_a_recorded_price_path_fires_exactly_the_expected_alerts_each_delivered_once(
    nats_server, tmp_path: Path, market_5m: Path
):
    """Real BTC 5-minute closes from the shared data crossing a price level and rising 0.5 % within 30m."""
    path = _path(market_5m, "BTC", 36, skip=144)
    prices = sorted(p for _, p in path)
    level = prices[len(prices) // 2]
    want_above, want_rises = _expected(path, level, 0.5, timedelta(minutes=30))
    assert 0 < want_above < len(path) and 0 < want_rises < len(path)  # the path really crosses both ways
    config = _config(
        tmp_path,
        f"  - symbol: BTC\n    alerts:\n      - {{above: {level!r}, cooldown: 0s}}\n"
        "      - {change_above: {percent: 0.5, window: 30m}, cooldown: 0s}\n",
    )
    with Receiver() as receiver:
        ingester = Ingester(
            nats_server.url,
            tmp_path / "db.duckdb",
            tmp_path / "i.log",
            SCRAPER_CONFIG=str(config),
            BATCH_TIMEOUT="0.05",
        )
        notifier = NotifyProcess(nats_server.url, tmp_path / "n.log", receiver.base, NOTIFY_URLS=receiver.json_url())
        try:
            ingester.start()
            notifier.start()
            for step, (ts, price) in enumerate(path, 1):
                publish(nats_server.url, chunked([_quote("BTC", price, ts)]))
                ingester.wait_records(step)
            alerts = _settled_alerts(ingester, want_above + want_rises, 1)
        finally:
            notifier.stop()
            ingester.stop()
    assert sum(a["condition"] == "above" for a in alerts) == want_above
    assert sum(a["condition"] == "change_above" for a in alerts) == want_rises
    refs = [line for post in receiver.json_posts() for line in post["message"].splitlines() if line.startswith("Ref: ")]
    assert sorted(refs) == sorted(f"Ref: {a['alert_id']}" for a in alerts)  # each exactly once
    rise = next(a for a in alerts if a["condition"] == "change_above")
    assert rise["window_seconds"] == 1800 and rise["change_pct"] >= 0.5


def _refs(posts: list[dict]) -> Counter:
    return Counter(line for post in posts for line in post["message"].splitlines() if line.startswith("Ref: "))


def test_sigkilled_notifier_and_ingester_during_a_burst_lose_and_double_nothing(nats_server, tmp_path: Path):
    """1,000 alerts (5 batches × 20 coins × 10 rules) to two targets. The ingester is SIGKILLed right after
    committing batch 3 (its alerts stored, not yet published: the outbox must publish them after the
    restart); the notifier is SIGKILLed in the middle of the deliveries, with requests in flight that the
    targets never accepted, and restarted: every alert reaches each target exactly once.

    The kill lands where every accepted delivery has been recorded: between a target's 2xx and our record
    (about a millisecond) a kill cannot be told from a lost answer, and that one message is sent again."""
    rules = ", ".join(f"{{above: {t}, cooldown: 0s}}" for t in range(1, 11))
    coins = "".join(f"  - symbol: C{c}\n    notify: [team]\n    alerts: [{rules}]\n" for c in range(20))
    config = _config(tmp_path, coins)
    db = tmp_path / "db.duckdb"
    with Receiver() as receiver:
        targets = _targets(tmp_path, f"team: '{receiver.json_url('/team')}'\n")
        env = {"NOTIFY_URLS": receiver.json_url(), "NOTIFY_TARGETS_FILE": str(targets), "NOTIFY_CONCURRENCY": "8"}
        notifier = NotifyProcess(nats_server.url, tmp_path / "n1.log", receiver.base, **env)
        paused = threading.Event()

        def pause_midway(_: dict) -> None:
            if len(receiver.requests) >= 600 and not paused.is_set():
                paused.set()
                receiver.pause()

        receiver.on_request = pause_midway
        killed: list[int] = []

        def kill_and_restart() -> None:
            paused.wait(120)
            receiver.wait(
                lambda: metric_value(notifier.metrics(), "cryptoviz_notify_delivered_total") == len(receiver.requests),
                what="every accepted delivery recorded",
            )
            killed.append(len(receiver.requests))
            notifier.kill()
            receiver.resume(drop_held=True)
            notifier.__init__(nats_server.url, tmp_path / "n2.log", receiver.base, **env)
            notifier.start()

        crashing = Ingester(
            nats_server.url, db, tmp_path / "i1.log", SCRAPER_CONFIG=str(config), CRYPTOVIZ_CRASH_AFTER_COMMIT="3"
        )
        ingester = Ingester(nats_server.url, db, tmp_path / "i2.log", SCRAPER_CONFIG=str(config))
        killer = threading.Thread(target=kill_and_restart, daemon=True)
        try:
            crashing.start()
            notifier.start()
            killer.start()
            base = datetime(2025, 6, 1, tzinfo=UTC)
            for batch in range(5):
                ts = base + timedelta(minutes=batch)
                publish(nats_server.url, chunked([_quote(f"C{c}", 100.0 + batch, ts) for c in range(20)]))
                if batch == 2:
                    assert crashing.process.wait(30) == -9
                    ingester.start()
                (crashing if batch < 2 else ingester).wait_records(20 * (batch + 1))
            alerts = _settled_alerts(ingester, 1000, 2, timeout=120)
            killer.join(60)
        finally:
            receiver.resume(drop_held=False)
            notifier.stop()
            ingester.stop()
            crashing.kill()
    assert killed and 600 <= killed[0] < 2000, killed  # the notifier really died mid-burst
    ids = {f"Ref: {a['alert_id']}" for a in alerts}
    for path in ("/hook", "/team"):
        refs = _refs(receiver.json_posts(path))
        assert set(refs) == ids, path  # none lost
        assert max(refs.values()) == 1, [r for r, n in refs.items() if n > 1][:5]  # none doubled
    assert all(a["delivery"] == "delivered" and a["published"] for a in alerts)


def test_two_replicas_share_a_burst_and_deliver_each_alert_once(nats_server, tmp_path: Path):
    """The chart's default: two notifiers on one durable consumer. 1,000 alerts in 5 batches: each
    reaches the webhook once, both replicas delivered part of them, and no delivery was a duplicate
    that a receipt had to stop (each alert was handed to one replica only)."""
    rules = ", ".join(f"{{above: {t}, cooldown: 0s}}" for t in range(1, 11))
    config = _config(tmp_path, "".join(f"  - symbol: C{c}\n    alerts: [{rules}]\n" for c in range(20)))
    with Receiver() as receiver:
        env = {"NOTIFY_URLS": receiver.json_url(), "NOTIFY_REPLICAS": "2"}
        replicas = [NotifyProcess(nats_server.url, tmp_path / f"n{i}.log", receiver.base, **env) for i in (1, 2)]
        ingester = Ingester(nats_server.url, tmp_path / "db.duckdb", tmp_path / "i.log", SCRAPER_CONFIG=str(config))
        try:
            ingester.start()
            for replica in replicas:
                replica.start()
            base = datetime(2025, 6, 1, tzinfo=UTC)
            for batch in range(5):  # a batch per commit: each one fires all 200 rules
                publish(nats_server.url, chunked([_quote(f"C{c}", 100.0 + batch, base + timedelta(minutes=batch))
                                                  for c in range(20)]))  # fmt: skip
                ingester.wait_records(20 * (batch + 1))
            alerts = _settled_alerts(ingester, 1000, 1, timeout=120)
            metrics = [replica.metrics() for replica in replicas]
        finally:
            for replica in replicas:
                replica.stop()
            ingester.stop()
    refs = _refs(receiver.json_posts())
    assert set(refs) == {f"Ref: {a['alert_id']}" for a in alerts} and max(refs.values()) == 1
    delivered = [metric_value(text, "cryptoviz_notify_delivered_total") for text in metrics]
    assert sum(delivered) == 1000 and min(delivered) > 0, delivered
    assert sum(metric_value(text, "cryptoviz_notify_skipped_total") for text in metrics) == 0
    assert "one of 2 replicas" in replicas[0].log()


def test_a_bad_target_stops_the_notifier_at_start_naming_it_but_not_its_url(tmp_path: Path):
    targets = _targets(tmp_path, "ops: ['json://ok.example/x', 'nosuchservice://user:hunter2@example.org/']\n")
    done = subprocess.run(
        [CRYPTOVIZ, "notify", "--notify-targets-file", str(targets), "--nats-url", "nats://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "target ops/2: not a valid Apprise URL (scheme nosuchservice://)" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout and "Traceback" not in done.stderr
