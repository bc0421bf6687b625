"""Benchmark: build time (cold, cached, after a code change) and size of every component image.

Cold means a podman store of its own, created empty for the run (no layers, no download cache);
the base is the local Debian 12 stand-in for the official image (scripts/local-base.sh, cached by
its inputs; its own build time is printed apart). The baseline, measured in the same run, is the
cold build: the ratios say what the layer cache saves. Sizes are podman's, uncompressed.

    .venv/bin/python bench/bench_images.py [--store DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.containers import REPO, Podman, dockerfile_targets, local_base


def build_all(podman: Podman, base: str) -> dict[str, float]:
    return {
        target: podman.build(
            f"localhost/bench-{target}:latest", "--target", target, "--build-arg", f"PYTHON_IMAGE={base}"
        )
        for target in dockerfile_targets()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="podman store to use (default: a fresh temporary one)")
    args = parser.parse_args()
    store = args.store or Path(tempfile.mkdtemp(prefix="cryptoviz-bench-images-", dir=REPO / ".cache"))
    podman = Podman(store)
    reason = podman.unavailable()
    if reason:
        raise SystemExit(reason)
    try:
        started = time.monotonic()
        base = local_base(podman)
        print(f"base {base}: {time.monotonic() - started:.1f} s, {podman.size_mb(base):.0f} MB")
        cold = build_all(podman, base)
        cached = build_all(podman, base)
        marker = REPO / "services" / "cryptoviz" / "_bench_marker.py"
        marker.write_text("# a code change\n")
        try:
            changed = build_all(podman, base)
        finally:
            marker.unlink()
        print(f"{'target':<10} {'size MB':>8} {'cold s':>7} {'cached s':>9} {'code change s':>14}")
        for target in cold:
            size = podman.size_mb(f"localhost/bench-{target}:latest")
            print(f"{target:<10} {size:>8.0f} {cold[target]:>7.1f} {cached[target]:>9.1f} {changed[target]:>14.1f}")
        total = {name: sum(times.values()) for name, times in (("cold", cold), ("cached", cached), ("code", changed))}
        print(
            f"all targets: cold {total['cold']:.1f} s, cached {total['cached']:.1f} s "
            f"({total['cached'] / total['cold']:.2f} of cold), after a code change {total['code']:.1f} s "
            f"({total['code'] / total['cold']:.2f} of cold)"
        )
    finally:
        if args.store is None:
            podman.remove_store()


if __name__ == "__main__":
    main()
