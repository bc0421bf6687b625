"""Every benchmark stays runnable: its imports (several reach into tests/) and its options parse.
The benchmarks themselves are run by hand (figures, not assertions); this catches a refactor that
breaks one of them, as moving the browser settings out of test_dashboard_browser.py once did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script", sorted(BENCH.glob("bench_*.py")), ids=lambda path: path.stem)
def test_bench_script_starts(script: Path) -> None:
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:")
