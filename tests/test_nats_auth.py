"""NATS authorization, with a real nats-server: nothing anonymous, each user only its own subjects.

The server runs with the config `cryptoviz dev` writes (core/natsauth.py) and with the chart's rendered
nats.conf; the real ingester and notifier run as their users; a forged quote never reaches /latest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
import yaml
from cryptoviz.core import alert_contract as ac
from cryptoviz.core import contract
from cryptoviz.core.nats import Credentials, EmbeddedNats, NatsRefused, connect, ensure_stream, use_credentials
from cryptoviz.core.natsauth import ROLES, inbox_prefix
from cryptoviz.core.quote import Quote
from support.dev import dev_running, wait_for
from support.notify import NotifyProcess, Receiver
from test_chart import CHART, FULLNAME, VENV_BIN, docs_of, find_tool, one, pod_spec, run
from test_ingest_harness import Ingester, chunked

pytestmark = pytest.mark.timeout(180)

NOW = datetime.now(UTC).replace(microsecond=0)
PASSWORDS = {name: f"{name}-pw-{os.getpid()}#x y" for name in ROLES}  # quoting-hostile on purpose


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats", passwords=PASSWORDS).start()
    try:
        yield server
    finally:
        server.stop()


async def _as(url: str, role: str | None, password: str | None = None, errors: list | None = None) -> nats.NATS:
    async def record(exc: Exception) -> None:
        if errors is not None:
            errors.append(str(exc))

    options = {"allow_reconnect": False, "max_reconnect_attempts": 0, "connect_timeout": 2, "error_cb": record}
    if role:
        user = ROLES[role].user
        options |= {"user": user, "password": password or PASSWORDS[role], "inbox_prefix": inbox_prefix(user)}
    return await nats.connect(url, **options)


async def _refused(url: str, role: str | None, password: str | None = None) -> bool:
    try:
        nc = await _as(url, role, password)
    except Exception as exc:
        return "authorization violation" in str(exc).lower()
    await nc.close()
    return False


async def _may(call) -> bool:
    """Whether a JetStream call is allowed: a refused request gets no answer (or a permissions error)."""
    try:
        await asyncio.wait_for(call, 2)
    except Exception:
        return False
    return True


async def _check_permissions(url: str) -> None:
    assert await _refused(url, None), "anonymous client accepted"
    assert await _refused(url, "scraper", "wrong"), "wrong password accepted"

    ingester = await _as(url, "ingester")
    await ensure_stream(ingester.jetstream())  # the ingester manages the streams
    await ac.ensure_alerts_stream(ingester.jetstream())
    errors: list[str] = []
    scraper = await _as(url, "scraper", errors=errors)
    js = scraper.jetstream()
    try:
        (message,) = contract.encode_scrape("demo", [_quote(1.0)])
        assert await _may(js.publish(message.subject, message.payload, headers=message.headers))
        assert await _may(ensure_stream(js, update=False))  # create-if-missing: info only here
        assert not await _may(js.publish(f"{ac.ALERTS_PREFIX}.BTC", b"{}"))
        assert not await _may(js.publish(f"{contract.DEADLETTER_PREFIX}.x", b"{}"))
        assert not await _may(ensure_stream(js))  # may not change the stream ...
        assert not await _may(js.delete_stream(contract.STREAM_NAME))  # ... nor delete it
        assert not await _may(js.get_msg(contract.STREAM_NAME, 1))  # ... nor read it
        assert not await _may(js.pull_subscribe(contract.SUBJECT_PREFIX + ".>", "spy", stream=contract.STREAM_NAME))
        await scraper.subscribe(f"{contract.SUBJECT_PREFIX}.>")
        await scraper.subscribe("_INBOX.ingester.>")  # another user's replies (deliveries of its consumers)
        give_up = time.monotonic() + 5
        while len([e for e in errors if "permissions violation for subscription" in e.lower()]) < 2:
            assert time.monotonic() < give_up, errors
            await asyncio.sleep(0.05)
    finally:
        await scraper.close()
        await ingester.close()
    notify = await _as(url, "notify")
    try:
        assert not await _may(notify.jetstream().publish(contract.subject_for("demo"), b"{}"))
        assert await _may(notify.jetstream().publish(ac.receipt_subject("a1", "t"), b"{}"))
    finally:
        await notify.close()


def _quote(price: float, coin: str = "btc", when: datetime | None = None) -> Quote:
    stamp = when or NOW - timedelta(minutes=1)
    return Quote("demo", coin, coin.upper(), coin.title(), price, stamp, stamp)


def test_the_dev_server_refuses_anonymous_clients_and_each_user_gets_only_its_subjects(secured: EmbeddedNats):
    assert oct(secured.config_path.stat().st_mode & 0o777) == "0o600"
    asyncio.run(_check_permissions(secured.url))


def _credentials_env(tmp_path: Path, role: str, password: str | None = None) -> dict[str, str]:
    path = tmp_path / f"{role}.password"
    path.write_text(password or PASSWORDS[role])
    return {"NATS_USER": ROLES[role].user, "NATS_PASSWORD_FILE": str(path)}


async def _publish_as(url: str, role: str | None, quotes: list[Quote]) -> bool:
    """Publish as `role` (None: anonymous); whether JetStream stored it."""
    try:
        nc = await _as(url, role)
    except Exception:
        return False
    try:
        js = nc.jetstream()
        return all([await _may(js.publish(m.subject, m.payload, headers=m.headers)) for m in chunked(quotes)])
    finally:
        await nc.close()


def test_a_forged_quote_never_reaches_latest_and_the_pipeline_runs_as_its_users(secured: EmbeddedNats, tmp_path):
    config = tmp_path / "scraper.yaml"
    config.write_text("version: 1\ncoins:\n  - symbol: BTC\n    alerts: [{below: 50, cooldown: 1h}]\n")
    with Receiver() as receiver:
        ingester = Ingester(
            secured.url, tmp_path / "db.duckdb", tmp_path / "i.log", SCRAPER_CONFIG=str(config),
            **_credentials_env(tmp_path, "ingester"),
        )  # fmt: skip
        notifier = NotifyProcess(
            secured.url, tmp_path / "n.log", receiver.base, NOTIFY_URLS=receiver.json_url("/hook"),
            **_credentials_env(tmp_path, "notify"),
        )  # fmt: skip
        try:
            ingester.start()
            notifier.start()
            forged = [_quote(1e6, coin="forged", when=NOW)]
            assert not asyncio.run(_publish_as(secured.url, None, forged))
            assert not asyncio.run(_publish_as(secured.url, "notify", forged))
            assert asyncio.run(_publish_as(secured.url, "scraper", [_quote(40.0)]))
            ingester.wait_records(1)
            give_up = time.monotonic() + 60
            while not ingester.json("/api/v1/alerts")["data"][0]["deliveries"] and time.monotonic() < give_up:
                time.sleep(0.2)
            latest = ingester.json("/api/v1/latest")["data"]
            (alert,) = ingester.json("/api/v1/alerts")["data"]
        finally:
            notifier.stop()
            ingester.stop()
        assert len(receiver.on("/hook")) == 1
    assert [(row["symbol"], row["price"]) for row in latest] == [("BTC", 40.0)]
    assert [d["status"] for d in alert["deliveries"]] == ["delivered"]  # receipts came back through the ingester
    for log in (ingester.log(), notifier.log()):
        assert "Traceback" not in log and "Permissions Violation" not in log
        assert not any(password in log for password in PASSWORDS.values())


def test_wrong_credentials_are_one_clear_error_naming_the_user_never_the_password(secured: EmbeddedNats, tmp_path):
    ingester = Ingester(
        secured.url, tmp_path / "db.duckdb", tmp_path / "i.log", **_credentials_env(tmp_path, "ingester", "nope")
    )
    ingester.start(wait=False)
    assert ingester.process.wait(60) == 1
    log = ingester.log()
    assert "refused user 'ingester'" in log and "NATS_PASSWORD_FILE" in log
    assert "Traceback" not in log and "nope" not in log


def test_client_tls_with_a_private_ca(tmp_path: Path):
    ca, cert, key = _certificates(tmp_path)
    port = _free_port()
    conf = tmp_path / "tls.conf"
    conf.write_text(f'port: {port}\ntls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n}}\n')
    server = subprocess.Popen([str(VENV_BIN / "nats-server"), "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        use_credentials(Credentials(ca_file=str(ca)))
        nc = asyncio.run(_connect_tls(f"tls://localhost:{port}"))
        assert nc
        use_credentials(Credentials())
        with pytest.raises(ConnectionError):
            asyncio.run(_connect_tls(f"tls://localhost:{port}", deadline=1))  # the CA is not trusted otherwise
    finally:
        use_credentials(Credentials())
        server.terminate()
        server.wait(10)


async def _connect_tls(url: str, deadline: float = 10) -> bool:
    nc = await connect(url, name="tls-test", deadline=deadline)
    try:
        return nc.is_connected and nc.connected_url.scheme == "tls"
    finally:
        await nc.close()


def _free_port() -> int:
    from cryptoviz.core.nats import free_port

    return free_port()


def _certificates(tmp_path: Path) -> tuple[Path, Path, Path]:
    ca_key, ca, key, csr, cert = (tmp_path / n for n in ("ca.key", "ca.crt", "tls.key", "tls.csr", "tls.crt"))
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost\n")
    for argv in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "1",
         "-subj", "/CN=t"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "1",
         "-extfile", ext],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True)
    return ca, cert, key


def test_refused_credentials_are_not_retried(secured: EmbeddedNats):
    use_credentials(Credentials(user="scraper", password="wrong"))
    started = time.monotonic()
    try:
        with pytest.raises(NatsRefused, match="refused user 'scraper'"):
            asyncio.run(connect(secured.url, name="t", deadline=30))
    finally:
        use_credentials(Credentials())
    assert time.monotonic() - started < 5


# -- the chart --------------------------------------------------------------------------------


def _render(values: dict) -> list[dict]:
    argv = [find_tool("helm"), "template", "cv", str(CHART), "--namespace", "crypto", "-f", "-"]
    result = run(argv, input=yaml.safe_dump(values))
    assert result.returncode == 0, result.stderr
    return docs_of(result.stdout)


def test_the_charts_nats_config_grants_exactly_the_roles_and_runs(tmp_path: Path):
    docs = _render({})
    conf = one(docs, "ConfigMap", f"{FULLNAME}-nats")["data"]["nats.conf"]
    users = re.findall(r"(?m)\{user: (\w+), password: \$NATS_\w+_PASSWORD, permissions: (\{.*\})\}$", conf)
    granted = {user: json.loads(permissions) for user, permissions in users}
    assert granted == {role.user: role.permissions() for role in ROLES.values()}
    assert "no_auth_user" not in conf
    # The real server with that file, the passwords given as the pod gives them (quoted by Kubernetes' $(VAR)).
    container = pod_spec(one(docs, "StatefulSet", f"{FULLNAME}-nats"))["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    server_env = {"POD_NAME": "nats-0"}
    for name, role in ROLES.items():
        variable = f"NATS_{name.upper()}_PASSWORD"
        raw = env[f"{variable}_RAW"]["valueFrom"]["secretKeyRef"]
        assert raw["name"] == f"{FULLNAME}-nats-auth" and raw["key"] == role.user
        assert env[variable]["value"] == f'"$({variable}_RAW)"'
        server_env[variable] = f'"{PASSWORDS[name]}"'
    port, monitor = _free_port(), _free_port()
    conf = re.sub(r"(?m)^port: \d+", f"port: {port}", conf)
    conf = re.sub(r"(?m)^http_port: \d+", f"http_port: {monitor}", conf)
    conf = conf.replace("store_dir: /data", f"store_dir: {tmp_path / 'js'}")
    (tmp_path / "nats.conf").write_text(conf)
    server = subprocess.Popen(
        [str(VENV_BIN / "nats-server"), "--config", str(tmp_path / "nats.conf")],
        env={**os.environ, **server_env},
        stderr=(tmp_path / "nats.log").open("w"),
    )
    try:
        _wait_port(port, server, tmp_path / "nats.log")
        asyncio.run(_check_permissions(f"nats://127.0.0.1:{port}"))
    finally:
        server.terminate()
        server.wait(10)


def _wait_port(port: int, server: subprocess.Popen, log: Path) -> None:
    import socket

    give_up = time.monotonic() + 20
    while time.monotonic() < give_up:
        assert server.poll() is None, log.read_text()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(log.read_text())


def _nats_env(container: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", []) if "NATS" in e["name"]}


def test_every_client_gets_only_its_own_credentials_from_the_secret(tmp_path: Path):
    docs = _render({"backfill": {"enabled": True}, "nats": {"tls": {"enabled": True, "secretName": "nats-tls"}}})
    secret = one(docs, "Secret", f"{FULLNAME}-nats-auth")
    assert set(secret["data"]) == {role.user for role in ROLES.values()}
    assert all(len(v) >= 32 for v in secret["data"].values())
    seen = {}
    for doc in docs:
        spec = pod_spec(doc)
        if not spec or doc["metadata"]["name"].endswith("-nats"):
            continue
        for container in spec["containers"]:
            env = _nats_env(container)
            if "NATS_URL" not in env:
                continue
            assert env["NATS_URL"] == f"tls://{FULLNAME}-nats:4222"
            assert env["NATS_PASSWORD_FILE"] == "/etc/cryptoviz-nats/password" and "NATS_PASSWORD" not in env
            assert env["NATS_CA_FILE"] == "/etc/cryptoviz-nats-tls/ca.crt"
            (volume,) = [v for v in spec["volumes"] if v["name"] == "nats-credentials"]
            assert volume["secret"]["secretName"] == f"{FULLNAME}-nats-auth"
            assert [i["key"] for i in volume["secret"]["items"]] == [env["NATS_USER"]]
            seen[doc["metadata"]["name"]] = env["NATS_USER"]
    assert seen == {
        f"{FULLNAME}-scraper": "scraper",
        f"{FULLNAME}-backfill": "scraper",
        f"{FULLNAME}-ingester": "ingester",
        f"{FULLNAME}-notify": "notify",
    }
    nats = pod_spec(one(docs, "StatefulSet", f"{FULLNAME}-nats"))
    assert "tls {" in one(docs, "ConfigMap", f"{FULLNAME}-nats")["data"]["nats.conf"]
    assert {v["name"]: v.get("secret", {}).get("secretName") for v in nats["volumes"]}["tls"] == "nats-tls"


def test_an_existing_secret_replaces_the_generated_one_and_auth_can_be_turned_off_for_an_external_nats():
    docs = _render({"nats": {"auth": {"existingSecret": "my-nats"}}})
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-nats-auth")]
    ingester = pod_spec(one(docs, "StatefulSet", f"{FULLNAME}-ingester"))
    assert {v["name"]: v.get("secret", {}).get("secretName") for v in ingester["volumes"]}["nats-credentials"] == (
        "my-nats"
    )
    docs = _render({"nats": {"enabled": False, "url": "nats://nats.nats:4222", "auth": {"enabled": False}}})
    ingester = pod_spec(one(docs, "StatefulSet", f"{FULLNAME}-ingester"))["containers"][0]
    assert set(_nats_env(ingester)) == {"NATS_URL"}


# -- cryptoviz dev ------------------------------------------------------------------------------


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_cryptoviz_dev_gives_each_child_only_its_own_nats_credentials(tmp_path: Path):
    state = tmp_path / "state"
    leaked = {"NATS_USER": "someone", "NATS_PASSWORD": "callers-secret"}  # the caller's own: never passed on
    with dev_running(state, "--demo", env=leaked) as dev:
        wait_for(lambda: dev.stats()["records"] > 0, 90, "demo quotes stored")
        info = dev.run_info()
        port = int(info["nats_url"].rsplit(":", 1)[1])
        assert asyncio.run(_refused(f"nats://127.0.0.1:{port}", None))
        envs = {name: _environ(info["pids"][name]) for name in ("scraper", "ingester", "notify", "dashboard")}
        passwords = {name: (state / "nats-credentials" / name).read_text() for name in ROLES}
        assert oct((state / "nats.conf").stat().st_mode & 0o777) == "0o600"
        for name in ROLES:
            assert oct((state / "nats-credentials" / name).stat().st_mode & 0o777) == "0o600"
    for name, env in envs.items():
        assert "NATS_PASSWORD" not in env and "callers-secret" not in "".join(env.values())
        if name == "dashboard":
            assert not {k for k in env if k.startswith("NATS_")}
            continue
        assert env["NATS_USER"] == ROLES[name].user
        assert env["NATS_PASSWORD_FILE"] == str(state / "nats-credentials" / name)
        assert not any(p in "".join(env.values()) for p in passwords.values())
