import click


@click.command()
def dashboard() -> None:
    """Serve the Panel dashboard (not yet implemented)."""
    raise click.ClickException("not implemented yet")
