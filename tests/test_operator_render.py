"""The operator's pure decision: TrackedCrypto objects → scraper config, schedule, acceptance."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptoviz.core.config import parse_config
from cryptoviz_operator.render import DEFAULT_INTERVAL_SECONDS, cron_schedule, render
from cryptoviz_operator.settings import Settings, SettingsError
from cryptoviz_operator.status import IngestView, desired_status, status_changes

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def tc(name: str, spec: dict, created: str = "2026-01-01T00:00:00Z", namespace: str = "crypto", **meta) -> dict:
    return {
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created, "uid": f"uid-{name}", **meta},
        "spec": spec,
    }


def example(name: str) -> dict:
    obj = yaml.safe_load((EXAMPLES / f"trackedcrypto-{name}.yaml").read_text())
    obj["metadata"].update(namespace="crypto", creationTimestamp="2026-01-01T00:00:00Z")
    return obj


def test_examples_render_to_a_valid_sorted_config() -> None:
    objects = [example(n) for n in ("usdt", "btc", "sol-alerts", "eth")]
    result = render(objects)
    config = parse_config(yaml.safe_load(result.text))
    assert [c.symbol for c in config.coins] == ["BTC", "ETH", "SOL", "USDT"]
    btc = config.coins[0]
    assert btc.name == "Bitcoin"
    assert btc.ids == {
        "coinmarketcap": "1",
        "coingecko": "bitcoin",
        "binance": "BTCUSDT",
        "kraken": "XBTUSD",
        "coinbase": "BTC-USD",
    }
    assert config.coins[1].providers == ["coingecko"]
    sol = config.coins[2]
    assert [(a.above, a.below, a.change_24h_above, a.cooldown) for a in sol.alerts] == [
        (500.0, None, None, "1h"),
        (None, 50.0, None, "30m"),
        (None, None, 15.0, "6h"),
    ]
    assert "change_24h_above: 15" in result.text
    # the smallest interval (sol: 2m) decides the CronJob schedule
    assert result.interval_seconds == 120
    assert result.schedule == "*/2 * * * *"
    assert all(d.accepted and d.active for d in result.decisions.values())


def test_output_does_not_depend_on_listing_order() -> None:
    objects = [tc(f"c{i}", {"symbol": f"C{i:03d}", "interval": f"{i + 1}m"}) for i in range(200)]
    first = render(objects)
    for seed in range(5):
        random.Random(seed).shuffle(objects)
        again = render(objects)
        assert again.text == first.text
        assert again.digest == first.digest
        assert again.decisions == first.decisions
    assert len(first.config.coins) == 200
    assert [c.symbol for c in first.config.coins] == sorted(c.symbol for c in first.config.coins)
    assert first.schedule == "* * * * *"


def test_same_symbol_with_different_ids_rejects_the_later_one() -> None:
    older = tc("bitcoin", {"symbol": "BTC", "ids": {"coingecko": "bitcoin"}}, created="2026-01-01T00:00:00Z")
    newer = tc("fake-btc", {"symbol": "BTC", "ids": {"coingecko": "batcoin"}}, created="2026-01-02T00:00:00Z")
    result = render([newer, older])
    assert result.config.coins[0].ids == {"coingecko": "bitcoin"}
    assert result.decisions[("crypto", "bitcoin")].accepted
    rejected = result.decisions[("crypto", "fake-btc")]
    assert not rejected.accepted and not rejected.active
    assert rejected.reason == "SymbolConflict"
    assert "crypto/bitcoin" in rejected.message and "'bitcoin' vs 'batcoin'" in rejected.message


def test_collision_ties_are_broken_by_namespace_then_name() -> None:
    same_time = "2026-01-01T00:00:00Z"
    a = tc("zzz", {"symbol": "BTC", "ids": {"coingecko": "a"}}, created=same_time, namespace="alpha")
    b = tc("aaa", {"symbol": "BTC", "ids": {"coingecko": "b"}}, created=same_time, namespace="beta")
    result = render([b, a])
    assert result.decisions[("alpha", "zzz")].accepted
    assert result.decisions[("beta", "aaa")].reason == "SymbolConflict"


def test_same_symbol_with_compatible_ids_is_merged() -> None:
    a = tc(
        "btc-a",
        {"symbol": "BTC", "ids": {"coingecko": "bitcoin"}, "providers": ["coingecko"], "alerts": [{"above": 100000}]},
    )
    b = tc(
        "btc-b",
        {"symbol": "BTC", "ids": {"binance": "BTCUSDT"}, "providers": ["binance"], "alerts": [{"below": 10}]},
        created="2026-01-03T00:00:00Z",
    )
    result = render([a, b])
    (coin,) = result.config.coins
    assert coin.ids == {"coingecko": "bitcoin", "binance": "BTCUSDT"}
    assert coin.providers == ["coingecko", "binance"]
    assert len(coin.alerts) == 2
    assert result.decisions[("crypto", "btc-a")].message.endswith("shared with crypto/btc-b")
    assert result.decisions[("crypto", "btc-b")].accepted


def test_default_provider_and_explicit_providers_do_not_merge() -> None:
    """The default provider is the scraper's (unknown to the operator): merging would silently drop it."""
    a = tc("btc-a", {"symbol": "BTC", "ids": {"coingecko": "bitcoin"}})
    b = tc("btc-b", {"symbol": "BTC", "providers": ["binance"]}, created="2026-01-03T00:00:00Z")
    result = render([a, b])
    (coin,) = result.config.coins
    assert coin.providers is None
    decision = result.decisions[("crypto", "btc-b")]
    assert (decision.accepted, decision.reason) == (False, "ProviderConflict")
    assert "crypto/btc-a" in decision.message


