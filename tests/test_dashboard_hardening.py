"""The dashboard facing abusive clients (issue 14), on the real `cryptoviz dashboard` process with a
real ingester, in real Chromium where a browser matters: security headers and a CSP the page really
runs under, no framing by other sites, the websocket's Origin allow-list against a foreign page and a
raw websocket client, session caps per client and per process with a readable page, and a quiet log
when tabs close or anonymous clients ask for `autoload.js`.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import test_dashboard_browser
from cryptoviz.core.nats import free_port
from cryptoviz.core.quote import make_quote
from cryptoviz.dashboard.headers import content_security_policy, frame_ancestors, inline_hashes, local_origins
from cryptoviz.dashboard.limits import SessionLimits, client_address, parse_networks, refusal
from dashboard_pages import DashboardProcess, Page, Pipeline, assert_lines_drawn, fresh_quotes
from dashboard_tabs import read_metric
from support.wait import wait_for

pytestmark = pytest.mark.browser

playwright = test_dashboard_browser.playwright
browser = test_dashboard_browser.browser
"""This module's Chromium, from its own Playwright (with the real phone descriptors)."""

CLOSED_TAB_NOISE = ("Traceback", "Task exception was never retrieved", "WebSocketClosedError", "StreamClosedError")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, market_5m: Path) -> Iterator[Pipeline]:
    """A fresh install's first 20 minutes of the 14 shared coins."""
    running = Pipeline(tmp_path_factory.mktemp("hardening"))
    try:
        yield running.start(fresh_quotes(market_5m, 20, datetime.now(UTC).replace(microsecond=0)))
    finally:
        running.stop()


@pytest.fixture(scope="module")
def board(pipeline: Pipeline) -> DashboardProcess:
    return pipeline.dashboard(SCRAPE_INTERVAL="300")


