"""The digest of everything the lock files are compiled from, and the check that they are current.

`python scripts/lock_inputs.py` prints the digest that `scripts/lock.sh` writes into every lock;
`--check` exits 1 naming each lock compiled from other inputs (pyproject.toml's dependencies,
extras, requires-python or build requirements, or a locks/*.in file changed since).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "locks"
HEADER = "# inputs-sha256: "


def inputs_digest(root: Path = ROOT) -> str:
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    project = pyproject["project"]
    inputs = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "build-system": pyproject.get("build-system", {}).get("requires", []),
        "in": {p.name: p.read_text(encoding="utf-8") for p in sorted((root / "locks").glob("*.in"))},
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def stale_locks(root: Path = ROOT) -> list[str]:
    digest = inputs_digest(root)
    stale = []
    for lock in sorted((root / "locks").glob("*.txt")):
        first = lock.read_text(encoding="utf-8").partition("\n")[0]
        if first != HEADER + digest:
            stale.append(lock.name)
    return stale


def main() -> int:
    if sys.argv[1:] == ["--check"]:
        stale = stale_locks()
        if stale:
            print(f"stale lock files (run scripts/lock.sh): {', '.join(stale)}", file=sys.stderr)
            return 1
        return 0
    print(inputs_digest())
    return 0


if __name__ == "__main__":
    sys.exit(main())
