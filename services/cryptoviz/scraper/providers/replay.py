"""The CSV replay of `cryptoviz dev --replay`: the local market in CoinGecko's format, recorded candles."""

from __future__ import annotations

from cryptoviz.scraper.providers.coingecko import local_spec

SPEC = local_spec("replay", "the CSV replay")
