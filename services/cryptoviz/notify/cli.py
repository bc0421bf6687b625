"""`cryptoviz notify`: deliver fired alerts from JetStream to Apprise targets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import click

from cryptoviz.core.settings import click_options, from_options
from cryptoviz.notify.settings import NotifySettings

log = logging.getLogger("cryptoviz.notify")


@click.command()
@click_options(NotifySettings)
def notify(**values: object) -> None:
    """Deliver fired alerts (JetStream CRYPTOVIZ_ALERTS) to webhooks, Slack, Discord, Telegram, email … once each."""
    from cryptoviz.notify.send import keep_connections, silence_apprise
    from cryptoviz.notify.service import make_senders
    from cryptoviz.notify.targets import TargetError, load_targets

    silence_apprise()
    keep_connections()
    settings = from_options(NotifySettings, values)
    try:
        targets = load_targets(settings.urls, settings.notify_urls_file, settings.notify_targets_file)
        senders = make_senders(targets, settings.timeout)  # every URL checked before anything connects
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


async def _run(settings: NotifySettings, targets, senders) -> None:
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
