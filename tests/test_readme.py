"""README.md tells the truth: its commands, settings, files and links exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from support.settings import component_env_names

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
CLI = [str(Path(sys.executable).with_name("cryptoviz"))]
COMMANDS = ["scrape", "backfill", "ingest", "backup", "dashboard", "notify", "dev"]
OPERATOR_SETTINGS = component_env_names("operator")  # env vars only: no --help shows them


def config_reference_rows() -> list[str]:
    section = README.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def env_vars_in_reference() -> set[str]:
    names: set[str] = set()
    for row in config_reference_rows():
        first_cell = row.split("|")[1]
        names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    return names


@pytest.fixture(scope="module")
def help_texts() -> str:
    texts = [subprocess.run([*CLI, "--help"], capture_output=True, text=True, check=True).stdout]
    for command in COMMANDS:
        result = subprocess.run([*CLI, command, "--help"], capture_output=True, text=True, check=True)
        texts.append(result.stdout)
    return " ".join(" ".join(texts).split())  # click wraps lines anywhere


def test_the_reference_lists_the_contract_settings():
    documented = env_vars_in_reference()
    contract = {
        "NATS_URL", "SCRAPE_PROVIDER", "CMC_API_KEY", "CMC_BASE_URL", "COINGECKO_BASE_URL", "BINANCE_BASE_URL",
        "KRAKEN_BASE_URL", "COINBASE_BASE_URL", "SCRAPER_CONFIG", "SCRAPE_INTERVAL", "DUCKDB_PATH", "API_HOST",
        "API_PORT", "BATCH_SIZE", "BATCH_TIMEOUT", "RETENTION_DAYS", "INGESTER_URL", "DASHBOARD_PORT",
        "DASHBOARD_PREFIX", "DASHBOARD_ALLOWED_ORIGINS", "CACHE_TTL",
    }  # fmt: skip
    assert contract <= documented, contract - documented


def test_every_documented_setting_is_read_by_a_command(help_texts):
    """Each env var in the README's table is shown by some `cryptoviz ... --help` or read by the operator."""
    missing = sorted(
        name
        for name in env_vars_in_reference()
        if f"env var: {name}" not in help_texts and name not in OPERATOR_SETTINGS
    )
    assert not missing, f"README documents settings nothing reads: {missing}"


def test_every_command_flag_setting_is_documented(help_texts):
    """The other direction: no setting of the CLI is missing from the README's reference."""
    shown = set(re.findall(r"env var: ([A-Z][A-Z0-9_]+)", help_texts))
    undocumented = sorted(shown - env_vars_in_reference() - {"LOG_LEVEL", "LOG_FORMAT"})
    assert not undocumented, f"settings missing from README's configuration reference: {undocumented}"
    assert "LOG_LEVEL" in README and "LOG_FORMAT" in README


def test_the_two_commands_exist_and_ci_runs_the_test_command():
    assert "`./scripts/run.sh --demo`" in README and "`./scripts/test.sh`" in README
    for script in ("scripts/run.sh", "scripts/test.sh", "scripts/setup.sh"):
        assert (REPO_ROOT / script).is_file(), script
    assert "scripts/test.sh" in (REPO_ROOT / ".ci" / "run").read_text()


def test_local_links_and_named_files_exist():
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    named = re.findall(r"`((?:bench|examples|charts|docs|services|operator)/[^`*]+?)`", README)
    names = re.findall(r"\| `(bench_[a-z_]+\.py)` \|", README)
    paths = [t for t in targets if not t.startswith("http")] + named + [f"bench/{n}" for n in names]
    missing = [p for p in paths if not (REPO_ROOT / p.split()[0]).exists()]
    assert not missing, missing
