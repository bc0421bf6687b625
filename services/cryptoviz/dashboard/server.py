"""The dashboard's web server: Panel's `pn.serve`, plus what a public deployment needs from it.

- **Session limits** (`limits.SessionLimits`): the three routes that build a session (the page, Bokeh's
  `autoload.js`, and a websocket for a session the server does not hold) check the limits first and
  answer a readable 429/503 page (or close the websocket with 1013 "try again later") instead.
- **Security headers** (`headers`) on every response, and the websocket's **Origin allow-list**
  (`DASHBOARD_ALLOWED_ORIGINS`; by default only this server's own local addresses).
- **Quiet disconnects**: a tab that closes while a message to it is being written is ordinary, not an
  error. Panel writes its updates straight to the socket, so the write that finds it closed raises in a
  task nobody awaits ("Task exception was never retrieved … WebSocketClosedError", one per closed
  tab); Bokeh's keep-alive ping drops such a connection itself and its `on_close` then fails an
  assertion. Both are ended here; any other exception is still logged with its traceback.
- `autoload.js` without a login redirects to it like the page does (Panel's handler awaited a missing
  session: a traceback per request).

The handlers are Panel's own, subclassed, and put in Bokeh's per-application route table the way
Panel itself installs them (`bokeh.server.urls.per_app_patterns`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any, ClassVar

from bokeh.protocol.exceptions import ProtocolError
from bokeh.server import urls
from bokeh.util.token import get_session_id
from panel.io import document as panel_document
from panel.io.server import AutoloadJsHandler, DocHandler, WSHandler
from tornado.iostream import StreamClosedError
from tornado.web import authenticated
from tornado.websocket import WebSocketClosedError

from cryptoviz.dashboard.limits import Refusal, SessionLimits, refusal_page

log = logging.getLogger(__name__)

CLOSED_SOCKET = (WebSocketClosedError, StreamClosedError)
TRY_AGAIN_LATER = 1013
"""The websocket close code for "try again later" (RFC 6455 registry)."""


class _Limited:
    """The limit check the session-building handlers share (mixed into Panel's handlers)."""

    limits: ClassVar[SessionLimits]
    built: str | None = None

    def _client(self) -> str:
        return self.limits.client(self.request.remote_ip or "", self.request.headers.get("X-Forwarded-For"))

    def _check(self, client: str) -> Refusal | None:
        return self.limits.check(client, (session.id for session in self.application_context.sessions))

    async def _build(self, client: str, build: Callable[[], Any]) -> None:
        """Run `build` (the parent's handler) counted as a session under way for `client`."""
        self.limits.start(client)
        try:
            await build()
        finally:
            self.limits.done(client, self.built)

    async def _remember(self, session: Any) -> Any:
        self.built = session.id if session is not None else None
        return session

    def _refuse(self, refused: Refusal, client: str, body: str, content_type: str) -> None:
        log.info("session refused (HTTP %s) for %s: %s", refused.status, client, refused.title)
        self.set_status(refused.status)
        self.set_header("Retry-After", str(refused.retry_after))
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", content_type)
        self.finish(body)


class LimitedDocHandler(_Limited, DocHandler):
    """The page: refused with a readable page when the limits are reached."""

    @authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        client = self._client()
        refused = self._check(client)
        if refused is not None:
            self._refuse(refused, client, refusal_page(refused, self.request.uri or "./"), "text/html; charset=utf-8")
            return
        await self._build(client, lambda: super(LimitedDocHandler, self).get(*args, **kwargs))

    async def get_session(self) -> Any:
        return await self._remember(await super().get_session())


class LimitedAutoloadJsHandler(_Limited, AutoloadJsHandler):
    """Bokeh's embedding script (it builds a session too): login first, then the limits."""

    @authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        client = self._client()
        refused = self._check(client)
        if refused is not None:
            self._refuse(refused, client, f"// {refused.title}\n", "application/javascript")
            return
        await self._build(client, lambda: super(LimitedAutoloadJsHandler, self).get(*args, **kwargs))

    async def get_session(self) -> Any:
        return await self._remember(await super().get_session())


class LimitedWSHandler(_Limited, WSHandler):
    """A websocket for a session the server does not hold builds one: limited like the page."""

    async def _async_open(self, token: str) -> None:
        session_id = get_session_id(token)
        try:
            self.application_context.get_session(session_id)
        except ProtocolError:  # not held (never built here, or discarded): opening builds it
            client = self._client()
            refused = self._check(client)
            if refused is not None:
                log.info("websocket session refused for %s: %s", client, refused.title)
                self.close(TRY_AGAIN_LATER, refused.title)
                return
            self.built = session_id
            await self._build(client, lambda: super(LimitedWSHandler, self)._async_open(token))
            return
        await super()._async_open(token)

    def on_close(self) -> None:
        connection = self.connection
        if connection is not None and getattr(connection, "_session", None) is None:
            # Bokeh's keep-alive ping found the socket closed and already let the session go
            log.info("WebSocket connection closed: code=%s (already dropped)", self.close_code)
            return
        super().on_close()


def install_handlers(limits: SessionLimits) -> None:
    """Route the page, autoload.js and the websocket of every application to the limited handlers."""
    _Limited.limits = limits
    replace = {"/ws": LimitedWSHandler, "/autoload.js": LimitedAutoloadJsHandler, "/?": LimitedDocHandler}
    urls.per_app_patterns[:] = [(route, replace.get(route, handler)) for route, handler in urls.per_app_patterns]


def _ignore_closed_sockets(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: a write that found its tab's socket closed is dropped."""
    if isinstance(context.get("exception"), CLOSED_SOCKET):
        log.debug("dropped a message to a tab that had closed: %s", context.get("message"))
        return
    loop.default_exception_handler(context)


def quiet_disconnects(loop: asyncio.AbstractEventLoop) -> None:
    """See the module docstring: closed tabs are not errors."""
    loop.set_exception_handler(_ignore_closed_sockets)
    original = panel_document.dispatch_tornado
    if getattr(original, "stops_at_closed_socket", False):
        return

    @wraps(original)
    def dispatch(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except WebSocketClosedError:  # closed between two frames of one message: nothing more to send
            return []

    dispatch.stops_at_closed_socket = True  # type: ignore[attr-defined]
    panel_document.dispatch_tornado = dispatch
