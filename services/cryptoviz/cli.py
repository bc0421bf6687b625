"""The `cryptoviz` command. Subcommands live with their service and load lazily,
so `cryptoviz scrape` in a CronJob never pays for importing Panel."""

from __future__ import annotations

import importlib
import os
import sys
from typing import NamedTuple

import click

from cryptoviz import __version__
from cryptoviz.core.common_settings import GlobalSettings
from cryptoviz.core.logs import setup_logging
from cryptoviz.core.quote import parse_clock_skew, set_max_clock_skew
from cryptoviz.core.settings import click_options, from_options


class Subcommand(NamedTuple):
    target: str  # module:attribute
    extra: str  # the install extra its imports come from
    summary: str  # listed by `cryptoviz --help` without importing the command


SUBCOMMANDS: dict[str, Subcommand] = {
    "scrape": Subcommand("cryptoviz.scraper.cli:scrape", "scraper", "Scrape market data and publish quotes to NATS."),
    "backfill": Subcommand("cryptoviz.scraper.cli:backfill", "scraper", "Backfill each tracked coin's candles."),
    "ingest": Subcommand("cryptoviz.ingester.cli:ingest", "ingester", "Consume JetStream into DuckDB, serve the API."),
    "backup": Subcommand("cryptoviz.ingester.cli:backup", "ingester", "Write a consistent snapshot of the database."),
    "dashboard": Subcommand("cryptoviz.dashboard.cli:dashboard", "dashboard", "Serve the Panel dashboard."),
    "notify": Subcommand("cryptoviz.notify.cli:notify", "notify", "Deliver fired alerts through Apprise."),
    "dev": Subcommand("cryptoviz.dev.cli:dev", "dev", "Run the whole pipeline on this machine."),
    "config-schema": Subcommand("cryptoviz.core.cli_tools:config_schema", "scraper", "Print the config's JSON Schema."),
    "check-config": Subcommand("cryptoviz.core.cli_tools:check_config", "scraper", "Validate a scraper config file."),
}


class LazyGroup(click.Group):
    """Imports a subcommand only when it runs: each image carries one component's dependencies, so
    `cryptoviz --help` must not import the others (the scraper image has no numpy for `dev`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUBCOMMANDS[name].summary) for name in self.list_commands(ctx)])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = SUBCOMMANDS.get(name)
        if command is None:
            return None
        module_name, attr = command.target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as missing:
            if missing.name is None or missing.name.startswith("cryptoviz"):
                raise  # our own code missing is a bug, not an extra to install
            raise click.ClickException(
                f"`cryptoviz {name}` needs {missing.name!r}, which this installation lacks: "
                f"install the {command.extra!r} extra (pip install 'cryptoviz[{command.extra}]')"
            ) from missing
        return getattr(module, attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="cryptoviz")
@click_options(GlobalSettings)
def cli(**values: object) -> None:
    """CryptoViz: crypto prices → NATS JetStream → DuckDB → dashboard."""
    settings = from_options(GlobalSettings, values)
    setup_logging(settings.log_level, settings.log_format)
    if settings.nats_user or settings.nats_ca_file:
        from cryptoviz.core.nats import Credentials, use_credentials  # imports nats-py: only when needed

        password = settings.nats_password.get_secret_value() if settings.nats_password else None
        use_credentials(Credentials(settings.nats_user, password, settings.nats_password_file, settings.nats_ca_file))
    set_max_clock_skew(parse_clock_skew(settings.max_clock_skew))
    os.environ["MAX_CLOCK_SKEW"] = settings.max_clock_skew  # the children of `cryptoviz dev` judge times alike


def main() -> None:
    sys.exit(cli.main(prog_name="cryptoviz", standalone_mode=True))
