"""The `cryptoviz` command. Subcommands live with their service and load lazily,
so `cryptoviz scrape` in a CronJob never pays for importing Panel."""

from __future__ import annotations

import importlib
import sys

import click

from cryptoviz import __version__
from cryptoviz.core.logs import setup_logging

SUBCOMMANDS: dict[str, str] = {
    "scrape": "cryptoviz.scraper.cli:scrape",
    "backfill": "cryptoviz.scraper.cli:backfill",
    "ingest": "cryptoviz.ingester.cli:ingest",
    "backup": "cryptoviz.ingester.cli:backup",
    "dashboard": "cryptoviz.dashboard.cli:dashboard",
    "notify": "cryptoviz.notify.cli:notify",
    "dev": "cryptoviz.dev.cli:dev",
    "config-schema": "cryptoviz.core.cli_tools:config_schema",
    "check-config": "cryptoviz.core.cli_tools:check_config",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="cryptoviz")
@click.option(
    "--log-level",
    envvar="LOG_LEVEL",
    show_envvar=True,
    default="INFO",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--log-format",
    envvar="LOG_FORMAT",
    show_envvar=True,
    default="text",
    type=click.Choice(["text", "json"]),
    help="json for containers, text for terminals.",
)
def cli(log_level: str, log_format: str) -> None:
    """CryptoViz: crypto prices → NATS JetStream → DuckDB → dashboard."""
    setup_logging(log_level, log_format)


def main() -> None:
    sys.exit(cli.main(prog_name="cryptoviz", standalone_mode=True))
