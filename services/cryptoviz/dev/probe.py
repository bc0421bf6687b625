"""Can the live provider be used right now? One cheap request, answered in a few seconds.

`cryptoviz dev` asks before it starts the scraper, so a laptop without network (or with a
bad key) gets a plain sentence and the demo simulator instead of an empty dashboard. The base
URL, key and default provider come from the same settings as `cryptoviz scrape` reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import requests
from pydantic import ValidationError

from cryptoviz.core.config import ConfigError
from cryptoviz.core.settings import env_name, env_names, from_env
from cryptoviz.scraper.http import ProviderError
from cryptoviz.scraper.providers import spec
from cryptoviz.scraper.run import adapter_for
from cryptoviz.scraper.settings import ProviderSettings, ScraperSettings


def settings_from_env(env: Mapping[str, str] | None = None) -> ScraperSettings:
    """The scraper's provider settings from `env` (default os.environ); the others keep their defaults,
    so a bad value of an unrelated setting is left for the scraper itself to report."""
    names = set(env_names(ProviderSettings))
    given = os.environ if env is None else env
    return from_env(ScraperSettings, {k: v for k, v in given.items() if k.upper() in names})


def default_provider(env: dict[str, str]) -> str:
    """The contract's default: CoinMarketCap when a key is configured, else keyless CoinGecko."""
    return settings_from_env({k: v for k, v in env.items() if k != "SCRAPE_PROVIDER"}).default_provider()


def display_name(provider: str) -> str:
    return spec(provider).display_name


def probe(provider: str, env: dict[str, str] | None = None, timeout: float = 5.0) -> str | None:
    """None when `provider` answers usefully; else a one-line reason (never containing a key)."""
    unit = spec(provider)
    try:
        settings = settings_from_env(env)
        base_url = settings.base_url(provider)
        adapter = adapter_for(provider, settings, requests.Session())
    except ConfigError as exc:
        return str(exc)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else ""
        field = ScraperSettings.model_fields.get(name)
        return f"invalid {env_name(name, field) if field else 'scraper setting'}: {error['msg']}"
    headers = adapter.http.headers
    try:
        response = requests.get(base_url + unit.ping_path, headers=headers, timeout=(timeout, timeout))
    except requests.ConnectionError:
        return f"cannot connect to {base_url} (no network, DNS failure or refused)"
    except requests.Timeout:
        return f"{base_url} did not answer within {timeout:.0f}s"
    except requests.RequestException as exc:
        return f"request to {base_url} failed ({type(exc).__name__})"
    finally:
        adapter.http.session.close()
    try:
        adapter.check(response, response.json())  # errors stated in the body, also with HTTP 200 (CMC)
    except ValueError:
        pass
    except ProviderError as exc:
        if exc.retryable or response.status_code == 429:
            return None  # reachable, only rate limited: the scraper honours Retry-After
        return f"{unit.display_name} error: {exc.message}"
    if response.status_code in (401, 403):
        return f"{unit.display_name} refused the request (HTTP {response.status_code}: API key?)"
    if response.status_code == 429:
        return None  # reachable, only rate limited: the scraper honours Retry-After
    if response.status_code >= 400:
        return f"{unit.display_name} answered HTTP {response.status_code}"
    return None
