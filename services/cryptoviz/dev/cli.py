"""`cryptoviz dev`: the whole pipeline on one machine, with one command."""

from __future__ import annotations

import os
from pathlib import Path

import click

from cryptoviz.core.api_client import IngesterClient, IngesterError
from cryptoviz.core.config import ConfigError
from cryptoviz.core.settings import click_options, from_options, named
from cryptoviz.dev import probe
from cryptoviz.dev.local_config import ensure_config
from cryptoviz.dev.settings import (
    DEFAULT_STATE,
    DEMO_INTERVAL,
    LIVE_INTERVAL,
    REPLAY_CANDLE_SECONDS,
    DevSettings,
)
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
from cryptoviz.scraper.settings import MIN_INTERVAL_LOCAL

MODE_FILE = "mode"
"""Names the kind of data a state dir holds (demo, replay, live): simulated prices, replayed history
and live quotes must never share one DuckDB file, or a chart mixes them for good."""


@click.command()
@click_options(DevSettings)
def dev(**values: object) -> None:
    """Run the whole pipeline on this machine: NATS, ingester + API, scraper, dashboard.

    Ctrl-C stops everything; the next run of the same mode (demo, replay or live) reuses its data.
    """
    settings = from_options(DevSettings, values)
    replay, speed, interval_asked = settings.replay, settings.speed, settings.scrape_interval
    if replay:
        provider, note = "replay", f"replaying {replay} at {speed:g}x (market time)"
        interval = max(interval_asked or REPLAY_CANDLE_SECONDS / speed, MIN_INTERVAL_LOCAL)
    elif settings.simulated:
        provider, note = "demo", "SIMULATED prices (--demo)"
        interval = interval_asked or DEMO_INTERVAL
    else:
        provider, note, interval = _choose_live(settings.scrape_provider, interval_asked, settings.no_demo_fallback)
    mode = provider if provider in ("demo", "replay") else "live"
    base = (settings.state_dir or DEFAULT_STATE).resolve()
    state_dir = base if settings.state_dir else base / mode
    with state_lock(state_dir):
        _claim(state_dir, mode)
        if state_dir != base and (base / "cryptoviz.duckdb").exists():
            click.echo(
                f"Note: {base}/cryptoviz.duckdb is an earlier version's data of every mode; {mode} now uses {state_dir}"
            )
        reap_leftovers(state_dir)
        dashboard = {"dashboard": (settings.dashboard_port, named(DevSettings, "dashboard_port"))}
        check_ports(
            {
                "ingester API": (settings.api_port, named(DevSettings, "api_port")),
                **({} if settings.no_dashboard else dashboard),
                "NATS": (settings.nats_port, named(DevSettings, "nats_port")),
            },
            settings.dev_host,
        )
        config_path = (settings.scraper_config or base / "scraper.yaml").resolve()
        try:
            config, written = ensure_config(config_path)
        except ConfigError as exc:
            raise DevError(str(exc)) from None
        click.echo(f"{'Wrote' if written else 'Using'} scraper config {config_path} ({len(config.coins)} coins)")

        market = None
        local = provider in ("demo", "replay")
        plan = Plan(
            state_dir=state_dir,
            host=settings.dev_host,
            api_port=settings.api_port,
            dashboard_port=settings.dashboard_port,
            nats_port=settings.nats_port,
            provider=provider,
            provider_note=note,
            scrape_interval=interval,
            poll_interval=max(interval / 2, MIN_INTERVAL_LOCAL) if local else interval,
            with_dashboard=not settings.no_dashboard,
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
                limit=settings.replay_limit,
                window=settings.replay_window,
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
