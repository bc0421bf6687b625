"""Fixtures shared by every test: real nats-server processes, the shared market data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptoviz.core.nats import EmbeddedNats

pytest_plugins = ["support.prebuild", "support.tiers"]

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(os.environ.get("CRYPTOVIZ_SHARED", REPO_ROOT.parent / "shared"))
MARKET_5M = SHARED_DIR / "data" / "market" / "5m"


@pytest.fixture(scope="session")
def market_5m() -> Path:
    if not MARKET_5M.is_dir():
        pytest.fail(f"shared market data missing at {MARKET_5M} (set CRYPTOVIZ_SHARED)")
    return MARKET_5M


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A fresh real nats-server with JetStream for one test."""
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    """The ingester's real DuckDB store on a fresh file, for in-process storage and query tests."""
    from cryptoviz.ingester.store import Store

    opened = Store(tmp_path / "db.duckdb")
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Debian Chromium per test module, driven by Playwright (never `playwright install`)."""
    from playwright.sync_api import sync_playwright
    from support.dev import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
