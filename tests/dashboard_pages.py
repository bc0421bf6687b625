"""The dashboard's browser tests' shared parts: a real pipeline (nats-server → `cryptoviz ingest` filled
over JetStream → `cryptoviz dashboard`), a Chromium page with the probes the tests assert on, and the
check every chart test makes: lines are drawn (≥ 2 points per coin in the page's Bokeh data sources,
and an x-range that spans them).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import requests
from cryptoviz.core.nats import EmbeddedNats, free_port
from cryptoviz.core.quote import Quote, make_quote
from nats import errors as nats_errors
from test_ingest_harness import CRYPTOVIZ, Ingester, chunked
from test_ingest_harness import publish as publish_in_loop

XSS = "<img src=x onerror=alert(1)>"
SUPPLY = {
    "BTC": 19.8e6, "ETH": 120e6, "BNB": 145e6, "SOL": 480e6, "XRP": 57e9, "ADA": 35e9, "DOGE": 147e9,
    "USDT": 137e9, "USDC": 52e9, "AVAX": 410e6, "LINK": 638e6, "DOT": 1.5e9, "LTC": 75e6, "MATIC": 10e9,
}  # fmt: skip
"""Rough circulating supplies, so market caps (and the default selection) look like the real market."""
NAMES = {"LINK": "Chainlink", "LTC": "Litecoin", "DOT": "Polkadot", "AVAX": "Avalanche", "BTC": "Bitcoin"}


def market_quotes(
    market_dir: Path, days: float, end: datetime, provider: str = "coingecko", every: int = 1
) -> list[Quote]:
    """The last `days` of every shared 5-minute CSV (every `every`-th row), shifted so the newest row is
    at `end`, with market caps and 1h/24h/7d changes computed from the series itself."""
    quotes: list[Quote] = []
    rows = int(days * 288)
    for path in sorted(market_dir.glob("*.csv")):
        symbol = path.name.split("-")[0]
        frame = pd.read_csv(path)
        close = frame["Close"]
        changes = {n: (close / close.shift(k) - 1) * 100 for n, k in (("1h", 12), ("24h", 288), ("7d", 2016))}
        stamps = pd.to_datetime(frame["Date"], utc=True)
        shift = pd.Timestamp(end) - stamps.iloc[-1]
        for i in range(max(0, len(frame) - rows), len(frame), every):
            ts = (stamps.iloc[i] + shift).to_pydatetime()
            quotes.append(
                make_quote(
                    provider=provider,
                    coin_id=symbol.lower(),
                    symbol=symbol,
                    name=NAMES.get(symbol, symbol.title()),
                    price=float(close.iloc[i]),
                    timestamp=ts,
                    received_at=ts,
                    volume_24h=float(frame["Volume"].iloc[i]) or None,
                    market_cap=float(close.iloc[i]) * SUPPLY.get(symbol, 1e6),
                    **{f"percent_change_{n}": _finite(c.iloc[i]) for n, c in changes.items()},
                )
            )
    return quotes


def fresh_quotes(market_dir: Path, minutes: float, end: datetime, every_seconds: int = 30) -> list[Quote]:
    """A fresh install's first minutes: each coin's last shared closes, one every `every_seconds` up to `end`."""
    count = int(minutes * 60 / every_seconds) + 1
    quotes = []
    for path in sorted(market_dir.glob("*.csv")):
        symbol = path.name.split("-")[0]
        close = pd.read_csv(path)["Close"].iloc[-count:].to_list()
        for i, price in enumerate(close):
            ts = end - timedelta(seconds=every_seconds * (count - 1 - i))
            quotes.append(
                make_quote(provider="coingecko", coin_id=symbol.lower(), symbol=symbol,
                           name=NAMES.get(symbol, symbol.title()), price=float(price), timestamp=ts, received_at=ts,
                           market_cap=float(price) * SUPPLY.get(symbol, 1e6))
            )  # fmt: skip
    return quotes


def publish(url: str, messages: list, attempts: int = 3) -> None:
    """Publish from a worker thread: sync Playwright owns this thread's event loop. A JetStream ack that
    times out on a busy machine is retried: the messages' ids make a second publish store nothing twice."""
    for attempt in range(attempts):
        try:
            with ThreadPoolExecutor(1) as pool:
                pool.submit(publish_in_loop, url, messages).result(timeout=120)
            return
        except nats_errors.TimeoutError:
            if attempt == attempts - 1:
                raise


