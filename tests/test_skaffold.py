"""skaffold.yaml and the kind e2e workflow, checked without skaffold, Docker or a cluster: the shared
skaffold v4beta14 JSON Schema, artifacts <-> chart images, the kind profile's values and port-forwards
against the rendered chart, and the workflow's YAML and the files it uses."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import SHARED_DIR
from test_chart import CHART, docs_of, find_tool, pods, run

REPO = Path(__file__).resolve().parent.parent
SKAFFOLD = yaml.safe_load((REPO / "skaffold.yaml").read_text())
WORKFLOW_PATH = REPO / ".github" / "workflows" / "kind-e2e.yaml"
RELEASE = SKAFFOLD["deploy"]["helm"]["releases"][0]
# Sanitized name (as templates spell it) -> artifact image name.
ARTIFACTS = {re.sub(r"[/.-]", "_", a["image"]): a["image"] for a in SKAFFOLD["build"]["artifacts"]}


def render_as_skaffold(tmp_path: Path, profile_values: dict[str, Any]) -> list[dict[str, Any]]:
    """helm template the way skaffold deploys: its release name/namespace, images from artifacts, --set values."""
    sets = dict(profile_values)
    for key, template in RELEASE["setValueTemplates"].items():
        # skaffold fills {{.IMAGE_REPO_<name>}} / {{.IMAGE_TAG_<name>}} from the artifact it built, the
        # artifact's name spelled with `_` for `/`, `-` and `.`; an unknown name would render as "<no value>".
        def repo(match: re.Match[str]) -> str:
            assert match.group(1) in ARTIFACTS, f"{match.group(0)} names no artifact"
            return f"built/{ARTIFACTS[match.group(1)]}"

        sets[key] = re.sub(r"\{\{\s*\.IMAGE_REPO_(\w+)\s*\}\}", repo, template)
        sets[key] = re.sub(r"\{\{\s*\.IMAGE_TAG_(\w+)\s*\}\}", lambda m: f"tag-{ARTIFACTS[m.group(1)]}", sets[key])
    args = [
        a
        for key, value in sets.items()
        for a in ("--set-string" if isinstance(value, str) else "--set", f"{key}={value}")
    ]
    result = run(
        [
            find_tool("helm"),
            "template",
            RELEASE["name"],
            str(REPO / RELEASE["chartPath"]),
            "--namespace",
            RELEASE["namespace"],
            *args,
        ]
    )
    assert result.returncode == 0, result.stderr
    return docs_of(result.stdout)


def kind_profile() -> dict[str, Any]:
    return next(p for p in SKAFFOLD["profiles"] if p["name"] == "kind")


def test_skaffold_yaml_validates_against_the_v4beta14_schema() -> None:
    schema = json.loads((SHARED_DIR / "schemas" / "skaffold-v4beta14.json").read_text())
    assert SKAFFOLD["apiVersion"] == "skaffold/v4beta14"
    jsonschema.Draft7Validator(schema).validate(SKAFFOLD)
    # The schema is strict enough to catch a typo (so passing it means something).
    broken = json.loads(json.dumps(SKAFFOLD))
    broken["deploy"]["helm"]["releases"][0]["chartpath"] = "x"
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_every_artifact_is_used_by_the_chart_and_every_chart_image_is_built(tmp_path: Path) -> None:
    artifacts = {a["image"] for a in SKAFFOLD["build"]["artifacts"]}
    for artifact in SKAFFOLD["build"]["artifacts"]:
        assert (REPO / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    nats = values["nats"]["image"]
    third_party = f"{nats['repository']}:{nats['tag']}"
    assert re.fullmatch(r"\d+\.\d+\.\d+(-alpine)?", nats["tag"]), "third-party images are pinned"
    used: set[str] = set()
    for extra in ({}, {"backup.enabled": True, "operator.watchAllNamespaces": True}):
        for _, spec in pods(render_as_skaffold(tmp_path, extra)):
            used |= {c["image"] for c in spec["containers"]}
    built = {f"built/{a}:tag-{a}" for a in artifacts}
    assert used - {third_party} == built, "chart images not built by skaffold, or artifacts the chart never runs"
    # Each artifact is the Dockerfile target the chart's component runs, and every target is built.
    targets = {a["docker"]["target"] for a in SKAFFOLD["build"]["artifacts"]}
    assert {a["image"] for a in SKAFFOLD["build"]["artifacts"]} == {f"cryptoviz-{t}" for t in targets}
    dockerfile = (REPO / "Dockerfile").read_text()
    assert targets == set(re.findall(r"(?m)^FROM runtime AS (\w+)$", dockerfile))


def test_kind_profile_activates_on_kind_contexts_with_small_volumes(tmp_path: Path) -> None:
    profile = kind_profile()
    patterns = [a["kubeContext"] for a in profile["activation"]]
    assert any(re.fullmatch(p, "kind-kind") for p in patterns)
    assert any(re.fullmatch(p, "kind-cryptoviz") for p in patterns)
    assert not any(re.fullmatch(p, "gke_prod_europe-west1_main") for p in patterns)
    patches = {p["path"]: p["value"] for p in profile["patches"]}
    assert patches["/build/local/push"] is False  # images are loaded into kind, not pushed
    set_values = patches["/deploy/helm/releases/0/setValues"]
    docs = render_as_skaffold(tmp_path, set_values)  # the chart's strict schema accepts every key
    claims = [
        t["spec"]["resources"]["requests"]["storage"]
        for d in docs
        if d["kind"] == "StatefulSet"
        for t in d["spec"].get("volumeClaimTemplates", [])
    ]
    assert sorted(claims) == ["256Mi", "512Mi"]
    dashboard = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-dashboard"))
    env = {e["name"]: e.get("value") for e in dashboard["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DASHBOARD_ALLOWED_ORIGINS"] == "localhost:5006"  # the port-forwarded browser may connect


def test_port_forwards_target_the_rendered_dashboard_and_ingester_services(tmp_path: Path) -> None:
    services = {
        d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]}
        for d in render_as_skaffold(tmp_path, {})
        if d["kind"] == "Service"
    }
    forwards = {(f["resourceName"], f["port"], f["localPort"]) for f in SKAFFOLD["portForward"]}
    assert forwards == {("cryptoviz-dashboard", 5006, 5006), ("cryptoviz-ingester", 8000, 8000)}
    for name, port, _ in forwards:
        assert port in services[name], (name, services)
    assert {f["namespace"] for f in SKAFFOLD["portForward"]} == {RELEASE["namespace"]}


def test_kind_e2e_workflow_is_valid_and_uses_real_files() -> None:
    workflow = yaml.safe_load(WORKFLOW_PATH.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    assert workflow["permissions"] == {"contents": "read"}
    steps = workflow["jobs"]["e2e"]["steps"]
    for step in steps:
        assert ("uses" in step) != ("run" in step), step
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]
    script = "\n".join(s.get("run", "") for s in steps)
    for needle in (
        "ENGINE=docker scripts/images.sh",
        "kind load docker-image",
        "helm install",
        "--wait",
        "helm test",
        "kubectl --namespace",
    ):
        assert needle in script, needle
    for path in re.findall(r"\b((?:charts|examples)/[\w./-]+)", script):
        assert (REPO / path).exists(), path
    # The same names the chart gives its objects for this release.
    env = workflow["env"]
    docs = docs_of(
        run([find_tool("helm"), "template", env["RELEASE"], str(CHART), "--namespace", env["NAMESPACE"]]).stdout
    )
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("ConfigMap", f"{env['RELEASE']}-scraper-config") in names
    assert ("CronJob", f"{env['RELEASE']}-scraper") in names
    # The workflow loads every image the chart runs, under the names the chart gives them.
    assert '--set image.repository="$IMAGE_REPOSITORY" --set image.tag="$IMAGE_TAG"' in script
    load = r"for target in ([\w ]+); do\n\s*kind load docker-image \"\$IMAGE_REPOSITORY-\$target:\$IMAGE_TAG\""
    loaded = re.search(load, script)
    assert loaded, script
    targets = set(re.findall(r"(?m)^FROM runtime AS (\w+)$", (REPO / "Dockerfile").read_text()))
    assert set(loaded.group(1).split()) == targets


@pytest.mark.parametrize("path", ["examples/trackedcrypto-btc.yaml"])
def test_the_example_the_docs_and_workflow_apply_is_a_tracked_crypto(path: str) -> None:
    doc = yaml.safe_load((REPO / path).read_text())
    assert (doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) == (
        "cryptoviz.io/v1alpha1",
        "TrackedCrypto",
        "btc",
    )
