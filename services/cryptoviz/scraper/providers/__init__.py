"""Provider units, loaded by name from the registry in `cryptoviz.core.providers`.

Each `<name>.py` here defines `SPEC` (a `ProviderSpec`: adapter class, base-URL variable, key header,
pacing, display name, history endpoint and limits, fake wire format). The scraper's settings and
CLI options, the probe of `cryptoviz dev`, the local market server and the docs are all built from
these specs, so adding a provider is a module here plus its name in the registry.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module

from cryptoviz.core.config import ConfigError
from cryptoviz.core.providers import ALL_PROVIDERS, PROVIDERS
from cryptoviz.scraper.http import HttpClient
from cryptoviz.scraper.providers.base import Provider, ProviderSpec


@cache
def specs() -> dict[str, ProviderSpec]:
    """Every provider's spec by name, in registry order."""
    out = {}
    for name in ALL_PROVIDERS:
        spec = import_module(f"{__name__}.{name}").SPEC
        if spec.name != name:
            raise RuntimeError(f"{__name__}.{name}.SPEC is named {spec.name!r}")
        out[name] = spec
    return out


def live_specs() -> list[ProviderSpec]:
    return [specs()[name] for name in PROVIDERS]


def spec(name: str) -> ProviderSpec:
    try:
        return specs()[name]
    except KeyError:
        raise ConfigError(f"unknown provider {name!r}; one of {', '.join(ALL_PROVIDERS)}") from None


def default_provider(has_key: set[str]) -> str:
    """The first live provider (registry order) usable as configured: one that needs a key only if it has one.

    That is CoinMarketCap when its key is set, else keyless CoinGecko.
    """
    return next(s.name for s in live_specs() if not (s.key and s.key.required) or s.name in has_key)


def build_provider(label: str, base_url: str, http: HttpClient) -> Provider:
    return spec(label).adapter(http, base_url, label)
