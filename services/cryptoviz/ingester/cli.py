"""`cryptoviz ingest` and `cryptoviz backup DIR`."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import click

from cryptoviz.core.nats import DEFAULT_NATS_URL
from cryptoviz.ingester.serving import ServerLimits

DEFAULT_LIMITS = ServerLimits()

log = logging.getLogger("cryptoviz.ingester")


def _option(name: str, envvar: str, **kwargs):
    return click.option(name, envvar=envvar, show_envvar=True, show_default=True, **kwargs)


@click.command()
@_option("--nats-url", "NATS_URL", default=DEFAULT_NATS_URL, help="NATS server with JetStream.")
@_option("--duckdb-path", "DUCKDB_PATH", default="data/cryptoviz.duckdb", help="DuckDB file (only this process opens).")
@_option("--api-host", "API_HOST", default="0.0.0.0", help="Address the HTTP API listens on.")
@_option("--api-port", "API_PORT", default=8000, type=click.IntRange(0, 65535), help="Port of the HTTP API.")
@_option("--batch-size", "BATCH_SIZE", default=10_000, type=click.IntRange(1, 1_000_000), help="Max quotes per commit.")
@_option(
    "--candle-batch-size",
    "CANDLE_BATCH_SIZE",
    default=50_000,
    type=click.IntRange(1, 1_000_000),
    help="Max candles per commit (history arrives in bulk: larger batches store it faster).",
)
@_option(
    "--batch-timeout",
    "BATCH_TIMEOUT",
    default=0.25,
    type=click.FloatRange(0.0, 60.0),
    help="Seconds a batch may wait for more quotes after its first one.",
)
@_option(
    "--retention-days",
    "RETENTION_DAYS",
    default=30.0,
    type=click.FloatRange(0.0),
    help="Raw quotes older than this are rolled up hourly and deleted; 0 keeps them forever.",
)
@_option("--scraper-config", "SCRAPER_CONFIG", default=None, help="Config file whose coins[].alerts are evaluated.")
@_option(
    "--ack-wait",
    "ACK_WAIT",
    default=5.0,
    type=click.FloatRange(1.0, 3600.0),
    help="Seconds before JetStream redelivers a message a crashed ingester held (a live one reports progress).",
)
@_option(
    "--metrics-port",
    "INGESTER_METRICS_PORT",
    default=0,
    type=click.IntRange(0, 65535),
    help="Port of the Prometheus /metrics endpoint, apart from the API's (0: not served).",
)
@_option(
    "--api-max-connections",
    "API_MAX_CONNECTIONS",
    default=DEFAULT_LIMITS.max_connections,
    type=click.IntRange(1, 100_000),
    help="Open API connections at most; beyond it requests get 503.",
)
@_option(
    "--api-header-timeout",
    "API_HEADER_TIMEOUT",
    default=DEFAULT_LIMITS.head_timeout,
    type=click.FloatRange(0.1, 300.0),
    help="Seconds a client has to send a whole request head (else 408 and the connection is closed).",
)
@_option(
    "--api-keepalive-timeout",
    "API_KEEPALIVE_TIMEOUT",
    default=DEFAULT_LIMITS.keepalive_timeout,
    type=click.FloatRange(0.1, 300.0),
    help="Seconds an idle keep-alive connection is kept open.",
)
@click.option(
    "--admin-token",
    envvar="ADMIN_TOKEN",
    show_envvar=True,
    default=None,
    help="Bearer token for /api/v1/admin/* (at least 16 characters; unset: admin endpoints refused). "
    "Better ADMIN_TOKEN_FILE: a flag is visible to other users.",
)
@_option("--admin-token-file", "ADMIN_TOKEN_FILE", default=None, help="File holding the admin token (re-read on use).")
@_option(
    "--backup-timeout",
    "API_BACKUP_TIMEOUT",
    default=600.0,
    type=click.FloatRange(1.0),
    help="Seconds a backup may take, export and transfer, before the ingester stops it.",
)
def ingest(
    nats_url: str,
    duckdb_path: str,
    api_host: str,
    api_port: int,
    batch_size: int,
    candle_batch_size: int,
    batch_timeout: float,
    retention_days: float,
    scraper_config: str | None,
    ack_wait: float,
    metrics_port: int,
    api_max_connections: int,
    api_header_timeout: float,
    api_keepalive_timeout: float,
    admin_token: str | None,
    admin_token_file: str | None,
    backup_timeout: float,
) -> None:
    """Consume JetStream into DuckDB and serve the read API (one process owns the DuckDB file)."""
    from cryptoviz.ingester.admin_token import AdminToken, AdminTokenError
    from cryptoviz.ingester.runtime import Settings
    from cryptoviz.ingester.service import run
    from cryptoviz.ingester.store import StorageError

    try:
        token = AdminToken.of(admin_token, admin_token_file)
    except AdminTokenError as exc:
        raise click.ClickException(str(exc)) from None
    if not token.configured:
        log.info("admin endpoints are off (no ADMIN_TOKEN or ADMIN_TOKEN_FILE)")
    settings = Settings(
        nats_url=nats_url,
        duckdb_path=duckdb_path,
        api_host=api_host,
        api_port=api_port,
        batch_size=batch_size,
        candle_batch_size=candle_batch_size,
        batch_timeout=batch_timeout,
        retention_days=retention_days,
        scraper_config=scraper_config,
        ack_wait=ack_wait,
        metrics_port=metrics_port,
        limits=ServerLimits(
            max_connections=api_max_connections,
            head_timeout=api_header_timeout,
            keepalive_timeout=api_keepalive_timeout,
        ),
        admin_token=token,
        backup_timeout=backup_timeout,
    )
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
@_option("--ingester-url", "INGESTER_URL", default="http://127.0.0.1:8000", help="The running ingester's API.")
@_option("--timeout", "BACKUP_TIMEOUT", default=600.0, type=click.FloatRange(1.0), help="Seconds to wait for it.")
@_option(
    "--admin-token-file",
    "ADMIN_TOKEN_FILE",
    default=None,
    help="File holding the ingester's admin token (or set ADMIN_TOKEN).",
)
def backup(directory: Path, ingester_url: str, timeout: float, admin_token_file: str | None) -> None:
    """Write a consistent Parquet snapshot of the database into DIRECTORY while ingest continues.

    The running ingester makes the snapshot (it alone opens DuckDB); restore it with
    `IMPORT DATABASE 'DIRECTORY'` in a new DuckDB file. Needs the ingester's admin token
    (ADMIN_TOKEN or ADMIN_TOKEN_FILE).
    """
    from cryptoviz.core.api_client import IngesterClient, IngesterError
    from cryptoviz.ingester.admin_token import AdminToken, AdminTokenError
    from cryptoviz.ingester.backup import fetch

    try:
        token = AdminToken.of(os.environ.get("ADMIN_TOKEN") or None, admin_token_file).current()
    except AdminTokenError as exc:
        raise click.ClickException(str(exc)) from None
    if token is None:
        raise click.ClickException("backup needs the ingester's admin token: set ADMIN_TOKEN or ADMIN_TOKEN_FILE")
    try:
        names = fetch(IngesterClient(ingester_url, timeout=timeout), directory, token, timeout)
    except (IngesterError, OSError, ValueError) as exc:
        raise click.ClickException(f"backup failed: {exc}") from None
    click.echo(f"backup written to {directory} ({len(names)} files)")
