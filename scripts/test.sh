#!/usr/bin/env bash
# Set up (idempotently) and run the whole test suite: lint, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.cache/bin:$PATH"
.venv/bin/ruff check .
.venv/bin/mypy  # strict on core/ and the operator ([tool.mypy] in pyproject.toml)
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
