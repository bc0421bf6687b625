"""The demo simulator of `cryptoviz dev --demo`: the local market in CoinGecko's format, simulated prices."""

from __future__ import annotations

from cryptoviz.scraper.providers.coingecko import local_spec

SPEC = local_spec("demo", "the demo simulator")
