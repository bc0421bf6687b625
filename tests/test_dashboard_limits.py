"""The dashboard's Tornado server against idle, byte-dribbling and oversized clients (a real
`cryptoviz dashboard`; its ingester need not be reachable for this)."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest
import requests
from cryptoviz.core.nats import free_port
from test_ingest_harness import CRYPTOVIZ

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    env = {
        **os.environ,
        "DASHBOARD_PORT": str(port),
        "DASHBOARD_ADDRESS": "127.0.0.1",
        "DASHBOARD_IDLE_TIMEOUT": "1",
        "INGESTER_URL": f"http://127.0.0.1:{free_port()}",
    }
    log = tmp_path_factory.mktemp("dash") / "dashboard.log"
    with log.open("wb") as out:
        process = subprocess.Popen([CRYPTOVIZ, "dashboard"], env=env, stdout=out, stderr=out)
    try:
        give_up = time.monotonic() + 90
        while True:
            assert process.poll() is None, log.read_text()[-2000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/liveness", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < give_up, "the dashboard did not start"
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(20)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_idle_and_dribbling_connections_are_closed(dashboard: int) -> None:
    with socket.create_connection(("127.0.0.1", dashboard)) as idle:
        started = time.monotonic()
        assert _closed_within(idle, 5) and time.monotonic() - started < 4
    with socket.create_connection(("127.0.0.1", dashboard)) as slow:
        started = time.monotonic()
        try:
            for byte in b"GET /liveness HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                slow.sendall(bytes([byte]))
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert _closed_within(slow, 5) and time.monotonic() - started < 5


def test_an_oversized_request_head_is_refused(dashboard: int) -> None:
    headers = {"X-Big": "a" * 40_000}
    try:
        response = requests.get(f"http://127.0.0.1:{dashboard}/liveness", headers=headers, timeout=10)
        assert response.status_code == 431
    except requests.ConnectionError:
        pass  # Tornado may just close the connection
    assert requests.get(f"http://127.0.0.1:{dashboard}/liveness", timeout=10).status_code == 200
