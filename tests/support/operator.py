"""Conditions on a running operator seen through kmock, for tests that wait for its refresh rounds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


def configmap_reads(requests: Iterable[Any]) -> int:
    """GETs of ConfigMaps: every status refresh round re-reads the scraper's ConfigMap (self-healing)."""
    return sum(1 for r in requests if r.method.name == "GET" and "/configmaps" in r.url.path)


async def refresh_rounds(requests: Iterable[Any], rounds: int = 3, timeout: float = 30.0) -> None:
    """Return once the operator has read the ConfigMap `rounds` more times: that many refreshes ran.

    Instead of sleeping "long enough for several rounds": under load a round may take longer."""
    loop = asyncio.get_running_loop()
    target, deadline = configmap_reads(requests) + rounds, loop.time() + timeout
    while configmap_reads(requests) < target:
        if loop.time() > deadline:
            raise AssertionError(f"{rounds} status refresh rounds did not run within {timeout:g}s")
        await asyncio.sleep(0.1)
