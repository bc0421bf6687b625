"""pip-audit over the lock files: exit 1 on any known vulnerability that locks/audit-ignore.cfg does
not list with its reason.

Usage: .venv/bin/python scripts/audit.py [pip-audit options, e.g. -s osv --osv-url URL]
Every runtime lock is a subset of locks/dev.txt (tests/test_lock.py checks it), so auditing dev.txt
and checkov.txt covers them all. When no vulnerability service answers for any package (no network,
or an index without PyPI's per-version JSON API) the audit says so plainly, with pip-audit's reason:
nothing was audited. That is fatal only with AUDIT_REQUIRED=1 (for a CI that has the network).
pip-audit's default service is PyPI's `https://pypi.org/pypi/<name>/<version>/json` (`vulnerabilities`);
`-s osv` asks api.osv.dev instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AUDITED_LOCKS = ("dev.txt", "checkov.txt")
IGNORE_FILE = ROOT / "locks" / "audit-ignore.cfg"


def ignored_ids(path: Path = IGNORE_FILE) -> dict[str, str]:
    """`ID  reason…` per line; `#` comments. An ignore without a reason is refused."""
    ignores: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        vuln_id, _, reason = line.partition(" ")
        if not reason.strip():
            raise SystemExit(f"{path.name}:{number}: {vuln_id} is ignored without a reason")
        ignores[vuln_id] = reason.strip()
    return ignores


def audit(lock: Path, ignores: dict[str, str], extra: list[str]) -> tuple[int, list[str], list[str]]:
    """(audited, why each skipped one was not, findings) of one lock."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [str(Path(sys.executable).with_name("pip-audit")), "--disable-pip", "--require-hashes"]
        command += ["-r", str(lock), "--format", "json", "--output", str(report), "--progress-spinner", "off"]
        for vuln_id in ignores:
            command += ["--ignore-vuln", vuln_id]
        result = subprocess.run([*command, *extra], capture_output=True, text=True, check=False)
        if not report.exists():
            raise SystemExit(f"pip-audit failed on {lock.name}:\n{result.stderr}")
        dependencies = json.loads(report.read_text())["dependencies"]
    findings = [
        f"{dep['name']} {dep['version']}: {vuln['id']} (fixed in {', '.join(vuln['fix_versions']) or 'no release'})"
        for dep in dependencies
        for vuln in dep.get("vulns", [])
    ]
    skipped = [dep["skip_reason"] for dep in dependencies if "skip_reason" in dep]
    return len(dependencies) - len(skipped), skipped, findings


def main(argv: list[str]) -> int:
    ignores = ignored_ids()
    total_audited, findings, reasons = 0, [], []
    for name in AUDITED_LOCKS:
        audited, skipped, found = audit(ROOT / "locks" / name, ignores, argv)
        total_audited += audited
        findings += found
        reasons += skipped
        print(f"audit: locks/{name}: {audited} packages audited, {len(skipped)} not auditable, {len(found)} vulnerable")
    for vuln_id, reason in ignores.items():
        print(f"audit: ignoring {vuln_id}: {reason}")
    for finding in findings:
        print(f"audit: VULNERABLE {finding}")
    if findings:
        return 1
    if total_audited == 0:
        why = f" (pip-audit: {reasons[0]})" if reasons else ""
        print(f"audit: NOTHING WAS AUDITED: no vulnerability service answered for any package{why}", file=sys.stderr)
        return 1 if os.environ.get("AUDIT_REQUIRED") == "1" else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