def test_paused_objects_are_left_out_and_claim_nothing() -> None:
    paused = tc("old", {"symbol": "BTC", "ids": {"coingecko": "x"}, "paused": True, "interval": "1m"})
    active = tc("new", {"symbol": "BTC", "ids": {"coingecko": "bitcoin"}}, created="2026-02-01T00:00:00Z")
    result = render([paused, active])
    assert [c.ids for c in result.config.coins] == [{"coingecko": "bitcoin"}]
    decision = result.decisions[("crypto", "old")]
    assert (decision.accepted, decision.active, decision.reason) == (True, False, "Paused")
    # a paused object's interval does not speed up the CronJob
    assert result.interval_seconds == DEFAULT_INTERVAL_SECONDS


def test_defaults_and_no_objects() -> None:
    empty = render([])
    assert parse_config(yaml.safe_load(empty.text)).coins == []
    assert empty.schedule == "*/5 * * * *"
    one = render([tc("eth", {"symbol": "ETH"})])
    (coin,) = one.config.coins
    assert (coin.name, coin.ids, coin.providers, coin.alerts) == (None, {}, None, [])
    assert one.schedule == "*/5 * * * *"
    assert "null" not in one.text


def test_invalid_specs_are_rejected_with_a_reason_and_the_rest_is_kept() -> None:
    objects = [
        tc("ok", {"symbol": "BTC"}),
        tc("lower", {"symbol": "btc"}),
        tc("fast", {"symbol": "ETH", "interval": "30s"}),
        tc("two", {"symbol": "SOL", "alerts": [{"above": 1, "below": 2}]}),
        tc("cmc", {"symbol": "ADA", "ids": {"coinmarketcap": "cardano"}}),
        tc("nospec", None),
    ]
    result = render(objects)
    assert [c.symbol for c in result.config.coins] == ["BTC"]
    reasons = {k[1]: (d.reason, d.message) for k, d in result.decisions.items()}
    assert reasons["ok"][0] == "Accepted"
    assert reasons["lower"][0] == "InvalidSpec" and "symbol" in reasons["lower"][1]
    assert "shorter than 1m" in reasons["fast"][1]
    assert "exactly one" in reasons["two"][1]
    assert "coinmarketcap" in reasons["cmc"][1]
    assert reasons["nospec"][0] == "InvalidSpec"


@pytest.mark.parametrize(
    ("seconds", "schedule"),
    [
        (60, "* * * * *"),
        (120, "*/2 * * * *"),
        (420, "*/6 * * * *"),
        (300, "*/5 * * * *"),
        (3599, "*/30 * * * *"),
        (3600, "0 * * * *"),
        (5400, "0 * * * *"),
        (5 * 3600, "0 */4 * * *"),
        (86400 * 3, "0 0 * * *"),
    ],
)
def test_cron_schedule_runs_at_least_as_often_as_asked(seconds: int, schedule: str) -> None:
    assert cron_schedule(seconds) == schedule


