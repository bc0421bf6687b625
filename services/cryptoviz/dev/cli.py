"""`cryptoviz dev`: the whole pipeline on one machine, with one command."""

from __future__ import annotations

import os
from pathlib import Path

import click

from cryptoviz.core.api_client import IngesterClient, IngesterError
from cryptoviz.core.config import ConfigError
from cryptoviz.core.providers import PROVIDERS
from cryptoviz.dev import probe
from cryptoviz.dev.local_config import ensure_config
from cryptoviz.dev.supervisor import (
    ADMIN_ENV,
    DevError,
    Plan,
    Supervisor,
    check_ports,
    ensure_admin_token,
    install_signal_handlers,
    reap_leftovers,
    state_lock,
)

REPLAY_CANDLE_SECONDS = 300
"""The shared CSVs hold 5-minute candles: at --speed S one is replayed every 300/S seconds."""
DEMO_INTERVAL = 5.0
MIN_LIVE_INTERVAL = 1.0
MIN_LOCAL_INTERVAL = 0.05
"""`cryptoviz scrape --loop`'s floors: 1 s for live providers, 0.05 s for the local market (demo/replay)."""
LIVE_INTERVAL = 60.0
DEFAULT_STATE = Path(".cryptoviz")
MODE_FILE = "mode"
"""Names the kind of data a state dir holds (demo, replay, live): simulated prices, replayed history
and live quotes must never share one DuckDB file, or a chart mixes them for good."""


def _opt(name: str, envvar: str, **kwargs):
    return click.option(name, envvar=envvar, show_envvar=True, **kwargs)


