"""The operator at scale: thousands of TrackedCryptos are rendered in a worker thread (kopf's event loop,
which also answers the liveness probe, keeps running) and only when they changed; the config's YAML is
written by libyaml in chunks, with the bytes of one whole document."""

from __future__ import annotations

import asyncio
import gc
import time

import kubernetes
from cryptoviz.core.config import ScraperConfig, TrackedCoin
from cryptoviz_operator.ingester import IngesterClient
from cryptoviz_operator.kube import KubeApi
from cryptoviz_operator.reconcile import Operator
from cryptoviz_operator.settings import Settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def many(count: int) -> list[dict]:
    return [
        {
            "metadata": {
                "namespace": "crypto",
                "name": f"c{i}",
                "creationTimestamp": f"2026-01-01T00:00:{i % 60:02d}Z",
            },
            "spec": {"symbol": f"C{i}", "ids": {"coingecko": f"coin-{i}"}, "alerts": [{"above": 1 + i}]},
        }
        for i in range(count)
    ]


COUNT = 9000  # enough for a render of well over 0.3 s (near 10,000 the ConfigMap size cap drops some)


async def test_thousands_of_trackedcryptos_are_rendered_off_the_event_loop_and_once() -> None:
    config = Settings(pod_namespace="crypto", max_tracked_cryptos=20_000)
    operator = Operator(config, KubeApi(kubernetes.client.ApiClient()), IngesterClient("http://127.0.0.1:9"))
    loop = asyncio.get_running_loop()
    stalls: list[float] = []

    async def heartbeat() -> None:
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            stalls.append(loop.time() - before - 0.01)

    objects = many(COUNT)
    # The suite's own heap (earlier tests) out of the collector's way: a full collection of it would
    # stall the loop for its own reasons; what is measured is the render's.
    gc.collect()
    gc.freeze()
    beating = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    rendering = await operator.render(objects)
    took = time.perf_counter() - started
    beating.cancel()
    gc.unfreeze()
    assert len(rendering.config.coins) == COUNT
    assert took > 0.3, "too few objects to tell"
    assert max(stalls) < took / 2, (max(stalls), took)  # on the loop, one stall would last the whole render

    # the same objects (their statuses may differ): the rendering is reused, not recomputed
    for obj in objects:
        obj["status"] = {"price": 1.0}
    started = time.perf_counter()
    assert await operator.render(objects) is rendering
    assert time.perf_counter() - started < took / 5
    objects[0]["spec"]["paused"] = True
    assert len((await operator.render(objects)).config.coins) == COUNT - 1


def test_ordinary_configs_render_to_the_same_bytes_as_before_libyaml() -> None:
    """Upgrading the operator (now on libyaml's emitter) rewrites no ConfigMap: ordinary configs have the
    bytes `yaml.safe_dump` gave them."""
    from pathlib import Path

    import yaml
    from cryptoviz.core.config import dump_config
    from cryptoviz_operator.render import render

    examples = Path(__file__).resolve().parent.parent / "examples"
    objects = many(300) + [
        {**yaml.safe_load(path.read_text()), "metadata": {"namespace": "ex", "name": path.stem}}
        for path in sorted(examples.glob("trackedcrypto-*.yaml"))
    ]
    config = render(objects).config
    assert len(config.coins) > 300
    assert dump_config(config) == yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=True)


names = st.one_of(st.none(), st.text(max_size=100))
coins = st.lists(
    st.builds(
        lambda i, name, cg, alerts: TrackedCoin(
            symbol=f"C{i}",
            name=name,
            ids={"coingecko": cg} if cg.strip() else {},
            alerts=[{"above": a} for a in alerts],
        ),
        st.integers(0, 10**6),
        names,
        st.text(min_size=1, max_size=90),
        st.lists(st.floats(min_value=0.001, max_value=1e9), max_size=2),
    ),
    max_size=7,
    unique_by=lambda coin: coin.symbol,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(coins, st.sampled_from([None, "coingecko"]), st.integers(1, 5000))
def test_the_config_dumped_in_chunks_is_the_whole_documents_bytes(
    coins: list, provider: str | None, top_n: int
) -> None:
    import yaml
    from cryptoviz.core import config as core

    config = ScraperConfig(coins=coins, provider=provider, top_n=top_n)
    whole = yaml.dump(config.model_dump(mode="json", exclude_none=True), Dumper=core._DUMPER, sort_keys=True)
    chunk = core._COINS_PER_DUMP
    core._COINS_PER_DUMP = 2
    try:
        assert core.dump_config(config) == whole
    finally:
        core._COINS_PER_DUMP = chunk