def test_status_is_stable_and_reports_the_ingester() -> None:
    obj = tc("btc", {"symbol": "BTC", "ids": {"coingecko": "bitcoin"}}, generation=3)
    decision = render([obj]).decisions[("crypto", "btc")]
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    first = desired_status(obj, decision, None, now)
    ready = first["conditions"][1]
    assert (ready["status"], ready["reason"]) == ("Unknown", "Pending")
    assert first["conditions"][0]["observedGeneration"] == 3
    obj["status"] = first
    later = desired_status(obj, decision, None, now + timedelta(minutes=5))
    assert status_changes(obj["status"], later) == {}

    down = IngestView(url="http://ingester:8000", error="connection refused")
    changes = status_changes(obj["status"], desired_status(obj, decision, down, now))
    assert changes["conditions"][1]["reason"] == "IngesterUnreachable"
    assert "http://ingester:8000" in changes["conditions"][1]["message"]

    quote = {
        "symbol": "BTC",
        "provider": "coingecko",
        "coin_id": "bitcoin",
        "price": 65000.5,
        "percent_change_24h": -1.25,
        "timestamp": "2026-03-01T11:59:00Z",
        "received_at": "2026-03-01T11:59:05Z",
    }
    impostor = {**quote, "coin_id": "batcoin", "price": 1.0, "timestamp": "2026-03-01T11:59:30Z"}
    up = IngestView(url="http://ingester:8000", quotes={"BTC": [impostor, quote]})
    status = desired_status(obj, decision, up, now)
    assert (status["price"], status["change24h"], status["lastSeen"]) == (65000.5, -1.25, "2026-03-01T11:59:00Z")
    assert status["conditions"][1]["status"] == "True"
    stale = desired_status(obj, decision, up, now + timedelta(hours=2))
    assert stale["conditions"][1]["reason"] == "Stale"


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "INGESTER_URL": "http://ingester:8000/",
        "CONFIGMAP_NAME": "cm",
        "CRONJOB_NAME": "cj",
        "MANAGE_SCHEDULE": "true",
        "POD_NAMESPACE": "crypto",
        "STATUS_REFRESH_INTERVAL": "15",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings == Settings(
        ingester_url="http://ingester:8000",
        configmap_name="cm",
        cronjob_name="cj",
        manage_schedule=True,
        pod_namespace="crypto",
        status_refresh_interval=15.0,
    )
    monkeypatch.delenv("MANAGE_SCHEDULE")
    assert Settings.from_env().manage_schedule is False
    monkeypatch.setenv("MANAGE_SCHEDULE", "maybe")
    with pytest.raises(SettingsError, match="MANAGE_SCHEDULE: Input should be a valid boolean"):
        Settings.from_env()
    monkeypatch.setenv("MANAGE_SCHEDULE", "no")
    monkeypatch.setenv("STATUS_REFRESH_INTERVAL", "1m")
    with pytest.raises(SettingsError, match="STATUS_REFRESH_INTERVAL"):
        Settings.from_env()


def test_the_namespace_defaults_to_the_service_accounts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cryptoviz_operator import settings as module

    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setattr(module, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "namespace")
    assert Settings.from_env().pod_namespace == "default"  # outside a cluster
    (tmp_path / "namespace").write_text("crypto\n")
    assert Settings.from_env().pod_namespace == "crypto"


def test_window_and_stale_rules_and_notify_targets_render_into_the_config_and_merge() -> None:
    spec = {
        "symbol": "ETH",
        "notify": ["team"],
        "alerts": [
            {"changeAbove": {"percent": 5, "window": "1h"}, "cooldown": "2h"},
            {"changeBelow": {"percent": 5, "window": "1h"}},
            {"staleAfter": "15m"},
        ],
    }
    other = {"symbol": "ETH", "notify": ["ops", "team"], "alerts": [{"staleAfter": "15m"}, {"above": 5000}]}
    result = render([tc("one", spec), tc("two", other, created="2026-01-02T00:00:00Z")])
    (coin,) = parse_config(yaml.safe_load(result.text)).coins
    assert coin.notify == ["ops", "team"]
    assert [(a.condition, a.cooldown) for a in coin.alerts] == [
        ("above", "1h"),
        ("change_above", "2h"),
        ("change_below", "1h"),
        ("stale_after", "1h"),
    ]
    assert coin.alerts[1].change_above.window_seconds == 3600 and coin.alerts[1].change_above.percent == 5
    assert "stale_after: 15m" in result.text and "window: 1h" in result.text
    bad = render([tc("bad", {"symbol": "ETH", "alerts": [{"changeAbove": {"percent": 5, "window": "5s"}}]})])
    assert not bad.decisions[("crypto", "bad")].accepted
    assert "window must be between 1m and 30d" in bad.decisions[("crypto", "bad")].message


def test_status_alerts_follow_the_last_firing_and_delivery_and_never_go_back() -> None:
    from cryptoviz_operator.status import alert_statuses

    rules = [("BTC above 1", "above"), ("BTC stale_after 15m", "stale_after")]
    delivered = {"target": "default", "status": "delivered", "delivered_at": "2026-01-01T10:00:05Z"}
    rows = [
        {
            "rule_id": "BTC above 1",
            "fired_at": "2026-01-01T10:00:00Z",
            "message": "old",
            "delivery": "delivered",
            "deliveries": [delivered],
        },
        {
            "rule_id": "BTC above 1",
            "fired_at": "2026-01-01T11:00:00Z",
            "message": "new",
            "delivery": "retrying",
            "deliveries": [{"target": "default", "status": "retrying"}],
        },
        {"rule_id": "ETH above 1", "fired_at": "2026-01-01T12:00:00Z", "message": "not ours"},
    ]
    first = alert_statuses(rules, rows, None)
    assert first == [
        {
            "rule": "BTC above 1",
            "condition": "above",
            "lastFiredAt": "2026-01-01T11:00:00Z",
            "lastMessage": "new",
            "delivery": "retrying",
            "lastDeliveredAt": "2026-01-01T10:00:05Z",
        },
        {"rule": "BTC stale_after 15m", "condition": "stale_after"},
    ]
    assert alert_statuses(rules, [], first) == first  # rows aged out of the window: the status stays
