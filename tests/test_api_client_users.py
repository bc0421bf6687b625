"""One typed client (`core.api_client`) for every reader of the ingester's API: the dashboard's shared
data reads through it (frames as before), no other module spells the API's paths,
and a broken event stream is the client's `IngesterUnavailable`, not a raw transport error."""

from __future__ import annotations

import ast
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from api_app import InProcessApi
from cryptoviz.core.api_client import Calls, IngesterClient, IngesterRejected, IngesterUnavailable, rows_of
from cryptoviz.dashboard.data import SharedData
from test_ingest_harness import market_quotes

ROOT = Path(__file__).resolve().parent.parent
API_PATH = re.compile(r"/api/v1/[a-z]+(/[a-z]+)?")
"""A string that is a path of the API (help texts and messages that mention one are not requests)."""
SERVERS = ("services/cryptoviz/ingester/api/",)
"""The API itself, which declares the paths."""


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, market_5m: Path) -> Iterator[InProcessApi]:
    server = InProcessApi(tmp_path_factory.mktemp("users") / "db.duckdb").start()
    server.store_quotes(market_quotes(market_5m, rows=50))
    try:
        yield server
    finally:
        server.stop()


def test_the_dashboard_reads_snapshots_and_history_through_the_typed_client(api: InProcessApi) -> None:
    shared = SharedData(IngesterClient(api.url))
    snap = shared.snapshot()
    assert snap.stats["records"] == api.json("/api/v1/stats")["records"] > 0
    expected = api.json("/api/v1/latest")["data"]
    assert sorted(snap.latest["symbol"]) == sorted(row["symbol"] for row in expected)
    as_before = pd.to_datetime(pd.Series([row["timestamp"] for row in expected]), utc=True, format="ISO8601")
    assert snap.latest["timestamp"].dtype == as_before.dtype

    symbols = tuple(sorted(snap.latest["symbol"])[:3])
    frame = shared.history(symbols, None, None, points=40)
    answer = api.json("/api/v1/history", symbols=",".join(symbols), points=40)["data"]
    assert frame["timestamp"].dtype == as_before.dtype
    assert len(frame) == len(answer) > 0
    by_json = pd.DataFrame(answer).sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)
    assert list(frame["symbol"]) == list(by_json["symbol"])
    assert list(frame["close"]) == pytest.approx(list(by_json["close"]))
    assert list(frame["timestamp"]) == list(pd.to_datetime(by_json["timestamp"], utc=True, format="ISO8601"))
    assert shared.client.requests["/api/v1/history"] == 1  # asked through the client
    assert shared.history(("NOPE",), None, None).empty  # a 400 is "no history", not an error


def _strings(tree: ast.AST) -> Iterator[str]:
    """String literals and f-string parts that are not docstrings."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


def test_no_module_but_the_typed_client_spells_the_apis_paths() -> None:
    """A reader with a client of its own would drift from the contract the API's tests check."""
    spelled = set()
    for path in [*ROOT.glob("services/cryptoviz/**/*.py"), *ROOT.glob("operator/**/*.py")]:
        name = path.relative_to(ROOT).as_posix()
        if name == "services/cryptoviz/core/api_client.py" or name.startswith(SERVERS):
            continue
        if any(API_PATH.fullmatch(text) for text in _strings(ast.parse(path.read_text()))):
            spelled.add(name)
    assert spelled == set(), spelled


def _broken_stream_server() -> tuple[socket.socket, str]:
    """Answers one commit event, then drops the connection mid-stream (no closing chunk)."""
    listener = socket.create_server(("127.0.0.1", 0))
    event = b'event: commit\ndata: {"records": 3, "last_update": null, "symbols": ["BTC"]}\n\n'

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            conn.sendall(head + f"{len(event):x}\r\n".encode() + event + b"\r\n" + b"ff\r\npartial")

    threading.Thread(target=serve, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_a_broken_event_stream_is_the_clients_unavailable_error() -> None:
    listener, url = _broken_stream_server()
    received = []
    with (
        listener,
        pytest.raises(IngesterUnavailable, match=r"event stream from \S+ ended"),
        IngesterClient(url).events(read_timeout=5) as commits,
    ):
        for commit in commits:
            received.append(commit)
    assert [c.records for c in received] == [3]


def test_plain_rows_are_the_data_list_or_the_clients_errors() -> None:
    call = Calls.history(["BTC"])
    assert rows_of(call, 200, b'{"bucket_seconds": 60, "data": [{"symbol": "BTC"}]}') == [{"symbol": "BTC"}]
    with pytest.raises(IngesterRejected, match="unknown symbol"):
        rows_of(call, 400, b'{"error": "unknown symbol(s): BTC"}')
    for body in (b"<html>", b'{"data": 3}', b"[]"):
        with pytest.raises(IngesterUnavailable, match="without a data list"):
            rows_of(call, 200, body)


@pytest.mark.parametrize(
    ("absent", "module"),
    [(("aiohttp",), "cryptoviz.ingester.backup"), (("aiohttp", "pyarrow"), "cryptoviz.dashboard.data")],
    ids=["backup-in-the-ingester-image", "dashboard-image"],
)
def test_the_blocking_client_needs_nothing_its_images_lack(absent: tuple[str, ...], module: str) -> None:
    """The ingester's image (which runs `cryptoviz backup`) has no aiohttp, the dashboard's neither nor pyarrow."""
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in absent)
    code = f"import sys; {blocked}; import {module}; from cryptoviz.core.api_client import IngesterClient"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
