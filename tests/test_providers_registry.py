"""One registry of providers feeds everything else: units, settings, CLI, config schema, chart, CRD, docs."""

from __future__ import annotations

import json
import subprocess

import yaml
from click.testing import CliRunner
from conftest import REPO_ROOT
from cryptoviz.core.config import config_json_schema
from cryptoviz.core.providers import ALL_PROVIDERS, PROVIDERS
from cryptoviz.core.settings import env_names, from_env
from cryptoviz.dev.market import MarketServer
from cryptoviz.dev.probe import default_provider
from cryptoviz.scraper.cli import backfill, scrape
from cryptoviz.scraper.doc_tables import providers_markdown
from cryptoviz.scraper.providers import live_specs, specs
from cryptoviz.scraper.settings import ScrapeSettings
from test_ingest_harness import CRYPTOVIZ


def test_every_registered_name_is_a_unit_with_its_spec_adapter_and_fake_wire_format():
    assert list(specs()) == list(ALL_PROVIDERS)
    for unit in live_specs():
        assert unit.adapter.name == unit.name and unit.wire is not None and unit.wire.name == unit.name
        assert unit.base_url and unit.base_url_env.endswith("_BASE_URL") and unit.history is not None
        assert unit.history.offers == unit.adapter.history_offers and unit.ping_path.startswith("/")
    local = [specs()[n] for n in ALL_PROVIDERS if n not in PROVIDERS]
    assert all(u.local and u.config_ids == "coingecko" and u.candles_with_quotes for u in local)


def test_the_local_market_routes_every_live_provider():
    class Empty:
        def snapshot(self):
            return []

        def advance(self):
            return False

        def now(self):
            from datetime import UTC, datetime

            return datetime(2025, 1, 1, tzinfo=UTC)

    with MarketServer(Empty()) as server:
        assert set(server.wires) == set(PROVIDERS)
        for unit in live_specs():
            assert server.provider_of(unit.wire.prefixes[0] + "x") == unit.name


def test_provider_settings_come_from_the_specs_env_names():
    env = {"BINANCE_BASE_URL": "http://b/", "CMC_API_KEY_FILE": "/k", "coingecko_api_key": "cg-key", "UNRELATED": "x"}
    settings = from_env(ScrapeSettings, env)
    assert settings.base_url("binance") == "http://b" and settings.base_url("kraken") == "https://api.kraken.com"
    assert settings.key("coingecko") == "cg-key" and settings.cmc_api_key_file == "/k"
    assert "cg-key" not in repr(settings) and "coingecko_api_key=SecretStr('**********')" in repr(settings)
    for unit in live_specs():  # one field per spec'd env var, and nothing else provider-shaped
        names = [unit.base_url_env, *([unit.key.env, unit.key.file_env] if unit.key else [])]
        assert {n for n in names if n} <= set(env_names(ScrapeSettings)), unit.name
    assert default_provider({}) == "coingecko" and default_provider({"CMC_API_KEY": "k"}) == "coinmarketcap"
    assert default_provider({"CMC_API_KEY_FILE": "/k", "SCRAPE_PROVIDER": "kraken"}) == "coinmarketcap"


def test_cli_options_config_schema_chart_and_crd_follow_the_registry():
    for command in (scrape, backfill):
        help_text = CliRunner().invoke(command, ["--help"], terminal_width=200).output
        for unit in live_specs():
            assert unit.base_url_env in help_text, (command.name, unit.name)
            if unit.key:
                assert unit.key.env in help_text
    ids = config_json_schema()["$defs"]["TrackedCoin"]["properties"]["ids"]
    assert ids["propertyNames"]["enum"] == list(PROVIDERS)
    values_schema = json.loads((REPO_ROOT / "charts/cryptoviz/values.schema.json").read_text())
    assert values_schema["properties"]["scraper"]["properties"]["provider"]["enum"] == ["", *PROVIDERS]
    crd = yaml.safe_load((REPO_ROOT / "charts/cryptoviz/crds/trackedcryptos.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert list(spec["ids"]["properties"]) == list(PROVIDERS)
    assert spec["providers"]["items"]["enum"] == list(PROVIDERS) and spec["providers"]["maxItems"] == len(PROVIDERS)


def test_the_docs_providers_table_is_the_generated_one():
    docs = (REPO_ROOT / "docs" / "scraper.md").read_text(encoding="utf-8")
    assert providers_markdown() in docs, "regenerate with: .venv/bin/python -m cryptoviz.scraper.doc_tables"
    printed = subprocess.run([CRYPTOVIZ.replace("cryptoviz", "python"), "-m", "cryptoviz.scraper.doc_tables"],
                             capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert printed.stdout.strip() == providers_markdown()
