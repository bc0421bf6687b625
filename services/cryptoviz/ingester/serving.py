"""The HTTP servers of the ingester (API and metrics): uvicorn with limits against abusive clients.

uvicorn bounds connections (`limit_concurrency`: beyond it new requests get 503), idle keep-alive
connections (`timeout_keep_alive`) and a request head that arrives in pieces (h11's
`max_incomplete_event_size`). It has no deadline for a request head, so a client that sends a
byte a second (or nothing at all after connecting) holds its connection forever, and a head that
arrives whole is not size-checked. `GuardedH11Protocol` adds both: each head must be complete
within `head_timeout` seconds of the connection opening or the previous response ending (else
408 and close) and at most `max_head_bytes` long (else 431 and close).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from cryptoviz.ingester import metrics

log = logging.getLogger("cryptoviz.ingester")


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_connections: int = 200
    """Open connections and running requests at most (uvicorn answers 503 beyond)."""
    head_timeout: float = 10.0
    """Seconds to receive a whole request head."""
    keepalive_timeout: float = 5.0
    """Seconds an idle keep-alive connection is kept."""
    max_head_bytes: int = 16 * 1024
    """Request line and headers at most (the longest legitimate URL is about 5 KB)."""


def _close_with(transport: asyncio.Transport, status: int, phrase: str, message: str) -> None:
    body = message.encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    if not transport.is_closing():
        transport.write(head + body)
        transport.close()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline and a size cap for each request head (see module doc)."""

    def __init__(self, config: ApiConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits = config.limits
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0

    def _await_head(self) -> None:
        self._stop_waiting()
        self._head_bytes = 0
        self._deadline = self.loop.call_later(self.limits.head_timeout, self._head_too_slow)

    def _stop_waiting(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_too_slow(self) -> None:
        self._deadline = None
        if self.cycle is None or self.cycle.response_complete:
            metrics.API_REFUSED.labels(reason="head_timeout").inc()
            log.debug("closing a connection whose request head did not arrive in %gs", self.limits.head_timeout)
            _close_with(self.transport, 408, "Request Timeout", "request head not received in time")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:  # still in a head: count what of it this chunk holds
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end + 4
            if self._head_bytes > self.limits.max_head_bytes:
                self._stop_waiting()
                metrics.API_REFUSED.labels(reason="head_too_large").inc()
                _close_with(self.transport, 431, "Request Header Fields Too Large", "request head too large")
                return
        super().data_received(data)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a new request's head arrived
            self._stop_waiting()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._await_head()  # before: a pipelined request handled inside stops the wait again
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)


class ApiConfig(uvicorn.Config):
    """uvicorn's Config with our limits and protocol; logging stays ours (no access log)."""

    def __init__(self, app: Any, host: str, port: int, limits: ServerLimits) -> None:
        super().__init__(
            app,
            host=host,
            port=port,
            http=GuardedH11Protocol,  # type: ignore[arg-type]
            limit_concurrency=limits.max_connections,
            timeout_keep_alive=limits.keepalive_timeout,  # type: ignore[arg-type]
            h11_max_incomplete_event_size=limits.max_head_bytes,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self.limits = limits


class Server(uvicorn.Server):
    """uvicorn without its own signal handling: the ingester shuts everything down in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve_until_stopped(self) -> None:
        """uvicorn calls sys.exit when it cannot bind; make that an ordinary, reportable error."""
        try:
            await self.serve()
        except SystemExit:
            raise RuntimeError("uvicorn could not start") from None
