"""No fixed sleep over 0.2 s in the tests but deliberate pacing, each listed with why (support/wait.py)."""

from __future__ import annotations

import ast
from pathlib import Path

from support.wait import MAX_FIXED_SLEEP, PACED

TESTS = Path(__file__).resolve().parent


def _sleeps(tree: ast.Module) -> list[ast.Call]:
    """Every `sleep(...)` whose time is not a literal of at most MAX_FIXED_SLEEP."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        seconds = node.args[0]
        short = isinstance(seconds, ast.Constant) and isinstance(seconds.value, int | float)
        if name == "sleep" and not (short and seconds.value <= MAX_FIXED_SLEEP):
            found.append(node)
    return found


def test_every_longer_sleep_is_listed_pacing_and_every_listed_one_exists() -> None:
    found = {
        (path.relative_to(TESTS).as_posix(), ast.unparse(call)): call.lineno
        for path in sorted(TESTS.rglob("*.py"))
        for call in _sleeps(ast.parse(path.read_text()))
    }
    unlisted = {key: where for key, where in found.items() if key not in PACED}
    assert not unlisted, f"sleeps that should wait for a condition (support/wait.py: wait_for): {unlisted}"
    assert set(PACED) <= set(found), f"listed but gone: {set(PACED) - set(found)}"
