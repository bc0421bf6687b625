"""OAuth login to the dashboard through Panel's built-in support, in a real browser.

The identity provider is a small local OAuth 2 authorization-code server (like the fake market
servers, it stands in for the outside world): `/authorize` hands back a code, `/token` trades it
for an access token only with the right client secret, `/userinfo` names the user. The dashboard
is the real `cryptoviz dashboard` configured only with Panel's own PANEL_OAUTH_* variables.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
import requests
from cryptoviz.core.nats import EmbeddedNats, free_port
from test_dashboard_browser import DashboardProcess, Page
from test_ingest_harness import Ingester

pytestmark = pytest.mark.browser

CLIENT_ID = "cryptoviz-dashboard"
CLIENT_SECRET = "oauth-client-secret-9f2c"
USER = "trader@example.com"


class IdentityProvider:
    """A minimal OAuth 2 authorization-code provider on a free port, recording what it was sent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token_requests: list[dict[str, str]] = []
        self.refuse_tokens = False
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/authorize":  # the user "approves" at once
                    target = query["redirect_uri"] + "?" + urlencode({"code": "code-123", "state": query["state"]})
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.end_headers()
                elif url.path == "/userinfo":
                    if self.headers.get("Authorization") != "Bearer access-456":
                        self._json(401, {"error": "invalid_token"})
                    else:
                        self._json(200, {"email": USER, "name": "Trader"})
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                form = {k: v[0] for k, v in parse_qs(body).items()}
                provider.token_requests.append(form)
                good = form.get("client_secret") == CLIENT_SECRET and form.get("code") == "code-123"
                if provider.refuse_tokens or not good:
                    self._json(400, {"error": "invalid_grant"})
                else:
                    self._json(200, {"access_token": "access-456", "token_type": "Bearer", "expires_in": 3600})

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> IdentityProvider:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DashboardProcess, IdentityProvider]]:
    root = tmp_path_factory.mktemp("oauth")
    with EmbeddedNats(root / "nats") as nats_server, IdentityProvider() as idp:
        ingester = Ingester(nats_server.url, root / "cv.duckdb", root / "ingester.log").start()
        board = DashboardProcess(
            ingester.url,
            root / "dashboard.log",
            PANEL_OAUTH_PROVIDER="generic",
            PANEL_OAUTH_KEY=CLIENT_ID,
            PANEL_OAUTH_SECRET=CLIENT_SECRET,
            PANEL_COOKIE_SECRET="cookie-secret-for-the-test-0123456789abcdef",
            PANEL_OAUTH_AUTHORIZE_URL=f"{idp.url}/authorize",
            PANEL_OAUTH_TOKEN_URL=f"{idp.url}/token",
            PANEL_OAUTH_USER_URL=f"{idp.url}/userinfo",
        )
        try:
            yield board.start(), idp
        finally:
            board.stop()
            ingester.stop()


def test_the_app_needs_a_login_but_liveness_and_metrics_do_not(
    guarded: tuple[DashboardProcess, IdentityProvider],
) -> None:
    board, _ = guarded
    assert requests.get(board.url + "liveness", timeout=5).status_code == 200
    assert "cryptoviz_dashboard_sessions" in requests.get(board.metrics_url, timeout=5).text  # on its own port
    answer = requests.get(board.url, timeout=5, allow_redirects=False)
    assert answer.status_code in (302, 303) and "/login" in answer.headers["Location"]


def test_oauth_login_opens_the_app(guarded: tuple[DashboardProcess, IdentityProvider], browser: Any) -> None:
    board, idp = guarded
    tab = Page(browser, board.url, wait_for_chart=False)  # → /login → provider → back with a code → app
    try:
        help_text = tab.page.get_by_text("No data yet: the ingester has stored no quotes")
        tab.wait(lambda: help_text.count() > 0, timeout=30, what="the app after the OAuth round trip")
        # the banner and the cards are separate panes: the card may still be rendering when the banner shows
        tab.wait(lambda: tab.text("metric-records") == "0", timeout=10, what="the records card")
        sent = idp.token_requests[-1]
        assert sent["client_id"] == CLIENT_ID and sent["client_secret"] == CLIENT_SECRET
        assert sent["redirect_uri"].startswith(board.url.rstrip("/"))
        assert CLIENT_SECRET not in board.log() and "access-456" not in board.log()
    finally:
        tab.close()


def test_a_refused_token_does_not_open_the_app(
    guarded: tuple[DashboardProcess, IdentityProvider], browser: Any
) -> None:
    board, idp = guarded
    idp.refuse_tokens = True
    tab = Page(browser, board.url, wait_for_chart=False)
    try:
        tab.page.wait_for_load_state()
        body = tab.page.locator("body").inner_text()
        assert "No data yet" not in body and tab.page.locator("[data-testid=metric-records]").count() == 0
        assert "Authentication Error" in body, body[:300]  # Panel's error page, not the app
    finally:
        idp.refuse_tokens = False
        tab.close()
