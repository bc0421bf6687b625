"""`cryptoviz dev`'s supervisor: bring the whole pipeline up in order, keep it up, stop it cleanly.

Order matters both ways: NATS before anyone connects, the ingester (the only DuckDB user)
before the scraper publishes, the dashboard last; on stop, the reverse, so the ingester can
commit and ack what it holds before NATS goes away. Children that die are restarted with
backoff (that is what the fault drills rely on). `run.json` in the state dir tells tools and
tests which process is which.

NATS runs with the cluster's users and permissions (core/natsauth.py), from `nats.conf` in the
state dir (mode 0600), nothing anonymous; each run draws new passwords, written one per user into
`nats-credentials/` (0600), and each child is given only its own user and password file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import click
import requests

from cryptoviz.core.common_settings import GlobalSettings
from cryptoviz.core.nats import EmbeddedNats, port_is_free
from cryptoviz.core.natsauth import ROLES
from cryptoviz.core.settings import env_for, env_of
from cryptoviz.dashboard.settings import DashboardSettings
from cryptoviz.dev.procs import Child, cryptoviz_command
from cryptoviz.ingester.settings import IngestSettings
from cryptoviz.notify.settings import NotifySettings
from cryptoviz.scraper.settings import BackfillSettings, ScrapeSettings, provider_key_env_names

log = logging.getLogger(__name__)

KEY_HOLDERS = ("scraper", "backfill")
"""The only children that get the provider keys (CMC_API_KEY, COINGECKO_API_KEY, … from the registry)."""


_NATS_CREDENTIALS = (
    env_of(IngestSettings, "nats_url"),
    *(env_of(GlobalSettings, name) for name in ("nats_user", "nats_password", "nats_password_file", "nats_ca_file")),
)


def unless_set(env: dict[str, str]) -> dict[str, str]:
    """The defaults of `env` the caller has not set in its own environment: its value (even empty) wins."""
    return {name: value for name, value in env.items() if name not in os.environ}


class DevError(click.ClickException):
    """A reason to stop before (or while) starting, shown as one plain message, exit code 1."""


@dataclass
class Plan:
    """Everything decided before the first process starts."""

    state_dir: Path
    host: str
    api_port: int
    dashboard_port: int
    nats_port: int
    provider: str
    provider_note: str
    scrape_interval: float
    scraper_config: Path
    market_url: str | None = None
    with_dashboard: bool = True
    poll_interval: float = 0.0
    """How often the scraper asks; local markets are polled twice per tick (see market_link)."""
    extra_env: dict[str, str] = field(default_factory=dict)
    admin_token_file: Path | None = None
    """The ingester's ADMIN_TOKEN_FILE (None: the caller's own ADMIN_TOKEN / ADMIN_TOKEN_FILE apply)."""

    @property
    def api_url(self) -> str:
        reachable = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host  # listening everywhere
        return f"http://{reachable}:{self.api_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{'localhost' if self.host in ('127.0.0.1', '0.0.0.0') else self.host}:{self.dashboard_port}"

    @property
    def duckdb_path(self) -> Path:
        return self.state_dir / "cryptoviz.duckdb"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"


def check_ports(ports: dict[str, tuple[int, str]], host: str) -> None:
    """Fail early, naming the port, what wanted it and the flag that moves it."""
    seen: dict[int, str] = {}
    for what, (port, flag) in ports.items():
        if port in seen:
            raise DevError(f"{what} and {seen[port]} are both set to port {port}; give one another port with {flag}")
        seen[port] = what
        if not port_is_free(port, host):
            raise DevError(
                f"port {port} ({what}) is already in use on {host}: stop whatever uses it "
                f"(is another `cryptoviz dev` running?) or choose another port with {flag}"
            )


@contextlib.contextmanager
def state_lock(state_dir: Path):
    """One `cryptoviz dev` per state dir: DuckDB and JetStream each allow one owner of their files."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = open(state_dir / "dev.lock", "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DevError(
                f"another `cryptoviz dev` is already using {state_dir}; stop it or pass another --state-dir"
            ) from None
        yield
    finally:
        handle.close()


