"""`cryptoviz ingest` and `cryptoviz backup DIR`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from cryptoviz.core.settings import click_options, from_options
from cryptoviz.ingester.settings import BackupSettings, IngestSettings

log = logging.getLogger("cryptoviz.ingester")


@click.command()
@click_options(IngestSettings)
def ingest(**values: object) -> None:
    """Consume JetStream into DuckDB and serve the read API (one process owns the DuckDB file)."""
    from cryptoviz.ingester.service import run
    from cryptoviz.ingester.store import StorageError

    settings = from_options(IngestSettings, values)
    if not settings.admin.configured:
        log.info("admin endpoints are off (no ADMIN_TOKEN or ADMIN_TOKEN_FILE)")
    # Not asyncio.run: at exit it waits for every task, and nats-py's connect retry loop can
    # ignore cancellation; run() itself stops what it started.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(run(settings))
    except (StorageError, ConnectionError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click_options(BackupSettings)
def backup(directory: Path, **values: object) -> None:
    """Write a consistent Parquet snapshot of the database into DIRECTORY while ingest continues.

    The running ingester makes the snapshot (it alone opens DuckDB); restore it with
    `IMPORT DATABASE 'DIRECTORY'` in a new DuckDB file. Needs the ingester's admin token
    (ADMIN_TOKEN or ADMIN_TOKEN_FILE).
    """
    from cryptoviz.core.api_client import IngesterClient, IngesterError
    from cryptoviz.ingester.admin_token import AdminTokenError
    from cryptoviz.ingester.backup import fetch

    settings = from_options(BackupSettings, values)
    try:
        token = settings.admin.current()
    except AdminTokenError as exc:
        raise click.ClickException(str(exc)) from None
    if token is None:
        raise click.ClickException("backup needs the ingester's admin token: set ADMIN_TOKEN or ADMIN_TOKEN_FILE")
    try:
        client = IngesterClient(settings.ingester_url, timeout=settings.timeout)
        names = fetch(client, directory, token, settings.timeout)
    except (IngesterError, OSError, ValueError) as exc:
        raise click.ClickException(f"backup failed: {exc}") from None
    click.echo(f"backup written to {directory} ({len(names)} files)")
