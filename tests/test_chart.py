"""The Helm chart, checked without a cluster: helm lint/template over a matrix of values, every render
validated against the Kubernetes API schemas (1.29 and the newest known) and scanned by checkov, the
values schema, restricted pod security, NetworkPolicy flows and operator RBAC."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "cryptoviz"
VENV_BIN = REPO / ".venv" / "bin"
RELEASE, NAMESPACE = "cv", "crypto"
FULLNAME = f"{RELEASE}-cryptoviz"

# Each scenario is a values file; together they cover every optional branch of the templates.
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-nats": {"nats": {"enabled": False, "url": "nats://nats.nats.svc:4222"}},
    "ingress-tls": {
        "dashboard": {
            "prefix": "/cryptoviz",
            "allowedOrigins": ["localhost:5006"],
            "ingress": {"enabled": True, "className": "nginx", "host": "prices.example.org", "tls": {"enabled": True}},
            "autoscaling": {"enabled": True},
        },
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
    },
    "auth-basic": {
        "dashboard": {
            "auth": {
                "type": "basic",
                "basic": {"username": "ops", "password": "s3cret-passphrase"},
                "cookieSecret": "c" * 32,
            },
            "ingress": {"enabled": True, "host": "prices.example.org", "tls": {"enabled": True}},
        }
    },
    "auth-oauth": {
        "dashboard": {"auth": {"type": "oauth", "existingSecret": "dash-oauth", "oauth": {"provider": "github"}}}
    },
    "operator-off": {
        "operator": {"enabled": False},
        "scraper": {
            "config": {
                "version": 1,
                "provider": "coingecko",
                "coins": [{"symbol": "BTC", "ids": {"coingecko": "bitcoin"}}],
            }
        },
    },
    "operator-all-namespaces": {
        "operator": {
            "watchAllNamespaces": True,
            "manageSchedule": False,
            "allowedNamespaces": ["team-*", "prices"],
            "maxTrackedCryptos": 200,
            "scheduleFloor": "10m",
        }
    },
    "persistence-off": {"nats": {"persistence": {"enabled": False}}, "ingester": {"persistence": {"enabled": False}}},
    "backfill-off": {"backfill": {"enabled": False}, "operator": {"enabled": False}},
    "notify-targets": {
        "notify": {
            "urls": ["json://hooks.example.org/cryptoviz?token=t0k3n"],
            "targets": {"team": ["tgram://123456:s3cr3tb0t/42"], "ops": "mailto://u:m4ilpw@example.org"},
            "rateLimit": 10,
        },
        "serviceMonitor": {"enabled": True},
        "dashboard": {"ingress": {"enabled": True, "host": "prices.example.org", "tls": {"enabled": True}}},
    },
    "notify-existing-secret": {
        "notify": {"existingSecret": "my-targets", "secretKeys": {"urls": "", "targets": "t.yaml"}}
    },
    "notify-off": {"notify": {"enabled": False}},
    "backup-on": {
        "backup": {"enabled": True},
        "scraper": {"secret": {"cmcApiKey": "k-123", "coingeckoApiKey": "g-456"}},
        "image": {"ingester": {"digest": "sha256:" + "ab" * 32}},
    },
}

# Checks skipped for every resource, each with its reason. Per-resource skips live in the templates as
# `checkov.io/skipN` annotations (the operator's API token, the test pod's probes, env-var secrets).
CHECKOV_SKIPS = {
    "CKV_K8S_43": "digests are supported (image.<component>.digest), but a chart default cannot know one",
    "CKV_K8S_15": "IfNotPresent is right for immutable tags and required for images loaded into kind",
}


def find_tool(name: str) -> str:
    """A CLI from PATH, else from the project's .cache/bin (where scripts/setup.sh puts it)."""
    found = shutil.which(name) or shutil.which(name, path=str(REPO / ".cache" / "bin"))
    if not found:
        pytest.fail(f"{name} not found on PATH or in .cache/bin: run scripts/setup.sh")
    return found


