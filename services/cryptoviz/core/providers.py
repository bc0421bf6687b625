"""The provider registry: every source of market data CryptoViz knows, one line each.

A name here is a unit: `cryptoviz/scraper/providers/<name>.py` holds its adapter (live quotes and
history as candles), its metadata (`SPEC`: base-URL variable, key header, pacing, display name,
history endpoint and paging limits) and its fake wire format for the local market server. Core
knows only the names (quotes, candles and the config file are validated against them); the
scraper, the CLI, the probe of `cryptoviz dev` and the docs load the units by name. Adding a
provider is one module there plus its name here.
"""

from __future__ import annotations

from typing import Literal, get_args

ProviderName = Literal["coinmarketcap", "coingecko", "binance", "kraken", "coinbase"]
"""Live providers (their order is the order of the config schema, the docs and the CLI choices)."""
LocalProviderName = Literal["demo", "replay"]
"""The local market of `cryptoviz dev` (the simulator, a CSV replay), speaking another provider's format."""

PROVIDERS: tuple[str, ...] = get_args(ProviderName)
LOCAL_PROVIDERS: tuple[str, ...] = get_args(LocalProviderName)
ALL_PROVIDERS: tuple[str, ...] = PROVIDERS + LOCAL_PROVIDERS
