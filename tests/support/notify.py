"""Helpers of the notification tests (no tests here): loopback stand-ins for a JSON webhook, the
Telegram Bot API and a Slack incoming webhook, and the real `cryptoviz notify` as a subprocess.

Apprise's Telegram and Slack plugins have fixed https base URLs; the subprocess points those two
class attributes at the loopback receiver before starting the real command (a third-party plugin's
base URL, nothing of ours).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from cryptoviz.core.nats import free_port

from support.process import ServiceProcess

TELEGRAM_TOKEN = "123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQr"
TELEGRAM_CHAT = "4242"
SLACK_TOKENS = ("T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7")
BOOT = (
    "import os, apprise.plugins.telegram as t, apprise.plugins.slack as s;"
    "base = os.environ['FAKE_SERVICES_BASE'];"
    "t.NotifyTelegram.notify_url = base + '/bot';"
    "s.NotifySlack.webhook_url = base + '/services';"
    "from cryptoviz.cli import main; main()"
)


class _Server(ThreadingHTTPServer):
    request_queue_size = 128
    """socketserver's default listen backlog is 5: more concurrent senders than that overflow it, and
    each connection dropped so waits a SYN retransmission (1 s), as with no real web server."""


class Receiver:
    """A threaded HTTP server on loopback recording every request; `script[path]` lists the status
    codes to answer there in turn (then 200)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.requests: list[dict] = []
        self.script: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        self.on_request: Callable[[dict], None] | None = None
        self._open = threading.Event()
        self._open.set()
        self._epoch = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # as real webhook endpoints: connections kept alive, each answer in one write (two small
            # writes on a kept-alive connection meet Nagle's algorithm and delayed ACKs: 40 ms each)
            protocol_version = "HTTP/1.1"
            wbufsize = -1

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                epoch = receiver._epoch
                if not receiver._open.is_set():
                    receiver._open.wait(60)
                    if receiver._epoch != epoch:  # arrived while paused and its sender was killed: never accepted
                        self.close_connection = True
                        return
                with receiver.lock:
                    codes = receiver.script.get(self.path)
                    status = codes.pop(0) if codes else 200
                    entry = {
                        "path": self.path,
                        "status": status,
                        "body": raw,
                        "headers": dict(self.headers),
                        "at": time.time(),
                        "client": self.client_address,  # one per connection
                    }
                    if status < 300:
                        receiver.requests.append(entry)
                if receiver.on_request is not None:
                    receiver.on_request(entry)
                answer = b'{"ok": true, "result": {"message_id": 1}}' if "/bot" in self.path else b"ok"
                if status >= 300:
                    answer = b'{"ok": false, "description": "scripted failure"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = _Server(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def pause(self) -> None:
        """Hold every new request before it is accepted (the sender waits for an answer)."""
        self._open.clear()

    def resume(self, drop_held: bool) -> None:
        """Let requests in again; `drop_held` drops those held meanwhile, unaccepted (their sender died)."""
        if drop_held:
            self._epoch += 1
        self._open.set()

    # -- what each fake service received (accepted requests only) --------------------------------
    def on(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def json_posts(self, path: str = "/hook") -> list[dict]:
        return [json.loads(r["body"]) for r in self.on(path)]

    def telegram(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.on(f"/bot{TELEGRAM_TOKEN}/sendMessage")]

    def slack(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.on("/services/" + "/".join(SLACK_TOKENS))]

    # -- Apprise URLs pointing here ----------------------------------------------------------
    def json_url(self, path: str = "/hook") -> str:
        return f"json://127.0.0.1:{self.port}{path}"

    @staticmethod
    def telegram_url() -> str:
        return f"tgram://{TELEGRAM_TOKEN}/{TELEGRAM_CHAT}/"

    @staticmethod
    def slack_url() -> str:
        return "slack://" + "/".join(SLACK_TOKENS) + "/"

    def wait(self, predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            if predicate():
                return
            time.sleep(0.05)
        raise TimeoutError(f"{what} not met within {timeout}s; received {len(self.requests)} requests")


class NotifyProcess(ServiceProcess):
    """`cryptoviz notify` as a real subprocess (Telegram/Slack plugins pointed at `fake_base`)."""

    def __init__(self, nats_url: str, log_path: Path, fake_base: str, **env: str) -> None:
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "NATS_URL": nats_url,
            "NOTIFY_METRICS_HOST": "127.0.0.1",
            "NOTIFY_METRICS_PORT": str(self.metrics_port),
            "NOTIFY_BACKOFF": "0.2",
            "NOTIFY_MAX_BACKOFF": "1",
            "NOTIFY_RATE_LIMIT": "0",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "DEBUG",
            "FAKE_SERVICES_BASE": fake_base,
            **env,
        }
        super().__init__(log_path)

    def start(self, wait: bool = True) -> NotifyProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", BOOT, "notify"], env=self.env, stdout=log, stderr=log
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            if self.process.poll() is not None:
                raise RuntimeError(f"notify exited {self.process.returncode}: {self.log()[-3000:]}")
            try:
                if requests.get(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"notify not ready in {timeout}s: {self.log()[-3000:]}")

    def metrics(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus sample's values whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total
