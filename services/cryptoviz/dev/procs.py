"""Child processes of `cryptoviz dev`: started, watched, restarted, and stopped without orphans.

Each service runs as `python -m cryptoviz.cli <command>` of this same interpreter, in its own
process group (so a terminal's Ctrl-C reaches only the supervisor, which then stops them in
order) and with a parent-death signal (so even a SIGKILLed supervisor leaves nothing behind).
Their output goes to a log file per service under the state dir, keeping the terminal readable.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
INITIAL_RESTART_DELAY = 0.5
HEALTHY_AFTER = 5.0
"""Seconds a child without a readiness URL must run to count as healthy (not crash-looping)."""


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGTERM it when the supervisor dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def cryptoviz_command(*args: str) -> list[str]:
    """`cryptoviz ARGS` with this interpreter: its console script when installed beside it."""
    script = Path(sys.executable).parent / "cryptoviz"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from cryptoviz.cli import main; main()", *args]


class Child:
    """One supervised service. `restart_delay` grows while it keeps failing, and resets once it has
    proved healthy: its `ready_url` answered (or, without one, it ran a few seconds)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        ready_url: str | None = None,
        one_shot: bool = False,
    ) -> None:
        self.name = name
        self.one_shot = one_shot
        """Runs once to its end (the start-up backfill): never restarted."""
        self.ready_url = ready_url
        self.healthy = False
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.restart_delay = INITIAL_RESTART_DELAY
        self.started_at = 0.0
        self._next_start = 0.0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name} ===\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # the supervisor only spawns from its main thread
            )
        self.started_at = time.monotonic()
        self.healthy = False

    def check_health(self) -> None:
        """Called by the watch loop until the child is healthy once; then its backoff resets."""
        if self.healthy or not self.alive():
            return
        if self.ready_url is None:
            self.healthy = time.monotonic() - self.started_at > HEALTHY_AFTER
        else:
            with contextlib.suppress(requests.RequestException):
                self.healthy = requests.get(self.ready_url, timeout=1).status_code == 200
        if self.healthy:
            self.restart_delay = INITIAL_RESTART_DELAY

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_code(self) -> int | None:
        return self.process.poll() if self.process else None

    def schedule_restart(self) -> float:
        """Note an unexpected exit; return the delay before `due_for_restart` says go."""
        # A crash loop backs off up to 30 s; a child that was healthy comes back after the initial delay.
        if not self.healthy:
            self.restart_delay = min(self.restart_delay * 2, 30.0)
        self._next_start = time.monotonic() + self.restart_delay
        self.restarts += 1
        self.process = None
        return self.restart_delay

    def due_for_restart(self) -> bool:
        return self.process is None and time.monotonic() >= self._next_start

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; the whole process group, so helpers go too."""
        if not self.process:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        else:
            # The leader is gone; make sure nothing it spawned lingers in its group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None

    def tail(self, lines: int = 15) -> str:
        """The end of this service's log, to show why it failed."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])
