"""The ingester's API in-process (real app, server and DuckDB file; no NATS): the OpenAPI spec
documents every answer, answers carry exactly their models' fields, bad parameters get their 400,
and the admin endpoint is guarded (token, cross-site, single flight, free space, timeout)."""

from __future__ import annotations

import io
import logging
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pydantic
import pytest
import requests
from api_app import InProcessApi
from cryptoviz.core import api_contract as contract
from cryptoviz.core.api_client import AsyncIngesterClient, IngesterClient, IngesterRejected, IngesterUnavailable
from cryptoviz.ingester.admin_token import AdminToken
from cryptoviz.ingester.backup import HEADROOM_BYTES, space_needed
from pydantic import SecretStr
from test_ingest_harness import market_quotes, synthetic_quotes

TOKEN = "in-process-admin-token-0123456789"
BAD_REQUESTS = [
    ("/api/v1/history", {"symbols": "B@D"}, "invalid symbol 'B@D'"),
    ("/api/v1/history", {"symbols": "NOPE"}, "unknown symbol(s): NOPE"),
    ("/api/v1/history", {"points": "0"}, "points must be between 1 and 10000, not 0"),
    ("/api/v1/history", {"points": "many"}, "points must be an integer between 1 and 10000, not 'many'"),
    ("/api/v1/history", {"start": "yesterday"}, "start must be ISO-8601"),
    ("/api/v1/history", {"end": "1e300"}, "end epoch seconds out of range"),
    ("/api/v1/history", {"start": "2025-01-14T00:00:00Z", "end": "2025-01-13"}, "start must be before end"),
    ("/api/v1/history", {"provider": "mtgox"}, "unknown provider 'mtgox'"),
    ("/api/v1/history", {"symbols": ",".join(f"S{i}" for i in range(201))}, "at most 200 symbols per request"),
    ("/api/v1/latest", {"symbols": "BTC," * 2000}, "symbols is too long: at most 4,400 characters, not 8,000"),
    ("/api/v1/latest", {"format": "xml"}, "format must be one of json, csv, arrow, parquet"),
    ("/api/v1/latest", {"provider": "x" * 100}, "provider is too long"),
    ("/api/v1/coins", {"format": "pdf"}, "format must be one of"),
    ("/api/v1/coverage", {"min_gap": "1"}, "min_gap must be between 60 and 2592000, not 1"),
    ("/api/v1/coverage", {"since": "2025-02-01", "until": "2025-01-01"}, "since must be before until"),
    ("/api/v1/alerts", {"since": "soon"}, "since must be ISO-8601"),
    ("/api/v1/alerts", {"limit": "-1"}, "limit must be between 1 and 10000, not -1"),
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, market_5m: Path) -> Iterator[InProcessApi]:
    server = InProcessApi(tmp_path_factory.mktemp("api") / "db.duckdb", admin_token=SecretStr(TOKEN))
    server.start()
    server.store_quotes(market_quotes(market_5m, rows=100))
    try:
        yield server
    finally:
        server.stop()


def _exactly(model: type[pydantic.BaseModel], body: Any, optional: frozenset[str] = frozenset()) -> None:
    """`body` validates as `model` and has exactly its fields (an optional one may be absent)."""
    model.model_validate(body)
    assert set(model.model_fields) - optional <= set(body) <= set(model.model_fields), (model.__name__, set(body))
    for name, info in model.model_fields.items():
        inner = info.annotation
        rows = body.get(name)
        if isinstance(rows, list) and rows and hasattr(getattr(inner, "__args__", [None])[0], "model_fields"):
            for row in rows:
                _exactly(inner.__args__[0], row)


def test_every_operation_documents_its_200_and_never_a_422(api: InProcessApi) -> None:
    spec = api.json("/openapi.json")
    assert spec["paths"].keys() == {
        "/healthz", "/readyz", "/api/v1/coins", "/api/v1/latest", "/api/v1/history", "/api/v1/coverage",
        "/api/v1/stats", "/api/v1/events", "/api/v1/alerts", "/api/v1/admin/backup",
    }  # fmt: skip
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)
            content = operation["responses"]["200"]["content"]
            assert content and all("schema" in media for media in content.values()), (method, path)
            if "application/json" in content:
                assert "$ref" in content["application/json"]["schema"], (method, path)
            if path.startswith("/api/v1/") and "application/json" in content and method == "get":
                assert operation["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
                    "/Problem"
                )
    history = {p["name"]: p["schema"] for p in spec["paths"]["/api/v1/history"]["get"]["parameters"]}
    assert history["points"] == {**history["points"], "type": "integer", "minimum": 1, "maximum": 10_000}
    assert history["provider"]["enum"][:2] == ["coinmarketcap", "coingecko"]
    assert history["symbols"]["anyOf"][0]["maxLength"] == contract.SYMBOLS_MAX_CHARS
    assert "/metrics" not in spec["paths"]  # on the metrics port only
    assert api.get("/metrics").status_code == 404
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_answers_carry_exactly_the_fields_of_their_models(api: InProcessApi) -> None:
    _exactly(contract.Health, api.json("/healthz"))
    ready = api.get("/readyz")
    assert ready.status_code == 503  # no NATS here
    _exactly(contract.Readiness, ready.json())
    _exactly(contract.CoinsAnswer, api.json("/api/v1/coins"))
    _exactly(contract.LatestAnswer, api.json("/api/v1/latest", symbols="btc,eth"))
    _exactly(
        contract.HistoryAnswer, api.json("/api/v1/history", symbols="BTC", points="10"), frozenset({"unknown_symbols"})
    )
    mixed = api.json("/api/v1/history", symbols="BTC,NOPE", points="10")
    _exactly(contract.HistoryAnswer, mixed)
    assert mixed["unknown_symbols"] == ["NOPE"]
    _exactly(
        contract.CoverageResponse,
        api.json("/api/v1/coverage", symbols="BTC,NOPE", since="2025-01-13", until="2025-01-20"),
    )
    _exactly(contract.Stats, api.json("/api/v1/stats"))
    _exactly(contract.AlertsAnswer, api.json("/api/v1/alerts"))


