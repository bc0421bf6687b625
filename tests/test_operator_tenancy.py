"""Tenancy as pure decisions: which TrackedCryptos of which namespaces make it into the one shared scraper
config, what another namespace can (not) change there, what their statuses may say, the schedule floor,
the cap on objects and the ConfigMap's size."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from cryptoviz.core.config import parse_config
from cryptoviz_operator.render import render
from cryptoviz_operator.settings import Settings, SettingsError
from cryptoviz_operator.status import IngestView, desired_status
from cryptoviz_operator.tenancy import Limits


def tc(namespace: str, name: str, spec: dict, day: int = 1) -> dict:
    created = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"namespace": namespace, "name": name, "creationTimestamp": created}, "spec": spec}


def reveals(message: str, *secrets: str) -> list[str]:
    return [s for s in secrets if s in message]


OWNER = tc("team-alpha", "alpha-bitcoin", {"symbol": "BTC", "ids": {"coingecko": "bitcoin"}, "alerts": [{"above": 1}]})


def test_another_namespace_shares_a_symbol_only_as_it_is_and_never_learns_whose_it_is() -> None:
    reader = tc("team-beta", "btc", {"symbol": "BTC", "ids": {"coingecko": "bitcoin"}}, day=2)
    bare = tc("team-gamma", "btc", {"symbol": "BTC"}, day=3)
    result = render([bare, reader, OWNER])
    (coin,) = result.config.coins
    assert coin.ids == {"coingecko": "bitcoin"} and len(coin.alerts) == 1
    for key in (("team-beta", "btc"), ("team-gamma", "btc")):
        decision = result.decisions[key]
        assert (decision.accepted, decision.active, decision.reason) == (True, True, "Accepted")
        assert "another namespace" in decision.message
        assert reveals(decision.message, "team-alpha", "alpha-bitcoin", "team-beta", "team-gamma") == []
    owner = result.decisions[("team-alpha", "alpha-bitcoin")]
    assert owner.accepted and "other namespaces" in owner.message
    assert reveals(owner.message, "team-beta", "team-gamma") == []


@pytest.mark.parametrize(
    ("spec", "reason", "says"),
    [
        ({"ids": {"coingecko": "batcoin"}}, "SymbolConflict", "ids.coingecko 'batcoin'"),
        ({"ids": {"coingecko": "bitcoin", "binance": "BTCUSDT"}}, "SymbolTrackedElsewhere", "ids.binance"),
        ({"providers": ["binance"]}, "SymbolTrackedElsewhere", "providers"),
        ({"alerts": [{"below": 5}]}, "SymbolTrackedElsewhere", "alerts"),
        ({"notify": ["beta-pager"]}, "SymbolTrackedElsewhere", "notify"),
    ],
)
def test_another_namespace_cannot_change_the_owners_entry(spec: dict, reason: str, says: str) -> None:
    intruder = tc("team-beta", "btc", {"symbol": "BTC", **spec}, day=2)
    result = render([intruder, OWNER])
    alone = render([OWNER])
    assert result.text == alone.text  # not a byte of the owner's entry changed
    decision = result.decisions[("team-beta", "btc")]
    assert (decision.accepted, decision.active, decision.reason) == (False, False, reason)
    assert says in decision.message
    assert reveals(decision.message, "team-alpha", "alpha-bitcoin", "'bitcoin'") == []
    owner = ("team-alpha", "alpha-bitcoin")
    assert result.decisions[owner] == alone.decisions[owner]


def test_the_owning_namespace_still_merges_its_own_objects_whatever_their_age() -> None:
    """The owner's entry is complete before other namespaces are checked against it: a reader older than
    the owner's second object, naming an id only that object adds, is accepted (no dependence on timing)."""
    reader = tc("team-beta", "btc", {"symbol": "BTC", "ids": {"coinbase": "BTC-USD"}}, day=2)
    second = tc("team-alpha", "btc-coinbase", {"symbol": "BTC", "ids": {"coinbase": "BTC-USD"}}, day=3)
    result = render([second, reader, OWNER])
    (coin,) = result.config.coins
    assert coin.ids == {"coingecko": "bitcoin", "coinbase": "BTC-USD"}
    assert all(d.accepted and d.active for d in result.decisions.values())
    assert "shared with team-alpha/btc-coinbase" in result.decisions[("team-alpha", "alpha-bitcoin")].message


