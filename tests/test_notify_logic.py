"""Fast tests of the pure decisions behind notifications: rules over windows, stale data on an injected
clock (against a real DuckDB file), the message in each markup with hostile names, the rate limit,
outcome classification, targets parsing, receipts ranking."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import markdown
import pytest
import requests
import requests.api
from cryptoviz.core.alert_contract import AlertMessage, Receipt, target_key
from cryptoviz.core.config import ConfigError, parse_config
from cryptoviz.core.nats import free_port
from cryptoviz.core.quote import Quote
from cryptoviz.ingester import outbox, queries
from cryptoviz.ingester.alerts import AlertEngine
from cryptoviz.ingester.api.alerts import alerts_table
from cryptoviz.ingester.rules import Rule, Window, alert_id, observe, rules_from_config
from cryptoviz.ingester.store import Store, quotes_to_arrow
from cryptoviz.notify.message import escape_markdown, period_for, render
from cryptoviz.notify.ratelimit import TokenBucket
from cryptoviz.notify.send import Sender, classify, keep_connections
from cryptoviz.notify.service import retry_delay
from cryptoviz.notify.targets import Target, TargetError, Targets, parse_targets_file, split_urls
from support.notify import Receiver

HOSTILE = '<script>alert(1)</script> [click](http://evil.example) **bold** & "q"\n*Injected line*'


def _rules(alerts: list[dict], **coin) -> list[Rule]:
    return rules_from_config(parse_config({"coins": [{"symbol": "BTC", "alerts": alerts, **coin}]}))


# -- rules ----------------------------------------------------------------------------------------


def test_config_accepts_window_and_stale_rules_and_rejects_bad_ones() -> None:
    rules = _rules(
        [
            {"change_above": {"percent": 5, "window": "1h"}},
            {"change_below": {"percent": 3, "window": "30m"}},
            {"stale_after": "15m", "cooldown": "2h"},
            {"above": 1},
        ],
        notify=["ops"],
    )
    assert [(r.condition, r.threshold, r.window_seconds) for r in rules] == [
        ("change_above", 5.0, 3600.0),
        ("change_below", 3.0, 1800.0),
        ("stale_after", 900.0, None),
        ("above", 1.0, None),
    ]
    assert [r.rule_id for r in rules] == [
        "BTC change_above 5% 1h",
        "BTC change_below 3% 30m",
        "BTC stale_after 15m",
        "BTC above 1",
    ]
    assert rules[2].cooldown == timedelta(hours=2) and all(r.notify == ("ops",) for r in rules)
    for bad, reason in [
        ({"change_above": {"percent": 5}}, "window"),
        ({"change_above": {"percent": 0, "window": "1h"}}, "greater than 0"),
        ({"change_below": {"percent": 5, "window": "31d"}}, "between 1m and 30d"),
        ({"stale_after": "10s"}, "at least 1m"),
        ({"stale_after": "15m", "above": 3}, "exactly one"),
    ]:
        with pytest.raises(ConfigError, match=reason):
            _rules([bad])
    with pytest.raises(ConfigError, match="notify"):
        parse_config({"coins": [{"symbol": "BTC", "notify": ["Bad Name"]}]})


def test_window_rules_measure_the_move_from_the_windows_low_or_high() -> None:
    rise, fall = _rules(
        [{"change_above": {"percent": 5, "window": "1h"}}, {"change_below": {"percent": 5, "window": "1h"}}]
    )
    quote = {"price": 105.0}
    assert observe(rise, quote, Window(low=100.0, high=106.0)) == pytest.approx(5.0)
    assert observe(rise, quote, Window(low=100.1, high=106.0)) is None
    assert observe(fall, {"price": 95.0}, Window(low=95.0, high=100.0)) == pytest.approx(-5.0)
    assert observe(fall, {"price": 96.0}, Window(low=95.0, high=100.0)) is None
    assert observe(rise, quote, None) is None  # no history in the window: no move to speak of
    (above,) = _rules([{"above": 100}])
    assert observe(above, {"price": 100.0}) is None and observe(above, {"price": 100.5}) == 100.5


def test_alert_ids_depend_on_rule_and_trigger_time_only() -> None:
    t = datetime(2025, 1, 1, 12, 0, 0, 123456)
    assert alert_id("BTC above 1", t) == alert_id("BTC above 1", t)
    assert (
        len(
            {
                alert_id("BTC above 1", t),
                alert_id("BTC above 2", t),
                alert_id("BTC above 1", t + timedelta(microseconds=1)),
            }
        )
        == 3
    )
    assert re.fullmatch(r"[A-Za-z0-9]{32}", alert_id("X", t))


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _store(tmp_path: Path, config: str) -> tuple[Store, Path]:
    path = tmp_path / "scraper.yaml"
    path.write_text(config)
    return Store(tmp_path / "db.duckdb"), path


def test_stale_rules_fire_on_the_clock_once_per_cooldown_and_stop_when_quotes_come(tmp_path: Path) -> None:
    store, config = _store(
        tmp_path,
        "coins:\n  - {symbol: AAA, alerts: [{stale_after: 10m, cooldown: 1h}]}\n"
        "  - {symbol: NEW, alerts: [{stale_after: 10m, cooldown: 1d}]}\n  - {symbol: BBB}\n",
    )
    clock = Clock(datetime(2026, 1, 1, 12, 0))

    def quote(price: float) -> None:
        store.write_batch(quotes_to_arrow([Quote("demo", "aaa", "AAA", "A", price, clock.now, clock.now)]))

    def due() -> list[tuple[str, float | None]]:
        fired = engine.stale_due()
        if fired:
            outbox.insert_alerts(store, fired)
            engine.committed(fired)
        return [(a["symbol"], a["price"]) for a in fired]

    try:
        clock.now -= timedelta(minutes=30)
        quote(5.0)
        clock.now += timedelta(minutes=30)
        engine = AlertEngine(str(config), store, clock=clock)
        assert engine.stale_check_seconds == 15.0
        assert due() == []  # quiet for 30 min, but the ingester has only just started
        clock.now += timedelta(minutes=10)
        assert due() == [("AAA", 5.0), ("NEW", None)]  # NEW has never been quoted at all
        assert "no new quote for 10m" in outbox.unpublished(store)[0]["message"]
        clock.now += timedelta(minutes=30)
        assert due() == []  # within the cooldown
        clock.now += timedelta(minutes=32)
        quote(6.0)
        clock.now += timedelta(minutes=3)
        assert due() == []  # quotes came back
        clock.now += timedelta(minutes=10)
        assert due() == [("AAA", 6.0)]  # quiet again for 13 minutes
        restarted = AlertEngine(str(config), store, clock=clock)  # cooldowns come back from the table
        clock.now += timedelta(minutes=20)
        assert restarted.stale_due() == []
    finally:
        store.close()


def test_batch_rules_see_their_window_inside_the_transaction_and_respect_the_cooldown(tmp_path: Path) -> None:
    store, config = _store(
        tmp_path,
        "coins:\n  - symbol: AAA\n    notify: [ops]\n"
        "    alerts: [{change_below: {percent: 10, window: 1h}, cooldown: 15m}]\n",
    )
    clock = Clock(datetime(2026, 1, 1, 12, 0))
    try:
        engine = AlertEngine(str(config), store, clock=clock)
        t0 = datetime(2025, 1, 1)
        prices = [100.0, 104.0, 95.0, 93.0, 93.5, 92.0]
        fired = []
        for step, price in enumerate(prices):
            ts = t0 + timedelta(minutes=10 * step)
            result = store.write_batch(
                quotes_to_arrow([Quote("demo", "aaa", "AAA", "A", price, ts, ts)]), alert_rules=engine.due
            )
            engine.committed(result.alerts)
            fired += result.alerts
            clock.now += timedelta(minutes=10)
        # 104 → 93 is -10.6 % (fires), 93.5 is -10.1 % but 10 min later (cooldown), 92 is 20 min later: fires.
        assert [(a["price"], round(a["change_pct"], 2)) for a in fired] == [(93.0, -10.58), (92.0, -11.54)]
        assert fired[0]["notify"] == ["ops"] and fired[0]["rule_id"] == "AAA change_below 10% 1h"
        rows = alerts_table(store.reader(), None, 10).to_pylist()
        assert [(r["price"], r["published"], r["delivery"], r["deliveries"]) for r in rows] == [
            (92.0, False, "pending", []),
            (93.0, False, "pending", []),
        ]
        assert [r["alert_id"] for r in outbox.unpublished(store)] == [a["alert_id"] for a in fired]
    finally:
        store.close()


def test_receipts_keep_the_final_state_and_the_api_sums_them_up(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb")
    try:
        t = datetime(2026, 1, 1)
        row = {
            "alert_id": "a1",
            "rule_id": "X above 1",
            "symbol": "X",
            "condition": "above",
            "threshold": 1.0,
            "fired_at": t,
            "notify": [],
        }
        outbox.insert_alerts(store, [row])
        outbox.mark_published(store, ["a1"])

        def receipt(target: str, status: str, attempts: int, total: int = 2) -> Receipt:
            return Receipt(
                alert_id="a1", target=target, status=status, attempts=attempts, at="2026-01-01T00:00:05Z", targets=total
            )

        outbox.apply_receipts(store, [receipt("default", "retrying", 1)])
        assert alerts_table(store.reader(), None, 5).to_pylist()[0]["delivery"] == "retrying"
        outbox.apply_receipts(store, [receipt("default", "delivered", 2), receipt("default", "retrying", 1)])
        assert alerts_table(store.reader(), None, 5).to_pylist()[0]["delivery"] == "pending"  # 1 of 2 targets
        outbox.apply_receipts(store, [receipt("ops", "failed", 1)])
        outbox.apply_receipts(store, [receipt("default", "retrying", 1)])  # late: never overwrites delivered
        (answer,) = alerts_table(store.reader(), None, 5).to_pylist()
        assert answer["delivery"] == "partial" and answer["published"] is True
        assert [(d["target"], d["status"], d["attempts"]) for d in answer["deliveries"]] == [
            ("default", "delivered", 2),
            ("ops", "failed", 1),
        ]
        assert queries.stats(store.reader())["records"] == 0
    finally:
        store.close()


# -- the message ----------------------------------------------------------------------------------


def _alert(**fields) -> AlertMessage:
    base = {
        "alert_id": "a" + "0" * 31,
        "rule_id": "BTC above 100000",
        "symbol": "BTC",
        "name": HOSTILE,
        "condition": "above",
        "threshold": 100000.0,
        "price": 101234.5,
        "change_24h": 2.5,
        "fired_at": "2025-01-13T00:05:00Z",
        "message": "BTC price 101,234 USD is above 100,000 USD",
    }
    return AlertMessage.model_validate({**base, **fields})


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text = ""

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data) -> None:
        self.text += data


def test_html_message_escapes_a_hostile_name_and_links_only_the_dashboard() -> None:
    title, body = render(_alert(), "html", "https://prices.example.com")
    parsed = _Tags()
    parsed.feed(title + body)
    assert {tag for tag, _ in parsed.tags} <= {"b", "br", "a"}
    assert [a["href"] for tag, a in parsed.tags if tag == "a"] == ["https://prices.example.com/?coins=BTC&period=24h"]
    assert "<script>alert(1)</script>" in parsed.text  # shown as text, not markup
    assert "\n*Injected line*" not in parsed.text  # no forged line
    assert "Price:" in parsed.text and "101,234.5 USD" in parsed.text and "+2.50% in 24h" in parsed.text
    assert "2025-01-13 00:05:00 UTC" in parsed.text


def test_markdown_message_escapes_a_hostile_name_for_commonmark() -> None:
    title, body = render(_alert(), "markdown", "https://prices.example.com/x(y)")
    parsed = _Tags()
    parsed.feed(markdown.markdown(title + "\n\n" + body))
    links = [a["href"] for tag, a in parsed.tags if tag == "a"]
    assert links == ["https://prices.example.com/x%28y%29/?coins=BTC&period=24h"]
    assert {tag for tag, _ in parsed.tags} <= {"p", "strong", "a", "br"}
    assert "[click](http://evil.example) **bold**" in parsed.text and "<script>" in parsed.text
    assert escape_markdown("a_b*c") == r"a\_b\*c"


def test_text_message_is_plain_lines_with_the_link() -> None:
    title, body = render(
        _alert(change_pct=5.25, condition="change_above", threshold=5, window_seconds=3600), "text", "http://d"
    )
    lines = body.splitlines()
    assert lines[0] == "BTC price 101,234 USD is above 100,000 USD"
    assert "Rule: rise of 5% within 1h" in lines and "Change: +5.25% within 1h, +2.50% in 24h" in lines
    assert lines[-1] == "Dashboard: http://d/?coins=BTC&period=24h" and "\n" not in title
    assert not any(line.startswith("*Injected") for line in lines)


def test_the_dashboard_period_shows_the_rules_window() -> None:
    assert period_for(_alert()) == "24h"
    assert period_for(_alert(condition="change_above", window_seconds=1800)) == "1h"
    assert period_for(_alert(condition="stale_after", threshold=6 * 3600)) == "24h"
    assert period_for(_alert(condition="change_below", window_seconds=20 * 86400)) == "30d"


# -- delivery decisions ---------------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_spaces_sends_on_an_injected_clock() -> None:
    bucket = TokenBucket(rate_per_minute=60, burst=3)
    assert [bucket.reserve(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(0.0) == pytest.approx(1.0)
    assert bucket.reserve(0.0) == pytest.approx(2.0)  # queued behind the previous reservation
    assert bucket.reserve(10.0) == 0.0  # refilled (capped at the burst)
    assert TokenBucket(0).reserve(0.0) == 0.0


def _sends_within(bucket: TokenBucket, seconds: float) -> int:
    """Messages one bucket lets through from a standing start until `seconds` (reservations at t=0)."""
    sent = 0
    while bucket.reserve(0.0) <= seconds:
        sent += 1
    return sent


def test_replicas_together_stay_within_one_target_s_rate_limit() -> None:
    alone = _sends_within(TokenBucket(60, 10), 60.0)
    assert alone == 70  # the burst of 10, then one a second
    for replicas in (2, 3, 4, 16):
        together = sum(_sends_within(TokenBucket.share_of(60, 10, replicas), 60.0) for _ in range(replicas))
        assert alone - replicas <= together <= alone, replicas  # never more; at most a message each less
        if replicas <= 10:  # and at once, no more than the one burst
            assert sum(_sends_within(TokenBucket.share_of(60, 10, replicas), 0.0) for _ in range(replicas)) <= 10
    assert TokenBucket.share_of(60, 1, 4).burst == 1  # a share never stalls
    assert TokenBucket.share_of(0, 10, 2).reserve(0.0) == 0.0  # off stays off


def test_outcomes_are_classified_by_status_without_leaking_log_text() -> None:
    secret = "Failed to send to https://hooks.example/T000/SECRET: Bad Request - error=400."
    assert classify(True, False, []).delivered
    bad = classify(False, False, [secret])
    assert bad.permanent and bad.reason == "HTTP 400 Bad Request" and "SECRET" not in bad.reason
    for code in (500, 503, 429, 408):
        outcome = classify(False, False, [f"Failed: error={code}."])
        assert not outcome.permanent and outcome.reason.startswith(f"HTTP {code}")
    assert not classify(False, False, ["A Connection error occurred"]).permanent
    assert classify(False, True, []).reason == "timed out"
    assert [retry_delay(n, 2, 30) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 16, 30]


def test_a_send_held_past_the_timeout_is_timed_out_and_a_refused_one_is_not() -> None:
    """Apprise sends in our worker thread without its own deadline: NOTIFY_TIMEOUT is the socket
    timeout, and a send that ran into it says so (a loopback webhook that never answers)."""

    def sender(url: str) -> Sender:
        return Sender(Target("default", "default", url, "json"), timeout=0.5)

    with Receiver() as receiver:
        receiver.pause()
        try:
            held = sender(receiver.json_url()).send("t", "b")
        finally:
            receiver.resume(drop_held=True)
        assert sender(receiver.json_url()).send("t", "b").delivered
    assert not held.delivered and not held.permanent and held.reason == "timed out"
    refused = sender(f"json://127.0.0.1:{free_port()}/hook").send("t", "b")
    assert not refused.delivered and not refused.permanent and refused.reason.startswith("not accepted")


def test_a_target_s_messages_share_one_kept_alive_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Apprise's plugins open a connection (to https targets: a TLS handshake) per message unless
    keep_connections() routes them through the Sender's Session; other callers keep one-shot requests."""
    monkeypatch.setattr(requests.api, "request", requests.api.request)  # restored after the test
    monkeypatch.setattr(requests, "request", requests.request)
    keep_connections()
    with Receiver() as receiver:
        sender = Sender(Target("default", "default", receiver.json_url(), "json"), timeout=5)
        assert all(sender.send("t", f"message {i}").delivered for i in range(5))
        requests.post(receiver.base + "/hook", json={"title": "t", "message": "x"}, timeout=5)
        requests.post(receiver.base + "/hook", json={"title": "t", "message": "y"}, timeout=5)
        clients = [entry["client"] for entry in receiver.on("/hook")]
    assert len(clients) == 7 and len(set(clients[:5])) == 1, clients
    assert len(set(clients[4:])) == 3, "a plain requests.post outside a send shares no connection"


def test_targets_parse_urls_and_names_and_never_echo_a_url() -> None:
    assert split_urls("json://a/b, tgram://1:x/2 mailto://u:p@h?to=a@b,c@d") == [
        "json://a/b",
        "tgram://1:x/2",
        "mailto://u:p@h?to=a@b,c@d",
    ]
    named = parse_targets_file("ops: [json://a, json://b]\nteam-1: json://c\n")
    targets = Targets.build(["json://z"], named)
    chosen, unknown = targets.resolve(["ops", "nope", "ops"])
    assert [t.name for t in chosen] == ["default", "ops/1", "ops/2"] and unknown == ["nope"]
    assert "json://" not in repr(chosen)
    for text, reason in [
        ("default: json://x", "reserved"),
        ("Bad: json://x", "must match"),
        ("ops: []", "needs one"),
        ("ops: [json://secret:tok@x\n", "not valid YAML"),
    ]:
        with pytest.raises(TargetError, match=reason) as error:
            parse_targets_file(text)
        assert "secret" not in str(error.value)
    assert target_key("ops/2") != target_key("ops_2") and re.fullmatch(r"[A-Za-z0-9_-]+", target_key("ops/2"))
