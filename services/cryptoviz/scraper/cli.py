import click


@click.command()
def scrape() -> None:
    """Scrape a provider and publish quotes to NATS JetStream (not yet implemented)."""
    raise click.ClickException("not implemented yet")
