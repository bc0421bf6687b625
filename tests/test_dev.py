"""`cryptoviz dev` without the full pipeline: the simulator, the local config, and failing clearly."""

from __future__ import annotations

import itertools
import math
import os
import signal
import socket
import statistics
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptoviz.core.config import load_config
from cryptoviz.core.nats import free_port
from cryptoviz.core.quote import make_quote
from cryptoviz.dev.local_config import ensure_config
from cryptoviz.dev.simulator import COINS, SECONDS_PER_YEAR, MarketSimulator
from support.dev import UNREACHABLE, cryptoviz

START = datetime(2025, 1, 13, tzinfo=UTC)


def simulate(seconds: int, step: int = 5, seed: int = 7) -> dict[str, list[float]]:
    sim = MarketSimulator(seed=seed, start=START)
    prices: dict[str, list[float]] = {c.symbol: [c.price] for c in COINS}
    for n in range(1, seconds // step + 1):
        for q in sim.tick(START + timedelta(seconds=n * step)):
            prices[q.symbol].append(q.price)
    return prices


def test_simulator_spans_the_three_price_groups_of_the_original():
    quotes = MarketSimulator(seed=1, start=START).tick(START + timedelta(seconds=5))
    groups = {q.symbol: ("high" if q.price > 1000 else "mid" if q.price >= 1 else "low") for q in quotes}
    assert {s for s, g in groups.items() if g == "high"} == {"BTC", "ETH", "BNB"}
    assert {"XRP", "SOL", "LTC", "LINK", "DOT", "AVAX"} <= {s for s, g in groups.items() if g == "mid"}
    assert {"DOGE", "ADA", "MATIC"} <= {s for s, g in groups.items() if g == "low"}
    assert sorted(q.rank for q in quotes) == list(range(1, len(COINS) + 1))
    for q in quotes:  # every simulated row is a valid quote of provider demo
        make_quote(provider="demo", coin_id=q.coin_id, symbol=q.symbol, name=q.name, price=q.price,
                   timestamp=q.timestamp, market_cap=q.market_cap, volume_24h=q.volume_24h,
                   percent_change_1h=q.percent_change_1h, percent_change_24h=q.percent_change_24h,
                   percent_change_7d=q.percent_change_7d, rank=q.rank)  # fmt: skip


def test_simulated_volatility_is_realistic_and_stablecoins_hold_their_peg():
    prices = simulate(seconds=6 * 3600)
    for spec in COINS:
        series = prices[spec.symbol]
        if spec.stable:
            assert all(0.997 < p < 1.003 for p in series), spec.symbol
            continue
        returns = [math.log(b / a) for a, b in itertools.pairwise(series)]
        annualised = statistics.pstdev(returns) * math.sqrt(SECONDS_PER_YEAR / 5)
        assert annualised == pytest.approx(spec.volatility, rel=0.1), spec.symbol
        assert 0.8 < series[-1] / series[0] < 1.25, spec.symbol  # six hours move a coin, not crash it


def test_simulator_is_deterministic_and_continues_from_given_prices():
    assert simulate(600, seed=3) == simulate(600, seed=3)
    sim = MarketSimulator(seed=1, start=START, start_prices={"BTC": 50_000.0})
    btc = next(q for q in sim.tick(START + timedelta(seconds=5)) if q.symbol == "BTC")
    assert btc.price == pytest.approx(50_000, rel=0.01)


def test_local_config_is_written_once_in_the_operators_schema(tmp_path: Path):
    path = tmp_path / "scraper.yaml"
    config, written = ensure_config(path)
    assert written and len(config.coins) == 14
    assert config.coins[0].ids["coingecko"] == "bitcoin"
    checked = subprocess.run(cryptoviz("check-config", str(path)), capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    path.write_text("coins:\n  - symbol: BTC\n", encoding="utf-8")  # a user's edit survives
    config, written = ensure_config(path)
    assert not written and [c.symbol for c in load_config(path).coins] == ["BTC"]


def run_dev(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    ports = ["--api-port", str(free_port()), "--dashboard-port", str(free_port()), "--nats-port", str(free_port())]
    return subprocess.run(
        cryptoviz("dev", "--state-dir", str(tmp_path / "state"), *ports, *args),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COINGECKO_BASE_URL": UNREACHABLE, "CMC_API_KEY": "", **(env or {})},
    )


@pytest.mark.parametrize("flag", ["--api-port", "--dashboard-port", "--nats-port"])
def test_a_port_in_use_is_a_clear_message_not_a_traceback(tmp_path: Path, flag: str):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_dev(tmp_path, "--demo", flag, str(port))
    assert result.returncode != 0
    assert f"port {port}" in result.stderr and "already in use" in result.stderr and flag in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "state" / "nats").exists()  # nothing was started


def test_unreachable_provider_with_no_demo_fallback_exits_with_the_reason(tmp_path: Path):
    result = run_dev(tmp_path, "--no-demo-fallback")
    assert result.returncode == 1
    assert "CoinGecko cannot be used: cannot connect to http://127.0.0.1:9" in result.stderr
    assert "--no-demo-fallback" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "state" / "nats").exists()


def test_a_bad_coinmarketcap_key_is_reported_without_the_key(tmp_path: Path):
    from conftest import MARKET_5M
    from cryptoviz.dev.market import CsvReplayFeed, MarketServer

    with MarketServer(CsvReplayFeed(MARKET_5M), cmc_api_key="the-right-key") as market:
        result = run_dev(
            tmp_path, "--no-demo-fallback", env={"CMC_API_KEY": "sekret-wrong-key", "CMC_BASE_URL": market.url}
        )
    assert result.returncode == 1
    assert "CoinMarketCap" in result.stderr and "1001" in result.stderr
    assert "sekret-wrong-key" not in result.stderr + result.stdout


def test_demo_and_replay_exclude_each_other(tmp_path: Path):
    result = run_dev(tmp_path, "--demo", "--replay", str(tmp_path))
    assert result.returncode == 2 and "exclude each other" in result.stderr


def test_a_sigkilled_supervisor_leaves_no_service_behind_and_the_next_run_starts(tmp_path: Path):
    from support.dev import DevRun, dev_running, pid_alive, wait_for

    state = tmp_path / "state"
    first = DevRun(state, "--demo", "--no-dashboard")
    try:
        first.start()
        pids = first.run_info()["pids"]
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(timeout=10)
        # Its children get SIGTERM from the kernel (parent-death signal); nats-server is reaped next run.
        wait_for(lambda: not pid_alive(pids["ingester"]) and not pid_alive(pids["scraper"]), 30, "children to stop")
        with dev_running(state, "--demo", "--no-dashboard") as again:
            assert not pid_alive(pids["nats"])
            assert "left by an earlier run" in again.text
            wait_for(lambda: again.stats()["records"] > 0, 30, "quotes stored")
            assert again.stop() == 0
    except BaseException:
        first.kill_everything()
        raise


@pytest.mark.parametrize("window", ["1", "4"])
def test_a_sub_second_replay_goes_through_the_scraper_and_stores_every_candle_once(
    tmp_path: Path, market_5m: Path, window: str
):
    """--speed 6000 = a candle every 0.05 s: the scraper polls that fast, and the pacing still loses
    nothing, whether each candle is stored before the next (window 1) or four are in flight."""
    import time

    from support.dev import dev_running, expected_replay, stored_candles, wait_for

    limit = 60
    expected = expected_replay(market_5m, limit)
    args = ("--replay", str(market_5m), "--speed", "6000", "--replay-limit", str(limit), "--replay-window", window)
    args += ("--no-dashboard",)
    with dev_running(tmp_path / "state", *args) as run:
        assert "every 0.05s" in run.text  # the replay pace, no longer floored at one candle per second
        started = time.monotonic()
        wait_for(lambda: "Replay finished: 60 candle times" in run.text, 90, "the replay to finish")
        elapsed = time.monotonic() - started
        wait_for(lambda: run.stats()["records"] >= expected.rows, 30, f"{expected.rows} rows stored")
        wait_for(lambda: run.stats()["consumer_lag"] == 0, 30, "every message acked")  # no duplicate can follow
        assert run.stats()["records"] == expected.rows
        assert stored_candles(run, expected) == expected.candles
        scrapes = (run.state_dir / "logs" / "scraper.log").read_text().count("scrape provider=replay")
        assert scrapes >= limit  # every candle went through `cryptoviz scrape`, none was published around it
        assert elapsed < limit * 0.9, f"{limit} candles took {elapsed:.1f}s: the 1 s floor is back"
        if window == "1":  # `cryptoviz backup` with the token dev made; no other child has the token
            token_file = Path(run.run_info()["admin_token_file"])
            assert token_file.stat().st_mode & 0o077 == 0 and f"ADMIN_TOKEN_FILE={token_file}" in run.text
            env = {**os.environ, "ADMIN_TOKEN_FILE": str(token_file)}
            done = subprocess.run(
                cryptoviz("backup", str(tmp_path / "backup"), "--ingester-url", run.api),
                capture_output=True, text=True, timeout=120, env=env,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            for child in ("scraper", "notify"):
                environ = Path(f"/proc/{run.pid(child)}/environ").read_bytes()
                assert b"ADMIN_TOKEN" not in environ, child
        assert run.stop() == 0


def test_sub_second_intervals_are_refused_for_live_providers(tmp_path: Path):
    result = run_dev(tmp_path, "--scrape-interval", "0.5", "--no-demo-fallback")
    assert result.returncode == 2 and "allowed only with --demo or --replay" in result.stderr
    scrape = subprocess.run(
        cryptoviz("scrape", "--loop", "--scrape-provider", "coingecko", "--scrape-interval", "0.5"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert scrape.returncode == 2 and "allowed only for SCRAPE_PROVIDER=demo|replay" in scrape.stderr


def test_demo_replay_and_live_data_never_share_a_state_dir(tmp_path: Path, market_5m: Path):
    """Each mode has its own dir under ./.cryptoviz by default; a given --state-dir keeps the mode it
    was first used for and refuses another with the way out (replay after demo mixed both for good)."""
    with socket.socket() as busy:  # stops each run right after the state dir is chosen
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        env = {**os.environ, "COINGECKO_BASE_URL": UNREACHABLE, "CMC_API_KEY": ""}
        env.pop("STATE_DIR", None)
        for args in (["--demo"], ["--replay", str(market_5m)], ["--no-demo-fallback"]):
            subprocess.run(cryptoviz("dev", *args, "--api-port", port), cwd=tmp_path, env=env, timeout=60, check=False)
        assert (tmp_path / ".cryptoviz" / "demo" / "mode").read_text() == "demo\n"
        assert (tmp_path / ".cryptoviz" / "replay" / "mode").read_text() == "replay\n"
        assert not (tmp_path / ".cryptoviz" / "live").exists()  # live was unreachable: no dir claimed

        assert run_dev(tmp_path, "--demo", "--api-port", port).returncode == 1  # claims state/ for demo
        refused = run_dev(tmp_path, "--replay", str(market_5m), "--api-port", port)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "holds demo data; running replay there would mix both" in refused.stderr
    assert "--state-dir" in refused.stderr


# ---- provider keys reach the scraper and backfill only --------------------------------------------

KEY_ENV = {"CMC_API_KEY": "cmc-dev-secret-51c2", "COINGECKO_API_KEY": "cg-dev-secret-9ab0"}


def test_the_supervisor_gives_provider_keys_to_the_scraper_and_backfill_only(tmp_path: Path, monkeypatch):
    from cryptoviz.dev.supervisor import Plan, Supervisor
    from cryptoviz.scraper.settings import provider_key_env_names

    names = provider_key_env_names()
    assert names >= {"CMC_API_KEY", "CMC_API_KEY_FILE", "COINGECKO_API_KEY"}
    for name in names:
        monkeypatch.setenv(name, f"value-of-{name}")
    plan = Plan(tmp_path, "127.0.0.1", 1, 2, 3, "coingecko", "", 300, tmp_path / "scraper.yaml")
    supervisor = Supervisor(plan)
    supervisor._build_ingester()
    supervisor._build_scraper_and_dashboard()
    children = supervisor.children
    assert set(children) == {"ingester", "scraper", "backfill", "notify", "dashboard"}
    for name, child in children.items():
        given = {n for n in names if n in child.env}
        assert given == (names if name in ("scraper", "backfill") else set()), name
    assert children["scraper"].env["CMC_API_KEY"] == "value-of-CMC_API_KEY"


def _is_dev_nats(cmdline: Path, state_dir: Path) -> bool:
    try:
        argv = cmdline.read_bytes().split(b"\0")
    except OSError:  # a process that ended meanwhile
        return False
    return argv[0].endswith(b"nats-server") and any(str(state_dir).encode() in arg for arg in argv)


def test_dev_hands_provider_keys_to_the_scraper_only(tmp_path: Path):
    """What the running processes really hold: /proc/<pid>/environ of each child of `cryptoviz dev`."""
    from support.dev import dev_running, pid_alive

    key_file = tmp_path / "cmc.key"
    key_file.write_text(KEY_ENV["CMC_API_KEY"])
    env = {**KEY_ENV, "CMC_API_KEY_FILE": str(key_file)}
    with dev_running(tmp_path / "state", "--demo", env=env) as run:
        pids = run.run_info()["pids"]
        environs = {}
        for name in ("ingester", "scraper", "notify", "dashboard", "backfill"):
            if name == "backfill" and not pid_alive(pids.get(name)):
                continue  # one-shot and quick on the simulator; test above checks what it is given
            environs[name] = Path(f"/proc/{pids[name]}/environ").read_bytes().split(b"\0")
        nats = [p for p in Path("/proc").glob("[0-9]*/cmdline") if _is_dev_nats(p, tmp_path / "state")]
        assert len(nats) == 1, "the embedded nats-server of this dev run"
        environs["nats-server"] = nats[0].with_name("environ").read_bytes().split(b"\0")
        assert run.stop() == 0
    for name, environ in environs.items():
        keyed = {line.split(b"=", 1)[0].decode() for line in environ if b"API_KEY" in line.split(b"=", 1)[0]}
        secrets = [value for value in KEY_ENV.values() if any(value.encode() in line for line in environ)]
        if name in ("scraper", "backfill"):
            assert keyed == {"CMC_API_KEY", "CMC_API_KEY_FILE", "COINGECKO_API_KEY"} and len(secrets) == 2, name
        else:
            assert keyed == set() and secrets == [], f"{name} holds {keyed}"
