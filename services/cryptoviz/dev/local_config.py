"""The scraper config file `cryptoviz dev` writes when no operator is there to render one.

Same schema as the operator's ConfigMap (core/config.py), so a file that works locally works
in the cluster. Written once: a user's edits survive every later run.
"""

from __future__ import annotations

from pathlib import Path

from cryptoviz.core.config import ScraperConfig, TrackedCoin, dump_config, load_config
from cryptoviz.dev.simulator import COINS
from cryptoviz.scraper.providers.coinmarketcap import CoinMarketCapWire

CMC_IDS: dict[str, str] = CoinMarketCapWire.known_ids
"""CoinMarketCap's numeric ids for the original coin set (symbols alone collide on CMC)."""


def default_config() -> ScraperConfig:
    """The original CryptoViz coin set, with ids pinned for the providers that key by id."""
    coins = [
        TrackedCoin(symbol=c.symbol, name=c.name, ids={"coingecko": c.coin_id, "coinmarketcap": CMC_IDS[c.symbol]})
        for c in COINS
    ]
    return ScraperConfig(coins=coins)


def ensure_config(path: Path) -> tuple[ScraperConfig, bool]:
    """Load `path`, writing the default there first if it does not exist; return (config, written)."""
    if path.exists():
        return load_config(path), False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        "# Coins tracked by `cryptoviz dev` (same schema as the operator's ConfigMap; edit freely).\n"
        + dump_config(default_config()),
        encoding="utf-8",
    )
    tmp.replace(path)
    return load_config(path), True
