import click


@click.command()
def ingest() -> None:
    """Consume JetStream into DuckDB and serve the API (not yet implemented)."""
    raise click.ClickException("not implemented yet")


@click.command()
def backup() -> None:
    """Write a consistent snapshot of the database (not yet implemented)."""
    raise click.ClickException("not implemented yet")
