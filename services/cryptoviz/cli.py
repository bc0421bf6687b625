"""The `cryptoviz` command. Subcommands live with their service and load lazily,
so `cryptoviz scrape` in a CronJob never pays for importing Panel."""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import NamedTuple

import click

from cryptoviz import __version__
from cryptoviz.core.logs import setup_logging
from cryptoviz.core.quote import parse_clock_skew, set_max_clock_skew


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
@click.option(
    "--max-clock-skew",
    envvar="MAX_CLOCK_SKEW",
    show_envvar=True,
    default="300",
    help="Seconds (or 90s, 5m; at most 1d) a quote's or candle's time may lie past its receive time and the"
    " clock of the scraper or ingester checking it; later ones are refused.",
)
@click.option("--nats-user", envvar="NATS_USER", show_envvar=True, help="NATS user (scrape, ingest, notify).")
@click.option("--nats-password", envvar="NATS_PASSWORD", show_envvar=True, help="Its password (never logged).")
@click.option(
    "--nats-password-file", envvar="NATS_PASSWORD_FILE", show_envvar=True, help="A file holding it (a mounted Secret)."
)
@click.option("--nats-ca-file", envvar="NATS_CA_FILE", show_envvar=True, help="CA bundle for a tls:// NATS_URL.")
def cli(
    log_level: str,
    log_format: str,
    max_clock_skew: str,
    nats_user: str | None,
    nats_password: str | None,
    nats_password_file: str | None,
    nats_ca_file: str | None,
) -> None:
    """CryptoViz: crypto prices → NATS JetStream → DuckDB → dashboard."""
    setup_logging(log_level, log_format)
    if (nats_password or nats_password_file) and not nats_user:
        raise click.BadParameter("a NATS password needs NATS_USER / --nats-user", param_hint="NATS_USER")
    if nats_user and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", nats_user):
        raise click.BadParameter("letters, digits, - and _ only", param_hint="NATS_USER / --nats-user")
    if nats_user or nats_ca_file:
        from cryptoviz.core.nats import Credentials, use_credentials  # imports nats-py: only when needed

        use_credentials(Credentials(nats_user, nats_password, nats_password_file, nats_ca_file))
    try:
        set_max_clock_skew(parse_clock_skew(max_clock_skew))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="MAX_CLOCK_SKEW / --max-clock-skew") from None
    os.environ["MAX_CLOCK_SKEW"] = max_clock_skew  # the children of `cryptoviz dev` judge times alike


def main() -> None:
    sys.exit(cli.main(prog_name="cryptoviz", standalone_mode=True))
