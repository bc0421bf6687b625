"""The ingester's HTTP API against a running `cryptoviz ingest` holding the shared market data."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import requests
from cryptoviz.core.nats import EmbeddedNats
from cryptoviz.core.quote import Quote, format_ts
from cryptoviz.ingester.cache import AnswerCache
from cryptoviz.ingester.formats import JSON_OPTIONS, json_rows
from fastapi import Response
from test_ingest_harness import Ingester, chunked, market_quotes, publish, scrapes

pytestmark = pytest.mark.timeout(180)

ROWS_PER_COIN = 600  # ~2 days of 5-minute candles per coin


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, market_5m: Path) -> Iterator[tuple[Ingester, EmbeddedNats, list]]:
    tmp = tmp_path_factory.mktemp("api")
    server = EmbeddedNats(tmp / "nats").start()
    ingester = Ingester(server.url, tmp / "db.duckdb", tmp / "ingester.log")
    try:
        ingester.start()
        quotes = market_quotes(market_5m, rows=ROWS_PER_COIN)
        publish(server.url, scrapes(quotes))
        ingester.wait_records(len(quotes))
        yield ingester, server, quotes
    finally:
        ingester.stop()
        server.stop()


def test_probes_and_openapi(api):
    ingester, _, _ = api
    assert ingester.json("/healthz") == {"status": "ok"}
    assert ingester.json("/readyz")["status"] == "ready"
    spec = ingester.json("/openapi.json")
    for path in ("/api/v1/coins", "/api/v1/latest", "/api/v1/history", "/api/v1/stats", "/api/v1/events"):
        assert path in spec["paths"]
    metrics = ingester.get("/metrics").text
    for name in (
        "cryptoviz_ingested_quotes_total",
        "cryptoviz_duplicate_quotes_total",
        "cryptoviz_batch_seconds_bucket",
        "cryptoviz_consumer_lag",
        "cryptoviz_db_bytes",
        "cryptoviz_records",
    ):
        assert name in metrics


def test_coins_latest_and_stats(api):
    ingester, _, quotes = api
    coins = ingester.json("/api/v1/coins")["data"]
    symbols = sorted({q.symbol for q in quotes})
    assert [c["symbol"] for c in coins] == symbols
    assert all(c["records"] == ROWS_PER_COIN and c["simulated"] is False for c in coins)
    newest = {q.symbol: q for q in quotes if q.timestamp == max(x.timestamp for x in quotes if x.symbol == q.symbol)}
    latest = ingester.json("/api/v1/latest", symbols="btc, ETH")["data"]
    assert [(r["symbol"], r["price"], r["timestamp"]) for r in latest] == [
        (s, newest[s].price, format_ts(newest[s].timestamp)) for s in ("BTC", "ETH")
    ]
    assert set(latest[0]) >= {"provider", "coin_id", "symbol", "name", "price", "timestamp", "received_at", "simulated"}
    assert ingester.json("/api/v1/latest", provider="coingecko")["data"] == []
    stats = ingester.json("/api/v1/stats")
    assert stats["records"] == len(quotes) and stats["coins"] == len(symbols)
    assert stats["providers"] == ["replay"] and stats["simulated"] is False
    assert stats["last_update"] == format_ts(max(q.timestamp for q in quotes))
    assert stats["seconds_since_last_data"] > 0 and stats["db_bytes"] > 0


def test_history_buckets_ohlc_and_respects_points(api):
    ingester, _, quotes = api
    btc = sorted((q for q in quotes if q.symbol == "BTC"), key=lambda q: q.timestamp)
    start, end = btc[0].timestamp, btc[-1].timestamp
    answer = ingester.json(
        "/api/v1/history", symbols="BTC,ETH", start=format_ts(start), end=str(int(end.timestamp())), points=7
    )
    assert answer["bucket_seconds"] == 43200  # 2 days of data in at most 7 round buckets (aligned on UTC days)
    rows = [r for r in answer["data"] if r["symbol"] == "BTC"]
    assert len(rows) == 5 and len([r for r in answer["data"] if r["symbol"] == "ETH"]) == 5  # at most 7
    assert rows[0]["timestamp"] == format_ts(start)  # the first bucket is stamped at the first sample
    assert sum(r["samples"] for r in rows) == len(btc)
    assert rows[0]["open"] == btc[0].price and rows[-1]["close"] == btc[-1].price == rows[-1]["price"]
    assert max(r["high"] for r in rows) == max(q.price for q in btc)
    assert min(r["low"] for r in rows) == min(q.price for q in btc)
    # Unknown symbols next to known ones are reported, not fatal; alone they are a 400.
    mixed = ingester.json("/api/v1/history", symbols="BTC,NOPE", points=10)
    assert mixed["unknown_symbols"] == ["NOPE"] and {r["symbol"] for r in mixed["data"]} == {"BTC"}
    # Default window: the last day of data.
    default = ingester.json("/api/v1/history", symbols="BTC")
    assert default["end"] == format_ts(end)
    assert default["start"] == format_ts(end - timedelta(days=1))


@pytest.mark.parametrize("path", ["/api/v1/coins", "/api/v1/latest", "/api/v1/history", "/api/v1/alerts"])
def test_every_format_by_parameter_and_by_accept(api, path):
    ingester, _, _ = api
    rows = ingester.json(path)["data"]
    readers = {
        "csv": ("text/csv", lambda body: pa_csv.read_csv(io.BytesIO(body))),
        "arrow": ("application/vnd.apache.arrow.stream", lambda body: pa.ipc.open_stream(body).read_all()),
        "parquet": ("application/vnd.apache.parquet", lambda body: pq.read_table(io.BytesIO(body))),
    }
    for fmt, (media, read) in readers.items():
        for response in (
            ingester.get(path, format=fmt),
            requests.get(ingester.url + path, headers={"Accept": media}, timeout=30),
        ):
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith(media)
            table = read(response.content)
            assert table.num_rows == len(rows)
            if rows:
                assert table.column_names == list(rows[0])
                prices = [k for k in ("price", "last_price") if k in rows[0]]
                for key in prices:
                    assert table.column(key).to_pylist() == [r[key] for r in rows]


BAD_REQUESTS = [
    ("/api/v1/history", {"symbols": "B@D"}, "invalid symbol"),
    ("/api/v1/history", {"symbols": "NOPE"}, "unknown symbol"),
    ("/api/v1/history", {"points": "0"}, "points must be between"),
    ("/api/v1/history", {"points": "10001"}, "points must be between"),
    ("/api/v1/history", {"points": "many"}, "points must be an integer"),
    ("/api/v1/history", {"start": "yesterday"}, "start must be ISO-8601"),
    ("/api/v1/history", {"end": "1e300"}, "end epoch seconds out of range"),
    ("/api/v1/history", {"start": "2025-01-14T00:00:00Z", "end": "2025-01-13T00:00:00Z"}, "start must be before end"),
    ("/api/v1/history", {"provider": "mtgox"}, "unknown provider"),
    ("/api/v1/latest", {"format": "xml"}, "format must be one of"),
    ("/api/v1/latest", {"symbols": "," + "A" * 40}, "invalid symbol"),
    ("/api/v1/coins", {"format": "pdf"}, "format must be one of"),
    ("/api/v1/alerts", {"since": "soon"}, "since must be ISO-8601"),
    ("/api/v1/alerts", {"limit": "-1"}, "limit must be between"),
]


@pytest.mark.parametrize(("path", "params", "message"), BAD_REQUESTS)
def test_bad_parameters_get_400_with_a_message(api, path, params, message):
    ingester, _, _ = api
    response = ingester.get(path, **params)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_sql_injection_attempts_are_just_bad_symbols(api):
    ingester, _, _ = api
    response = ingester.get("/api/v1/history", symbols="BTC') OR 1=1 --")
    assert response.status_code == 400
    assert ingester.json("/api/v1/stats")["records"] > 0


def test_events_arrive_within_a_second_of_commit(api):
    ingester, server, _ = api
    events: list[tuple[float, dict]] = []
    connected = threading.Event()

    def listen() -> None:
        with requests.get(ingester.url + "/api/v1/events", stream=True, timeout=15) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in response.iter_lines():
                connected.set()
                if line.startswith(b"event: "):
                    event = line[7:].decode()
                elif line.startswith(b"data: ") and event == "commit":
                    events.append((time.monotonic(), orjson.loads(line[6:])))
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(10)
    ts = datetime(2025, 3, 1, tzinfo=UTC)
    sent = time.monotonic()
    publish(server.url, chunked([Quote("replay", "btc-usd", "BTC", "Btc", 99999.0, ts, ts)]))
    listener.join(10)
    assert events, "no commit event"
    arrived, data = events[0]
    assert data["records"] == 1 and data["symbols"] == ["BTC"] and data["last_update"] == format_ts(ts)
    assert arrived - sent < 1.0 + 0.2  # within 1 s of the commit (BATCH_TIMEOUT is 0.2 s here)


def test_schemathesis_finds_no_server_error(api, tmp_path: Path):
    ingester, _, _ = api
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            ingester.url + "/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "40",
            "--exclude-path",
            "/api/v1/events",
            "--exclude-path",
            "/api/v1/admin/backup",
            "--request-timeout",
            "20",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=tmp_path,  # its example database stays out of the repository
    )
    assert done.returncode == 0, done.stdout[-4000:]


def test_fast_json_rows_write_exactly_what_to_pylist_would():
    """The JSON fast path must never change a byte of any answer."""
    whole = [datetime(2025, 6, 1), datetime(1999, 12, 31, 23, 59, 59)]
    table = pa.table(
        {
            "symbol": ["BTC", None],
            "price": [1e16, float("nan")],
            "samples": [1, None],
            "timestamp": pa.array(whole, pa.timestamp("us")),
            "fraction": pa.array([datetime(2025, 6, 1, 0, 0, 0, 500), whole[1]], pa.timestamp("us")),
            "missing": pa.array([whole[0], None], pa.timestamp("us")),
            "seconds": pa.array(whole, pa.timestamp("s")),
            "aware": pa.array(whole, pa.timestamp("us", tz="UTC")),
            "providers": [["demo", "replay"], []],
            "simulated": [True, False],
        }
    )
    for t in (table, table.slice(0, 0), pa.concat_tables([table, table])):
        assert orjson.dumps(json_rows(t), option=JSON_OPTIONS) == orjson.dumps(t.to_pylist(), option=JSON_OPTIONS)
    assert orjson.loads(orjson.dumps(json_rows(table), option=JSON_OPTIONS))[0]["timestamp"] == "2025-06-01T00:00:00Z"


def test_history_answers_are_reused_until_the_next_commit(api):
    ingester, server, quotes = api
    query = {"symbols": "ETH", "points": "50"}
    for fmt in ("json", "arrow"):
        first, again = (ingester.get("/api/v1/history", **query, format=fmt) for _ in range(2))
        assert again.status_code == 200 and again.content == first.content
        assert {k: v for k, v in again.headers.items() if k.lower() != "date"} == {
            k: v for k, v in first.headers.items() if k.lower() != "date"
        }
    before = ingester.json("/api/v1/history", **query)
    ts = max(q.timestamp for q in quotes if q.symbol == "ETH") + timedelta(minutes=5)
    records = ingester.json("/api/v1/stats")["records"]
    publish(server.url, chunked([Quote("replay", "eth-usd", "ETH", "Eth", 12345.0, ts, ts)]))
    ingester.wait_records(records + 1)
    after = ingester.json("/api/v1/history", **query)
    assert before["end"] != format_ts(ts)
    assert after["end"] == format_ts(ts) and after["data"][-1]["close"] == 12345.0


def test_history_json_equals_the_arrow_answer_row_for_row(api):
    """JSON rows are written by DuckDB, the other formats from the Arrow table: same values."""
    ingester, _, quotes = api
    start = min(q.timestamp for q in quotes) + timedelta(microseconds=250_000)  # starts between two samples
    fractional = {"symbols": "BTC,ETH,NOPE", "points": "97", "start": format_ts(start)}
    for query in (fractional, {"points": "3000"}):
        answer = ingester.json("/api/v1/history", **query)
        table = pa.ipc.open_stream(ingester.get("/api/v1/history", **query, format="arrow").content).read_all()
        assert len(answer["data"]) == table.num_rows > 0
        assert answer["data"] == orjson.loads(orjson.dumps(table.to_pylist(), option=JSON_OPTIONS))
        assert list(answer["data"][0]) == table.column_names
    # buckets start at the first sample in the window, not at the window's start (fractional JSON
    # timestamps: tests/test_history_window.py)
    stamps = [datetime.fromisoformat(r["timestamp"]) for r in ingester.json("/api/v1/history", **fractional)["data"]]
    assert min(stamps) == min(q.timestamp for q in quotes if q.timestamp >= start)


def test_answer_cache_keeps_one_generation_within_its_byte_bound():
    cache = AnswerCache(max_bytes=10)
    cache.put("a", 1, Response(b"aaaa", media_type="text/csv", headers={"X-Cryptoviz-Start": "s"}))
    cache.put("b", 1, Response(b"bbbb"))
    assert cache.get("a", 1).response().body == b"aaaa"  # a is now the most recently used
    cache.put("c", 1, Response(b"cccc"))  # 12 bytes > 10: the least recently used (b) goes
    assert cache.get("b", 1) is None and cache.get("a", 1) is not None and cache.get("c", 1) is not None
    hit = cache.get("a", 1).response()
    assert hit.headers["x-cryptoviz-start"] == "s" and hit.headers["content-type"].startswith("text/csv")
    assert cache.get("a", 2) is None  # a commit happened: nothing of generation 1 is served
    cache.put("d", 2, Response(b"dd"))
    cache.put("e", 1, Response(b"ee"))  # computed before that commit: not kept
    assert cache.get("a", 1) is None and cache.get("e", 2) is None and cache.get("d", 2) is not None
    cache.put("big", 2, Response(b"x" * 11))
    assert cache.get("big", 2) is None and cache.get("d", 2) is not None


@pytest.mark.browser
@pytest.mark.parametrize(("path", "operation"), [("/docs", ".opblock-summary-path"), ("/redoc", "[data-section-id]")])
def test_api_docs_render_with_every_non_local_request_blocked(api, browser, path: str, operation: str):
    """/docs (Swagger UI) and /redoc (ReDoc) come with their assets from the ingester itself: offline,
    or behind a NetworkPolicy without egress, they still list the operations."""
    ingester, _, _ = api
    context = browser.new_context()
    blocked: list[str] = []

    def only_local(route) -> None:
        url = route.request.url
        if url.startswith(ingester.url):
            route.continue_()
        else:
            blocked.append((route.request.resource_type, url))
            route.abort()

    try:
        page = context.new_page()
        page.route("**/*", only_local)
        page.goto(ingester.url + path)
        page.wait_for_selector(operation, timeout=30_000)
        text = page.locator("body").inner_text()
        assert "/api/v1/history" in text or "history" in text.lower()
        assert page.locator(operation).count() >= 5, "operations listed"
        # only ReDoc's decorative "by Redocly" logo is asked of its CDN (and shown as missing)
        needed = [(kind, url) for kind, url in blocked if kind != "image"]
        assert needed == [], f"the page needs outside resources: {needed}"
    finally:
        context.close()
