"""Faults around the ingester: poison messages, NATS restarts, a full disk, a read-only path."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import orjson
import pytest
from cryptoviz.core import contract
from support.jetstream import wait_all_acked
from support.wait import wait_for
from test_ingest_harness import Ingester, chunked, dead_letters, publish, publish_raw, synthetic_quotes

pytestmark = pytest.mark.timeout(120)


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A real small (or read-only) filesystem; needs root, like the CI machine has."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_poison_messages_are_dead_lettered_counted_and_acked(nats_server, tmp_path: Path):
    good = synthetic_quotes(40, coins=4)
    message = contract.encode_scrape("demo", good)[0]
    body = orjson.loads(message.payload)
    body["quotes"][0]["price"] = -5  # one bad quote inside a good message: only it is rejected
    body["quotes"][1]["timestamp"] = "yesterday"
    ingester = Ingester(nats_server.url, tmp_path / "db.duckdb", tmp_path / "ingester.log").start()
    try:
        subject = contract.subject_for("demo")
        publish_raw(nats_server.url, subject, b"{not json")
        publish_raw(nats_server.url, subject, orjson.dumps({"schema": 99, "provider": "demo", "quotes": []}))
        publish_raw(nats_server.url, subject, orjson.dumps({"schema": 1, "provider": "demo"}))
        publish_raw(nats_server.url, subject, orjson.dumps(body), {contract.MSG_ID_HEADER: "partly-bad"})
        ingester.wait_records(38)
        letters = asyncio.run(dead_letters(nats_server.url, 3))
        wait_all_acked(nats_server.url)  # the poison was acked too: nothing may come back
        ingester.wait_lag_zero()  # and /stats has seen it (its lag figure is refreshed every 2 s)
        stats = ingester.json("/api/v1/stats")
        metrics = ingester.get("/metrics").text
    finally:
        ingester.stop()
    assert sorted(m.subject for m in letters) == [
        "cryptoviz.deadletter.malformed_json",
        "cryptoviz.deadletter.missing_quotes",
        "cryptoviz.deadletter.unknown_schema",
    ]
    assert {m.headers["Cryptoviz-Original-Subject"] for m in letters} == {subject}
    assert any(m.data == b"{not json" for m in letters)
    assert stats["records"] == 38
    assert stats["rejected"] == 5
    assert stats["consumer_lag"] == 0
    assert 'cryptoviz_rejected_total{reason="unknown_schema"} 1.0' in metrics
    assert 'cryptoviz_rejected_total{reason="nonpositive_price"} 1.0' in metrics
    log = ingester.log()
    assert "dead-lettering message" in log and "unknown_schema" in log


def test_nats_restarted_mid_stream_loses_nothing(nats_server, tmp_path: Path):
    quotes = synthetic_quotes(20_000, coins=10)
    messages = chunked(quotes, 500)
    ingester = Ingester(nats_server.url, tmp_path / "db.duckdb", tmp_path / "ingester.log").start()
    try:
        publish(nats_server.url, messages[:20])
        ingester.wait_records(10_000)
        nats_server.stop()
        wait_for(lambda: ingester.get("/readyz").status_code == 503, 15, "/readyz to see NATS gone")
        assert ingester.get("/readyz").status_code == 503
        assert ingester.get("/healthz").status_code == 200
        nats_server.start()
        publish(nats_server.url, messages[20:])
        stats = ingester.wait_records(len(quotes), timeout=60)
        ingester.wait_ready(30)
    finally:
        ingester.stop()
    assert stats["records"] == len(quotes)


def test_full_disk_pauses_ingest_without_loss_or_corruption(nats_server, tmp_path: Path):
    quotes = synthetic_quotes(30_000, coins=20)
    with tmpfs(tmp_path / "small", "size=3m") as disk:
        db = disk / "cryptoviz.duckdb"
        ingester = Ingester(nats_server.url, db, tmp_path / "ingester.log").start()
        try:
            publish(nats_server.url, chunked(quotes))
            give_up = time.monotonic() + 30
            while "No space left on device" not in ingester.log() and time.monotonic() < give_up:
                time.sleep(0.2)
            assert "No space left on device" in ingester.log()
            assert ingester.json("/api/v1/stats")["records"] < len(quotes)
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
            stats = ingester.wait_records(len(quotes), timeout=60)
        finally:
            ingester.stop()
        assert stats["records"] == len(quotes)
        with duckdb.connect(str(db), read_only=True) as conn:
            total, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT (coin_id, timestamp)) FROM crypto_prices"
            ).fetchall()[0]
        assert total == distinct == len(quotes)


def test_read_only_path_is_a_clear_error(nats_server, tmp_path: Path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as disk:
        ingester = Ingester(nats_server.url, disk / "cryptoviz.duckdb", tmp_path / "ingester.log")
        ingester.start(wait=False)
        assert ingester.process.wait(30) == 1
    log = ingester.log()
    assert "Error: cannot open DuckDB file" in log and "Read-only file system" in log
    assert "Traceback" not in log


def test_api_port_in_use_is_a_clear_error_before_anything_starts(nats_server, tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ingester = Ingester(nats_server.url, tmp_path / "db.duckdb", tmp_path / "ingester.log")
        ingester.env["API_PORT"] = str(taken.getsockname()[1])
        ingester.start(wait=False)
        assert ingester.process.wait(30) == 1
    assert "Error: cannot serve the API on 127.0.0.1" in ingester.log()
    assert "Traceback" not in ingester.log()
    assert not (tmp_path / "db.duckdb").exists()
