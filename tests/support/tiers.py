"""The two test tiers and the guard that keeps them honest.

`slow` is every test that starts a real process (nats-server, `cryptoviz` services, Chromium, helm,
podman, a CLI); `pytest -m "not slow"` is the rest: pure logic, contracts, renders, config, parsing,
DuckDB and HTTP servers in-process. Tests are marked here, not in their files (so concurrent edits of
test files never touch markers): a test is slow when its body, one of its fixtures or a helper of its
module uses one of STARTERS, or its module is in SLOW_MODULES. A test not marked slow that starts a
process anyway (through a helper this cannot see) is refused the process and fails, naming the command.
"""

from __future__ import annotations

import functools
import inspect
import io
import os
import subprocess
import sysconfig
import textwrap
import threading
import tokenize
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from support import prebuild

STARTERS = frozenset(
    {
        "subprocess",
        "create_subprocess_exec",
        "EmbeddedNats",  # nats-server
        "Ingester",  # cryptoviz ingest (tests/test_ingest_harness.py)
        "DevRun",  # cryptoviz dev (tests/support/dev.py)
        "dev_running",
        "DashboardProcess",  # cryptoviz dashboard (tests/dashboard_pages.py)
        "Pipeline",
        "NotifyProcess",  # cryptoviz notify (tests/support/notify.py)
        "sync_playwright",  # Chromium
        "CRYPTOVIZ",  # the cryptoviz console script
        "helm_template",  # helm (tests/test_chart.py)
        "chart_cronjob",
    }
)
"""Names whose use in a test, its fixtures or a helper of its module means a real process is started."""

SLOW_MARKERS = frozenset({"browser", "containers"})
"""Markers that imply `slow`: Chromium, podman."""

SLOW_MODULES: frozenset[str] = frozenset()
"""Modules whose tests start processes in a way the names above cannot show (none so far)."""

LIBRARIES = Path(sysconfig.get_paths()["purelib"])
TESTS = Path(__file__).resolve().parents[1]
_STARTED = pytest.StashKey[list[str]]()


def names_in(obj: object) -> frozenset[str]:
    """The identifiers a function or class uses (not its strings or comments)."""
    try:
        source = textwrap.dedent(inspect.getsource(obj))  # type: ignore[arg-type]
    except (OSError, TypeError):
        return frozenset()
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return frozenset(t.string for t in tokens if t.type == tokenize.NAME)


@functools.cache
def module_starters(module: ModuleType) -> frozenset[str]:
    """STARTERS plus the module's own functions and classes that use one, transitively, and those it
    imports from another test module (tests/, tests/support/) that are starters there."""
    local, starters = {}, set(STARTERS)
    for name, obj in vars(module).items():
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        home = inspect.getmodule(obj)
        if home is module:
            local[name] = names_in(obj)
        elif home is not None and _is_test_module(home) and obj.__name__ in module_starters(home):
            starters.add(name)
    while grown := {name for name, used in local.items() if name not in starters and used & starters}:
        starters |= grown
    return frozenset(starters)


def _is_test_module(module: ModuleType) -> bool:
    return Path(getattr(module, "__file__", None) or "/").resolve().is_relative_to(TESTS)


def starts_process(function: object, module: ModuleType | None) -> bool:
    starters = module_starters(module) if module is not None else STARTERS
    return bool(names_in(function) & starters)


def is_slow(item: pytest.Item) -> bool:
    if {mark.name for mark in item.iter_markers()} & (SLOW_MARKERS | {"slow"}):
        return True
    module = getattr(item, "module", None)
    if module is not None and module.__name__ in SLOW_MODULES:
        return True
    if starts_process(getattr(item, "function", None), module):
        return True
    fixtures = getattr(item, "_fixtureinfo", None)
    ours = [d[-1].func for d in (fixtures.name2fixturedefs.values() if fixtures else ()) if d]
    ours = [f for f in ours if not Path(inspect.getfile(f)).is_relative_to(LIBRARIES)]  # not pytest's, kmock's
    return any(starts_process(f, inspect.getmodule(f)) for f in ours)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if is_slow(item):
            item.add_marker(pytest.mark.slow)


def _describe(args: Any) -> str:
    if isinstance(args, (str, bytes, os.PathLike)):
        return os.fsdecode(args)
    return " ".join(os.fsdecode(a) for a in args)


class RealProcessInFastTest(RuntimeError):
    """Raised instead of starting a process in a test not marked slow."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Around setup, call and teardown of a fast test: refuse to start any process, and remember it."""
    if item.get_closest_marker("slow"):
        return (yield)
    started = item.stash.setdefault(_STARTED, [])
    original = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    def refuse(self: subprocess.Popen, args: Any, *rest: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == prebuild.THREAD_NAME:  # the session's image build, not this test
            return original(self, args, *rest, **kwargs)
        started.append(_describe(args))
        raise RealProcessInFastTest(f"{item.nodeid} starts a process but is not marked slow: {_describe(args)}")

    subprocess.Popen._execute_child = refuse  # type: ignore[attr-defined]
    try:
        return (yield)
    finally:
        subprocess.Popen._execute_child = original  # type: ignore[attr-defined]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """A fast test that tried to start a process fails, even if it caught the refusal."""
    report = yield
    started = item.stash.get(_STARTED, [])
    if started and report.passed:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} started a real process without being marked slow "
            f"(add its helper to STARTERS or its module to SLOW_MODULES in tests/support/tiers.py): {started[0]}"
        )
    started.clear()  # reported once, in the phase that started it
    return report