@pytest.mark.parametrize(("path", "query", "message"), BAD_REQUESTS, ids=lambda v: str(v)[:40])
def test_bad_parameters_get_400_with_the_same_messages(api: InProcessApi, path: str, query: dict, message: str) -> None:
    response = api.get(path, **query)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_the_longest_accepted_parameters_are_answered(api: InProcessApi) -> None:
    """200 symbols of 20 characters (with spaces), within the request head limit, are a valid question."""
    longest = ", ".join(f"{i:0>20}" for i in range(199)) + ", BTC"
    answer = api.json("/api/v1/history", symbols=longest, points="10000", start="2025-01-01T00:00:00Z")
    assert {r["symbol"] for r in answer["data"]} == {"BTC"} and len(answer["unknown_symbols"]) == 199


# ---------------------------------------------------------------- the client


def test_the_client_parses_answers_into_models_and_splits_long_symbol_lists(api: InProcessApi) -> None:
    client = IngesterClient(api.url)
    many = [f"X{i}" for i in range(450)] + ["BTC", "ETH"]
    latest = client.latest(many)
    assert [q.symbol for q in latest.data] == ["BTC", "ETH"] and client.requests["/api/v1/latest"] == 3
    coverage = client.coverage(many, since=None)
    assert len(coverage.unknown_symbols) == 450 and {s.symbol for s in coverage.data} == {"BTC", "ETH"}
    window = {"start": datetime(2025, 1, 13), "end": datetime(2025, 1, 13, 8), "points": 5}
    history = client.history(["BTC"], **window)
    assert history.bucket_seconds > 0 and len(history.data) == 5 and history.start.tzinfo is not None
    table = client.history_table(["BTC"], **window)
    assert table.num_rows == 5 and table.column("close").to_pylist() == [b.close for b in history.data]
    assert client.stats().records == 1400 and client.coins().data[0].symbol == "ADA"
    with pytest.raises(IngesterRejected, match="unknown symbol") as refused:
        client.history(["NOPE"])
    assert refused.value.status == 400
    with pytest.raises(IngesterUnavailable, match="unreachable"):
        IngesterClient("http://127.0.0.1:9", timeout=1).stats()


def test_the_async_client_asks_the_same_questions(api: InProcessApi) -> None:
    import asyncio

    async def ask() -> tuple[Any, Any, Any]:
        client = AsyncIngesterClient(api.url)
        return await client.latest([f"X{i}" for i in range(250)] + ["SOL"]), await client.readiness(), client

    latest, ready, client = asyncio.run(ask())
    assert [q.symbol for q in latest.data] == ["SOL"] and client.requests["/api/v1/latest"] == 2
    assert ready.status == "not ready" and ready.duckdb is True


# ---------------------------------------------------------------- admin


def _backup(api: InProcessApi, token: str | None = TOKEN, **headers: str) -> requests.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(api.url + "/api/v1/admin/backup", headers=headers, timeout=60)


def test_backup_needs_the_token_and_a_same_site_caller(api: InProcessApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    refused = {
        "no token": _backup(api, None),
        "wrong token": _backup(api, "x" * 40),
        "not bearer": _backup(api, None, Authorization=f"Basic {TOKEN}"),
        "cross-site": _backup(api, Origin="https://evil.example"),
        "cross-site fetch": _backup(api, **{"Sec-Fetch-Site": "cross-site"}),
        "null origin": _backup(api, Origin="null"),
    }
    statuses = {why: (r.status_code, r.json()["error"]) for why, r in refused.items()}
    assert statuses == {
        "no token": (401, "send Authorization: Bearer <ADMIN_TOKEN>"),
        "wrong token": (401, "wrong admin token"),
        "not bearer": (401, "send Authorization: Bearer <ADMIN_TOKEN>"),
        "cross-site": (403, "cross-site requests to admin endpoints are refused"),
        "cross-site fetch": (403, "cross-site requests to admin endpoints are refused"),
        "null origin": (403, "cross-site requests to admin endpoints are refused"),
    }
    assert refused["no token"].headers["www-authenticate"].startswith("Bearer")
    same_origin = _backup(api, Origin=api.url, **{"Sec-Fetch-Site": "same-origin"})
    assert same_origin.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(same_origin.content)) as tar:
        names = tar.getnames()
    assert "schema.sql" in names and any(n.startswith("crypto_prices") for n in names)
    assert TOKEN not in caplog.text
    assert _eventually(lambda: not list(api.store.path.parent.glob(".backup-*")))  # the work directory goes


