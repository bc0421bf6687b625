"""Each component on its own image: `<image.repository>-<component>:<tag>` by default (so the README's
`--set image.repository=… --set image.tag=…` keeps working), per-component overrides as skaffold sets
them, digests per component, and a clear failure for a template that asks for "the" image."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_chart import CHART, docs_of, find_tool, helm_template, pods, run

DIGEST = "sha256:" + "cd" * 32


def images_by_workload(values: dict) -> dict[str, set[str]]:
    result = helm_template(values)
    assert result.returncode == 0, result.stderr
    out: dict[str, set[str]] = {}
    for doc, spec in pods(docs_of(result.stdout)):
        out.setdefault(doc["metadata"]["name"].rsplit("-", 1)[-1], set()).update(c["image"] for c in spec["containers"])
    return out


def test_the_install_line_names_every_component_image_from_one_repository_and_tag() -> None:
    images = images_by_workload(
        {"image": {"repository": "ghcr.io/you/cryptoviz", "tag": "0.2.0"}, "backup": {"enabled": True}}
    )
    assert images["scraper"] == {"ghcr.io/you/cryptoviz-scraper:0.2.0"}
    assert images["ingester"] == images["backup"] == {"ghcr.io/you/cryptoviz-ingester:0.2.0"}
    assert images["dashboard"] == {"ghcr.io/you/cryptoviz-dashboard:0.2.0"}
    assert images["operator"] == {"ghcr.io/you/cryptoviz-operator:0.2.0"}
    assert images["test"] == {"ghcr.io/you/cryptoviz-scraper:0.2.0"}  # helm test needs only Python


def test_per_component_overrides_win_and_a_digest_pins_only_its_component() -> None:
    images = images_by_workload(
        {
            "image": {
                "repository": "ghcr.io/you/cryptoviz",
                "tag": "0.2.0",
                "dashboard": {"repository": "registry.local/dash", "tag": "dev-1"},
                "operator": {"digest": DIGEST},
            }
        }
    )
    assert images["dashboard"] == {"registry.local/dash:dev-1"}
    assert images["operator"] == {f"ghcr.io/you/cryptoviz-operator@{DIGEST}"}
    assert images["ingester"] == {"ghcr.io/you/cryptoviz-ingester:0.2.0"}


@pytest.mark.parametrize(
    "values",
    [{"image": {"digest": DIGEST}}, {"image": {"ingester": {"digest": "latest"}}}, {"image": {"notifier": {}}}],
    ids=["one-digest-for-all", "not-a-digest", "unknown-component"],
)
def test_the_schema_refuses_image_values_that_cannot_be_meant(values: dict) -> None:
    result = helm_template(values)
    assert result.returncode != 0 and "schema" in result.stderr, result.stderr


def test_a_template_asking_for_the_one_image_fails_with_what_to_write(tmp_path: Path) -> None:
    """A new workload (e.g. from a branch written before per-component images) cannot silently get some image."""
    chart = tmp_path / "cryptoviz"
    shutil.copytree(CHART, chart)
    template = 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {i: {{ include "cryptoviz.image" . }}}\n'
    (chart / "templates" / "new.yaml").write_text(template)
    result = run([find_tool("helm"), "template", "r", str(chart)])
    assert result.returncode != 0 and 'cryptoviz.image takes (dict "ctx" $ "image" COMPONENT)' in result.stderr
    (chart / "templates" / "new.yaml").write_text(template.replace(" . ", ' (dict "ctx" . "image" "notifier") '))
    result = run([find_tool("helm"), "template", "r", str(chart)])
    assert result.returncode != 0 and "image.notifier: no such component image" in result.stderr, result.stderr
