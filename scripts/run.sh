#!/usr/bin/env bash
# Set up (idempotently) and run the whole pipeline on this machine: `cryptoviz dev ARGS`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-apt
exec .venv/bin/cryptoviz dev "$@"