def test_the_oldest_namespace_owns_and_deleting_its_objects_hands_the_symbol_over() -> None:
    intruder = tc("team-beta", "btc", {"symbol": "BTC", "ids": {"coingecko": "batcoin"}}, day=2)
    assert render([OWNER, intruder]).decisions[("team-beta", "btc")].reason == "SymbolConflict"
    after = render([intruder])
    assert after.config.coins[0].ids == {"coingecko": "batcoin"}
    assert after.decisions[("team-beta", "btc")].reason == "Accepted"


def test_namespace_allow_list_refuses_others_with_a_reason_and_they_count_for_nothing() -> None:
    limits = Limits(allowed_namespaces=("team-*", "prices"), max_objects=2)
    objects = [
        tc("kube-system", "btc", {"symbol": "BTC", "interval": "1m"}, day=1),
        tc("team-a", "eth", {"symbol": "ETH"}, day=2),
        tc("prices", "sol", {"symbol": "SOL"}, day=3),
    ]
    result = render(objects, limits)
    assert [c.symbol for c in result.config.coins] == ["ETH", "SOL"]
    refused = result.decisions[("kube-system", "btc")]
    assert (refused.accepted, refused.reason) == (False, "NamespaceNotAllowed")
    assert "kube-system" in refused.message and "allowedNamespaces" in refused.message
    assert result.interval_seconds == 300  # its 1m does not drive the schedule


def test_the_newest_beyond_the_cap_are_not_accepted_and_the_oldest_keep_their_place() -> None:
    objects = [tc(f"ns-{i % 3}", f"coin-{i}", {"symbol": f"C{i}"}, day=i) for i in range(8)]
    objects.append(tc("ns-0", "paused", {"symbol": "P", "paused": True}, day=0))  # oldest: counts, keeps its place
    limits = Limits(max_objects=5)
    first = render(objects, limits)
    for seed in range(3):
        random.Random(seed).shuffle(objects)
        assert render(objects, limits).decisions == first.decisions
    assert [c.symbol for c in first.config.coins] == ["C0", "C1", "C2", "C3"]
    refused = {k[1] for k, d in first.decisions.items() if d.reason == "TooManyTrackedCryptos"}
    assert refused == {"coin-4", "coin-5", "coin-6", "coin-7"}
    decision = first.decisions[("ns-1", "coin-4")]
    assert not decision.accepted and "at most 5" in decision.message and "maxTrackedCryptos" in decision.message
    assert reveals(decision.message, "ns-0", "ns-2", "coin-0") == []


def test_schedule_floor_bounds_the_shared_cronjob_and_says_so() -> None:
    fast = tc("team-a", "fast", {"symbol": "BTC", "interval": "1m"})
    slow = tc("team-b", "slow", {"symbol": "ETH", "interval": "10m"}, day=2)
    result = render([fast, slow], Limits(schedule_floor_seconds=300))
    assert (result.interval_seconds, result.schedule) == (300, "*/5 * * * *")
    decision = result.decisions[("team-a", "fast")]
    assert decision.accepted and decision.interval_seconds == 300
    assert "interval 1m is below the schedule floor of 5m" in decision.message and "scheduleFloor" in decision.message
    assert "floor" not in result.decisions[("team-b", "slow")].message
    assert result.decisions[("team-b", "slow")].interval_seconds == 600
    # no floor given: 1m is allowed (the CRD's own minimum)
    assert render([fast]).schedule == "* * * * *"


