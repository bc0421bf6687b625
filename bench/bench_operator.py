"""Benchmark: the operator with many TrackedCryptos.

1. Rendering 10,000 objects (`render`): with libyaml's emitter (the operator) against the pure-Python
   one (the baseline, what it used before), measured in the same run, interleaved.
2. What kopf's event loop notices of that render: its longest stall while the operator renders in a
   worker thread (`Operator.render`) against rendering on the loop (the baseline).
3. 10,000 rich objects (ids for five providers, three alerts) exceed a ConfigMap's 1 MiB: how many
   coins fit, and the time that takes.
4. Startup with N objects (kopf resumes every object at once, each asking for a reconcile of *all*
   objects): coalesced reconciles (one render covers every request made before it started) against one
   reconcile per resume, both against a real HTTP Kubernetes emulator (kmock), every status written once.

    .venv/bin/python bench/bench_operator.py [--objects 300] [--render 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import kmock
import kubernetes
import yaml
from cryptoviz.core import config as core_config
from cryptoviz_operator.ingester import IngesterClient
from cryptoviz_operator.kube import KubeApi
from cryptoviz_operator.reconcile import Operator
from cryptoviz_operator.render import render
from cryptoviz_operator.settings import Settings
from cryptoviz_operator.tenancy import Limits

NS = "bench"
IDS = ("coinmarketcap", "coingecko", "binance", "kraken", "coinbase")


def tracked(count: int, rich: bool = False) -> list[dict]:
    objects = []
    for i in range(count):
        spec = {"symbol": f"C{i}", "ids": {"coingecko": f"coin-{i}"}, "interval": f"{1 + i % 30}m"}
        if rich:
            spec["ids"] = {p: str(i + 1) if p == "coinmarketcap" else f"{p}-coin-{i}" for p in IDS}
            spec["alerts"] = [{"above": 1000 + i}, {"below": 1 + i}, {"changeAbove": {"percent": 5, "window": "1h"}}]
        objects.append(
            {
                "apiVersion": "cryptoviz.io/v1alpha1",
                "kind": "TrackedCrypto",
                "metadata": {
                    "name": f"coin-{i}",
                    "namespace": NS,
                    "uid": f"uid-{i}",
                    "generation": 1,
                    "creationTimestamp": f"2026-01-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
                },
                "spec": spec,
            }
        )
    return objects


@contextlib.contextmanager
def python_emitter() -> Iterator[None]:
    """The baseline: dump_config with PyYAML's pure-Python emitter."""
    dumper = core_config._DUMPER
    core_config._DUMPER = yaml.SafeDumper
    try:
        yield
    finally:
        core_config._DUMPER = dumper


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


async def longest_stall(work: Callable[[], object]) -> tuple[float, float]:
    """(seconds `work` took, the event loop's longest stall meanwhile)."""
    loop = asyncio.get_running_loop()
    stalls = [0.0]

    async def heartbeat() -> None:
        while True:
            before = loop.time()
            await asyncio.sleep(0.005)
            stalls.append(loop.time() - before - 0.005)

    beating = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.02)
    started = time.perf_counter()
    result = work()
    if asyncio.iscoroutine(result):
        await result
    took = time.perf_counter() - started
    await asyncio.sleep(0.02)  # the heartbeat notes a stall only once it runs again
    beating.cancel()
    return took, max(stalls)


async def stalls(objects: list[dict]) -> tuple[tuple[float, float], tuple[float, float]]:
    settings = Settings(pod_namespace=NS, max_tracked_cryptos=len(objects))
    operator = Operator(settings, KubeApi(kubernetes.client.ApiClient()), IngesterClient("http://127.0.0.1:9"))
    on_loop = await longest_stall(lambda: render(objects, settings.limits))
    operator.rendered = None
    in_thread = await longest_stall(lambda: operator.render(objects))
    return on_loop, in_thread


async def startup(count: int, coalesced: bool) -> float:
    async with kmock.KubernetesEmulator() as server, kmock.Server(server):
        objects = tracked(count)
        for obj in objects:
            server.objects["cryptoviz.io/v1alpha1/trackedcryptos", NS, obj["metadata"]["name"]] = obj
        config = kubernetes.client.Configuration()
        config.host = str(server.url).rstrip("/")
        settings = Settings(pod_namespace=NS, ingester_url="http://127.0.0.1:9")
        operator = Operator(
            settings, KubeApi(kubernetes.client.ApiClient(config)), IngesterClient("http://127.0.0.1:9")
        )
        started = time.perf_counter()
        if coalesced:
            await asyncio.gather(*(operator.reconcile(lambda: objects) for _ in range(count)))
        else:
            for _ in range(count):
                async with operator.lock:
                    await operator._reconcile(operator._with_written_status(objects), verify=False)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=300, help="objects at startup (4.)")
    parser.add_argument("--render", type=int, default=10_000, help="objects rendered (1.-3.)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of 1. and 2. (medians)")
    args = parser.parse_args()

    objects = tracked(args.render)
    fast, slow, loop_stalls, thread_stalls, took_loop, took_thread = [], [], [], [], [], []
    for _ in range(args.rounds):  # interleaved: a busy moment of a shared machine hits both sides
        with python_emitter():
            slow.append(timed(lambda: render(objects)))
        fast.append(timed(lambda: render(objects)))
        (on_loop, on_loop_stall), (in_thread, in_thread_stall) = asyncio.run(stalls(objects))
        took_loop.append(on_loop)
        loop_stalls.append(on_loop_stall)
        took_thread.append(in_thread)
        thread_stalls.append(in_thread_stall)
    size = len(render(objects).text.encode())
    ours, base = statistics.median(fast), statistics.median(slow)
    print(f"render {args.render} objects ({size} bytes of config), median of {args.rounds}:")
    print(f"  pure-Python YAML emitter (baseline): {base:.2f} s")
    print(f"  libyaml emitter (operator):          {ours:.2f} s   ratio {base / ours:.1f}x")
    stall_loop, stall_thread = statistics.median(loop_stalls), statistics.median(thread_stalls)
    print("event loop's longest stall while rendering them:")
    print(f"  render on the loop (baseline):    {stall_loop:.3f} s (render {statistics.median(took_loop):.2f} s)")
    print(
        f"  render in a thread (operator):    {stall_thread:.3f} s (render {statistics.median(took_thread):.2f} s)"
        f"   ratio {stall_loop / max(stall_thread, 1e-3):.0f}x"
    )

    rich = tracked(args.render, rich=True)
    unlimited_size = len(render(rich, Limits(max_config_bytes=2**40)).text.encode())
    limits = Settings(max_tracked_cryptos=len(rich)).limits
    started = time.perf_counter()
    fitted = render(rich, limits)
    took = time.perf_counter() - started
    left_out = sum(1 for d in fitted.decisions.values() if d.reason == "ConfigTooLarge")
    print(
        f"{args.render} rich objects: {unlimited_size / 2**20:.1f} MiB of config unlimited; in a ConfigMap "
        f"{len(fitted.config.coins)} coins fit ({len(fitted.text.encode())} bytes), {left_out} ConfigTooLarge, "
        f"in {took:.2f} s"
    )

    baseline = asyncio.run(startup(args.objects, coalesced=False))
    coalesced = asyncio.run(startup(args.objects, coalesced=True))
    print(f"startup with {args.objects} objects, one reconcile per resume (baseline): {baseline:.2f} s")
    print(f"startup with {args.objects} objects, coalesced reconciles (operator):    {coalesced:.2f} s")
    print(f"ratio baseline/operator: {baseline / coalesced:.1f}x")


if __name__ == "__main__":
    main()