@click.command()
@_opt("--demo", "DEMO", is_flag=True, help="Run the offline market simulator (simulated prices, provider demo).")
@_opt(
    "--replay",
    "REPLAY",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Replay the CSV candles in this directory as provider replay: one <SYMBOL>-USD_5m.csv per coin with "
    "columns Date,Close,High,Low,Open,Volume (see docs/dev.md).",
)
@_opt(
    "--speed", "SPEED", type=click.FloatRange(min=0.01), default=60.0, help="Replay speed: market seconds per second."
)
@_opt(
    "--replay-limit",
    "REPLAY_LIMIT",
    type=click.IntRange(min=1),
    default=None,
    help="Replay only the first N candle times [default: all].",
)
@_opt(
    "--replay-window",
    "REPLAY_WINDOW",
    type=click.IntRange(min=1),
    default=1,
    help="Candle times fetched but not yet confirmed stored (1: each is stored before the next; more is faster).",
)
@_opt(
    "--no-demo-fallback",
    "NO_DEMO_FALLBACK",
    is_flag=True,
    help="If the live provider cannot be reached, exit non-zero instead of running the simulator.",
)
@_opt(
    "--scrape-provider",
    "SCRAPE_PROVIDER",
    type=click.Choice([*PROVIDERS, "demo"]),
    default=None,
    help="Live provider (demo = --demo) [default: coinmarketcap when CMC_API_KEY is set, else coingecko].",
)
@_opt(
    "--scrape-interval",
    "SCRAPE_INTERVAL",
    type=click.FloatRange(min=MIN_LOCAL_INTERVAL),
    default=None,
    help=f"Seconds between scrapes, at least {MIN_LIVE_INTERVAL:g} live, {MIN_LOCAL_INTERVAL:g} demo/replay "
    f"[default: {LIVE_INTERVAL:g} live, {DEMO_INTERVAL:g} demo, 300/speed replay].",
)
@_opt(
    "--scraper-config",
    "SCRAPER_CONFIG",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Scraper config file [default: STATE_DIR/scraper.yaml, written with the original coin set if absent].",
)
@_opt(
    "--state-dir",
    "STATE_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Where DuckDB, JetStream data and logs live [default: {DEFAULT_STATE}/demo, /replay or /live, one per "
    "mode; a given dir holds one mode's data and refuses another's].",
)
@_opt("--dev-host", "DEV_HOST", default="127.0.0.1", help="Interface the API and dashboard listen on.")
@_opt("--api-port", "API_PORT", type=click.IntRange(1, 65535), default=8000, help="Ingester API port.")
@_opt("--dashboard-port", "DASHBOARD_PORT", type=click.IntRange(1, 65535), default=5006, help="Dashboard port.")
@_opt("--no-dashboard", "NO_DASHBOARD", is_flag=True, help="Run without the dashboard (API only).")
@_opt("--nats-port", "NATS_PORT", type=click.IntRange(1, 65535), default=4222, help="Embedded nats-server port.")
def dev(
    demo: bool,
    replay: Path | None,
    speed: float,
    replay_limit: int | None,
    replay_window: int,
    no_demo_fallback: bool,
    scrape_provider: str | None,
    scrape_interval: float | None,
    scraper_config: Path | None,
    state_dir: Path | None,
    dev_host: str,
    api_port: int,
    dashboard_port: int,
    no_dashboard: bool,
    nats_port: int,
) -> None:
    """Run the whole pipeline on this machine: NATS, ingester + API, scraper, dashboard.

    Ctrl-C stops everything; the next run of the same mode (demo, replay or live) reuses its data.
    """
    demo = demo or scrape_provider == "demo"
    if demo and replay:
        raise click.UsageError("--demo and --replay exclude each other")
    if replay:
        provider, note = "replay", f"replaying {replay} at {speed:g}x (market time)"
        interval = max(scrape_interval or REPLAY_CANDLE_SECONDS / speed, MIN_LOCAL_INTERVAL)
    elif demo:
        provider, note = "demo", "SIMULATED prices (--demo)"
        interval = scrape_interval or DEMO_INTERVAL
    else:
        provider, note, interval = _choose_live(scrape_provider, scrape_interval, no_demo_fallback)
    mode = provider if provider in ("demo", "replay") else "live"
    base = (state_dir or DEFAULT_STATE).resolve()
    state_dir = base if state_dir else base / mode
    with state_lock(state_dir):
        _claim(state_dir, mode)
        if state_dir != base and (base / "cryptoviz.duckdb").exists():
            click.echo(
                f"Note: {base}/cryptoviz.duckdb is an earlier version's data of every mode; {mode} now uses {state_dir}"
            )
        reap_leftovers(state_dir)
        check_ports(
            {
                "ingester API": (api_port, "--api-port / API_PORT"),
                **({} if no_dashboard else {"dashboard": (dashboard_port, "--dashboard-port / DASHBOARD_PORT")}),
                "NATS": (nats_port, "--nats-port / NATS_PORT"),
            },
            dev_host,
        )
        config_path = (scraper_config or base / "scraper.yaml").resolve()
        try:
            config, written = ensure_config(config_path)
        except ConfigError as exc:
            raise DevError(str(exc)) from None
        click.echo(f"{'Wrote' if written else 'Using'} scraper config {config_path} ({len(config.coins)} coins)")

        market = None
        local = provider in ("demo", "replay")
        plan = Plan(
            state_dir=state_dir,
            host=dev_host,
            api_port=api_port,
            dashboard_port=dashboard_port,
            nats_port=nats_port,
            provider=provider,
            provider_note=note,
            scrape_interval=interval,
            poll_interval=max(interval / 2, MIN_LOCAL_INTERVAL) if local else interval,
            with_dashboard=not no_dashboard,
            scraper_config=config_path,
            admin_token_file=None if any(k in os.environ for k in ADMIN_ENV) else ensure_admin_token(state_dir),
        )
        supervisor = Supervisor(plan)
        install_signal_handlers(supervisor)

        def start_local_market() -> str | None:
            nonlocal market
            if not local:
                return None
            from cryptoviz.dev.market_link import start_market  # the market is only needed locally

            market = start_market(
                provider,
                period=interval,
                api_url=plan.api_url,
                replay_dir=replay,
                limit=replay_limit,
                window=replay_window,
                start_prices=_last_demo_prices(plan.api_url) if provider == "demo" else None,
                on_end=lambda m: click.echo(
                    f"Replay finished: {m.ticks} candle times replayed (up to {m.feed.now():%Y-%m-%d %H:%M} UTC);"
                    " everything keeps running. Ctrl-C to stop."
                ),
            )
            return market.url

        try:
            supervisor.start(start_local_market)
            _summary(plan, len(config.coins))
            supervisor.watch()
            click.echo("Stopping: dashboard, notifier, scraper, ingester (commits what it holds), NATS …")
        finally:
            supervisor.stop()
            if market is not None:
                market.stop()
        click.echo(f"Stopped. Data kept in {state_dir}; run the same command again to continue.")


