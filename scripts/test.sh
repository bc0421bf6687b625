#!/usr/bin/env bash
# Set up (idempotently) and run the whole test suite: lint, type check, the dependency audit, then
# pytest, both tiers (the container tier included and run last, its images built in the background
# meanwhile; `-m "not containers"` leaves it out, `-m "not slow"` is the fast tier). Extra arguments go
# to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.cache/bin:$PATH"
.venv/bin/ruff check .
.venv/bin/mypy  # strict on core/ and the operator ([tool.mypy] in pyproject.toml)
.venv/bin/python scripts/lock_inputs.py --check
.venv/bin/python scripts/audit.py
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
