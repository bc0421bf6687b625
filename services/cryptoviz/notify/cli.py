"""`cryptoviz notify`: deliver fired alerts from JetStream to Apprise targets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import click

from cryptoviz.core.config import parse_duration
from cryptoviz.core.nats import DEFAULT_NATS_URL

log = logging.getLogger("cryptoviz.notify")


def _option(name: str, envvar: str, **kwargs):
    return click.option(name, envvar=envvar, show_envvar=True, show_default=True, **kwargs)


def _duration(_ctx, _param, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@_option("--nats-url", "NATS_URL", default=DEFAULT_NATS_URL, help="NATS server with JetStream.")
@_option("--notify-urls", "NOTIFY_URLS", default="", help="Apprise URLs for every alert, comma or space separated.")
@_option("--notify-urls-file", "NOTIFY_URLS_FILE", default=None, help="File with more such URLs (a mounted Secret).")
@_option(
    "--notify-targets-file",
    "NOTIFY_TARGETS_FILE",
    default=None,
    help="YAML {name: [url, ...]}: targets that coins choose with `notify: [name]`.",
)
@_option("--dashboard-url", "DASHBOARD_URL", default="", help="Dashboard base URL for the link in each message.")
@_option("--metrics-host", "NOTIFY_METRICS_HOST", default="0.0.0.0", help="Address of /metrics, /healthz, /readyz.")
@_option("--metrics-port", "NOTIFY_METRICS_PORT", default=9465, type=click.IntRange(0, 65535), help="Their port.")
@_option("--max-attempts", "NOTIFY_MAX_ATTEMPTS", default=8, type=click.IntRange(1, 1000), help="Tries per target.")
@_option("--backoff", "NOTIFY_BACKOFF", default=2.0, type=click.FloatRange(0.01), help="First retry delay, seconds.")
@_option("--max-backoff", "NOTIFY_MAX_BACKOFF", default=300.0, type=click.FloatRange(0.01), help="Longest delay.")
@_option(
    "--rate-limit",
    "NOTIFY_RATE_LIMIT",
    default=30.0,
    type=click.FloatRange(0.0),
    help="Messages per minute per target on average (0: no limit).",
)
@_option("--rate-burst", "NOTIFY_RATE_BURST", default=10, type=click.IntRange(1), help="Messages sent at once.")
@_option("--timeout", "NOTIFY_TIMEOUT", default=10.0, type=click.FloatRange(0.5, 300), help="Seconds per send.")
@_option("--concurrency", "NOTIFY_CONCURRENCY", default=8, type=click.IntRange(1, 256), help="Sends in parallel.")
@_option(
    "--max-age",
    "NOTIFY_MAX_AGE",
    default="24h",
    callback=_duration,
    help="Alerts older than this when first seen are not sent (recorded as failed); 0 sends any.",
)
def notify(
    nats_url: str,
    notify_urls: str,
    notify_urls_file: str | None,
    notify_targets_file: str | None,
    dashboard_url: str,
    metrics_host: str,
    metrics_port: int,
    max_attempts: int,
    backoff: float,
    max_backoff: float,
    rate_limit: float,
    rate_burst: int,
    timeout: float,
    concurrency: int,
    max_age: float,
) -> None:
    """Deliver fired alerts (JetStream CRYPTOVIZ_ALERTS) to webhooks, Slack, Discord, Telegram, email … once each."""
    from cryptoviz.notify.send import silence_apprise
    from cryptoviz.notify.service import Settings, make_senders
    from cryptoviz.notify.targets import TargetError, load_targets

    silence_apprise()
    settings = Settings(
        nats_url=nats_url,
        dashboard_url=dashboard_url or None,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        max_attempts=max_attempts,
        backoff=backoff,
        max_backoff=max_backoff,
        rate_limit=rate_limit,
        rate_burst=rate_burst,
        timeout=timeout,
        concurrency=concurrency,
        max_age=max_age,
    )
    try:
        targets = load_targets(notify_urls, notify_urls_file, notify_targets_file)
        senders = make_senders(targets, timeout)  # every URL checked before anything connects
    except TargetError as exc:
        raise click.ClickException(str(exc)) from None
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_run(settings, targets, senders))
    except (ConnectionError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


async def _run(settings, targets, senders) -> None:
    from aiohttp import web

    from cryptoviz.core.nats import connect, redact_url
    from cryptoviz.notify.http import health_app
    from cryptoviz.notify.service import Notifier

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    names = ", ".join(t.name for t in targets.all()) or "none (every alert is recorded as not delivered)"
    log.info("targets: %s", names)
    holder: dict[str, Notifier] = {}
    runner = web.AppRunner(health_app(lambda: "n" in holder and holder["n"].attached), access_log=None)
    await runner.setup()
    nc = None
    try:
        await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()  # a taken port fails first
        log.info("connecting to NATS at %s", redact_url(settings.nats_url))
        nc = await connect(settings.nats_url, name="cryptoviz-notify", deadline=3600)
        holder["n"] = notifier = Notifier(settings, targets, senders, nc)
        try:
            await notifier.run(stopping)
        finally:
            log.info("stopping: settling alerts in progress")
            await notifier.drain(10.0)
    finally:
        await runner.cleanup()
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 2)
        log.info("stopped")