def test_a_backup_restores_into_a_new_database(api: InProcessApi, tmp_path: Path) -> None:
    from cryptoviz.ingester.backup import fetch

    names = fetch(IngesterClient(api.url), tmp_path / "b", TOKEN, 60)
    assert "schema.sql" in names
    with duckdb.connect(str(tmp_path / "restored.duckdb")) as restored:
        restored.execute(f"IMPORT DATABASE '{tmp_path / 'b'}'")
        assert restored.execute("SELECT count(*) FROM crypto_prices").fetchall() == [(1400,)]


def test_only_one_backup_runs_at_a_time(tmp_path: Path) -> None:
    api = InProcessApi(tmp_path / "db.duckdb", admin_token=SecretStr(TOKEN)).start()
    try:
        for start in range(0, 400_000, 100_000):  # a snapshot larger than the socket buffers
            api.store_quotes(_quotes(start))
        held = requests.post(
            api.url + "/api/v1/admin/backup", headers={"Authorization": f"Bearer {TOKEN}"}, stream=True, timeout=60
        )
        assert held.status_code == 200  # exported; the transfer waits for us to read
        second = _backup(api)
        assert (second.status_code, second.json()["error"]) == (
            409,
            "a backup is already running; try again when it has finished",
        )
        body = held.raw.read()  # finish the first
        held.close()
        assert len(body) > 1 << 20
        assert _eventually(lambda: _backup(api).status_code == 200)  # the slot is free again
    finally:
        api.stop()


def _eventually(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """The transfer's clean-up runs just after its last byte: wait for it, no fixed sleep."""
    give_up = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.02)
    return True


def _quotes(start: int) -> list:
    return synthetic_quotes(100_000, coins=50, start=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=start // 1000))


def test_backup_refused_without_free_space_and_stopped_at_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = InProcessApi(tmp_path / "db.duckdb", admin_token=SecretStr(TOKEN), backup_timeout=0.001).start()
    try:
        api.store_quotes(_quotes(0))
        import shutil

        real = shutil.disk_usage
        monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=10 << 20))
        full = _backup(api)
        assert full.status_code == 507
        assert "not enough free space for a backup" in full.json()["error"] and "10 MiB free" in full.json()["error"]
        monkeypatch.setattr(shutil, "disk_usage", real)
        slow = _backup(api)
        assert (slow.status_code, slow.json()["error"]) == (503, "the backup took longer than 0.001 s and was stopped")
        assert not list(tmp_path.glob(".backup-*"))
    finally:
        api.stop()


def test_backup_refused_while_admin_access_is_off(tmp_path: Path) -> None:
    api = InProcessApi(tmp_path / "db.duckdb").start()
    try:
        off = _backup(api)
        assert off.status_code == 503 and "ADMIN_TOKEN or ADMIN_TOKEN_FILE" in off.json()["error"]
    finally:
        api.stop()


def test_admin_token_file_is_re_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first-token-0123456789\n")
    token = AdminToken.of(None, path)
    assert token.matches("first-token-0123456789") and not token.matches("first-token-012345678")
    path.write_text("second-token-0123456789")
    assert token.matches("second-token-0123456789") and not token.matches("first-token-0123456789")
    assert "value=" not in repr(AdminToken.of(TOKEN, None))  # never printed
    for value, file, message in [
        ("short", None, "ADMIN_TOKEN must be at least 16 characters"),
        (TOKEN, path, "not both"),
        (None, tmp_path / "missing", "cannot be read"),
    ]:
        with pytest.raises(ValueError, match=message):
            AdminToken.of(value, file)


def test_space_needed_leaves_headroom_for_ingest() -> None:
    assert space_needed(100 << 20, 200 << 20).enough
    check = space_needed(100 << 20, (100 << 20) + HEADROOM_BYTES - 1)
    assert not check.enough and "164 MiB needed" in check.message(Path("/data"))


def test_concurrent_history_answers_are_consistent(api: InProcessApi) -> None:
    """The reader dependency gives each worker thread its own cursor: parallel questions agree."""
    answers: list[int] = []

    def ask() -> None:
        answers.append(len(api.json("/api/v1/history", symbols="BTC,ETH", points="37", end="2025-01-14")["data"]))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [answers[0]] * 8 and answers[0] > 0
