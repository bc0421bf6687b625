"""Benchmark: the operator's startup with N TrackedCryptos (kopf resumes every object at once).

Each resume asks for a reconcile of *all* objects. The operator coalesces queued requests (one
render covers every request made before it started); the baseline, measured in the same run,
renders and syncs once per resume. Both talk to a real HTTP Kubernetes emulator (kmock) and
write every status once. Also prints the pure render time for 5,000 objects.

    .venv/bin/python bench/bench_operator.py [--objects 300]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import kmock
import kubernetes
from cryptoviz_operator.ingester import IngesterClient
from cryptoviz_operator.kube import KubeApi
from cryptoviz_operator.reconcile import Operator
from cryptoviz_operator.render import render
from cryptoviz_operator.settings import Settings

NS = "bench"


def tracked(count: int) -> list[dict]:
    return [
        {
            "apiVersion": "cryptoviz.io/v1alpha1",
            "kind": "TrackedCrypto",
            "metadata": {
                "name": f"coin-{i}",
                "namespace": NS,
                "uid": f"uid-{i}",
                "generation": 1,
                "creationTimestamp": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
            },
            "spec": {"symbol": f"C{i}", "ids": {"coingecko": f"coin-{i}"}, "interval": f"{1 + i % 30}m"},
        }
        for i in range(count)
    ]


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
    parser.add_argument("--objects", type=int, default=300)
    args = parser.parse_args()

    objects = tracked(5000)
    started = time.perf_counter()
    result = render(objects)
    print(f"render 5000 objects: {time.perf_counter() - started:.3f} s ({len(result.text)} bytes of config)")

    baseline = asyncio.run(startup(args.objects, coalesced=False))
    ours = asyncio.run(startup(args.objects, coalesced=True))
    print(f"startup with {args.objects} objects, one reconcile per resume (baseline): {baseline:.2f} s")
    print(f"startup with {args.objects} objects, coalesced reconciles (operator):    {ours:.2f} s")
    print(f"ratio baseline/operator: {baseline / ours:.1f}x")


if __name__ == "__main__":
    main()