def _finite(value: float) -> float | None:
    return None if pd.isna(value) else round(float(value), 4)


def xss_quotes(end: datetime, count: int = 48) -> list[Quote]:
    """A simulated (`demo`) coin whose provider name is an HTML injection attempt."""
    return [
        make_quote(
            provider="demo",
            coin_id="xss",
            symbol="XSS",
            name=XSS,
            price=0.5 + i * 0.001,
            timestamp=end - timedelta(minutes=5 * (count - i)),
            received_at=end,
            market_cap=1e5,
        )
        for i in range(count)
    ]


class DashboardProcess:
    """`cryptoviz dashboard` as a real subprocess on a free port."""

    def __init__(self, ingester_url: str, log_path: Path, executable: str = CRYPTOVIZ, **env: str) -> None:
        self.executable = executable  # another checkout's, for a baseline in the same benchmark run
        self.port = free_port()
        prefix = env.get("DASHBOARD_PREFIX", "").rstrip("/")
        self.url = f"http://127.0.0.1:{self.port}{prefix}/"
        metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.env = {
            **os.environ,
            "INGESTER_URL": ingester_url,
            "DASHBOARD_PORT": str(self.port),
            "DASHBOARD_ADDRESS": "127.0.0.1",
            "DASHBOARD_METRICS_PORT": str(metrics_port),
            **env,
        }
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> DashboardProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([self.executable, "dashboard"], env=self.env, stdout=log, stderr=log)
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            if self.process.poll() is not None:
                raise RuntimeError(f"dashboard exited {self.process.returncode}: {self.log()[-2000:]}")
            try:
                if requests.get(self.url + "liveness", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"dashboard not up in {timeout}s: {self.log()[-2000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Pipeline:
    """nats-server + ingester filled with `quotes` + the dashboards the tests start."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nats = EmbeddedNats(root / "nats")
        self.ingester: Ingester | None = None
        self.dashboards: list[DashboardProcess] = []

    def start(self, quotes: list[Quote]) -> Pipeline:
        self.nats.start()
        self.ingester = Ingester(self.nats.url, self.root / "cv.duckdb", self.root / "ingester.log").start()
        by_provider: dict[str, list[Quote]] = {}
        for quote in quotes:
            by_provider.setdefault(quote.provider, []).append(quote)
        publish(self.nats.url, [m for group in by_provider.values() for m in chunked(group)])  # one provider a message
        self.ingester.wait_records(len(quotes), timeout=120)
        return self

    def dashboard(self, **env: str) -> DashboardProcess:
        board = DashboardProcess(self.ingester.url, self.root / f"dashboard{len(self.dashboards)}.log", **env)
        self.dashboards.append(board.start())
        return board

    def publish(self, quotes: list[Quote]) -> None:
        publish(self.nats.url, chunked(quotes))

    def stats(self) -> dict[str, Any]:
        return self.ingester.json("/api/v1/stats")

    def tracebacks(self) -> list[str]:
        """Server-side errors any of the dashboards logged (see `tracebacks`)."""
        return [f"{b.log_path.name}: {t}" for b in self.dashboards for t in tracebacks(b.log())]

    def stop(self) -> None:
        for board in self.dashboards:
            board.stop()
        if self.ingester:
            self.ingester.stop()
        self.nats.stop()


def tracebacks(log: str) -> list[str]:
    """The tracebacks in a log (a closed tab's websocket is no error: the dashboard logs none for it)."""
    found, lines = [], log.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Traceback"):
            block = []
            for follow in lines[index:]:
                if block and re.match(r"\d{4}-\d\d-\d\d ", follow):
                    break
                block.append(follow)
            found.append("\n".join(block))
    return found


FIGURES_JS = """() => {
  const out = [];
  const live = new Set([...Bokeh.index.all_views()].map(v => v.model));  // not replaced ones
  for (const m of live) {
    if (m.type !== 'Figure') continue;
    const series = [];
    for (const r of m.renderers) {
      if (!r.glyph || !r.data_source) continue;
      const d = r.data_source.data;
      const xs = d.time || d.x || [];
      const ys = d.value || d.y || d.close || d.high || [];
      let n = 0, lo = Infinity, hi = -Infinity;
      for (let i = 0; i < xs.length; i++) {
        const x = Number(xs[i]), y = Number(ys[i]);
        if (isFinite(x) && isFinite(y)) { n++; lo = Math.min(lo, x); hi = Math.max(hi, x); }
      }
      series.push({name: r.name, glyph: r.glyph.type, visible: r.visible, n, lo, hi,
                   colour: r.glyph.line_color && r.glyph.line_color.value !== undefined ? r.glyph.line_color.value
                           : (typeof r.glyph.line_color === 'string' ? r.glyph.line_color : null),
                   last: ys.length ? Number(ys[ys.length - 1]) : null,
                   open: d.open ? [...d.open].map(Number) : null, close: d.close ? [...d.close].map(Number) : null,
                   high: d.high ? [...d.high].map(Number) : null, low: d.low ? [...d.low].map(Number) : null});
    }
    const legends = m.center.concat(m.below, m.above, m.left, m.right).filter(x => x.type === 'Legend');
    out.push({
      id: m.id, title: m.title ? m.title.text : '', x: [Number(m.x_range.start), Number(m.x_range.end)],
      x_range: m.x_range.id, ylog: m.y_scale.type === 'LogScale',
      xlabel: m.below.filter(a => a.axis_label !== undefined).map(a => a.axis_label || '').join(''),
      ylabel: m.left.map(a => a.axis_label || ''), background: m.background_fill_color,
      legend_inside: m.center.some(x => x.type === 'Legend'), legends: legends.length,
      active_scroll: m.toolbar.active_scroll ? String(m.toolbar.active_scroll) : null,
      has_wheel_zoom: m.toolbar.tools.some(t => t.type === 'WheelZoomTool'),
      series,
    });
  }
  return out;
}"""


LEGENDS_JS = """() => [...Bokeh.index.all_views()]
  .filter(v => v.model.type === 'Legend' && v.is_visible && v.parent && v.parent.model.type === 'Figure')
  .map(v => ({figure: v.parent.model.title ? v.parent.model.title.text : '',
              left: v.bbox.left, right: v.bbox.right, width: v.parent.bbox.width}))"""
"""Each drawn legend's box and its figure's width (Bokeh draws a legend on the canvas: no wrapping)."""


class Page:
    """A dashboard tab (desktop size, or a real device descriptor), with the probes the tests need.
    Playwright's CSS locators pierce Panel's shadow roots."""

    def __init__(self, browser: Any, url: str, width: int = 1400, height: int = 1000, wait_for_chart: bool = True,
                 device: dict[str, Any] | None = None) -> None:  # fmt: skip
        options = dict(device) if device else {"viewport": {"width": width, "height": height}}
        self.context = browser.new_context(**options, timezone_id="Europe/Paris")
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)
        if wait_for_chart:
            self.page.wait_for_selector("canvas", timeout=30_000)

    def figures(self) -> list[dict[str, Any]]:
        return self.page.evaluate(FIGURES_JS)

    def price_figures(self) -> list[dict[str, Any]]:
        """The figures of the Prices tab (not the candlestick/indicator ones)."""
        return [
            f for f in self.figures() if "candlesticks" not in f["title"] and f["ylabel"] not in (["RSI"], ["MACD"])
        ]

    def legends_cut_off(self) -> list[dict[str, Any]]:
        """The legends reaching past their figure's edges (their outer entries unseen, untappable)."""
        return [x for x in self.page.evaluate(LEGENDS_JS) if x["left"] < 0 or x["right"] > x["width"] + 0.5]

    def plotted(self) -> dict[str, dict[str, Any]]:
        """Each coin's line on the Prices tab (name → its series and its figure's x-range)."""
        out = {}
        for figure in self.price_figures():
            for series in figure["series"]:
                if series["glyph"] == "Line":
                    out[series["name"]] = {**series, "x": figure["x"]}
        return out

    def text(self, testid: str) -> str:
        return self.page.locator(f"[data-testid={testid}]").first.inner_text()

    def click(self, name: str) -> None:
        self.page.get_by_role("button", name=name, exact=True).first.click()

    def pressed(self, name: str) -> bool:
        return "bk-active" in (
            self.page.get_by_role("button", name=name, exact=True).first.get_attribute("class") or ""
        )

    def add_coin(self, query: str, pick: str) -> list[str]:
        """Type in the coin finder as a person would; returns the completions offered, picks `pick`."""
        search = self.page.get_by_placeholder("Type a symbol or name…")
        search.click()
        search.press_sequentially(query, delay=40)
        menu = self.page.locator(".bk-menu div, .bk-menu .bk-item")
        self.wait(lambda: menu.count() > 0, what=f"completions for {query!r}")
        offered = [t.strip() for t in menu.all_inner_texts() if t.strip()]
        self.page.locator(".bk-menu div", has_text=pick).first.click()
        return offered

    def wait(self, predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
        give_up = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < give_up:
            try:
                if predicate():
                    return
            except Exception as exc:  # a view being replaced mid-probe; try again
                last_error = exc
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what} (last error: {last_error})")

    def shot(self, path: Path) -> None:
        self.page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")  # painted
        self.page.screenshot(path=str(path), full_page=True)

    def close(self) -> None:
        self.context.close()


def lines_drawn(page: Page, coins: list[str], minimum: int = 2) -> bool:
    """Every coin has a line of ≥ `minimum` points on the Prices tab, inside an x-range that spans them."""
    plotted = page.plotted()
    for coin in coins:
        series = plotted.get(coin)
        if series is None or series["n"] < minimum:
            return False
        start, end = series["x"]
        if not (end > start and start <= series["lo"] and series["hi"] <= end):
            return False
    return True


def assert_lines_drawn(page: Page, coins: list[str], what: str, timeout: float = 15.0) -> None:
    page.wait(lambda: lines_drawn(page, coins), timeout=timeout, what=f"lines of {coins} ({what})")


def luminance(css_color: str) -> float:
    """WCAG relative luminance of a CSS `rgb(…)`/`rgba(…)` or `#rrggbb` colour."""
    if css_color.startswith("#"):
        channels = [int(css_color[i : i + 2], 16) for i in (1, 3, 5)]
    else:
        channels = [float(v) for v in re.findall(r"[\d.]+", css_color)[:3]]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (v / 255 for v in channels)]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


COLOURED_TEXT_JS = """els => els.map(e => {
  let n = e, bg = null;
  while (n && !bg) {  // the nearest opaque background, through shadow roots to their hosts
    if (n.nodeType === 1) { const c = getComputedStyle(n).backgroundColor;
                            if (c && c !== 'transparent' && !c.startsWith('rgba(0, 0, 0, 0')) bg = c; }
    n = n.parentNode || n.host;
  }
  return [e.innerText.trim(), getComputedStyle(e).color, bg || 'rgb(255, 255, 255)'];
})"""


def low_contrast_text(page: Page, selector: str, minimum: float = 4.5) -> list[str]:
    """The elements matching `selector` whose text is below `minimum`:1 against their background."""
    found = page.page.locator(selector).evaluate_all(COLOURED_TEXT_JS)
    return [f"{text!r} {fg} on {bg}: {contrast(fg, bg):.2f}" for text, fg, bg in found if contrast(fg, bg) < minimum]


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