def run(cmd: list[str], timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def helm(*args: str, values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """`helm ARGS` on the chart, release and namespace of these tests, with `values` on stdin (-f -)."""
    return run([find_tool("helm"), *args, "--namespace", NAMESPACE, "-f", "-"], input=yaml.safe_dump(values))


def helm_template(values: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
    return helm("template", RELEASE, str(CHART), *extra, values=values)


def docs_of(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="session")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every scenario linted (--strict) and rendered to <dir>/<scenario>/manifests.yaml."""
    root = tmp_path_factory.mktemp("renders")
    out: dict[str, Path] = {}
    for name, values in SCENARIOS.items():
        lint = helm("lint", "--strict", str(CHART), values=values)
        assert lint.returncode == 0, f"helm lint {name}:\n{lint.stdout}{lint.stderr}"
        rendered = helm_template(values)
        assert rendered.returncode == 0, f"helm template {name}:\n{rendered.stderr}"
        (root / name).mkdir()
        out[name] = root / name / "manifests.yaml"
        out[name].write_text(rendered.stdout)
    return out


def load(renders: dict[str, Path], scenario: str) -> list[dict[str, Any]]:
    return docs_of(renders[scenario].read_text())


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    kind = doc["kind"]
    if kind == "Pod":
        return doc["spec"]
    if kind in ("Deployment", "StatefulSet", "Job"):
        return doc["spec"]["template"]["spec"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def pods(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        spec = pod_spec(doc)
        if spec is not None:
            yield doc, spec


def pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    if doc["kind"] == "Pod":
        return doc["metadata"]["labels"]
    template = doc["spec"]["jobTemplate"]["spec"]["template"] if doc["kind"] == "CronJob" else doc["spec"]["template"]
    return template["metadata"]["labels"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def component(doc: dict[str, Any]) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


# ---------------------------------------------------------------- API schemas and scanners


def test_every_scenario_validates_against_kubernetes_1_29_and_newest(renders: dict[str, Path]) -> None:
    from kubernetes_validate.utils import latest_version

    # The CRD is shipped in crds/ (installed by helm, not templated): validate it as well.
    files = [str(p) for p in renders.values()] + [str(p) for p in sorted((CHART / "crds").glob("*.yaml"))]
    assert len(files) > len(renders)
    for version in ("1.29.0", latest_version()):
        result = run([str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", version, *files], timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        # The only kind without a built-in schema is the Prometheus Operator's ServiceMonitor.
        unknown = [line for line in result.stdout.splitlines() if line.startswith("WARN")]
        assert all("kind ServiceMonitor" in line for line in unknown), unknown


def test_checkov_passes_on_every_render_and_the_dockerfile(renders: dict[str, Path], tmp_path: Path) -> None:
    scan = tmp_path / "scan"
    for name, path in renders.items():
        (scan / name).mkdir(parents=True)
        shutil.copy(path, scan / name / "manifests.yaml")
    shutil.copy(REPO / "Dockerfile", scan / "Dockerfile")
    result = run(
        [
            find_tool("checkov"),
            "-d",
            str(scan),
            "--framework",
            "kubernetes",
            "dockerfile",
            "--output",
            "json",
            "--skip-download",
            "--skip-check",
            ",".join(CHECKOV_SKIPS),
        ],
        timeout=180,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    by_type = {r["check_type"]: r["results"] for r in reports}
    summary = {r["check_type"]: r["summary"] for r in reports}
    assert set(by_type) == {"kubernetes", "dockerfile"}, result.stderr[-2000:]
    failed = [(t, c["check_id"], c["resource"]) for t, r in by_type.items() for c in r["failed_checks"]]
    assert failed == []
    assert summary["kubernetes"]["passed"] > 1000 and summary["dockerfile"]["passed"] > 20
    # Per-resource skips (template annotations) are few, and each says why.
    skipped = {c["check_id"] for r in by_type.values() for c in r["skipped_checks"]}
    assert skipped <= {"CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_35", "CKV_K8S_38", "CKV_DOCKER_7"}
    reasons = [
        value
        for path in renders.values()
        for doc in docs_of(path.read_text())
        for key, value in doc["metadata"].get("annotations", {}).items()
        if key.startswith("checkov.io/skip")
    ]
    assert reasons and all(re.fullmatch(r"CKV_K8S_\d+=\S.{20,}", r) for r in reasons), reasons


# ---------------------------------------------------------------- values schema


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dashboard": {"replica": 2}}, "additional properties 'replica' not allowed"),
        ({"colour": "blue"}, "additional properties 'colour' not allowed"),
        ({"nats": {"persistence": {"size": 5}}}, "/nats/persistence/size"),
        ({"dashboard": {"replicas": "two"}}, "/dashboard/replicas"),
        ({"ingester": {"persistence": {"enabled": "yes"}}}, "/ingester/persistence/enabled"),
        ({"logFormat": "xml"}, "/logFormat"),
        ({"scraper": {"schedule": "every five minutes"}}, "/scraper/schedule"),
        ({"nats": {"enabled": False}}, "/nats/url"),
        ({"networkPolicy": {"providerCIDRs": ["anywhere"]}}, "/networkPolicy/providerCIDRs/0"),
        ({"dashboard": {"auth": {"type": "kerberos"}}}, "/dashboard/auth/type"),
        ({"ingester": {"terminationGracePeriodSeconds": 2}}, "/ingester/terminationGracePeriodSeconds"),
        ({"backfill": {"days": 400}}, "/backfill/days"),
        ({"backfill": {"days": "30d"}}, "/backfill/days"),
        ({"backfill": {"enable": True}}, "additional properties 'enable' not allowed"),
        ({"notify": {"replicas": 0}}, "/notify/replicas"),
    ],
)
def test_values_schema_rejects_wrong_types_and_unknown_keys(values: dict, message: str) -> None:
    result = helm_template(values)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_values_schema_is_strict_everywhere_and_accepts_the_defaults() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load((CHART / "values.yaml").read_text()))

    def walk(node: Any, where: str) -> Iterator[str]:
        if isinstance(node, dict):
            props = node.get("properties")
            # /scraper/config is the scraper's file, validated by its own strict schema (`cryptoviz check-config`).
            loose = node.get("type") == "object" and props is not None and node.get("additionalProperties") is not False
            if loose and where != "/scraper/config":
                yield where
            for key, sub in (props or {}).items():
                yield from walk(sub, f"{where}/{key}")

    assert list(walk(schema, "")) == []


def test_every_key_in_values_yaml_is_documented() -> None:
    """Each key has a comment right above it (helm-docs style); inside free-form values (the scraper's
    config, annotations, resources, NetworkPolicy peers) the comment on the parent documents them."""
    free_form = {"scraper.config", "dashboard.ingress.annotations", "resources"}
    stack: list[tuple[int, str]] = []  # (indent, key or "-" for a list item)
    previous, undocumented, keys = "", [], 0
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        match = re.match(r"(- )?([A-Za-z][\w.-]*):", stripped)
        if match and not stripped.startswith("#"):
            while stack and stack[-1][0] >= indent:
                stack.pop()
            parents = [k for _, k in stack]
            path = ".".join([*parents, match.group(2)])
            inside_free_form = "-" in parents or any(
                ".".join(parents[: i + 1]) in free_form or parents[i] in free_form for i in range(len(parents))
            )
            if not inside_free_form and not match.group(1):
                keys += 1
                if not previous.startswith("#"):
                    undocumented.append(path)
            stack.append((indent, "-" if match.group(1) else match.group(2)))
        elif stripped.startswith("- "):
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, "-"))
        previous = stripped
    assert keys > 100
    assert undocumented == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"dashboard": {"auth": {"type": "basic", "cookieSecret": "x" * 32}}},
            "dashboard.auth.basic.username is required",
        ),
        (
            {"dashboard": {"auth": {"type": "oauth", "existingSecret": "s"}}},
            "dashboard.auth.oauth.provider is required",
        ),
        ({"nats": {"image": {"tag": ""}}}, "image.tag is required"),
    ],
)
def test_incomplete_settings_fail_with_a_clear_message(values: dict, message: str) -> None:
    result = helm_template(values)
    assert result.returncode != 0 and message in result.stderr, result.stderr


STRONG_BASIC = {"type": "basic", "basic": {"username": "ops", "password": "p" * 12}, "cookieSecret": "c" * 32}
OAUTH = {"type": "oauth", "existingSecret": "dash-oauth", "oauth": {"provider": "github"}}
NO_TLS_INGRESS = {"enabled": True, "host": "prices.example.org"}


@pytest.mark.parametrize(
    ("values", "path", "message"),
    [
        (
            {"dashboard": {"auth": STRONG_BASIC, "ingress": NO_TLS_INGRESS}},
            "/dashboard/ingress/tls/enabled",
            "dashboard.auth.type=basic behind the Ingress needs dashboard.ingress.tls.enabled=true",
        ),
        (
            {"dashboard": {"auth": OAUTH, "ingress": NO_TLS_INGRESS}},
            "/dashboard/ingress/tls/enabled",
            "dashboard.auth.type=oauth behind the Ingress needs dashboard.ingress.tls.enabled=true",
        ),
        (
            {"dashboard": {"auth": {**STRONG_BASIC, "basic": {"username": "ops", "password": "p" * 11}}}},
            "/dashboard/auth/basic/password",
            "dashboard.auth.basic.password must be at least 12 characters",
        ),
        (
            {"dashboard": {"auth": {**OAUTH, "cookieSecret": "c" * 31}}},
            "/dashboard/auth/cookieSecret",
            "dashboard.auth.cookieSecret must be at least 32 characters",
        ),
        (
            {"operator": {"allowedNamespaces": ["team-a"]}},
            "/operator/allowedNamespaces",
            "operator.allowedNamespaces needs operator.watchAllNamespaces",
        ),
    ],
)
def test_weak_dashboard_auth_and_a_pointless_allow_list_are_refused(values: dict, path: str, message: str) -> None:
    """By the values schema (`if/then`, lengths) and, for `--skip-schema-validation`, by the templates."""
    result = helm_template(values)
    assert result.returncode != 0 and path in result.stderr, result.stderr
    result = helm_template(values, "--skip-schema-validation")
    assert result.returncode != 0 and message in result.stderr, result.stderr


@pytest.mark.parametrize(
    "dashboard",
    [
        {"auth": STRONG_BASIC, "ingress": {**NO_TLS_INGRESS, "tls": {"enabled": True}}},
        {"auth": OAUTH, "ingress": {**NO_TLS_INGRESS, "tls": {"enabled": True}}},
        {"auth": STRONG_BASIC},  # no Ingress: reached through kubectl port-forward
        {"auth": {**STRONG_BASIC, "existingSecret": "dash-auth", "basic": {"username": "", "password": ""}}},
        {"ingress": NO_TLS_INGRESS},  # no auth: nothing secret crosses the network
    ],
)
def test_sound_dashboard_auth_settings_still_render(dashboard: dict) -> None:
    result = helm_template({"dashboard": dashboard})
    assert result.returncode == 0, result.stderr
    assert find(docs_of(result.stdout), "Deployment", f"{FULLNAME}-dashboard")


def test_dashboard_csp_and_session_caps_come_from_the_values() -> None:
    dashboard = {"frameAncestors": "'self' https://wiki.example.com",
                 "sessions": {"max": 40, "perClient": 4, "trustedProxies": ["10.2.0.0/16"]}}  # fmt: skip
    result = helm_template({"dashboard": dashboard})
    assert result.returncode == 0, result.stderr
    container = one(docs_of(result.stdout), "Deployment", f"{FULLNAME}-dashboard")["spec"]["template"]["spec"]
    env = env_of(container["containers"][0])
    assert env["DASHBOARD_FRAME_ANCESTORS"] == "'self' https://wiki.example.com"
    assert (env["DASHBOARD_MAX_SESSIONS"], env["DASHBOARD_MAX_SESSIONS_PER_CLIENT"]) == ("40", "4")
    assert env["DASHBOARD_TRUSTED_PROXIES"] == "10.2.0.0/16"
    plain = env_of(one(docs_of(helm_template({}).stdout), "Deployment", f"{FULLNAME}-dashboard")["spec"]["template"][
        "spec"]["containers"][0])  # fmt: skip
    assert "DASHBOARD_TRUSTED_PROXIES" not in plain and "DASHBOARD_ALLOWED_ORIGINS" not in plain  # local only


@pytest.mark.parametrize(
    ("dashboard", "message"),
    [
        ({"frameAncestors": "'none'; script-src *"}, "/dashboard/frameAncestors"),
        ({"frameAncestors": ""}, "/dashboard/frameAncestors"),
        ({"sessions": {"max": 0, "perClient": 1, "trustedProxies": []}}, "/dashboard/sessions/max"),
        ({"sessions": {"max": 9, "perClient": 1, "trustedProxies": ["proxy.local"]}}, "/sessions/trustedProxies/0"),
    ],
)
def test_values_schema_refuses_bad_dashboard_limits(dashboard: dict, message: str) -> None:
    result = helm_template({"dashboard": dashboard})
    assert result.returncode != 0 and message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("operator", "message"),
    [
        ({"scheduleFloor": "30s"}, "/operator/scheduleFloor"),
        ({"scheduleFloor": "5 minutes"}, "/operator/scheduleFloor"),
        ({"maxTrackedCryptos": 0}, "/operator/maxTrackedCryptos"),
        ({"watchAllNamespaces": True, "allowedNamespaces": ["Team_A"]}, "/operator/allowedNamespaces/0"),
    ],
)
def test_values_schema_refuses_bad_operator_limits(operator: dict, message: str) -> None:
    result = helm_template({"operator": operator})
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_operator_limits_reach_the_operator(renders: dict[str, Path]) -> None:
    def env(scenario: str) -> dict[str, Any]:
        return env_of(pod_spec(one(load(renders, scenario), "Deployment", f"{FULLNAME}-operator"))["containers"][0])

    assert {k: env("defaults")[k] for k in ("ALLOWED_NAMESPACES", "MAX_TRACKED_CRYPTOS", "SCHEDULE_FLOOR")} == {
        "ALLOWED_NAMESPACES": "",
        "MAX_TRACKED_CRYPTOS": "1000",
        "SCHEDULE_FLOOR": "5m",
    }
    tenants = env("operator-all-namespaces")
    assert (tenants["ALLOWED_NAMESPACES"], tenants["MAX_TRACKED_CRYPTOS"], tenants["SCHEDULE_FLOOR"]) == (
        "team-*,prices",
        "200",
        "10m",
    )
    from cryptoviz_operator.settings import Settings

    settings = Settings.from_env({k: v for k, v in tenants.items() if isinstance(v, str)})
    assert settings.limits.allowed_namespaces == ("team-*", "prices")
    assert (settings.max_tracked_cryptos, settings.schedule_floor_seconds) == (200, 600)


def test_image_tag_defaults_to_the_chart_app_version(renders: dict[str, Path]) -> None:
    """One version to bump: Chart.yaml's appVersion is the image tag, the package and image version."""
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert yaml.safe_load((CHART / "values.yaml").read_text())["image"]["tag"] == ""
    images = {c["image"] for _, spec in pods(load(renders, "defaults")) for c in spec["containers"]}
    components = ("scraper", "ingester", "dashboard", "operator")
    assert images == {
        *(f"ghcr.io/cryptoviz/cryptoviz-{c}:{app_version}" for c in components),
        "docker.io/library/nats:2.10.24-alpine",
    }
    pinned = docs_of(helm_template({"image": {"tag": "1.2.3"}}).stdout)
    assert {c["image"] for _, spec in pods(pinned) for c in spec["containers"] if "cryptoviz" in c["image"]} == {
        f"ghcr.io/cryptoviz/cryptoviz-{c}:1.2.3" for c in components
    }
    assert re.search(rf'(?m)^version = "{re.escape(app_version)}"$', (REPO / "pyproject.toml").read_text())
    assert f"ARG VERSION={app_version}\n" in (REPO / "Dockerfile").read_text()


# ---------------------------------------------------------------- security


def test_every_pod_meets_the_restricted_pod_security_standard(renders: dict[str, Path]) -> None:
    for scenario in SCENARIOS:
        for doc, spec in pods(load(renders, scenario)):
            where = f"{scenario}: {doc['kind']}/{doc['metadata']['name']}"
            psc = spec["securityContext"]
            assert psc["runAsNonRoot"] is True and psc["runAsUser"] >= 10000, where
            assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert spec["automountServiceAccountToken"] is (component(doc) == "operator"), where
            assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
            tmp = {v["name"]: v for v in spec["volumes"]}["tmp"]
            assert "emptyDir" in tmp, where
            for c in spec["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True, where
                assert sc["allowPrivilegeEscalation"] is False, where
                assert sc["capabilities"] == {"drop": ["ALL"]}, where
                assert sc["runAsNonRoot"] is True and sc["seccompProfile"]["type"] == "RuntimeDefault", where
                assert {"mountPath": "/tmp", "name": "tmp"} in c["volumeMounts"], where
                assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], where


def test_long_running_containers_have_probes_and_config_checksums(renders: dict[str, Path]) -> None:
    docs = load(renders, "defaults")
    for kind, comp in [("StatefulSet", "nats"), ("StatefulSet", "ingester"), ("Deployment", "dashboard")]:
        doc = one(docs, kind, f"{FULLNAME}-{comp}")
        container = pod_spec(doc)["containers"][0]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert container[probe]["httpGet"]["path"], (comp, probe)
        assert doc["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    operator = pod_spec(one(docs, "Deployment", f"{FULLNAME}-operator"))["containers"][0]
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_config_checksums_follow_the_config_the_pods_read() -> None:
    """A change to what a pod reads from a ConfigMap or Secret rolls it; anything else leaves it alone."""

    def checksums(values: dict[str, Any]) -> dict[str, str]:
        docs = docs_of(helm_template(values).stdout)
        return {
            d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            for d in docs
            if d["kind"] in ("StatefulSet", "Deployment")
        }

    auth = SCENARIOS["auth-basic"]
    base = checksums(auth)
    changed = checksums(
        {
            "nats": {"service": {"monitorPort": 8223}},
            "dashboard": {
                **auth["dashboard"],
                "auth": {**auth["dashboard"]["auth"], "basic": {"username": "ops", "password": "new-passphrase"}},
            },
        }
    )
    rolled = {name for name in base if base[name] != changed[name]}
    assert rolled == {f"{FULLNAME}-nats", f"{FULLNAME}-dashboard"}


# ---------------------------------------------------------------- components, per scenario


def test_default_render_wires_the_pipeline_together(renders: dict[str, Path]) -> None:
    docs = load(renders, "defaults")
    assert all(d["metadata"].get("namespace") == NAMESPACE for d in docs if d["kind"] != "ClusterRole")
    nats = one(docs, "StatefulSet", f"{FULLNAME}-nats")
    assert nats["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    conf = one(docs, "ConfigMap", f"{FULLNAME}-nats")["data"]["nats.conf"]
    assert "store_dir: /data" in conf and "max_file_store: 1800M" in conf

    cron = one(docs, "CronJob", f"{FULLNAME}-scraper")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["schedule"] == "*/5 * * * *"
    for key in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        assert isinstance(cron["spec"][key], int)
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 1 and job["activeDeadlineSeconds"] == 240
    scraper = job["template"]["spec"]["containers"][0]
    assert scraper["args"] == ["scrape", "--once"]
    env = env_of(scraper)
    assert env["NATS_URL"] == f"nats://{FULLNAME}-nats:4222"
    assert env["SCRAPER_CONFIG"] == "/etc/cryptoviz/scraper.yaml"
    assert env["CMC_API_KEY"]["secretKeyRef"] == {
        "name": f"{FULLNAME}-providers",
        "key": "CMC_API_KEY",
        "optional": True,
    }
    config_map = one(docs, "ConfigMap", f"{FULLNAME}-scraper-config")
    assert yaml.safe_load(config_map["data"]["scraper.yaml"]) == {"version": 1, "top_n": 20, "coins": []}

    ingester = one(docs, "StatefulSet", f"{FULLNAME}-ingester")
    assert ingester["spec"]["replicas"] == 1
    assert ingester["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 60
    assert ingester["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "5Gi"
    ienv = env_of(ingester["spec"]["template"]["spec"]["containers"][0])
    assert ienv["DUCKDB_PATH"] == "/data/cryptoviz.duckdb" and ienv["API_PORT"] == "8000"
    assert one(docs, "Service", f"{FULLNAME}-ingester")["spec"]["ports"][0]["port"] == 8000

    dashboard = one(docs, "Deployment", f"{FULLNAME}-dashboard")
    denv = env_of(dashboard["spec"]["template"]["spec"]["containers"][0])
    assert denv["INGESTER_URL"] == f"http://{FULLNAME}-ingester:8000"
    assert "DASHBOARD_PREFIX" not in denv and "DASHBOARD_BASIC_AUTH" not in denv
    assert one(docs, "Service", f"{FULLNAME}-dashboard")["spec"]["sessionAffinity"] == "ClientIP"
    assert (
        not find(docs, "Ingress")
        and not find(docs, "HorizontalPodAutoscaler")
        and not find(docs, "CronJob", f"{FULLNAME}-backup")
    )

    operator = one(docs, "Deployment", f"{FULLNAME}-operator")
    assert operator["spec"]["replicas"] == 1 and operator["spec"]["strategy"] == {"type": "Recreate"}
    ospec = operator["spec"]["template"]["spec"]
    assert ospec["serviceAccountName"] == f"{FULLNAME}-operator"
    container = ospec["containers"][0]
    assert container["command"] == ["kopf"]
    assert container["args"] == [
        "run", "--standalone", "-m", "cryptoviz_operator",
        "--liveness=http://0.0.0.0:8080/healthz", "--log-format=json", "--namespace=$(POD_NAMESPACE)",
    ]  # fmt: skip
    oenv = env_of(container)
    assert oenv["CONFIGMAP_NAME"] == config_map["metadata"]["name"]
    assert oenv["CRONJOB_NAME"] == cron["metadata"]["name"]
    assert oenv["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert oenv["MANAGE_SCHEDULE"] == "true" and oenv["INGESTER_URL"] == denv["INGESTER_URL"]

    test_pod = one(docs, "Pod", f"{FULLNAME}-test")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert test_pod["spec"]["containers"][0]["args"][1:] == [
        f"http://{FULLNAME}-ingester:8000/readyz",
        f"http://{FULLNAME}-dashboard:5006/liveness",
        f"http://{FULLNAME}-dashboard:9464/metrics",
    ]


@pytest.mark.parametrize(
    ("level", "fmt", "flags"),
    [("DEBUG", "text", ["--log-format=full", "--verbose"]), ("ERROR", "json", ["--log-format=json", "--quiet"])],
)
def test_operator_logging_follows_log_level_and_format_through_kopf_flags(level: str, fmt: str, flags: list) -> None:
    """kopf sets up the operator's logging from its own flags, so logLevel/logFormat become those flags
    (LOG_LEVEL/LOG_FORMAT, which kopf ignores, are not set on the operator)."""
    docs = docs_of(helm_template({"logLevel": level, "logFormat": fmt}).stdout)
    container = pod_spec(one(docs, "Deployment", f"{FULLNAME}-operator"))["containers"][0]
    assert [a for a in container["args"] if a.startswith(("--log", "--verbose", "--quiet", "--debug"))] == flags
    assert not {"LOG_LEVEL", "LOG_FORMAT"} & set(env_of(container))


def test_external_nats_replaces_the_bundled_server(renders: dict[str, Path]) -> None:
    docs = load(renders, "external-nats")
    assert not [d for d in docs if d["metadata"]["name"].endswith("-nats") and d["kind"] != "NetworkPolicy"]
    for _, spec in pods(docs):
        env = env_of(spec["containers"][0])
        if "NATS_URL" in env:
            assert env["NATS_URL"] == "nats://nats.nats.svc:4222"
    scraper_policy = one(docs, "NetworkPolicy", f"{FULLNAME}-scraper")
    assert {"ports": [{"port": 4222, "protocol": "TCP"}], "to": [{"namespaceSelector": {}}]} in scraper_policy["spec"][
        "egress"
    ]


def test_ingress_with_tls_prefix_and_origins(renders: dict[str, Path]) -> None:
    docs = load(renders, "ingress-tls")
    ingress = one(docs, "Ingress", f"{FULLNAME}-dashboard")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["prices.example.org"], "secretName": "cryptoviz-tls"}]
    path = ingress["spec"]["rules"][0]["http"]["paths"][0]
    assert ingress["spec"]["rules"][0]["host"] == "prices.example.org"
    assert path["path"] == "/cryptoviz" and path["pathType"] == "Prefix"
    assert path["backend"]["service"] == {"name": f"{FULLNAME}-dashboard", "port": {"name": "http"}}
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    deployment = one(docs, "Deployment", f"{FULLNAME}-dashboard")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = env_of(container)
    assert env["DASHBOARD_PREFIX"] == "/cryptoviz"
    assert env["DASHBOARD_ALLOWED_ORIGINS"] == "prices.example.org,localhost:5006"
    # behind the Ingress the controller's pods (private ranges) name the client for the per-client cap
    assert env["DASHBOARD_TRUSTED_PROXIES"] == "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
    assert (env["DASHBOARD_MAX_SESSIONS"], env["DASHBOARD_MAX_SESSIONS_PER_CLIENT"]) == ("100", "10")
    assert env["DASHBOARD_FRAME_ANCESTORS"] == "'none'"
    assert container["livenessProbe"]["httpGet"]["path"] == "/cryptoviz/liveness"
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    hpa = one(docs, "HorizontalPodAutoscaler", f"{FULLNAME}-dashboard")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert one(docs, "PodDisruptionBudget", f"{FULLNAME}-dashboard")["spec"]["minAvailable"] == 1
    for component, port in (("ingester", "metrics"), ("dashboard", "metrics")):
        monitor = one(docs, "ServiceMonitor", f"{FULLNAME}-{component}")
        assert monitor["metadata"]["labels"]["release"] == "prom"
        assert monitor["spec"]["endpoints"] == [{"port": port, "path": "/metrics", "interval": "30s"}]
        # Exactly one Service matches each ServiceMonitor (not the headless one too: no double scrapes).
        selector = monitor["spec"]["selector"]["matchLabels"]
        matching = [s for s in find(docs, "Service") if selector.items() <= s["metadata"]["labels"].items()]
        assert [s["metadata"]["name"] for s in matching] == [f"{FULLNAME}-{component}"]
    assert (env["DASHBOARD_SESSION_EXPIRY"], env["DASHBOARD_METRICS_PORT"]) == ("15", "9464")
    # Prometheus may reach only the metrics ports: never the ingester's API (its admin endpoints) nor the
    # dashboard's app port (the Ingress publishes that one).
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ingester_rules = one(docs, "NetworkPolicy", f"{FULLNAME}-ingester")["spec"]["ingress"]
    assert [rule["ports"] for rule in ingester_rules if prometheus in rule["from"]] == [
        [{"port": 9466, "protocol": "TCP"}]
    ]
    dashboard_rules = one(docs, "NetworkPolicy", f"{FULLNAME}-dashboard")["spec"]["ingress"]
    prometheus_ports = [rule["ports"] for rule in dashboard_rules if prometheus in rule["from"]]
    assert prometheus_ports == [[{"port": 9464, "protocol": "TCP"}]]
    test_pod = one(docs, "Pod", f"{FULLNAME}-test")
    assert test_pod["spec"]["containers"][0]["args"][2] == f"http://{FULLNAME}-dashboard:5006/cryptoviz/liveness"


@pytest.mark.parametrize(
    ("dashboard", "budget"),
    [
        ({"replicas": 1}, False),
        ({"replicas": 2}, True),
        ({"replicas": 3, "autoscaling": {"enabled": True, "minReplicas": 1}}, False),
        ({"autoscaling": {"enabled": True, "minReplicas": 2}}, True),
    ],
)
def test_dashboard_disruption_budget_only_with_more_than_one_pod(dashboard: dict, budget: bool) -> None:
    docs = docs_of(helm_template({"dashboard": dashboard}).stdout)
    assert bool(find(docs, "PodDisruptionBudget", f"{FULLNAME}-dashboard")) is budget


def test_basic_auth_and_oauth_come_from_a_secret(renders: dict[str, Path]) -> None:
    import base64

    docs = load(renders, "auth-basic")
    secret = one(docs, "Secret", f"{FULLNAME}-dashboard-auth")
    assert base64.b64decode(secret["data"]["DASHBOARD_BASIC_AUTH"]).decode() == "ops:s3cret-passphrase"
    env = env_of(pod_spec(one(docs, "Deployment", f"{FULLNAME}-dashboard"))["containers"][0])
    assert env["DASHBOARD_BASIC_AUTH"] == {
        "secretKeyRef": {"name": f"{FULLNAME}-dashboard-auth", "key": "DASHBOARD_BASIC_AUTH"}
    }
    assert env["PANEL_COOKIE_SECRET"]["secretKeyRef"]["key"] == "PANEL_COOKIE_SECRET"
    assert "s3cret" not in renders["auth-basic"].read_text()

    docs = load(renders, "auth-oauth")
    assert not find(docs, "Secret", f"{FULLNAME}-dashboard-auth")  # existingSecret is used as is
    env = env_of(pod_spec(one(docs, "Deployment", f"{FULLNAME}-dashboard"))["containers"][0])
    assert env["PANEL_OAUTH_PROVIDER"] == "github"
    for key in ("PANEL_OAUTH_KEY", "PANEL_OAUTH_SECRET", "PANEL_COOKIE_SECRET"):
        assert env[key] == {"secretKeyRef": {"name": "dash-oauth", "key": key}}
    # OAuth needs the provider: the dashboard may then reach HTTPS, and only then.
    egress = one(docs, "NetworkPolicy", f"{FULLNAME}-dashboard")["spec"]["egress"]
    assert any(rule["ports"] == [{"port": 443, "protocol": "TCP"}] for rule in egress)
    default_egress = one(load(renders, "defaults"), "NetworkPolicy", f"{FULLNAME}-dashboard")["spec"]["egress"]
    assert not any(p["port"] == 443 for rule in default_egress for p in rule["ports"])


@pytest.mark.parametrize(
    ("scenario", "secrets"),
    [
        ("backup-on", ["k-123", "g-456"]),
        ("auth-basic", ["s3cret"]),
        ("notify-targets", ["t0k3n", "s3cr3tb0t", "m4ilpw"]),
    ],
)
def test_secret_values_are_rendered_only_into_secrets(renders: dict[str, Path], scenario: str, secrets: list) -> None:
    """Keys from values reach pods through secretKeyRef only: never in a ConfigMap, env value or annotation."""
    import base64

    text = renders[scenario].read_text()
    assert not [s for s in secrets if s in text]
    encoded = {
        base64.b64decode(value).decode()
        for doc in find(docs_of(text), "Secret")
        for value in (doc.get("data") or {}).values()
    }
    assert all(any(s in e for e in encoded) for s in secrets)


def test_operator_off_uses_the_values_config_and_drops_operator_objects(renders: dict[str, Path]) -> None:
    docs = load(renders, "operator-off")
    assert not [d for d in docs if d["metadata"]["name"].startswith(f"{FULLNAME}-operator")]
    config = yaml.safe_load(one(docs, "ConfigMap", f"{FULLNAME}-scraper-config")["data"]["scraper.yaml"])
    assert config["coins"] == [{"symbol": "BTC", "ids": {"coingecko": "bitcoin"}}]
    result = run([str(VENV_BIN / "python"), "-c",
                  "import sys, yaml; from cryptoviz.core.config import parse_config; "
                  "parse_config(yaml.safe_load(sys.stdin.read()))"],
                 input=one(docs, "ConfigMap", f"{FULLNAME}-scraper-config")["data"]["scraper.yaml"])  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_persistence_off_uses_empty_dirs(renders: dict[str, Path]) -> None:
    docs = load(renders, "persistence-off")
    for comp in ("nats", "ingester"):
        sts = one(docs, "StatefulSet", f"{FULLNAME}-{comp}")
        assert "volumeClaimTemplates" not in sts["spec"]
        assert {"name": "data", "emptyDir": {}} in sts["spec"]["template"]["spec"]["volumes"]


def test_backfill_hook_job_runs_the_scraper_pod_after_install_and_upgrade(renders: dict[str, Path]) -> None:
    docs = load(renders, "defaults")
    job = one(docs, "Job", f"{FULLNAME}-backfill")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (2, 1200, 86400)
    pod = spec["template"]["spec"]
    scraper = pod_spec(one(docs, "CronJob", f"{FULLNAME}-scraper"))
    (container,) = pod["containers"]
    assert container["args"] == ["backfill"]
    env = env_of(container)
    assert env["BACKFILL_DAYS"] == "30" and "BACKFILL_SYMBOLS" not in env  # every tracked coin
    scraper_env = env_of(scraper["containers"][0])
    assert scraper_env["INGESTER_URL"] == f"http://{FULLNAME}-ingester:8000"  # coverage, for gap filling
    assert {k: v for k, v in env.items() if k != "BACKFILL_DAYS"} == scraper_env
    same = ("securityContext", "volumes", "automountServiceAccountToken", "enableServiceLinks", "restartPolicy")
    assert {k: pod[k] for k in same} == {k: scraper[k] for k in same}
    assert container["securityContext"] == scraper["containers"][0]["securityContext"]
    assert container["volumeMounts"] == scraper["containers"][0]["volumeMounts"]
    assert pod_labels(job)["app.kubernetes.io/component"] == "backfill"
    operator_env = env_of(pod_spec(one(docs, "Deployment", f"{FULLNAME}-operator"))["containers"][0])
    assert (operator_env["BACKFILL_DAYS"], operator_env["BACKFILL_TTL_SECONDS"]) == ("30", "86400")
    assert (operator_env["BACKFILL_ACTIVE_DEADLINE_SECONDS"], operator_env["BACKFILL_BACKOFF_LIMIT"]) == ("1200", "2")
    assert operator_env["BACKFILL_CONCURRENCY"] == "2"

    off = docs_of(helm_template({"backfill": {"enabled": False}}).stdout)
    assert not find(off, "Job")
    assert env_of(pod_spec(one(off, "Deployment", f"{FULLNAME}-operator"))["containers"][0])["BACKFILL_DAYS"] == "0"
    none = load(renders, "backfill-off")
    assert not find(none, "Job") and not [p for p in find(none, "NetworkPolicy") if component(p) == "backfill"]


def test_backup_cronjob_goes_through_the_ingester_api(renders: dict[str, Path]) -> None:
    docs = load(renders, "backup-on")
    cron = one(docs, "CronJob", f"{FULLNAME}-backup")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["args"] == ["backup", "/backup/$(JOB_NAME)"]
    env = env_of(container)
    assert env["INGESTER_URL"] == f"http://{FULLNAME}-ingester:8000"
    assert "DUCKDB_PATH" not in env  # only the ingester opens the DuckDB file
    claim = {v["name"]: v for v in spec["volumes"]}["backup"]["persistentVolumeClaim"]["claimName"]
    assert one(docs, "PersistentVolumeClaim", claim)["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    secret = one(docs, "Secret", f"{FULLNAME}-providers")
    assert set(secret["data"]) == {"CMC_API_KEY", "COINGECKO_API_KEY"}
    # The backup runs the ingester's image (`cryptoviz backup` is its command); a digest, when given, pins it.
    assert container["image"] == "ghcr.io/cryptoviz/cryptoviz-ingester@sha256:" + "ab" * 32
    ingester = one(docs, "StatefulSet", f"{FULLNAME}-ingester")["spec"]["template"]["spec"]["containers"][0]
    assert ingester["image"] == container["image"]


def test_admin_token_comes_from_a_secret_file_in_the_ingester_and_the_backup_job(renders: dict[str, Path]) -> None:
    docs = load(renders, "backup-on")
    secret = one(docs, "Secret", f"{FULLNAME}-admin")
    assert len(base64.b64decode(secret["data"]["token"])) == 48
    for spec in (
        pod_spec(one(docs, "StatefulSet", f"{FULLNAME}-ingester")),
        one(docs, "CronJob", f"{FULLNAME}-backup")["spec"]["jobTemplate"]["spec"]["template"]["spec"],
    ):
        (container,) = spec["containers"]
        env = env_of(container)
        assert env["ADMIN_TOKEN_FILE"] == "/etc/cryptoviz-admin/token" and "ADMIN_TOKEN" not in env
        volume = {v["name"]: v for v in spec["volumes"]}["admin-token"]["secret"]
        assert volume == {
            "secretName": f"{FULLNAME}-admin",
            "defaultMode": 0o440,
            "items": [{"key": "token", "path": "token"}],
        }
        mount = {m["name"]: m for m in container["volumeMounts"]}["admin-token"]
        assert mount == {"name": "admin-token", "mountPath": "/etc/cryptoviz-admin", "readOnly": True}
    # A Secret of one's own: none is created, the given key is mounted.
    own = docs_of(helm_template({"ingester": {"admin": {"existingSecret": "ops-admin", "secretKey": "t"}}}).stdout)
    assert not find(own, "Secret", f"{FULLNAME}-admin")
    volume = {v["name"]: v for v in pod_spec(one(own, "StatefulSet", f"{FULLNAME}-ingester"))["volumes"]}
    assert volume["admin-token"]["secret"]["secretName"] == "ops-admin"
    assert volume["admin-token"]["secret"]["items"] == [{"key": "t", "path": "token"}]
    # The token is kept across upgrades: the template reuses the live Secret's (lookup).
    template = (CHART / "templates" / "ingester.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $secretName' in template


def _label_values(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("labels", "matchLabels") and isinstance(value, dict):
                yield from map(str, value.values())
            yield from _label_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from _label_values(item)


def test_longest_names_fit_and_renders_are_deterministic() -> None:
    """The longest release name helm allows (53) in the longest namespace (63), every optional object on:
    names stay within 63 characters (52 for CronJobs and StatefulSets, whose Jobs and revision-hash labels
    add a suffix), label values within 63; and the same input always renders the same bytes (but for the
    random NATS passwords of a first install: installs and upgrades keep the live Secret's)."""
    values = {
        **SCENARIOS["auth-basic"],
        "operator": {"watchAllNamespaces": True},
        "backup": {"enabled": True},
        "serviceMonitor": {"enabled": True},
    }
    values["dashboard"] = {**values["dashboard"], **SCENARIOS["ingress-tls"]["dashboard"]}
    argv = [find_tool("helm"), "template", "r" * 53, str(CHART), "--namespace", "n" * 63, "-f", "-"]
    first, second = (run(argv, input=yaml.safe_dump(values)) for _ in range(2))
    assert first.returncode == 0, first.stderr
    # All but the admin token and the NATS passwords, random where no cluster can be asked for the existing ones.
    secrets = [
        [d for d in find(docs_of(r.stdout), "Secret") if d["metadata"]["name"].endswith("-admin")]
        for r in (first, second)
    ]
    tokens = [str(admin["data"]["token"]) for (admin,) in secrets]
    assert tokens[0] != tokens[1] and all(len(base64.b64decode(t)) == 48 for t in tokens)
    passwords = re.compile(r"(?m)^(  (?:ingester|notify|scraper): )\S{40,}$")  # the nats-auth Secret's data
    masked = [
        passwords.sub(r"\1***", r.stdout.replace(token, "***"))
        for r, token in zip((first, second), tokens, strict=True)
    ]
    assert masked[0] == masked[1]
    docs = docs_of(first.stdout)
    assert {"ClusterRole", "Ingress", "HorizontalPodAutoscaler", "ServiceMonitor"} <= {d["kind"] for d in docs}
    too_long = [
        (d["kind"], d["metadata"]["name"])
        for d in docs
        if len(d["metadata"]["name"]) > (52 if d["kind"] in ("CronJob", "StatefulSet") else 63)
    ]
    assert too_long == []
    assert [v for v in _label_values(docs) if len(v) > 63] == []
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names))


def test_chart_refuses_kubernetes_older_than_1_29() -> None:
    assert helm_template({}, "--kube-version", "1.29.0").returncode == 0
    old = helm_template({}, "--kube-version", "1.28.9")
    assert old.returncode != 0 and "kubeVersion" in old.stderr, old.stderr


def test_notes_say_how_to_reach_the_dashboard_and_add_a_coin() -> None:
    ingress = {"enabled": True, "host": "p.example.org", "tls": {"enabled": True}}
    notes = helm("install", RELEASE, str(CHART), "--dry-run=client", values={"dashboard": {"ingress": ingress}})
    assert notes.returncode == 0, notes.stderr
    text = notes.stdout.split("NOTES:", 1)[1]
    assert "https://p.example.org/" in text
    assert "kubectl --namespace crypto apply -f -" in text
    # The object it applies is a valid TrackedCrypto for the chart's CRD.
    tracked = json.loads(re.search(r"echo '(\{.*\})'", text).group(1))
    crd = yaml.safe_load((CHART / "crds" / "trackedcryptos.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    assert tracked["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
    assert tracked["kind"] == crd["spec"]["names"]["kind"]
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]  # OpenAPI 3.0: draft-4 style bounds
    jsonschema.Draft4Validator(spec_schema).validate(tracked["spec"])
    assert "helm test cv" in text


# ---------------------------------------------------------------- network policies


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items() and not selector.get("matchExpressions")


def _peer_matches(peer: dict[str, Any], labels: dict[str, str]) -> bool:
    """Does a NetworkPolicyPeer match a pod of this release (same namespace)?"""
    if "ipBlock" in peer:
        return False  # the rules below only reason about pod-to-pod traffic in the release
    if "namespaceSelector" in peer:
        return peer["namespaceSelector"] == {} and _selects(peer.get("podSelector", {}), labels)
    return _selects(peer["podSelector"], labels)


def _allowed(
    policies: list[dict[str, Any]], direction: str, own: dict[str, str], peer: dict[str, str], port: int
) -> bool:
    selecting = [
        p
        for p in policies
        if _selects(p["spec"]["podSelector"], own) and direction.capitalize() in p["spec"]["policyTypes"]
    ]
    if not selecting:
        return True
    key = "from" if direction == "ingress" else "to"
    return any(
        any(_peer_matches(x, peer) for x in rule.get(key, [])) and any(p["port"] == port for p in rule.get("ports", []))
        for policy in selecting
        for rule in policy["spec"].get(direction, [])
    )


@pytest.mark.parametrize("scenario", ["defaults", "backup-on", "notify-off"])
def test_network_policies_allow_exactly_the_real_flows(renders: dict[str, Path], scenario: str) -> None:
    docs = load(renders, scenario)
    policies = find(docs, "NetworkPolicy")
    labels = {component(d): pod_labels(d) for d, _ in pods(docs)}
    # Every pod is covered by a policy (default deny for anything not listed).
    for comp, own in labels.items():
        assert any(_selects(p["spec"]["podSelector"], own) for p in policies), comp
    ports = {4222, 8222, 8000, 5006, 8080, 9464, 9466}
    allowed = {
        (src, dst, port)
        for src, src_labels in labels.items()
        for dst, dst_labels in labels.items()
        for port in ports
        if src != dst
        and _allowed(policies, "egress", src_labels, dst_labels, port)
        and _allowed(policies, "ingress", dst_labels, src_labels, port)
    }
    expected = {
        ("scraper", "nats", 4222), ("ingester", "nats", 4222), ("dashboard", "ingester", 8000),
        ("operator", "ingester", 8000), ("test", "ingester", 8000), ("test", "dashboard", 5006),
        ("test", "dashboard", 9464), ("scraper", "ingester", 8000),
        ("backfill", "nats", 4222), ("backfill", "ingester", 8000), ("notify", "nats", 4222),
    }  # fmt: skip
    if scenario == "backup-on":
        expected.add(("backup", "ingester", 8000))
    if scenario == "notify-off":
        expected.discard(("notify", "nats", 4222))
    assert allowed == expected
    # Outside the release: providers over HTTPS for the scraper, the API server for the operator,
    # the Ingress controller into the dashboard.
    by_comp = {component(p): p["spec"] for p in policies}
    assert {"ports": [{"port": 443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]} in by_comp[
        "scraper"
    ]["egress"]
    api_rule = [r for r in by_comp["operator"]["egress"] if any("ipBlock" in t for t in r["to"])]
    assert [p["port"] for r in api_rule for p in r["ports"]] == [443, 6443]
    assert by_comp["dashboard"]["ingress"][0]["from"][0] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    }
    assert by_comp["nats"]["egress"] == [] and by_comp["scraper"]["ingress"] == []
    # The operator's backfill Jobs carry the backfill labels (the hook Job's), so this policy holds for them.
    assert by_comp["backfill"]["egress"] == by_comp["scraper"]["egress"] and by_comp["backfill"]["ingress"] == []


# ---------------------------------------------------------------- operator RBAC


def _rules(doc: dict[str, Any]) -> set[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    return {
        (group, resource, tuple(rule.get("resourceNames", ())), tuple(sorted(rule["verbs"])))
        for rule in doc["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


WATCH_RULES = {
    ("cryptoviz.io", "trackedcryptos", (), ("list", "patch", "watch")),
    ("cryptoviz.io", "trackedcryptos/status", (), ("patch",)),
    ("", "events", (), ("create",)),
}


def test_operator_rbac_is_least_privilege(renders: dict[str, Path]) -> None:
    docs = load(renders, "defaults")
    name = f"{FULLNAME}-operator"
    assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")
    assert _rules(one(docs, "Role", name)) == WATCH_RULES
    assert _rules(one(docs, "Role", f"{name}-config")) == {
        ("", "configmaps", (), ("create",)),
        ("", "configmaps", (f"{FULLNAME}-scraper-config",), ("get", "patch")),
        ("batch", "cronjobs", (f"{FULLNAME}-scraper",), ("get", "patch")),
        ("batch", "jobs", (), ("create", "get")),
    }
    for binding in (one(docs, "RoleBinding", name), one(docs, "RoleBinding", f"{name}-config")):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]
    no_wildcards = [
        r for d in find(docs, "Role") for r in d["rules"] if "*" in r["verbs"] + r["resources"] + r["apiGroups"]
    ]
    assert no_wildcards == []

    docs = load(renders, "operator-all-namespaces")
    cluster_role = one(docs, "ClusterRole", f"{NAMESPACE}-{name}")
    assert _rules(cluster_role) == WATCH_RULES
    binding = one(docs, "ClusterRoleBinding", f"{NAMESPACE}-{name}")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    # Without schedule management the CronJob is only read (its pod template runs the backfill Jobs);
    # Jobs stay namespaced to the release even when TrackedCryptos are watched everywhere.
    assert _rules(one(docs, "Role", f"{name}-config")) == {
        ("", "configmaps", (), ("create",)),
        ("", "configmaps", (f"{FULLNAME}-scraper-config",), ("get", "patch")),
        ("batch", "cronjobs", (f"{FULLNAME}-scraper",), ("get",)),
        ("batch", "jobs", (), ("create", "get")),
    }
    args = pod_spec(one(docs, "Deployment", name))["containers"][0]["args"]
    assert "--all-namespaces" in args and not [a for a in args if a.startswith("--namespace")]


# ---------------------------------------------------------------- the notifier


def test_notifier_reads_its_targets_from_a_secret_as_files_and_reaches_only_nats_and_targets(
    renders: dict[str, Path],
) -> None:
    docs = load(renders, "notify-targets")
    name = f"{FULLNAME}-notify"
    deployment = one(docs, "Deployment", name)
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    env = env_of(container)
    assert container["args"] == ["notify"]
    assert env["NOTIFY_URLS_FILE"] == "/etc/cryptoviz/notify/urls"
    assert env["NOTIFY_TARGETS_FILE"] == "/etc/cryptoviz/notify/targets.yaml"
    assert env["DASHBOARD_URL"] == "https://prices.example.org/" and env["NOTIFY_RATE_LIMIT"] == "10"
    assert "NOTIFY_URLS" not in env  # never an env value
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["targets"]["secret"]["secretName"] == name
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "metrics"
    secret = one(docs, "Secret", name)
    import base64

    targets = yaml.safe_load(base64.b64decode(secret["data"]["targets.yaml"]))
    assert targets == {"team": ["tgram://123456:s3cr3tb0t/42"], "ops": "mailto://u:m4ilpw@example.org"}
    result = run(
        [str(VENV_BIN / "python"), "-c", "import sys; from cryptoviz.notify.targets import parse_targets_file as p; "
         "print(sorted(p(sys.stdin.read())))"],
        input=base64.b64decode(secret["data"]["targets.yaml"]).decode(),
    )  # fmt: skip
    assert result.stdout.strip() == "['ops', 'team']", result.stderr
    policy = one(docs, "NetworkPolicy", name)["spec"]
    outside = [r for r in policy["egress"] if any("ipBlock" in t for t in r["to"])]
    assert [p["port"] for r in outside for p in r["ports"]] == [443, 587, 465]
    assert policy["ingress"][0]["ports"] == [{"port": 9465, "protocol": "TCP"}]  # Prometheus only
    assert one(docs, "ServiceMonitor", name)["spec"]["endpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize("replicas", [2, 1, 3])
def test_notifier_replicas_share_the_rate_limit_and_never_surge_beyond_it(replicas: int) -> None:
    values = {} if replicas == 2 else {"notify": {"replicas": replicas}}  # 2: the default
    docs = docs_of(helm_template(values).stdout)
    deployment = one(docs, "Deployment", f"{FULLNAME}-notify")
    assert deployment["spec"]["replicas"] == replicas
    assert env_of(pod_spec(deployment)["containers"][0])["NOTIFY_REPLICAS"] == str(replicas)
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    budgets = find(docs, "PodDisruptionBudget", f"{FULLNAME}-notify")
    assert len(budgets) == (replicas > 1)


def test_notifier_with_an_existing_secret_or_without_targets(renders: dict[str, Path]) -> None:
    docs = load(renders, "notify-existing-secret")
    env = env_of(pod_spec(one(docs, "Deployment", f"{FULLNAME}-notify"))["containers"][0])
    assert env["NOTIFY_TARGETS_FILE"] == "/etc/cryptoviz/notify/t.yaml" and "NOTIFY_URLS_FILE" not in env
    assert not find(docs, "Secret", f"{FULLNAME}-notify")
    plain = load(renders, "defaults")
    env = env_of(pod_spec(one(plain, "Deployment", f"{FULLNAME}-notify"))["containers"][0])
    assert "NOTIFY_URLS_FILE" not in env and "NOTIFY_TARGETS_FILE" not in env and env["DASHBOARD_URL"] == ""
    assert not find(load(renders, "notify-off"), "Deployment", f"{FULLNAME}-notify")