ADMIN_ENV = (env_of(IngestSettings, "admin_token"), env_of(IngestSettings, "admin_token_file"))


def ensure_admin_token(state_dir: Path) -> Path:
    """The local ingester's admin token (for `cryptoviz backup`): made once, kept with the data,
    readable by its owner only."""
    path = state_dir / "admin-token"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    return path


def reap_leftovers(state_dir: Path, echo: Callable[[str], None] = click.echo) -> None:
    """Stop a nats-server left running by a previous `cryptoviz dev` that was SIGKILLed.

    Its other children die with it (parent-death signal); nats-server is started by core's
    EmbeddedNats, so it is found here by its store dir. Called under the state lock, so the
    previous run is certainly gone.
    """
    try:
        info = json.loads((state_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    pid = (info.get("pids") or {}).get("nats")
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if pid else []
    except OSError:
        return
    ours = str(state_dir / "nats").encode()
    if cmdline and cmdline[0].endswith(b"nats-server") and any(arg.startswith(ours) for arg in cmdline):
        echo(f"Stopping nats-server {pid} left by an earlier run that did not exit cleanly")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)


def wait_http(url: str, child: Child | None, timeout: float, what: str, stop: threading.Event | None = None) -> None:
    """Wait until `url` answers 200, failing fast (with its log) if the child dies or Ctrl-C comes meanwhile."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if stop is not None and stop.is_set():
            raise DevError(f"interrupted while waiting for {what}; stopping what was started")
        if child is not None and not child.alive():
            raise DevError(
                f"{what} exited with code {child.exit_code()} while starting; last lines of {child.log_path}:\n"
                + child.tail()
            )
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise DevError(f"{what} did not become ready at {url} within {timeout:.0f}s; see {child.log_path if child else ''}")


class Supervisor:
    def __init__(self, plan: Plan, echo: Callable[[str], None] = click.echo) -> None:
        self.plan = plan
        self.echo = echo
        self.passwords = {name: secrets.token_urlsafe(24) for name in ROLES}
        self.nats = EmbeddedNats(plan.state_dir / "nats", port=plan.nats_port, passwords=self.passwords)
        self.children: dict[str, Child] = {}
        self._stop = threading.Event()
        self._nats_restart_at = 0.0

    # -- building the children -------------------------------------------------------------
    def _env(self, keys: bool = False, **extra: str) -> dict[str, str]:
        """The caller's environment, without the provider keys unless `keys`, never its NATS credentials."""
        hidden = (set() if keys else provider_key_env_names()) | set(_NATS_CREDENTIALS)
        env = {name: value for name, value in os.environ.items() if name not in hidden}
        env.update(self.plan.extra_env)
        env.update(extra)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def nats_env(self, role: str) -> dict[str, str]:
        """NATS_URL and the credentials of one role (its password in a 0600 file), for one child."""
        directory = self.plan.state_dir / "nats-credentials"
        directory.mkdir(mode=0o700, exist_ok=True)
        path = directory / role
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(self.passwords[role], encoding="utf-8")
        return {
            **env_for(IngestSettings, nats_url=self.nats.url),
            **env_for(GlobalSettings, nats_user=ROLES[role].user, nats_password_file=path),
        }

    def _child(
        self, name: str, args: list[str], ready_url: str | None = None, one_shot: bool = False, **env: str
    ) -> Child:
        log_path = self.plan.logs_dir / f"{name}.log"
        environment = self._env(name in KEY_HOLDERS, **env)
        if name != "ingester":  # the admin token is the ingester's alone
            for key in ADMIN_ENV:
                environment.pop(key, None)
        child = Child(name, cryptoviz_command(*args), environment, log_path, ready_url, one_shot)
        self.children[name] = child
        return child

    def _build_ingester(self) -> None:
        p = self.plan
        self._child(
            "ingester",
            ["ingest"],
            ready_url=f"{p.api_url}/readyz",
            **self.nats_env("ingester"),
            **env_for(
                IngestSettings,
                duckdb_path=p.duckdb_path,
                api_host=p.host,
                api_port=p.api_port,
                scraper_config=p.scraper_config,
                admin_token_file=p.admin_token_file,
            ),
            **self._retention(),
        )

    def _retention(self) -> dict[str, str]:
        """Replay defaults: old candles kept, and a batch not held longer than a scrape period.

        Replayed candles are months old: the default 30-day retention would delete them as they land.
        A local tick is one message, so the ingester would wait its whole BATCH_TIMEOUT (0.25 s) for
        more before committing; with sub-second intervals that wait would be the replay's pace.
        """
        env: dict[str, str] = {}
        if self.plan.provider == "replay":
            env |= env_for(IngestSettings, retention_days=0.0)
        if self.plan.provider in ("demo", "replay"):
            env |= env_for(IngestSettings, batch_timeout=min(0.25, self.plan.poll_interval / 2))
        return unless_set(env)

    def _build_scraper_and_dashboard(self) -> None:
        p = self.plan
        # the settings scrape and backfill share (ScraperSettings), named once for both
        shared = dict(
            ingester_url=p.api_url, provider=p.provider, scraper_config=p.scraper_config, market_base_url=p.market_url
        )
        scrape = env_for(ScrapeSettings, scrape_interval=p.poll_interval, **shared)
        self._child("scraper", ["scrape", "--loop"], **self.nats_env("scraper"), **scrape)
        if p.provider != "replay":  # a replay is its own history; live providers and the simulator have a past
            backfill = env_for(BackfillSettings, **shared)
            self._child("backfill", ["backfill"], one_shot=True, **self.nats_env("scraper"), **backfill)
        # Targets come from the caller's NOTIFY_URLS / NOTIFY_TARGETS_FILE; without any, alerts are
        # recorded as not delivered (the dashboard says why).
        self._child(
            "notify",
            ["notify"],
            **self.nats_env("notify"),
            **env_for(NotifySettings, metrics_host=p.host, replicas=1),  # one notifier: the whole rate limit
            **unless_set(
                env_for(NotifySettings, metrics_port=0, dashboard_url=p.dashboard_url if p.with_dashboard else "")
            ),
        )
        if not p.with_dashboard:
            return
        self._child(
            "dashboard",
            ["dashboard"],
            ready_url=f"http://127.0.0.1:{p.dashboard_port}/liveness",
            # no DASHBOARD_ALLOWED_ORIGINS: the dashboard's default is this machine's own addresses on its port
            **env_for(
                DashboardSettings,
                ingester_url=p.api_url,
                dashboard_address=p.host,
                dashboard_port=p.dashboard_port,
                scrape_interval=max(p.scrape_interval, 1.0),  # the dashboard's cadence floor is 1 s
            ),
        )

    # -- run.json -------------------------------------------------------------------------
    def write_run_file(self) -> None:
        p = self.plan
        info = {
            "pid": os.getpid(),
            "provider": p.provider,
            "dashboard_url": p.dashboard_url,
            "api_url": p.api_url,
            "nats_url": self.nats.url,
            "market_url": p.market_url,
            "duckdb_path": str(p.duckdb_path),
            "scraper_config": str(p.scraper_config),
            "scrape_interval": p.scrape_interval,
            "admin_token_file": str(p.admin_token_file) if p.admin_token_file else None,
            "pids": {
                "nats": self.nats.process.pid if self.nats.process else None,
                **{name: c.pid for name, c in self.children.items()},
            },
            "restarts": {name: c.restarts for name, c in self.children.items()},
        }
        tmp = p.state_dir / "run.json.tmp"
        tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
        tmp.replace(p.state_dir / "run.json")

    # -- lifecycle ------------------------------------------------------------------------
    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def start(self, start_market: Callable[[], str | None] = lambda: None) -> None:
        """Start in dependency order; `start_market` (after the ingester is ready) returns MARKET_BASE_URL."""
        p = self.plan
        self.echo(f"[1/4] NATS JetStream     starting on port {p.nats_port} (data in {self.nats.store_dir}) …")
        try:
            self.nats.start()
        except (OSError, RuntimeError, TimeoutError) as exc:
            raise DevError(f"nats-server could not start: {exc}") from None
        self.echo(f"[2/4] ingester + API     starting on {p.api_url} (DuckDB {p.duckdb_path}) …")
        self._build_ingester()
        ingester = self.children["ingester"]
        ingester.start()
        wait_http(f"{p.api_url}/readyz", ingester, 120, "the ingester", self._stop)
        p.market_url = start_market()
        self._build_scraper_and_dashboard()
        self.echo(f"[3/4] scraper            starting ({p.provider}, every {p.poll_interval:g}s) …")
        self.children["scraper"].start()
        if "backfill" in self.children:  # one-shot, in the background: nothing waits for it
            default_days = BackfillSettings.model_fields["backfill_days"].default
            days = os.environ.get(env_of(BackfillSettings, "backfill_days"), f"{default_days:g}")
            self.echo(
                f"      backfill           filling {days} days of history (log: {self.children['backfill'].log_path})"
            )
            self.children["backfill"].start()
        self.echo("      notifier           starting (alerts to NOTIFY_URLS / NOTIFY_TARGETS_FILE) …")
        self.children["notify"].start()
        if p.with_dashboard:
            self.echo(f"[4/4] dashboard          starting on {p.dashboard_url} …")
            dashboard = self.children["dashboard"]
            dashboard.start()
            wait_http(f"http://127.0.0.1:{p.dashboard_port}/liveness", dashboard, 120, "the dashboard", self._stop)
        self.write_run_file()

    def watch(self, tick: float = 0.5) -> None:
        """Restart whatever dies until asked to stop."""
        while not self._stop.wait(tick):
            changed = False
            if self.nats.process is None or self.nats.process.poll() is not None:
                changed |= self._revive_nats()
            for child in self.children.values():
                child.check_health()
                if child.one_shot and child.process is not None and not child.alive():
                    code = child.exit_code()
                    outcome = "done" if code == 0 else f"exited with code {code}; the scrapes fill holes as they go"
                    self.echo(f"  {child.name} {outcome} (log: {child.log_path})")
                    child.process = None
                    continue
                if child.one_shot:
                    continue
                if child.process is not None and not child.alive():
                    code = child.exit_code()
                    delay = child.schedule_restart()
                    self.echo(
                        f"! {child.name} exited with code {code}; restarting in {delay:g}s (log: {child.log_path})"
                    )
                if child.process is None and child.due_for_restart() and not self._stop.is_set():
                    child.start()
                    changed = True
            if changed:
                self.write_run_file()

    def _revive_nats(self) -> bool:
        now = time.monotonic()
        if self._nats_restart_at == 0.0:
            code = self.nats.process.returncode if self.nats.process else "?"
            self.echo(f"! nats-server exited with code {code}; restarting it in 1s")
            self.nats.process = None
            self._nats_restart_at = now + 1.0
            return False
        if now < self._nats_restart_at:
            return False
        try:
            self.nats.start()
        except (OSError, RuntimeError, TimeoutError) as exc:
            self.echo(f"! nats-server could not restart ({exc}); retrying in 5s")
            self._nats_restart_at = now + 5.0
            return False
        self._nats_restart_at = 0.0
        self.echo("  nats-server is back")
        return True

    def stop(self) -> None:
        """Reverse order; the ingester gets time to commit and ack before NATS stops."""
        for name in ("dashboard", "backfill", "notify", "scraper", "ingester"):
            child = self.children.get(name)
            if child:
                child.stop(timeout=20 if name == "ingester" else 10)
        self.nats.stop()
        with contextlib.suppress(OSError):
            (self.plan.state_dir / "run.json").unlink()


def install_signal_handlers(supervisor: Supervisor) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, supervisor.request_stop)
