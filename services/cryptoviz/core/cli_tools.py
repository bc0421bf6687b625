"""Small commands about the shared configuration."""

from __future__ import annotations

import json

import click

from cryptoviz.core.config import ConfigError, config_json_schema, load_config


@click.command("config-schema")
def config_schema() -> None:
    """Print the JSON Schema of the scraper config file (SCRAPER_CONFIG)."""
    click.echo(json.dumps(config_json_schema(), indent=2, sort_keys=True))


@click.command("check-config")
@click.argument("path", type=click.Path(dir_okay=False))
def check_config(path: str) -> None:
    """Validate a scraper config file; exit 1 with the reasons if it is invalid."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{path}: valid ({len(config.coins)} coins, top_n={config.top_n})")
