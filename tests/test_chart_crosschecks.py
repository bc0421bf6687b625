"""The chart against the code: every command a template runs exists, every env var it sets is read,
every probe path and port is served (by the real processes started with the rendered settings), and
the operator's RBAC grants exactly the API calls its code makes."""

from __future__ import annotations

import base64
import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import test_chart
from support.settings import COMPONENT_COMMANDS, ENV_ONLY_MODELS, component_env_names
from test_chart import FULLNAME, SCENARIOS, VENV_BIN, env_of, find, load, one, pod_spec, pods, run

renders = test_chart.renders  # the same session fixture: the renders are made once per run

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "services" / "cryptoviz"
# The code each component runs: the `cryptoviz` CLI (global flags) and core for the image's entrypoint,
# the operator package (and the core it imports) under `kopf run`.
COMMON = [PACKAGE / "cli.py", *(PACKAGE / "core").rglob("*.py")]
SOURCES = {
    "scraper": [*COMMON, *(PACKAGE / "scraper").rglob("*.py")],
    "backfill": [*COMMON, *(PACKAGE / "scraper").rglob("*.py")],
    "ingester": [*COMMON, *(PACKAGE / "ingester").rglob("*.py")],
    "backup": [*COMMON, *(PACKAGE / "ingester").rglob("*.py")],
    "dashboard": [*COMMON, *(PACKAGE / "dashboard").rglob("*.py")],
    "notify": [*COMMON, *(PACKAGE / "notify").rglob("*.py")],
    "operator": [*(PACKAGE / "core").rglob("*.py"), *(REPO / "operator").rglob("*.py")],
}
# Panel reads its own PANEL_* settings (OAuth key/secret) from the environment.
PANEL_CONFIG = Path(importlib.util.find_spec("panel").origin).parent / "config.py"
# Set only to be expanded by Kubernetes in the container's args (`$(NAME)`), never read by a process.
EXPANSION_ONLY = {"JOB_NAME"}
# `cryptoviz backfill` and the scraper's gap filling (INGESTER_URL) are built on another branch (issue 13,
# scraper side); until it is merged only those two checks are waived, everything else stays strict.
SCRAPER_SIDE = "BACKFILL_DAYS" in "".join(p.read_text() for p in (PACKAGE / "scraper").rglob("*.py"))
PENDING_COMMANDS = set() if SCRAPER_SIDE else {"backfill"}
PENDING_ENV = (
    set()
    if SCRAPER_SIDE
    else {("scraper", "INGESTER_URL"), ("backfill", "INGESTER_URL"), ("backfill", "BACKFILL_DAYS")}
)


