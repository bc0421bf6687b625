"""Which settings models each chart component and each `cryptoviz` command is configured by.

A command's models are what its env vars and flags are made from (core/settings.py); a component's are
its command's plus the global flags. The chart cross-checks and tests/test_settings.py read this.
"""

from __future__ import annotations

import importlib

from cryptoviz.core.settings import ServiceSettings, env_names

GLOBAL = "cryptoviz.core.common_settings:GlobalSettings"
COMMAND_MODELS: dict[str, list[str]] = {
    "ingest": ["cryptoviz.ingester.settings:IngestSettings"],
    "backup": ["cryptoviz.ingester.settings:BackupSettings"],
    # scrape's and backfill's models are the shared part plus each one's own (one docs table each)
    "scrape": ["cryptoviz.scraper.settings:ScraperSettings", "cryptoviz.scraper.settings:ScrapeOnly"],
    "backfill": ["cryptoviz.scraper.settings:ScraperSettings", "cryptoviz.scraper.settings:BackfillOnly"],
    "notify": ["cryptoviz.notify.settings:NotifySettings"],
    "dashboard": ["cryptoviz.dashboard.settings:DashboardSettings"],
    "dev": ["cryptoviz.dev.settings:DevSettings"],
}
RUN_MODES = {"scrape": {"mode"}}
"""Options that choose how a command runs, not settings (no env var, no docs row): `scrape --once | --loop`."""
# Components configured by env vars alone, read by their model without the CLI (the operator runs under
# `kopf run`; its model says `cli = False`).
ENV_ONLY_MODELS = {"operator": "cryptoviz_operator.settings:Settings"}
COMPONENT_COMMANDS = {
    "scraper": "scrape", "backfill": "backfill", "ingester": "ingest", "backup": "backup",
    "dashboard": "dashboard", "notify": "notify",
}  # fmt: skip


def model(path: str) -> type[ServiceSettings]:
    module, name = path.split(":")
    found = getattr(importlib.import_module(module), name)
    assert issubclass(found, ServiceSettings), path
    return found


def command_env_names(command: str) -> set[str]:
    """Every env var `cryptoviz <command>` reads through its models, the global flags included."""
    return {name for path in [GLOBAL, *COMMAND_MODELS.get(command, [])] for name in env_names(model(path))}


def component_env_names(component: str) -> set[str]:
    """Every env var a chart component's process reads through its models."""
    if component in ENV_ONLY_MODELS:
        return set(env_names(model(ENV_ONLY_MODELS[component])))
    return command_env_names(COMPONENT_COMMANDS[component])
