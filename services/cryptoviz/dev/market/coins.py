"""The coins of the shared market data: names and market-cap ranks (each provider's ids live in its wire format)."""

from __future__ import annotations

from cryptoviz.scraper.providers import spec

KNOWN_COINS: dict[str, tuple[str, int]] = {
    "BTC": ("Bitcoin", 1),
    "ETH": ("Ethereum", 2),
    "USDT": ("Tether", 3),
    "XRP": ("XRP", 4),
    "BNB": ("BNB", 5),
    "SOL": ("Solana", 6),
    "USDC": ("USDC", 7),
    "DOGE": ("Dogecoin", 8),
    "ADA": ("Cardano", 9),
    "AVAX": ("Avalanche", 10),
    "LINK": ("Chainlink", 11),
    "DOT": ("Polkadot", 12),
    "LTC": ("Litecoin", 13),
    "MATIC": ("Polygon", 14),
}
"""The 14 coins in the shared market data (their ranks of early 2025)."""


def coin_id(provider: str, symbol: str) -> str | None:
    """The id `provider` gives `symbol` on the local market (demo and replay: CoinGecko's); None if not listed."""
    unit = spec(provider)
    wire = unit.wire or spec(unit.config_ids).wire
    assert wire is not None, f"{provider} has no fake wire format"
    return wire().coin_id(symbol)
