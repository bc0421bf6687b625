"""Can the live provider be used right now? One cheap request, answered in a few seconds.

`cryptoviz dev` asks before it starts the scraper, so a laptop without network (or with a
bad key) gets a plain sentence and the demo simulator instead of an empty dashboard.
"""

from __future__ import annotations

import os

import requests

from cryptoviz.scraper.providers import DEFAULT_BASE_URLS

BASE_URL_ENV: dict[str, str] = {
    "coinmarketcap": "CMC_BASE_URL",
    "coingecko": "COINGECKO_BASE_URL",
    "binance": "BINANCE_BASE_URL",
    "kraken": "KRAKEN_BASE_URL",
    "coinbase": "COINBASE_BASE_URL",
}
DISPLAY_NAMES: dict[str, str] = {
    "coinmarketcap": "CoinMarketCap",
    "coingecko": "CoinGecko",
    "binance": "Binance",
    "kraken": "Kraken",
    "coinbase": "Coinbase",
    "demo": "the demo simulator",
    "replay": "the CSV replay",
}
_PING_PATHS: dict[str, str] = {
    "coinmarketcap": "/v1/cryptocurrency/listings/latest?limit=1",
    "coingecko": "/api/v3/ping",
    "binance": "/api/v3/ping",
    "kraken": "/0/public/Time",
    "coinbase": "/time",
}


def default_provider(env: dict[str, str]) -> str:
    """The contract's default: CoinMarketCap when a key is configured, else keyless CoinGecko."""
    return "coinmarketcap" if env.get("CMC_API_KEY") or env.get("CMC_API_KEY_FILE") else "coingecko"


def base_url(provider: str, env: dict[str, str]) -> str:
    return (env.get(BASE_URL_ENV[provider]) or DEFAULT_BASE_URLS[provider]).rstrip("/")


def _cmc_key(env: dict[str, str]) -> str:
    if env.get("CMC_API_KEY"):
        return env["CMC_API_KEY"].strip()
    path = env.get("CMC_API_KEY_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                return file.read().strip()
        except OSError:
            return ""
    return ""


def probe(provider: str, env: dict[str, str] | None = None, timeout: float = 5.0) -> str | None:
    """None when `provider` answers usefully; else a one-line reason (never containing a key)."""
    env = dict(os.environ if env is None else env)
    url = base_url(provider, env) + _PING_PATHS[provider]
    headers = {"Accept": "application/json"}
    if provider == "coinmarketcap":
        key = _cmc_key(env)
        if not key:
            return "no CoinMarketCap API key (set CMC_API_KEY or CMC_API_KEY_FILE)"
        headers["X-CMC_PRO_API_KEY"] = key
    if provider == "coingecko" and env.get("COINGECKO_API_KEY"):
        headers["x-cg-demo-api-key"] = env["COINGECKO_API_KEY"]
    try:
        response = requests.get(url, headers=headers, timeout=(timeout, timeout))
    except requests.ConnectionError:
        return f"cannot connect to {base_url(provider, env)} (no network, DNS failure or refused)"
    except requests.Timeout:
        return f"{base_url(provider, env)} did not answer within {timeout:.0f}s"
    except requests.RequestException as exc:
        return f"request to {base_url(provider, env)} failed ({type(exc).__name__})"
    if provider == "coinmarketcap":
        # CMC states its verdict in status.error_code, on errors and sometimes with HTTP 200.
        try:
            status = response.json().get("status") or {}
        except (ValueError, AttributeError):
            status = {}
        code = status.get("error_code")
        if code not in (0, None, "0"):
            return f"CoinMarketCap error {code}: {str(status.get('error_message'))[:120]}"
    if response.status_code in (401, 403):
        return f"{DISPLAY_NAMES[provider]} refused the request (HTTP {response.status_code}: API key?)"
    if response.status_code == 429:
        return None  # reachable, only rate limited: the scraper honours Retry-After
    if response.status_code >= 400:
        return f"{DISPLAY_NAMES[provider]} answered HTTP {response.status_code}"
    return None