def _claim(state_dir: Path, mode: str) -> None:
    """Mark the state dir as holding `mode` data, or refuse when it holds another mode's."""
    marker = state_dir / MODE_FILE
    held = marker.read_text(encoding="utf-8").strip() if marker.exists() else ""
    if held and held != mode:
        raise DevError(
            f"{state_dir} holds {held} data; running {mode} there would mix both in every chart. "
            f"Pass another --state-dir (or leave STATE_DIR unset: each mode then has its own dir under "
            f"{DEFAULT_STATE}/), or delete {state_dir} to start over"
        )
    if not held:
        marker.write_text(mode + "\n", encoding="utf-8")


def _choose_live(
    scrape_provider: str | None, scrape_interval: float | None, no_fallback: bool
) -> tuple[str, str, float]:
    """The live provider if it answers now; else the simulator, said plainly (or exit with the reason)."""
    live = scrape_provider or probe.default_provider(dict(os.environ))
    if scrape_interval is not None and scrape_interval < MIN_LIVE_INTERVAL:
        raise click.BadParameter(
            f"{scrape_interval:g} s is below {MIN_LIVE_INTERVAL:g} s, allowed only with --demo or --replay",
            param_hint="'--scrape-interval' / SCRAPE_INTERVAL",
        )
    name = probe.display_name(live)
    click.echo(f"Checking that {name} can be reached …")
    reason = probe.probe(live)
    if reason is None:
        return live, f"live prices from {name}", scrape_interval or LIVE_INTERVAL
    if no_fallback:
        raise DevError(f"{name} cannot be used: {reason} (--no-demo-fallback is set, so not simulating)")
    click.echo(f"{name} cannot be used: {reason}.")
    click.echo("Falling back to the demo simulator: prices shown are SIMULATED (provider demo).")
    return "demo", f"SIMULATED prices ({name} unreachable: {reason})", scrape_interval or DEMO_INTERVAL


def _last_demo_prices(api_url: str) -> dict[str, float]:
    """Continue a previous demo run's prices, so a restart does not jump the charts back."""
    try:
        rows = IngesterClient(api_url).latest(provider="demo").data
    except IngesterError:
        return {}
    return {row.symbol: row.price for row in rows if row.price}


def _token_hint(plan: Plan) -> str:
    return f"ADMIN_TOKEN_FILE={plan.admin_token_file} " if plan.admin_token_file else ""


def _summary(plan: Plan, coins: int) -> None:
    line = "─" * 72
    simulated = plan.provider == "demo"
    rows = [
        ("Dashboard", plan.dashboard_url if plan.with_dashboard else "(not started: --no-dashboard)"),
        ("API", f"{plan.api_url}  (docs {plan.api_url}/docs, stats {plan.api_url}/api/v1/stats)"),
        ("Provider", f"{plan.provider}: {plan.provider_note}"),
        ("Scraping", f"every {plan.scrape_interval:g}s, config {plan.scraper_config} ({coins} coins)"),
        ("Data", f"{plan.state_dir}  (DuckDB cryptoviz.duckdb, JetStream nats/, logs logs/)"),
        ("Backup", f"{_token_hint(plan)}cryptoviz backup DIR --ingester-url {plan.api_url}"),
    ]
    click.echo(line)
    click.secho("CryptoViz is running" + ("  ⚠ SIMULATED DATA" if simulated else ""), bold=True)
    for label, value in rows:
        click.echo(f"  {label:<10} {value}")
    click.echo("Press Ctrl-C to stop.")
    click.echo(line)
