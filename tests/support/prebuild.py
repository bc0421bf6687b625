"""The container tier's images, built while the rest of the suite runs.

Building the base and the images takes minutes, mostly waiting on downloads and unpacking: when the
session selects container tests, they are moved to the end and the build starts in a background
thread (at a lower CPU priority) as soon as collection is done; the `built` fixture then only waits
for it. Without container tests nothing is built.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

THREAD_NAME = "containers-prebuild"
NICENESS = 10
_BUILD = pytest.StashKey[Future]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Container tests last (stable order otherwise), so the build overlaps everything else."""
    items.sort(key=lambda item: item.get_closest_marker("containers") is not None)


def pytest_collection_finish(session: pytest.Session) -> None:
    if not session.config.option.collectonly and any(i.get_closest_marker("containers") for i in session.items):
        start(session.config)


def start(config: pytest.Config) -> Future:
    """The session's one background build (started on the first call): its result is the Images,
    or why podman cannot run here."""
    if _BUILD in config.stash:
        return config.stash[_BUILD]
    future: Future = Future()
    config.stash[_BUILD] = future

    def build() -> None:
        from support.containers import Podman, build_images

        podman = Podman(niceness=NICENESS)
        try:
            reason = podman.unavailable()
            future.set_result(reason if reason else build_images(podman))
        except BaseException as exc:  # handed to the tests that need the images
            future.set_exception(exc)

    threading.Thread(target=build, name=THREAD_NAME, daemon=True).start()
    return future
