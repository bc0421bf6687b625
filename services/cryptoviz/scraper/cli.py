"""`cryptoviz scrape --once | --loop`: every setting is a flag and the env var of the same name."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import click

from cryptoviz.core.quote import ALL_PROVIDERS, LOCAL_PROVIDERS
from cryptoviz.scraper.providers import DEFAULT_BASE_URLS
from cryptoviz.scraper.run import EXIT_CODES, Settings, run_loop, run_once


def _option(name: str, **kwargs):
    """`--foo-bar` bound to env var FOO_BAR, shown in --help."""
    flag = "--" + name.lower().replace("_", "-")
    return click.option(flag, name.lower(), envvar=name, show_envvar=True, **kwargs)


DEFAULTS = Settings()
MIN_INTERVAL_LIVE = 1.0
"""Live providers are never polled faster than once a second (their rate limits are per minute anyway)."""
MIN_INTERVAL_LOCAL = 0.05
"""`demo`/`replay` read the local market server, so fast replays can poll it up to 20 times a second."""
EXIT_HELP = "\b\nExit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())


@click.command(epilog=EXIT_HELP)
@click.option("--once", "mode", flag_value="once", default=True, help="Scrape once and exit (the CronJob).")
@click.option("--loop", "mode", flag_value="loop", help="Scrape every SCRAPE_INTERVAL seconds until stopped.")
@_option("NATS_URL", default=DEFAULTS.nats_url, help="NATS server with JetStream.")
@_option(
    "SCRAPE_PROVIDER",
    type=click.Choice(ALL_PROVIDERS),
    default=None,
    help="Default provider [default: coinmarketcap when CMC_API_KEY is set, else coingecko]; "
    "the config file's `provider` wins. demo/replay read MARKET_BASE_URL.",
)
@_option("CMC_API_KEY", default=None, help="CoinMarketCap API key (never logged).", show_default=False)
@_option("CMC_API_KEY_FILE", default=None, help="File holding the CoinMarketCap key (a mounted Secret).")
@_option("CMC_BASE_URL", default=DEFAULT_BASE_URLS["coinmarketcap"])
@_option("COINGECKO_BASE_URL", default=DEFAULT_BASE_URLS["coingecko"])
@_option("COINGECKO_API_KEY", default=None, help="Optional CoinGecko demo key (never logged).")
@_option("BINANCE_BASE_URL", default=DEFAULT_BASE_URLS["binance"])
@_option("KRAKEN_BASE_URL", default=DEFAULT_BASE_URLS["kraken"])
@_option("COINBASE_BASE_URL", default=DEFAULT_BASE_URLS["coinbase"])
@_option("MARKET_BASE_URL", default=None, help="Local market server for providers demo/replay.")
@_option("SCRAPER_CONFIG", default=None, help="YAML/JSON config file; without it, the provider's top coins.")
@_option(
    "SCRAPE_INTERVAL",
    type=click.FloatRange(min=MIN_INTERVAL_LOCAL),
    default=DEFAULTS.scrape_interval,
    help=f"Seconds between scrape starts (--loop); at least {MIN_INTERVAL_LIVE:g} "
    f"(at least {MIN_INTERVAL_LOCAL:g} for the local providers demo/replay).",
)
@_option(
    "PUBLISH_DEADLINE",
    type=click.FloatRange(min=0.5),
    default=DEFAULTS.publish_deadline,
    help="Seconds to keep retrying NATS before exiting 3.",
)
@_option(
    "SCRAPE_TIMEOUT", type=click.FloatRange(min=0.1), default=DEFAULTS.scrape_timeout, help="HTTP read timeout (s)."
)
@_option("SCRAPE_RETRIES", type=click.IntRange(min=0), default=DEFAULTS.scrape_retries, help="HTTP retries per call.")
@_option(
    "SCRAPE_BACKOFF",
    type=click.FloatRange(min=0),
    default=DEFAULTS.scrape_backoff,
    help="First retry delay (s); doubles per retry, with jitter.",
)
@_option(
    "SCRAPE_MAX_RETRY_AFTER",
    type=click.FloatRange(min=0),
    default=DEFAULTS.scrape_max_retry_after,
    help="Longest Retry-After (s) worth waiting for within a run.",
)
def scrape(mode: str, **options: object) -> None:
    """Scrape market data and publish validated quotes to NATS JetStream."""
    options["provider"] = options.pop("scrape_provider")
    interval = float(options["scrape_interval"])  # type: ignore[arg-type]
    if options["provider"] not in LOCAL_PROVIDERS and interval < MIN_INTERVAL_LIVE:
        raise click.BadParameter(
            f"{interval:g} s is below {MIN_INTERVAL_LIVE:g} s, allowed only for SCRAPE_PROVIDER=demo|replay",
            param_hint="'--scrape-interval' / SCRAPE_INTERVAL",
        )
    settings = Settings(**options)  # type: ignore[arg-type]
    if mode == "loop":
        asyncio.run(_loop(settings))
        return
    result = run_once(settings)
    if result.error:
        click.echo(f"cryptoviz scrape: {result.error}", err=True)
    sys.exit(result.exit_code)


async def _loop(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await run_loop(settings, stop)
