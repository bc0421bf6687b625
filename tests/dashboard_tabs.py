"""Dashboard tabs without a browser: Bokeh's Python client holds a server session over the websocket
and applies every patch the server pushes, as a browser's page does, without drawing anything; and
the dashboard's /metrics, which counts them. Shared by the session tests and bench/bench_soak.py."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import pkgutil
import threading
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families


def read_metric(metrics_url: str, name: str, timeout: float = 15) -> dict[str, float]:
    """One family of the dashboard's /metrics: each sample's value by its `state` label ('' if none)."""
    text = requests.get(metrics_url, timeout=timeout).text
    return {
        sample.labels.get("state", ""): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == name
        for sample in family.samples
    }


def load_panel_models() -> None:
    """A Python Bokeh client must know Panel's model types to apply the server's patches."""
    import panel.models

    for module in pkgutil.iter_modules(panel.models.__path__):
        with contextlib.suppress(ImportError):  # optional extras (VTK, deck.gl…) this dashboard does not use
            importlib.import_module(f"panel.models.{module.name}")


def open_tab(url: str) -> Any:
    """A new server session, told the page has loaded (Panel holds its pushes until then)."""
    from bokeh.client import pull_session
    from bokeh.events import DocumentReady

    page = pull_session(url=url)
    page.document.callbacks.send_event(DocumentReady())
    return page


class Tab(threading.Thread):
    """One open tab in its own thread (a Bokeh client runs its own event loop), reading pushes until
    `close()`; the tab then closes at the next push it receives."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.opened = threading.Event()
        self.closing = threading.Event()
        self.pushed = 0
        self.error: Exception | None = None

    def run(self) -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        try:
            page = open_tab(self.url)
        except Exception as exc:  # reported by the test through `error`
            self.error = exc
            return
        finally:
            self.opened.set()
        page.document.on_change(lambda _event: setattr(self, "pushed", self.pushed + 1))
        page._connection._loop_until(self.closing.is_set)
        page.close()

    def close(self) -> None:
        self.closing.set()
