"""`cryptoviz scrape --once | --loop` and `cryptoviz backfill`: every setting is a flag and the env var of that name.

The options come from the settings models (scraper/settings.py), the per-provider ones from the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import click

from cryptoviz.core.settings import click_options, from_options
from cryptoviz.scraper.run import EXIT_CODES, run_loop, run_once
from cryptoviz.scraper.settings import BackfillSettings, ScrapeSettings

EXIT_HELP = "\b\nExit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())


@click.command(epilog=EXIT_HELP)
@click.option("--once", "mode", flag_value="once", default=True, help="Scrape once and exit (the CronJob).")
@click.option("--loop", "mode", flag_value="loop", help="Scrape every SCRAPE_INTERVAL seconds until stopped.")
@click_options(ScrapeSettings)
def scrape(mode: str, **values: object) -> None:
    """Scrape market data and publish validated quotes to NATS JetStream."""
    settings = from_options(ScrapeSettings, values)
    if mode == "loop":
        asyncio.run(_loop(settings))
        return
    result = run_once(settings)
    if result.error:
        click.echo(f"cryptoviz scrape: {result.error}", err=True)
    sys.exit(result.exit_code)


async def _loop(settings: ScrapeSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await run_loop(settings, stop)


@click.command(epilog=EXIT_HELP.replace("every quote", "every candle"))
@click_options(BackfillSettings)
def backfill(**values: object) -> None:
    """Fill each tracked coin's history from its providers' candles (what the ingester lacks), then exit."""
    from cryptoviz.scraper.backfill import run_backfill

    result = run_backfill(from_options(BackfillSettings, values))
    if result.error:
        click.echo(f"cryptoviz backfill: {result.error}", err=True)
    sys.exit(result.exit_code)
