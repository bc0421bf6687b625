"""The Dockerfile, checked without a Docker daemon: hadolint with no warnings, the base pinned by digest
and replaceable, each component target's shape (its own venv from its lock, non-root UID the chart
uses, no build tools, entrypoint, ports, OCI labels), and the build context that .dockerignore leaves
is enough to build the whole project. tests/test_containers.py builds and runs the images for real."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
HADOLINT = REPO / ".venv" / "bin" / "hadolint"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            current = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
            result[current] = [(keyword, rest)]
        elif current is not None:
            result[current].append((keyword, rest))
    return result


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_reports_nothing_and_ignores_nothing() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr
    config = yaml.safe_load((REPO / ".hadolint.yaml").read_text())
    assert config["ignored"] == [] and config["failure-threshold"] == "info"


def test_hadolint_config_enforces_pins_and_oci_labels(tmp_path: Path) -> None:
    """The same linter and config do fail a Dockerfile that drifts (so the clean result above means something)."""
    bad = DOCKERFILE.read_text().replace('org.opencontainers.image.title="cryptoviz" \\\n', "")
    bad = bad.replace("FROM ${PYTHON_IMAGE} AS runtime", "FROM python AS runtime")
    (tmp_path / "Dockerfile").write_text(bad)
    report = hadolint(tmp_path / "Dockerfile").stdout
    assert "DL3049" in report  # the OCI title label is missing
    assert "DL3006" in report  # untagged base image


TARGETS = {"scraper": set(), "ingester": {8000}, "dashboard": {5006, 9464}, "operator": {8080}}


def test_base_is_the_official_python_image_pinned_by_digest_and_replaceable() -> None:
    """One ARG names the base of every stage (tests pass a local Debian 12 one); its default is pinned."""
    text = DOCKERFILE.read_text()
    default = re.search(r"(?m)^ARG PYTHON_IMAGE=(\S+)$", text).group(1)
    assert re.fullmatch(r"docker\.io/library/python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", default), default
    bases = {rest.split()[0] for keyword, rest in instructions(text) if keyword == "FROM"}
    assert bases == {"${PYTHON_IMAGE}", "runtime"}, bases  # build and runtime share the interpreter's paths


def test_each_component_target_is_slim_non_root_and_carries_only_its_venv() -> None:
    text = DOCKERFILE.read_text()
    by_stage = stages(text)
    assert list(by_stage) == ["tools", "wheel", "runtime", *TARGETS]
    assert "--require-hashes -r /locks/build.txt" in dict(by_stage["tools"])["RUN"]
    assert not re.search(r"\b(gcc|g\+\+|build-essential|apt-get)\b", text)

    runtime = by_stage["runtime"]
    assert "RUN" not in [k for k, _ in runtime]
    labels = dict(re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]+)"', dict(runtime)["LABEL"]))
    assert {"title", "version", "revision", "created", "source", "licenses"} <= {k.rsplit(".", 1)[1] for k in labels}
    assert "HOME=/tmp" in dict(runtime)["ENV"]  # HOME on the chart's /tmp emptyDir
    assert dict(runtime)["ENTRYPOINT"] == '["cryptoviz"]'
    values = yaml.safe_load((REPO / "charts" / "cryptoviz" / "values.yaml").read_text())["securityContext"]
    for target, ports in TARGETS.items():
        stage = by_stage[target]
        venv = f"/opt/venvs/{target}"
        # Its own lock, hash-checked; the installer is only mounted (never copied) from the tools stage.
        assert ("COPY", f"locks/{target}.txt {venv}.lock") in stage
        deps, app = (rest for keyword, rest in stage if keyword == "RUN")
        assert f"--require-hashes --compile-bytecode -r {venv}.lock" in deps
        assert all("--mount=type=bind,from=tools,source=/opt/tools,target=/opt/tools" in r for r in (deps, app))
        assert not [rest for keyword, rest in stage if keyword == "COPY" and "--from=tools" in rest]
        assert ("COPY", f"--from=wheel /dist/ {venv}.dist/") in stage and "--no-deps" in app
        assert dict(stage)["LABEL"] == f'org.opencontainers.image.title="cryptoviz-{target}"'
        assert dict(stage)["ENV"] == f"PATH={venv}/bin:$PATH"
        # The last instruction that sets the user leaves the non-root UID/GID the chart runs as.
        user = [rest for keyword, rest in stage if keyword == "USER"][-1]
        uid, gid = (int(x) for x in user.split(":"))
        assert uid >= 10000 and (uid, gid) == (values["runAsUser"], values["runAsGroup"])
        assert {int(p) for p in dict(stage).get("EXPOSE", "").split()} == ports
    assert dict(by_stage["operator"])["ENTRYPOINT"] == '["kopf"]'


def _matches(pattern: str, rel: str) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent directories; `**/` matches any depth."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    if pattern.startswith("**/"):
        pattern = pattern[3:]
        candidates = ["/".join(parts[j:i]) for i in range(1, len(parts) + 1) for j in range(i)]
    return any(fnmatch.fnmatchcase(c, pattern) for c in candidates)


def docker_context(root: Path) -> list[Path]:
    """Files Docker sends as build context: .dockerignore rules in order, the last match wins, `!` re-includes."""
    rules = []
    for line in (root / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").rstrip("/")))

    def excluded(rel: str) -> bool:
        verdict = False
        for include, pattern in rules:
            if _matches(pattern, rel):
                verdict = not include
        return verdict

    def may_reinclude(rel: str) -> bool:
        return any(include and (pattern + "/").startswith(rel + "/") for include, pattern in rules)

    kept = []
    for directory, dirs, files in os.walk(root):
        base = Path(directory).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = [d for d in dirs if not excluded(prefix + d) or may_reinclude(prefix + d)]
        kept += [Path(directory) / f for f in files if not excluded(prefix + f)]
    return kept


def test_build_context_builds_the_project_with_cli_and_operator(tmp_path: Path) -> None:
    context = docker_context(REPO)
    names = {p.relative_to(REPO).as_posix() for p in context}
    assert {
        "pyproject.toml",
        "README.md",
        "services/cryptoviz/cli.py",
        "operator/cryptoviz_operator/__init__.py",
        *(f"locks/{t}.txt" for t in [*TARGETS, "build"]),
    } <= names
    assert not [n for n in names if n.split("/")[0] in {".venv", ".git", ".cache", "tests", "bench", "charts"}]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".duckdb")]
    # What the Dockerfile COPYs, taken from that context, builds a wheel holding the CLI and the operator
    # (with build isolation, as `pip install .` in the image does).
    copy = tmp_path / "context"
    for path in context:
        target = copy / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(copy),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    wheel = zipfile.ZipFile(next((tmp_path / "dist").glob("cryptoviz-*.whl")))
    members = set(wheel.namelist())
    assert {"cryptoviz/cli.py", "cryptoviz_operator/__init__.py"} <= members
    entry_points = next(n for n in members if n.endswith("entry_points.txt"))
    assert "cryptoviz = cryptoviz.cli:main" in wheel.read(entry_points).decode()
