import click


@click.command()
def dev() -> None:
    """Run the whole pipeline on this machine (not yet implemented)."""
    raise click.ClickException("not implemented yet")