class ForeignSite:
    """Another web site on loopback (another port is another origin) serving one page."""

    def __init__(self, html: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        body = html.encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> ForeignSite:
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _token() -> str:
    """A session token as anyone can make one (the dashboard's sessions are not signed)."""
    from bokeh.util.token import generate_jwt_token, generate_session_id

    return generate_jwt_token(generate_session_id(), signed=False)


def _open_websocket(board: DashboardProcess, origin: str | None) -> tuple[int | None, int | None]:
    """Open Bokeh's websocket as a raw client: (HTTP status of a refused upgrade, close code once open)."""
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    async def attempt() -> tuple[int | None, int | None]:
        headers = {"Sec-WebSocket-Protocol": f"bokeh, {_token()}"}
        if origin:
            headers["Origin"] = origin
        request = HTTPRequest(board.url.replace("http", "ws", 1) + "ws", headers=headers, request_timeout=30)
        try:
            connection = await websocket_connect(request, subprotocols=["bokeh", _token()])
        except HTTPClientError as exc:
            return exc.code, None
        first = await asyncio.wait_for(connection.read_message(), 30)  # ACK, or None when closed at once
        code = connection.close_code if first is None else None
        connection.close()
        return None, code

    with ThreadPoolExecutor(1) as pool:  # sync Playwright owns this thread's event loop
        return pool.submit(asyncio.run, attempt()).result(timeout=60)


# --- pure decisions --------------------------------------------------------------------------------------


def test_client_behind_a_trusted_proxy_is_the_rightmost_untrusted_hop() -> None:
    proxies = parse_networks("10.0.0.0/8, 192.168.1.5")
    assert client_address("10.1.2.3", "203.0.113.9, 198.51.100.4", proxies) == "198.51.100.4"
    assert client_address("10.1.2.3", "198.51.100.4, 10.9.9.9", proxies) == "198.51.100.4"
    assert client_address("203.0.113.1", "198.51.100.4", proxies) == "203.0.113.1"  # not a proxy: XFF ignored
    assert client_address("10.1.2.3", "198.51.100.4", []) == "10.1.2.3"
    assert client_address("10.1.2.3", "garbage", proxies) == "10.1.2.3"
    assert client_address("10.1.2.3", "[2001:db8::1]:443", proxies) == "2001:db8::1"
    with pytest.raises(ValueError, match="not an IP address"):
        parse_networks("10.0.0.0/8, proxy.local")


def test_refusals_name_the_limit_reached() -> None:
    assert refusal(2, 1, 3, 2, 10) is None
    assert refusal(2, 2, 3, 2, 10).status == 429
    assert refusal(3, 0, 3, 2, 10).status == 503
    limits = SessionLimits(3, 2, [], retry_after=10)
    limits.start("a")
    limits.done("a", "s1")
    limits.start("a")  # a second one under way counts too
    assert limits.check("a", ["s1"]).status == 429
    limits.done("a", "s2")
    assert limits.check("b", ["s1", "s2"]) is None
    assert limits.check("a", ["s2"]) is None  # s1 discarded by the server: forgotten


def test_csp_allows_exactly_the_pages_own_inline_scripts() -> None:
    page = b"<script>var a=1</script><script src='x.js'></script><div onclick=\"go()\"></div>"
    assert len(inline_hashes(page)) == 2
    policy = content_security_policy(page, "'none'")
    assert "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in policy.split("style-src")[0]
    assert "'unsafe-hashes'" not in content_security_policy(None, "'none'")
    assert frame_ancestors("  'self'   https://wiki.example.com ") == "'self' https://wiki.example.com"
    for hostile in ("'none'; script-src *", "https://a.example,https://b.example", ""):
        with pytest.raises(ValueError):
            frame_ancestors(hostile)
    assert local_origins(5006, "0.0.0.0")[:2] == ["localhost:5006", "127.0.0.1:5006"]
    assert local_origins(5006, "10.0.0.7")[-1] == "10.0.0.7:5006"


# --- the real process -----------------------------------------------------------------------------------


def test_every_response_carries_the_security_headers(board: DashboardProcess) -> None:
    page = requests.get(board.url, timeout=30)
    script = next(part for part in page.text.split('src="')[1:] if part.startswith("static/"))
    for response in (
        page,
        requests.get(board.url + script.split('"')[0], timeout=10),
        requests.get(board.url + "liveness", timeout=10),
        requests.get(board.url + "no-such-page", timeout=10),
    ):
        assert response.headers.get("X-Content-Type-Options") == "nosniff", response.url
        policy = response.headers.get("Content-Security-Policy", "")
        assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy, response.url
    assert "'sha256-" in page.headers["Content-Security-Policy"]


def test_pages_and_bundles_are_compressed_after_their_policy(board: DashboardProcess) -> None:
    """Gzip for clients that ask for it (a first visit fetched ≈4.2 MB of scripts uncompressed); the CSP
    still hashes the page's inline scripts as the browser reads them, decompressed; a bundle is compressed
    once, beside the event loop, then served from memory, byte for byte the file; clients without gzip
    get the file as is."""
    page = requests.get(board.url, timeout=30, headers={"Accept-Encoding": "gzip"})
    assert page.headers.get("Content-Encoding") == "gzip"
    assert set(inline_hashes(page.content)) <= set(page.headers["Content-Security-Policy"].split())
    scripts = [part.split('"')[0] for part in page.text.split('src="')[1:] if part.startswith("static/")]
    bundle = board.url + next(s for s in scripts if "bokeh.min.js" in s)
    plain = requests.get(bundle, timeout=10, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and plain.headers.get("X-Content-Type-Options") == "nosniff"

    def compressed() -> bytes | None:
        response = requests.get(bundle, timeout=10, headers={"Accept-Encoding": "gzip"}, stream=True)
        assert "default-src 'self'" in response.headers.get("Content-Security-Policy", "")
        body = response.raw.read(decode_content=False)
        return body if response.headers.get("Content-Encoding") == "gzip" else None

    sent = wait_for(compressed, 20, "bokeh.min.js gzipped (stored after its first request)")
    assert gzip.decompress(sent) == plain.content and len(sent) < len(plain.content) / 3
    assert compressed() == sent
    assert requests.get(bundle, timeout=10, headers={"If-None-Match": plain.headers["Etag"]}).status_code == 304


def test_the_page_draws_its_charts_under_its_csp(browser: Any, board: DashboardProcess, playwright: Any) -> None:
    """Desktop and a real phone: lines drawn, nothing the page needs refused by its own policy."""
    shots = Path(board.log_path).parent
    for name, device in (("desktop", None), ("phone", playwright.devices["iPhone 13"])):
        tab = Page(browser, board.url, device=device)
        refused: list[str] = []
        tab.page.on(
            "console", lambda m, out=refused: out.append(m.text) if "Content Security Policy" in m.text else None
        )
        try:
            tab.page.reload()
            tab.page.wait_for_selector("canvas", timeout=30_000)
            coins = [series for series in tab.plotted()] or ["BTC"]
            assert_lines_drawn(tab, coins, f"{name} under the CSP", timeout=30)
            tab.shot(shots / f"csp-{name}.png")
            assert refused == [] and tab.errors == [], "\n".join(refused + tab.errors)
        finally:
            tab.close()


def test_another_site_cannot_frame_the_dashboard(browser: Any, board: DashboardProcess) -> None:
    with ForeignSite(f'<h1>foreign</h1><iframe src="{board.url}" width="800" height="600"></iframe>') as site:
        context = browser.new_context()
        page = context.new_page()
        messages: list[str] = []
        page.on("console", lambda m: messages.append(m.text))
        try:
            page.goto(site.url)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not any("frame-ancestors" in m for m in messages):
                time.sleep(0.1)
            assert any("frame-ancestors" in m for m in messages), messages
            frame = page.frames[1]
            assert frame.locator("canvas").count() == 0
        finally:
            context.close()


def test_a_foreign_origin_cannot_open_the_websocket(browser: Any, board: DashboardProcess) -> None:
    """Cross-site websocket hijacking: any page may forge a session token; only the Origin stops it."""
    local = f"http://127.0.0.1:{board.port}"
    assert _open_websocket(board, local) == (None, None)  # opened, and Bokeh's ACK came
    assert _open_websocket(board, None) == (None, None)  # non-browser clients send none (Bokeh's client)
    assert _open_websocket(board, "http://evil.example") == (403, None)
    assert _open_websocket(board, f"http://127.0.0.1:{free_port()}") == (403, None)
    ws_url = board.url.replace("http", "ws", 1) + "ws"
    probe = f"""<script>
      const ws = new WebSocket({ws_url!r}, ["bokeh", {_token()!r}]);
      ws.onopen = () => document.title = "opened";
      ws.onerror = () => document.title = "refused";
    </script>"""
    with ForeignSite(probe) as site:
        context = browser.new_context()
        page = context.new_page()
        try:
            page.goto(site.url)
            page.wait_for_function("document.title !== ''", timeout=15_000)
            assert page.title() == "refused"
        finally:
            context.close()
    assert "Refusing websocket connection from Origin 'http://evil.example'" in board.log()


def test_sessions_are_capped_per_client_and_per_process(browser: Any, pipeline: Pipeline) -> None:
    """Two tabs per client and three in all; behind the (trusted) proxy, X-Forwarded-For names the client."""
    capped = pipeline.dashboard(
        SCRAPE_INTERVAL="300",
        DASHBOARD_MAX_SESSIONS="3",
        DASHBOARD_MAX_SESSIONS_PER_CLIENT="2",
        DASHBOARD_TRUSTED_PROXIES="127.0.0.1",
        DASHBOARD_SESSION_EXPIRY="2",
    )
    contexts: list[Any] = []

    def tab(client: str, wait_for_chart: bool = True) -> Any:
        context = browser.new_context(extra_http_headers={"X-Forwarded-For": client})
        contexts.append(context)
        page = context.new_page()
        response = page.goto(capped.url)
        if wait_for_chart:
            page.wait_for_selector("canvas", timeout=30_000)
        return page, response

    try:
        first, _ = tab("203.0.113.5")
        tab("203.0.113.5")
        _, third = tab("203.0.113.5", wait_for_chart=False)
        assert third.status == 429 and int(third.headers["retry-after"]) <= 2 + 1 + 1
        _, other = tab("198.51.100.7")
        assert other.status == 200
        busy, refused = tab("192.0.2.44", wait_for_chart=False)
        assert refused.status == 503
        assert busy.get_by_role("heading", name="CryptoViz is busy").is_visible()
        assert "sessions of closed tabs are freed within" in busy.locator("body").inner_text()
        busy.screenshot(path=str(capped.log_path.with_suffix(".busy.png")))
        assert _open_websocket(capped, None) == (None, 1013)  # a forged new session by websocket: also refused

        first.context.close()  # a tab closes: its session is freed within Retry-After
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            busy.reload()
            if busy.locator("canvas").count() or busy.get_by_role("heading", name="CryptoViz is busy").count() == 0:
                break
            time.sleep(0.2)
        busy.wait_for_selector("canvas", timeout=30_000)
        assert "session refused (HTTP 429) for 203.0.113.5" in capped.log()
        assert "Traceback" not in capped.log()
    finally:
        for context in contexts:
            context.close()
        capped.stop()


def test_closed_tabs_and_anonymous_autoload_leave_no_traceback(browser: Any, pipeline: Pipeline) -> None:
    """Tabs closed while the server pushes new data to them, and `autoload.js` asked for without a login:
    ordinary events, which used to log a traceback each."""
    board = pipeline.dashboard(
        SCRAPE_INTERVAL="1", CACHE_TTL="1", DASHBOARD_SESSION_EXPIRY="1", DASHBOARD_BASIC_AUTH="trader:correct-horse"
    )
    anonymous = requests.get(board.url + "autoload.js?bokeh-autoload-element=x", timeout=10, allow_redirects=False)
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    context = browser.new_context(http_credentials=None)
    login = context.new_page()
    login.goto(board.url)
    login.fill("input[name=username]", "trader")
    login.fill("input[name=password]", "correct-horse")
    login.get_by_role("button", name="Login").click()
    login.wait_for_selector("canvas", timeout=30_000)
    stop = threading.Event()

    def prices() -> None:  # every tab redraws each second
        price = 100_000.0
        while not stop.is_set():
            now = datetime.now(UTC).replace(microsecond=0)
            pipeline.publish([make_quote(provider="coingecko", coin_id="btc", symbol="BTC", name="Bitcoin",
                                         price=price, timestamp=now, received_at=now)])  # fmt: skip
            price += 50
            stop.wait(0.3)

    feeder = threading.Thread(target=prices, daemon=True)
    feeder.start()
    try:
        for _ in range(2):
            tabs = [context.new_page() for _ in range(3)]
            for tab in tabs:
                tab.goto(board.url)
            for tab in tabs:
                tab.wait_for_selector("canvas", state="attached", timeout=30_000)
            time.sleep(0.2)
            for tab in tabs:
                tab.close()
        deadline = time.monotonic() + 20  # the closed tabs' sessions discarded: their last writes are done
        while read_metric(board.metrics_url, "cryptoviz_dashboard_sessions") != {"connected": 1, "disconnected": 0}:
            assert time.monotonic() < deadline, read_metric(board.metrics_url, "cryptoviz_dashboard_sessions")
            time.sleep(0.2)
    finally:
        stop.set()
        feeder.join(10)
        context.close()
        board.stop()
    noise = [line for line in board.log().splitlines() if any(word in line for word in CLOSED_TAB_NOISE)]
    assert noise == [], "\n".join(noise[:20])
