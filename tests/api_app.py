"""The ingester's API in-process (no tests here): the real app, server and limits on a real DuckDB
file, served by uvicorn on a thread of the test process, without NATS. Fast enough for routing,
validation and admin tests; the abuse tests use a real `cryptoviz ingest` instead."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import requests
from cryptoviz.core.nats import free_port
from cryptoviz.core.quote import Quote
from cryptoviz.ingester.api import create_app
from cryptoviz.ingester.runtime import Runtime
from cryptoviz.ingester.serving import ApiConfig, Server
from cryptoviz.ingester.settings import IngestSettings
from cryptoviz.ingester.store import Store, quotes_to_arrow

SETTINGS = IngestSettings(
    nats_url="nats://127.0.0.1:1",
    duckdb_path="",
    api_host="127.0.0.1",
    api_port=0,
    batch_size=1000,
    candle_batch_size=1000,
    batch_timeout=0.1,
    retention_days=0,
    ack_wait=30,
)


class InProcessApi:
    def __init__(self, db_path: Path, **settings: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = SETTINGS.model_copy(update={"duckdb_path": str(db_path), "api_port": self.port, **settings})
        self.store = Store(db_path)
        self.runtime = Runtime(self.settings, self.store)
        self.app = create_app(self.runtime)
        self.server = Server(ApiConfig(self.app, "127.0.0.1", self.port, self.settings.limits))
        self._thread = threading.Thread(target=lambda: asyncio.run(self.server.serve_until_stopped()), daemon=True)

    def start(self) -> InProcessApi:
        self._thread.start()
        give_up = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > give_up or not self._thread.is_alive():
                raise RuntimeError("the in-process API did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self.store.close()

    def store_quotes(self, quotes: list[Quote]) -> None:
        self.store.write_batch(quotes_to_arrow(quotes))

    def get(self, path: str, **params: Any) -> requests.Response:
        return requests.get(self.url + path, params=params, timeout=30)

    def json(self, path: str, **params: Any) -> Any:
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        return response.json()
