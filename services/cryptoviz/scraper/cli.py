"""`cryptoviz scrape --once | --loop` and `cryptoviz backfill`: every setting is a flag and the env var of that name.

The per-provider options (base URL, key, key file) are generated from the provider registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from cryptoviz.core.quote import ALL_PROVIDERS, LOCAL_PROVIDERS
from cryptoviz.scraper.providers import live_specs
from cryptoviz.scraper.run import EXIT_CODES, run_loop, run_once
from cryptoviz.scraper.settings import Settings, provider_env_names, provider_fields


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


def _provider_options() -> list[Callable[[Any], Any]]:
    """Base URL, key and key file of each provider, from its spec."""
    options = [
        _option(
            "SCRAPE_PROVIDER",
            type=click.Choice(ALL_PROVIDERS),
            default=None,
            help="Default provider [default: coinmarketcap when CMC_API_KEY is set, else coingecko]; "
            "the config file's `provider` wins. demo/replay read MARKET_BASE_URL.",
        )
    ]
    for unit in live_specs():
        if unit.key:
            options.append(_option(unit.key.env, default=None, help=unit.key.help, show_default=False))
            if unit.key.file_env:
                options.append(
                    _option(
                        unit.key.file_env, default=None, help=f"File holding the {unit.display_name} key (a Secret)."
                    )
                )
        options.append(_option(unit.base_url_env, default=unit.base_url, help=f"{unit.display_name} API."))
    options.append(_option("MARKET_BASE_URL", default=None, help="Local market server for providers demo/replay."))
    return options


def _common_options() -> list[Callable[[Any], Any]]:
    return [
        _option("NATS_URL", default=DEFAULTS.nats_url, help="NATS server with JetStream."),
        *_provider_options(),
        _option("SCRAPER_CONFIG", default=None, help="YAML/JSON config file; without it, the provider's top coins."),
        _option(
            "PUBLISH_DEADLINE",
            type=click.FloatRange(min=0.5),
            default=DEFAULTS.publish_deadline,
            help="Seconds to keep retrying NATS before exiting 3.",
        ),
        _option(
            "SCRAPE_TIMEOUT",
            type=click.FloatRange(min=0.1),
            default=DEFAULTS.scrape_timeout,
            help="HTTP read timeout (s).",
        ),
        _option(
            "SCRAPE_RETRIES", type=click.IntRange(min=0), default=DEFAULTS.scrape_retries, help="HTTP retries per call."
        ),
        _option(
            "SCRAPE_BACKOFF",
            type=click.FloatRange(min=0),
            default=DEFAULTS.scrape_backoff,
            help="First retry delay (s); doubles per retry, with jitter.",
        ),
        _option(
            "SCRAPE_MAX_RETRY_AFTER",
            type=click.FloatRange(min=0),
            default=DEFAULTS.scrape_max_retry_after,
            help="Longest Retry-After (s) waited out within a run; a longer one fails that provider.",
        ),
        _option(
            "INGESTER_URL",
            default=DEFAULTS.ingester_url,
            help="The ingester API, asked what is already stored (GET /api/v1/coverage) before history is fetched.",
        ),
    ]


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_common_options()):
        command = option(command)
    return command


def settings_from(options: dict[str, Any]) -> Settings:
    """Settings from the parsed options: the per-provider ones go through the registry's env names."""
    provider_names = {name.lower() for name in provider_env_names()}
    fields = provider_fields({k: v for k, v in options.items() if k in provider_names})
    rest = {k: v for k, v in options.items() if k not in provider_names}
    return Settings(**rest, **fields)  # type: ignore[arg-type]


@click.command(epilog=EXIT_HELP)
@click.option("--once", "mode", flag_value="once", default=True, help="Scrape once and exit (the CronJob).")
@click.option("--loop", "mode", flag_value="loop", help="Scrape every SCRAPE_INTERVAL seconds until stopped.")
@common_options
@_option(
    "SCRAPE_INTERVAL",
    type=click.FloatRange(min=MIN_INTERVAL_LOCAL),
    default=DEFAULTS.scrape_interval,
    help=f"Seconds between scrape starts (--loop); at least {MIN_INTERVAL_LIVE:g} "
    f"(at least {MIN_INTERVAL_LOCAL:g} for the local providers demo/replay).",
)
@_option(
    "GAP_FILL_LOOKBACK",
    type=click.FloatRange(min=0),
    default=DEFAULTS.gap_fill_lookback,
    help="Seconds back in which each scrape fills holes from candles (0: off).",
)
@_option(
    "GAP_FILL_BUDGET",
    type=click.FloatRange(min=0),
    default=DEFAULTS.gap_fill_budget,
    help="Most seconds a scrape spends filling holes; the next runs go on.",
)
def scrape(mode: str, **options: Any) -> None:
    """Scrape market data and publish validated quotes to NATS JetStream."""
    interval = float(options["scrape_interval"])
    if options["scrape_provider"] not in LOCAL_PROVIDERS and interval < MIN_INTERVAL_LIVE:
        raise click.BadParameter(
            f"{interval:g} s is below {MIN_INTERVAL_LIVE:g} s, allowed only for SCRAPE_PROVIDER=demo|replay",
            param_hint="'--scrape-interval' / SCRAPE_INTERVAL",
        )
    settings = settings_from(options)
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


def _symbols(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s.strip().upper() for s in (value or "").split(",") if s.strip()))


@click.command(epilog=EXIT_HELP.replace("every quote", "every candle"))
@common_options
@_option(
    "BACKFILL_DAYS",
    type=click.FloatRange(min=0, min_open=True, max=3650),
    default=DEFAULTS.backfill_days,
    help="How far back to fill, in days.",
)
@_option(
    "BACKFILL_SYMBOLS",
    default="",
    callback=_symbols,
    help="Comma-separated tracked symbols to fill [default: every tracked coin].",
    show_default=False,
)
def backfill(**options: Any) -> None:
    """Fill each tracked coin's history from its providers' candles (what the ingester lacks), then exit."""
    from cryptoviz.scraper.backfill import run_backfill

    result = run_backfill(settings_from(options))
    if result.error:
        click.echo(f"cryptoviz backfill: {result.error}", err=True)
    sys.exit(result.exit_code)
