"""Helpers for the whole-system tests: run `cryptoviz dev` as a user would, and read what it serves.

No tests here; test_dev*, test_e2e* and test_faults* import it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from cryptoviz.core.nats import free_port

from support.wait import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
UNREACHABLE = "http://127.0.0.1:9"
"""The discard port: nothing listens there, so a 'live' provider pointed at it is unreachable at once."""


def cryptoviz(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cryptoviz.cli import main; main()", *args]


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        # A zombie counts as gone: it no longer runs anything.
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


class DevRun:
    """One `cryptoviz dev` process with free ports and its own state dir; output collected."""

    def __init__(self, state_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.api_port, self.dashboard_port, self.nats_port = free_port(), free_port(), free_port()
        self.args = args
        self.env = {
            **os.environ,
            "COINGECKO_BASE_URL": UNREACHABLE,
            "CMC_API_KEY": "",
            "LOG_LEVEL": "INFO",
            **(env or {}),
        }
        self.output: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def text(self) -> str:
        return "".join(self.output)

    def command(self) -> list[str]:
        return cryptoviz(
            "dev",
            "--state-dir",
            str(self.state_dir),
            "--api-port",
            str(self.api_port),
            "--dashboard-port",
            str(self.dashboard_port),
            "--nats-port",
            str(self.nats_port),
            *self.args,
        )

    def start(self, ready_timeout: float = 150) -> DevRun:
        self.process = subprocess.Popen(
            self.command(),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(
            lambda: "Press Ctrl-C to stop." in self.text or self.process.poll() is not None,
            ready_timeout,
            "cryptoviz dev to come up",
        )
        assert self.process.poll() is None, f"cryptoviz dev exited early:\n{self.text}"
        return self

    def _read(self) -> None:
        assert self.process and self.process.stdout
        for line in self.process.stdout:
            self.output.append(line)

    def run_info(self) -> dict:
        return json.loads((self.state_dir / "run.json").read_text())

    def pid(self, name: str) -> int:
        return self.run_info()["pids"][name]

    def get(self, path: str, **params: object) -> dict:
        response = requests.get(self.api + path, params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict:
        return self.get("/api/v1/stats")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        """Stop like a user's Ctrl-C; return the exit code."""
        assert self.process
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # in case a test left it paused
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                raise AssertionError(f"cryptoviz dev did not stop within {timeout}s:\n{self.text}") from None
        if self._reader:
            self._reader.join(timeout=5)
        return self.process.returncode

    def kill_everything(self) -> None:
        """Last-resort cleanup for a failed test: every process this run started."""
        pids: list[int] = []
        with contextlib.suppress(OSError, ValueError, KeyError):
            pids = [p for p in self.run_info()["pids"].values() if p]
        if self.process and self.process.poll() is None:
            self.stop()
        for pid in pids:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def dev_running(state_dir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[DevRun]:
    run = DevRun(state_dir, *args, env=env)
    try:
        yield run.start()
    finally:
        run.kill_everything()


@dataclass
class Replay:
    """What a replay of the first N candle times must store: one row per coin per candle."""

    rows: int
    per_symbol: dict[str, int]
    candles: set[tuple[str, str, float]]
    """(symbol, ISO time, close) of every replayed candle."""
    start: datetime
    end: datetime


def expected_replay(directory: Path, limit: int) -> Replay:
    """Read the CSVs directly (not through the market server) to know what must arrive."""
    series: dict[str, list[tuple[datetime, float]]] = {}
    for file in sorted(directory.glob("*.csv")):
        with file.open(newline="", encoding="utf-8") as handle:
            series[file.name.split("-")[0]] = [
                (datetime.fromisoformat(r["Date"]).astimezone(UTC), float(r["Close"])) for r in csv.DictReader(handle)
            ]
    ticks = sorted({t for rows in series.values() for t, _ in rows})[:limit]
    wanted = set(ticks)
    candles = {
        (symbol, t.strftime("%Y-%m-%dT%H:%M:%SZ"), close)
        for symbol, rows in series.items()
        for t, close in rows
        if t in wanted
    }
    per_symbol = {s: sum(1 for c in candles if c[0] == s) for s in series}
    return Replay(len(candles), per_symbol, candles, ticks[0], ticks[-1])


def stored_candles(run: DevRun, expected: Replay, provider: str = "replay") -> set[tuple[str, str, float]]:
    """Every stored (symbol, time, close) in the replayed range, read back through the history API.

    Buckets are far smaller than a candle, so each holds exactly one stored row; a duplicate
    would show up as samples > 1 and is reported as such.
    """
    answer = run.get(
        "/api/v1/history",
        symbols=",".join(sorted(expected.per_symbol)),
        start=expected.start.isoformat(),
        end=(expected.end + timedelta(seconds=1)).isoformat(),
        points=10_000,
        provider=provider,
    )
    found = set()
    for row in answer["data"]:
        assert row["samples"] == 1, f"bucket with {row['samples']} rows: {row}"
        when = datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00")).astimezone(UTC)
        found.add((row["symbol"], when.strftime("%Y-%m-%dT%H:%M:%SZ"), row["close"]))
    return found
