"""`cryptoviz ingest` and `cryptoviz backup DIR`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from cryptoviz.core.nats import DEFAULT_NATS_URL

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
) -> None:
    """Consume JetStream into DuckDB and serve the read API (one process owns the DuckDB file)."""
    from cryptoviz.ingester.service import Settings, run
    from cryptoviz.ingester.store import StorageError

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
def backup(directory: Path, ingester_url: str, timeout: float) -> None:
    """Write a consistent Parquet snapshot of the database into DIRECTORY while ingest continues.

    The running ingester makes the snapshot (it alone opens DuckDB); restore it with
    `IMPORT DATABASE 'DIRECTORY'` in a new DuckDB file.
    """
    import requests

    from cryptoviz.ingester.backup import fetch_backup

    try:
        names = fetch_backup(ingester_url, directory, timeout)
    except (requests.RequestException, OSError, ValueError, RuntimeError) as exc:
        raise click.ClickException(f"backup failed: {exc}") from None
    click.echo(f"backup written to {directory} ({len(names)} files)")