def our_containers(renders: dict[str, Path]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(scenario, workload, container) for every container running the CryptoViz image."""
    for scenario in SCENARIOS:
        for doc, spec in pods(load(renders, scenario)):
            for container in spec["containers"]:
                if "/cryptoviz" in container["image"]:
                    yield scenario, doc, container


def flags(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def test_every_command_the_templates_run_exists(renders: dict[str, Path]) -> None:
    commands: dict[tuple[str, ...], set[str]] = {}
    for _, _, container in our_containers(renders):
        command, args = container.get("command", []), container.get("args", [])
        if command == ["python", "-c"]:
            compile(args[0], "helm-test", "exec")
            continue
        key = ("kopf", args[0]) if command == ["kopf"] else ("cryptoviz", args[0])
        assert command in ([], ["kopf"]), command  # the image's ENTRYPOINT is `cryptoviz`
        commands.setdefault(key, set()).update(flags(args))
    assert {k[1] for k in commands} == {"scrape", "backfill", "ingest", "dashboard", "backup", "notify", "run"}
    for (program, sub), used in sorted(commands.items()):
        if sub in PENDING_COMMANDS:
            continue
        result = run([str(VENV_BIN / program), sub, "--help"], timeout=60)
        assert result.returncode == 0, f"{program} {sub} --help: {result.stderr}"
        missing = {f for f in used if f not in result.stdout}
        assert not missing, f"{program} {sub} has no {missing}"
    # The module kopf runs.
    modules = {
        c["args"][c["args"].index("-m") + 1] for _, _, c in our_containers(renders) if c.get("command") == ["kopf"]
    }
    assert modules == {"cryptoviz_operator"}
    result = run([str(VENV_BIN / "python"), "-c", "import cryptoviz_operator"])
    assert result.returncode == 0, result.stderr


def test_every_env_var_the_templates_set_is_read_by_the_code(renders: dict[str, Path]) -> None:
    """Per component: a variable set on the operator must be read by the operator's code, and so on."""
    code = {comp: "\n".join(p.read_text(encoding="utf-8") for p in files) for comp, files in SOURCES.items()}
    code["dashboard"] += PANEL_CONFIG.read_text(encoding="utf-8")
    for comp in [*COMPONENT_COMMANDS, *ENV_ONLY_MODELS]:  # what a settings model reads is named by no literal
        code[comp] += "".join(f'"{name}"' for name in component_env_names(comp))
    unread: dict[str, set[str]] = {}
    for _, doc, container in our_containers(renders):
        comp = doc["metadata"]["labels"]["app.kubernetes.io/component"]
        argv = " ".join(container.get("command", []) + container.get("args", []))
        for name in env_of(container):
            if name in EXPANSION_ONLY:
                assert f"$({name})" in argv
            elif not re.search(rf"""["']{name}["']""", code[comp]) and (comp, name) not in PENDING_ENV:
                unread.setdefault(comp, set()).add(name)
    assert unread == {}, f"set by the chart but not read by that component's code: {unread}"


def test_operator_rbac_grants_exactly_the_calls_its_code_makes(renders: dict[str, Path]) -> None:
    """kube.py's client calls (read/create/patch_namespaced_<kind>[_status]) plus kopf's own needs."""
    resources = {"config_map": ("", "configmaps"), "cron_job": ("batch", "cronjobs"), "event": ("", "events"),
                 "custom_object": ("cryptoviz.io", "trackedcryptos"), "job": ("batch", "jobs")}  # fmt: skip
    verbs = {
        "read": "get",
        "create": "create",
        "patch": "patch",
        "replace": "update",
        "delete": "delete",
        "list": "list",
    }
    source = (REPO / "operator" / "cryptoviz_operator" / "kube.py").read_text()
    called = set()
    for verb, kind, status in re.findall(
        r"\.(read|create|patch|replace|delete|list)_namespaced_(\w+?)(_status)?\b", source
    ):
        group, resource = resources[kind]
        called.add((group, resource + ("/status" if status else ""), verbs[verb]))
    # kopf: lists and watches the handled resource, patches it (progress annotations, finalizer) and posts
    # core/v1 Events; scanning is disabled, so no namespaces or CRDs.
    handlers = (REPO / "operator" / "cryptoviz_operator" / "handlers.py").read_text()
    assert "settings.scanning.disabled = True" in handlers
    called |= {("cryptoviz.io", "trackedcryptos", v) for v in ("list", "watch", "patch")} | {("", "events", "create")}

    docs = load(renders, "defaults")
    granted = {
        (group, resource, verb)
        for role in find(docs, "Role")
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == called


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ok(url: str, process: subprocess.Popen, seconds: float = 60) -> requests.Response:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"process exited with {process.returncode} before {url} answered"
        try:
            answer = requests.get(url, timeout=2)
            if answer.status_code == 200:
                return answer
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer 200 within {seconds}s")


def probe_paths(container: dict[str, Any]) -> set[str]:
    return {
        container[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe") if p in container
    }


def named_port(container: dict[str, Any], probe: str = "livenessProbe") -> int:
    name = container[probe]["httpGet"]["port"]
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def resolved_env(container: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str]:
    """The container's env with secretKeyRefs read from the rendered Secrets (fieldRefs dropped) and
    `$(NAME)` references to earlier entries expanded, as Kubernetes does."""
    env: dict[str, str] = {}
    for name, value in env_of(container).items():
        if isinstance(value, str):
            env[name] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), value)
        elif "secretKeyRef" in value:
            ref = value["secretKeyRef"]
            data = one(docs, "Secret", ref["name"]).get("data") or {}
            if ref["key"] in data:
                env[name] = base64.b64decode(data[ref["key"]]).decode()
    return env


def nats_password_file(spec: dict[str, Any], docs: list[dict[str, Any]], tmp_path: Path) -> dict[str, str]:
    """NATS_PASSWORD_FILE pointing at a local copy of the file the pod's `nats-credentials` volume mounts."""
    (volume,) = [v for v in spec["volumes"] if v["name"] == "nats-credentials"]
    (item,) = volume["secret"]["items"]
    data = one(docs, "Secret", volume["secret"]["secretName"])["data"]
    path = tmp_path / f"nats-{item['key']}"
    path.write_bytes(base64.b64decode(data[item["key"]]))
    return {"NATS_PASSWORD_FILE": str(path)}


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(argv, env={**os.environ, **env}, stdout=log.open("w"), stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_probe_paths_and_ports_are_served_by_the_real_processes(renders: dict[str, Path], tmp_path: Path) -> None:
    """NATS (the rendered nats.conf), the ingester and the dashboard started with their rendered env and
    args (only ports, paths and peer URLs swapped for local ones) answer 200 on every probe path."""
    docs = load(renders, "ingress-tls")
    processes: list[subprocess.Popen] = []
    try:
        # NATS with the chart's config file.
        nats = pod_spec(one(docs, "StatefulSet", f"{FULLNAME}-nats"))["containers"][0]
        nats_port, monitor = free_port(), free_port()
        conf = one(docs, "ConfigMap", f"{FULLNAME}-nats")["data"]["nats.conf"]
        assert f"port: {nats['ports'][0]['containerPort']}" in conf
        assert f"http_port: {named_port(nats)}" in conf
        conf = re.sub(r"(?m)^port: \d+", f"port: {nats_port}", conf)
        conf = re.sub(r"(?m)^http_port: \d+", f"http_port: {monitor}", conf)
        conf = conf.replace("store_dir: /data", f"store_dir: {tmp_path / 'js'}")
        (tmp_path / "nats.conf").write_text(conf)
        assert nats["command"][:2] == ["nats-server", "--config"]
        server = str(VENV_BIN / "nats-server")
        nats_env = resolved_env(nats, docs) | {"POD_NAME": "nats-0"}  # the passwords, from the Secret
        processes.append(start([server, "--config", str(tmp_path / "nats.conf")], nats_env, tmp_path / "nats.log"))
        for path in probe_paths(nats):
            wait_ok(f"http://127.0.0.1:{monitor}{path}", processes[-1])

        # The ingester with its rendered env (logged in as its NATS user).
        ingester_spec = pod_spec(one(docs, "StatefulSet", f"{FULLNAME}-ingester"))
        ingester = ingester_spec["containers"][0]
        env = {k: v for k, v in env_of(ingester).items() if isinstance(v, str)}
        env |= nats_password_file(ingester_spec, docs, tmp_path)
        assert int(env["API_PORT"]) == named_port(ingester) == ingester["ports"][0]["containerPort"]
        api_port = free_port()
        (tmp_path / "scraper.yaml").write_text(
            one(docs, "ConfigMap", f"{FULLNAME}-scraper-config")["data"]["scraper.yaml"]
        )
        # The admin token: the rendered Secret's, at the path the chart mounts it.
        mounts = {m["name"]: m["mountPath"] for m in ingester["volumeMounts"]}
        volume = {v["name"]: v for v in pod_spec(one(docs, "StatefulSet", f"{FULLNAME}-ingester"))["volumes"]}
        item = volume["admin-token"]["secret"]["items"][0]
        assert env["ADMIN_TOKEN_FILE"] == f"{mounts['admin-token']}/{item['path']}"
        token = base64.b64decode(
            one(docs, "Secret", volume["admin-token"]["secret"]["secretName"])["data"][item["key"]]
        )
        (tmp_path / "admin-token").write_bytes(token)
        ports = {p["name"]: p["containerPort"] for p in ingester["ports"]}
        assert int(env["INGESTER_METRICS_PORT"]) == ports["metrics"]
        ingester_metrics = free_port()
        env |= {
            "NATS_URL": f"nats://127.0.0.1:{nats_port}",
            "API_PORT": str(api_port),
            "API_HOST": "127.0.0.1",
            "INGESTER_METRICS_PORT": str(ingester_metrics),
            "ADMIN_TOKEN_FILE": str(tmp_path / "admin-token"),
            "DUCKDB_PATH": str(tmp_path / "db" / "cryptoviz.duckdb"),
            "SCRAPER_CONFIG": str(tmp_path / "scraper.yaml"),
        }
        processes.append(start([str(VENV_BIN / "cryptoviz"), *ingester["args"]], env, tmp_path / "ingester.log"))
        for path in probe_paths(ingester):
            wait_ok(f"http://127.0.0.1:{api_port}{path}", processes[-1])
        monitor = one(docs, "ServiceMonitor", f"{FULLNAME}-ingester")["spec"]["endpoints"][0]
        assert monitor["port"] == "metrics"
        wait_ok(f"http://127.0.0.1:{ingester_metrics}{monitor['path']}", processes[-1])
        backup = requests.post(
            f"http://127.0.0.1:{api_port}/api/v1/admin/backup",
            headers={"Authorization": f"Bearer {token.decode()}"},
            timeout=60,
        )
        assert backup.status_code == 200 and backup.headers["content-type"] == "application/x-tar", backup.text

        # The dashboard with its rendered env (URL prefix from the Ingress scenario).
        dashboard = pod_spec(one(docs, "Deployment", f"{FULLNAME}-dashboard"))["containers"][0]
        env = {k: v for k, v in env_of(dashboard).items() if isinstance(v, str)}
        assert int(env["DASHBOARD_PORT"]) == named_port(dashboard) == dashboard["ports"][0]["containerPort"]
        port = free_port()
        ports = {p["name"]: p["containerPort"] for p in dashboard["ports"]}
        assert int(env["DASHBOARD_METRICS_PORT"]) == ports["metrics"]
        monitor = one(docs, "ServiceMonitor", f"{FULLNAME}-dashboard")["spec"]["endpoints"][0]
        assert monitor["port"] == "metrics"
        metrics_port = free_port()
        env |= {
            "DASHBOARD_PORT": str(port),
            "DASHBOARD_METRICS_PORT": str(metrics_port),
            "INGESTER_URL": f"http://127.0.0.1:{api_port}",
        }
        processes.append(start([str(VENV_BIN / "cryptoviz"), *dashboard["args"]], env, tmp_path / "dashboard.log"))
        paths = probe_paths(dashboard)
        assert paths == {"/cryptoviz/liveness"}
        for path in paths:
            wait_ok(f"http://127.0.0.1:{port}{path}", processes[-1], seconds=90)
        wait_ok(f"http://127.0.0.1:{metrics_port}{monitor['path']}", processes[-1])

        # With basic auth (settings from the chart's Secret), probes still pass and pages need a login.
        auth_docs = load(renders, "auth-basic")
        dashboard = pod_spec(one(auth_docs, "Deployment", f"{FULLNAME}-dashboard"))["containers"][0]
        env = resolved_env(dashboard, auth_docs)
        assert set(env) >= {"DASHBOARD_BASIC_AUTH", "PANEL_COOKIE_SECRET"}
        port = free_port()
        metrics_port = free_port()
        env |= {
            "DASHBOARD_PORT": str(port),
            "DASHBOARD_METRICS_PORT": str(metrics_port),
            "INGESTER_URL": f"http://127.0.0.1:{api_port}",
        }
        processes.append(start([str(VENV_BIN / "cryptoviz"), *dashboard["args"]], env, tmp_path / "dashboard-auth.log"))
        for path in probe_paths(dashboard):
            wait_ok(f"http://127.0.0.1:{port}{path}", processes[-1], seconds=90)
        wait_ok(f"http://127.0.0.1:{metrics_port}/metrics", processes[-1])  # Prometheus scrapes without a login
        page = requests.get(f"http://127.0.0.1:{port}/", timeout=10, allow_redirects=False)
        assert page.status_code in (302, 401, 403), page.status_code
    finally:
        for process in reversed(processes):
            stop(process)
        for log in sorted(tmp_path.glob("*.log")):
            sys.stdout.write(f"--- {log.name}\n{log.read_text()[-1500:]}\n")


def test_operator_liveness_matches_kopf(renders: dict[str, Path]) -> None:
    container = pod_spec(one(load(renders, "defaults"), "Deployment", f"{FULLNAME}-operator"))["containers"][0]
    liveness = next(a for a in container["args"] if a.startswith("--liveness="))
    probe = container["livenessProbe"]["httpGet"]
    assert liveness == f"--liveness=http://0.0.0.0:{named_port(container)}{probe['path']}"