def test_ready_waits_for_the_floor_not_for_the_asked_interval_before_calling_a_coin_stale() -> None:
    obj = tc("team-a", "fast", {"symbol": "BTC", "interval": "1m"})
    decision = render([obj], Limits(schedule_floor_seconds=900)).decisions[("team-a", "fast")]
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    seen = (now - timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    quote = {"symbol": "BTC", "provider": "coingecko", "coin_id": "x", "price": 1.0, "timestamp": seen}
    status = desired_status(obj, decision, IngestView(url="u", quotes={"BTC": [quote]}), now)
    assert status["conditions"][1]["reason"] == "QuotesReceived"  # 20 min < 3 × the 15 min floor


def heavy(i: int) -> dict:
    alerts = [{"above": 1000 + i * 10 + a, "cooldown": "1h"} for a in range(10)]
    return tc("team-a" if i % 2 else "team-b", f"coin-{i:04d}", {"symbol": f"C{i:04d}", "alerts": alerts}, day=i)


def test_a_config_beyond_the_configmap_limit_keeps_the_oldest_coins_and_says_which_do_not_fit() -> None:
    objects = [heavy(i) for i in range(120)]
    unlimited = render(objects)
    limit = len(unlimited.text) // 2
    result = render(objects, Limits(max_config_bytes=limit))
    assert len(result.text.encode()) <= limit
    kept = [c.symbol for c in parse_config(yaml.safe_load(result.text)).coins]
    assert kept == [f"C{i:04d}" for i in range(len(kept))] and 50 < len(kept) < 65
    left_out = [k for k, d in result.decisions.items() if d.reason == "ConfigTooLarge"]
    assert len(left_out) == 120 - len(kept)
    decision = result.decisions[left_out[0]]
    assert (decision.accepted, decision.active) == (False, False)
    assert f"{limit} bytes" in decision.message
    assert len(result.config.coins) == len(kept)


def test_the_default_limit_is_the_configmaps_mebibyte() -> None:
    assert Limits().max_config_bytes <= 1024 * 1024 - len("scraper.yaml")
    assert Limits().max_config_bytes > 1_000_000


def test_tenancy_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_NAMESPACES", "team-a, team-*,")
    monkeypatch.setenv("MAX_TRACKED_CRYPTOS", "50")
    monkeypatch.setenv("SCHEDULE_FLOOR", "10m")
    settings = Settings.from_env()
    assert settings.allowed_namespaces == ("team-a", "team-*")
    assert (settings.max_tracked_cryptos, settings.schedule_floor_seconds) == (50, 600)
    for name in ("ALLOWED_NAMESPACES", "MAX_TRACKED_CRYPTOS", "SCHEDULE_FLOOR"):
        monkeypatch.delenv(name)
    defaults = Settings.from_env()
    assert (defaults.allowed_namespaces, defaults.max_tracked_cryptos, defaults.schedule_floor_seconds) == (
        (),
        1000,
        300,
    )
    assert defaults.limits == Limits(max_objects=1000, schedule_floor_seconds=300)
    for name, bad, message in [
        ("SCHEDULE_FLOOR", "30s", "between 1m and 24h"),
        ("SCHEDULE_FLOOR", "soon", "a duration such as 5m"),
        ("ALLOWED_NAMESPACES", "Team_A", "namespace names or globs"),
        ("MAX_TRACKED_CRYPTOS", "0", "greater than or equal to 1"),
    ]:
        with monkeypatch.context() as env:
            env.setenv(name, bad)
            with pytest.raises(SettingsError, match=f"{name}: .*{message}"):
                Settings.from_env()


def test_the_operator_asks_the_ingester_for_as_many_symbols_as_its_api_takes() -> None:
    """The operator's chunks come from the typed client: each one the API's parser accepts, none smaller."""
    from cryptoviz.core.api_client import Calls
    from cryptoviz.ingester import params

    calls = Calls.latest(f"S{i}" for i in range(450))
    chunks = [params.symbols(call.params["symbols"]) or [] for call in calls]
    assert [len(chunk) for chunk in chunks] == [200, 200, 50]


@pytest.mark.parametrize(
    ("interval", "floor", "schedule"),
    [
        ("1m", "7m", "*/10 * * * *"),
        ("8m", "7m", "*/10 * * * *"),
        ("1m", "5h", "0 */6 * * *"),
        ("2h", "1d", "0 0 * * *"),
    ],
)
def test_the_schedule_is_rounded_up_rather_than_run_faster_than_the_floor(
    interval: str, floor: str, schedule: str
) -> None:
    from cryptoviz.core.config import parse_duration

    obj = tc("team-a", "coin", {"symbol": "BTC", "interval": interval})
    assert render([obj], Limits(schedule_floor_seconds=int(parse_duration(floor)))).schedule == schedule


def test_thousands_sharing_one_symbol_are_rendered_fast_with_short_messages() -> None:
    import time

    same = [tc("team-a", f"btc-{i}", {"symbol": "BTC", "ids": {"coingecko": "bitcoin"}}, day=i) for i in range(3000)]
    readers = [tc(f"team-{i}", "btc", {"symbol": "BTC"}, day=3000 + i) for i in range(3000)]
    started = time.perf_counter()
    result = render(same + readers, Limits(max_objects=10_000))
    assert time.perf_counter() - started < 5
    assert all(d.accepted and d.active for d in result.decisions.values())
    message = result.decisions[("team-a", "btc-0")].message
    assert message == (
        "BTC is in the scraper config, shared with team-a/btc-1, team-a/btc-2, team-a/btc-3 and 2996 more;"
        " TrackedCryptos in other namespaces also read it"
    )
    assert result.decisions[("team-a", "btc-2")].message.startswith(
        "BTC is in the scraper config, shared with team-a/btc-0, team-a/btc-1, team-a/btc-3 and"
    )
