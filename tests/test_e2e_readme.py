"""The README's two commands, as a newcomer runs them in a fresh clone.

`./scripts/run.sh --demo` runs for real (bounded: until it serves the API and the dashboard,
then Ctrl-C). Only the Python packages are not downloaded again: the clone's `.venv` is a thin
venv that sees this checkout's installed packages and carries the stamp setup.sh checks, so
setup.sh takes its "already set up" path. The test command (`./scripts/test.sh`) is not run
recursively: the test checks that it is the README's and what CI runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import threading
from hashlib import sha256
from pathlib import Path

import requests
from conftest import REPO_ROOT
from support.dev import CHROMIUM, CHROMIUM_ARGS, UNREACHABLE, pid_alive, wait_for


def test_readme_names_the_two_commands_and_ci_runs_the_test_command():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "./scripts/run.sh --demo" in readme and "./scripts/test.sh" in readme
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "scripts/test.sh" in ci
    assert os.access(REPO_ROOT / "scripts" / "test.sh", os.X_OK) or "bash scripts/test.sh" in ci


def _fresh_clone(tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO_ROOT), str(clone)], check=True, timeout=120)
    venv = clone / ".venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    purelib.mkdir(parents=True, exist_ok=True)
    # Executed by site at start-up: this checkout's packages (and its editable cryptoviz) become visible.
    (purelib / "_cryptoviz_test_env.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n", encoding="utf-8"
    )
    script = venv / "bin" / "cryptoviz"
    script.write_text(f"#!{venv}/bin/python\nfrom cryptoviz.cli import main\nmain()\n", encoding="utf-8")
    script.chmod(0o755)
    (venv / "bin" / "nats-server").symlink_to(Path(sys.executable).parent.joinpath("nats-server").resolve())
    inputs = (clone / "pyproject.toml").read_bytes() + (clone / "locks" / "dev.txt").read_bytes()
    stamp = sha256(inputs).hexdigest()[:16]
    (venv / ".stamp").write_text(stamp + "\n", encoding="utf-8")
    # helm/kubectl/checkov: this checkout's, so setup.sh downloads nothing.
    cache_bin = clone / ".cache" / "bin"
    cache_bin.mkdir(parents=True)
    for tool in ("helm", "kubectl"):
        source = REPO_ROOT / ".cache" / "bin" / tool
        if source.exists():
            (cache_bin / tool).symlink_to(source.resolve())
    if (REPO_ROOT / ".cache" / "checkov").exists():
        (clone / ".cache" / "checkov").symlink_to((REPO_ROOT / ".cache" / "checkov").resolve())
    return clone


class Run:
    """`./scripts/run.sh ARGS` in the clone, output collected."""

    def __init__(self, clone: Path, env: dict[str, str], *args: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            ["./scripts/run.sh", *args],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_ready(self) -> None:
        wait_for(lambda: "Press Ctrl-C" in self.text or self.process.poll() is not None, 240, "run.sh to come up")
        assert self.process.poll() is None, self.text

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise


def _assert_simulated_banner(url: str) -> None:
    """In a real browser, the demo's prices are labelled as simulated."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url, wait_until="domcontentloaded")
            expect(page.locator(".cv-banner-simulated")).to_contain_text("Simulated data", timeout=60_000)
        finally:
            browser.close()


def test_run_sh_demo_in_a_fresh_clone_serves_the_api_and_dashboard_and_a_second_run_reuses_the_data(tmp_path):
    import json

    from cryptoviz.core.nats import free_port

    clone = _fresh_clone(tmp_path)
    api_port, dashboard_port, nats_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "API_PORT": str(api_port),
        "DASHBOARD_PORT": str(dashboard_port),
        "NATS_PORT": str(nats_port),
        "COINGECKO_BASE_URL": UNREACHABLE,
        "CMC_API_KEY": "",
    }
    api = f"http://127.0.0.1:{api_port}"
    state = clone / ".cryptoviz" / "demo"  # each mode has its own state dir

    first = Run(clone, env, "--demo")
    try:
        first.wait_ready()
        assert f"http://localhost:{dashboard_port}" in first.text and "SIMULATED" in first.text
        stats = wait_for(
            lambda: (s := requests.get(f"{api}/api/v1/stats", timeout=5).json())["records"] > 0 and s,
            60,
            "quotes stored",
        )
        assert stats["simulated"] is True and stats["providers"] == ["demo"]
        page = requests.get(f"http://127.0.0.1:{dashboard_port}/", timeout=30)
        assert page.status_code == 200 and "CryptoViz" in page.text
        _assert_simulated_banner(f"http://127.0.0.1:{dashboard_port}/")
        pids = [p for p in json.loads((state / "run.json").read_text())["pids"].values() if p]
    finally:
        code = first.interrupt()
    assert code == 0, first.text
    assert "Stopped. Data kept in" in first.text
    assert not [p for p in pids if pid_alive(p)], "processes left behind after Ctrl-C"
    kept = stats["records"]

    # No --demo this time: CoinGecko is unreachable, which it says plainly before falling back.
    second = Run(clone, env)
    try:
        second.wait_ready()
        assert "CoinGecko cannot be used: cannot connect" in second.text
        assert "Falling back to the demo simulator" in second.text
        assert "Using scraper config" in second.text  # the first run's file, not a new one
        wait_for(
            lambda: requests.get(f"{api}/api/v1/stats", timeout=5).json()["records"] > kept,
            60,
            "new quotes on top of the first run's",
        )
    finally:
        assert second.interrupt() == 0, second.text
