"""The tier rules themselves: a fast test that starts a process fails, saying so; `slow` ones may."""

from __future__ import annotations

import re

import pytest
from conftest import REPO_ROOT

pytest_plugins = ["pytester"]

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
markers =
    slow: starts real processes
    browser: Chromium
    containers: podman
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    pytester.makeconftest('pytest_plugins = ["support.tiers"]')
    return pytester


def test_a_fast_test_that_starts_a_process_fails_and_names_the_command(suite: pytest.Pytester) -> None:
    """Through a helper of another module, which the marking cannot see: the guard still does."""
    suite.makepyfile(
        tools="""
        import subprocess

        def run_it(*argv):
            return subprocess.run(list(argv))
        """,
        test_sneaky="""
        from tools import run_it

        def test_runs_true():
            assert run_it("true").returncode == 0

        def test_swallows_the_refusal():
            try:
                run_it("echo", "hidden")
            except Exception:
                pass
        """,
    )
    result = suite.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*test_runs_true starts a process but is not marked slow: true*"])
    result.stdout.fnmatch_lines(["*test_swallows_the_refusal started a real process*echo hidden*"])


def test_tests_using_a_process_directly_through_helpers_or_fixtures_are_slow(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_marked="""
        import subprocess

        import pytest

        def helm(*args):
            return subprocess.run(["helm", *args])

        def render():
            return helm("template")

        @pytest.fixture
        def rendered():
            return render()

        def test_pure():
            "Mentions subprocess only in a string: still fast."

        def test_calls_the_helper_of_a_helper():
            render()

        def test_uses_the_fixture(rendered):
            pass

        @pytest.mark.browser
        def test_in_chromium():
            pass

        @pytest.mark.containers
        def test_in_podman():
            pass

        @pytest.mark.slow
        def test_marked_by_hand():
            pass
        """
    )
    fast = suite.runpytest_inprocess("-p", "no:cacheprovider", "-m", "not slow", "--collect-only", "-q")
    fast.stdout.fnmatch_lines(["test_marked.py::test_pure", "*1/6 tests collected (5 deselected)*"])


def test_the_readme_names_the_fast_tier_and_ci_runs_both() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert '`.venv/bin/pytest -m "not slow"`' in readme and "`./scripts/test.sh`" in readme
    assert "scripts/test.sh" in (REPO_ROOT / ".ci" / "run").read_text()
    script = (REPO_ROOT / "scripts" / "test.sh").read_text().splitlines()
    pytest_line = next(line for line in script if "bin/pytest" in line and not line.startswith("#"))
    assert not re.search(r"\s-m\b", pytest_line), f"CI must run every tier: {pytest_line}"
