"""Security headers on every response the dashboard's server sends (pages, scripts, styles, login, errors).

A Tornado output transform, so Panel's and Bokeh's own handlers need no change: each response gets
`X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin` and a Content-Security-Policy.

The policy allows only this server's own scripts, plus the page's inline scripts by their SHA-256
hashes, computed from the very page being sent (Bokeh writes a per-session token into one of them, so
no fixed list could do). Measured in Chromium, a dashboard page needs exactly this:

- its inline `<script>` blocks and the template's two `onclick` attributes (hashes; `'unsafe-hashes'`
  lets a hash match an event-handler attribute and nothing else);
- `'unsafe-eval'`: Panel compiles the HTML templates of its ReactiveHTML components (the page template's
  own actions, FlexBox) and Bokeh its CustomJS callbacks with `new Function` in the browser. The code
  compiled is the server's own, never data; injected markup still cannot run a script;
- `blob:` scripts and a per-page nonce: es-module-shims, which Panel loads on every page, probes the
  browser's module support with blob: scripts and with an inline script in a `srcdoc` frame (which
  inherits this policy; its text depends on the browser, so no hash fits): the nonce is given to it in
  its `esms-options`, and it puts it on that script;
- `style-src 'unsafe-inline'`: Bokeh and Panel style every component with `<style>` elements in its
  shadow root and with `style` attributes, created at run time (no hash can be known in advance).
  Styles cannot run code; scripts stay hash-only;
- `connect-src 'self'` (the websocket), `img-src`/`font-src` `'self' data:` (toolbar icons).

`frame-ancestors` (default `'none'`: no site may frame the dashboard) is a setting,
`DASHBOARD_FRAME_ANCESTORS`. The websocket's Origin allow-list (`DASHBOARD_ALLOWED_ORIGINS`) defaults to
`local_origins`: a page served from another site cannot open a session.

The same transform chain then compresses responses (`Gzip`), after the policy has hashed the page.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import secrets
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import ClassVar

from tornado import httputil, web

INLINE_SCRIPT = re.compile(rb"<script\b(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)
HANDLER_ATTRIBUTE = re.compile(rb"""\son[a-z]+=(?:"([^"]*)"|'([^']*)')""", re.I)
ESMS_OPTIONS = re.compile(rb'<script type="esms-options">(.*?)</script>', re.S)
SOURCE_LIST = re.compile(r"^[\w'*:/.\-\s]+$")
"""What a CSP source list may hold here (hosts, schemes, 'self', 'none'): never `;` or a newline."""

FIXED_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


def local_origins(port: int, address: str) -> list[str]:
    """The websocket's default Origin allow-list (Bokeh's `host:port` form): this server's own local
    names, the address it listens on if that is one host, and the machine's name if it listens on all."""
    hosts = ["localhost", "127.0.0.1"]
    if address in ("", "0.0.0.0", "::"):
        hosts.append(socket.gethostname())
    elif ":" not in address:  # Bokeh's allow-list has no IPv6 form
        hosts.append(address)
    return [f"{host}:{port}" for host in dict.fromkeys(hosts)]


def frame_ancestors(value: str) -> str:
    """The `frame-ancestors` source list, checked (it goes into a header as is)."""
    value = " ".join(value.split())
    if not value or not SOURCE_LIST.match(value):
        raise ValueError(f"not a CSP source list: {value!r} (e.g. 'none', 'self' or https://wiki.example.com)")
    return value


def _sha256(text: bytes) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text).digest()).decode() + "'"


def inline_hashes(page: bytes) -> list[str]:
    """The hashes of a page's inline scripts and event-handler attributes, in page order, each once."""
    found = [m.group(1) for m in INLINE_SCRIPT.finditer(page)]
    found += [m.group(1) if m.group(1) is not None else m.group(2) for m in HANDLER_ATTRIBUTE.finditer(page)]
    return list(dict.fromkeys(_sha256(text) for text in found))


def with_shim_nonce(page: bytes, nonce: str) -> bytes:
    """The page with `nonce` in es-module-shims' options (unchanged if it has none)."""

    def add(match: re.Match[bytes]) -> bytes:
        options = {**json.loads(match.group(1) or b"{}"), "nonce": nonce}
        return b'<script type="esms-options">' + json.dumps(options).encode() + b"</script>"

    return ESMS_OPTIONS.sub(add, page, count=1)


def content_security_policy(page: bytes | None, ancestors: str, nonce: str | None = None) -> str:
    """The policy for one response; `page` is the HTML body (None for anything else)."""
    on_page = ["'unsafe-eval'", "blob:", "'unsafe-hashes'", *inline_hashes(page)] if page else []
    scripts = " ".join(["'self'", *on_page, *([f"'nonce-{nonce}'"] if nonce else [])])
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src {scripts}",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            f"frame-ancestors {ancestors}",
        ]
    )


class SecurityHeaders(web.OutputTransform):
    """Adds the headers to the first chunk of every response (Panel writes each page in one chunk)."""

    def __init__(self, request: httputil.HTTPServerRequest, ancestors: str = "'none'") -> None:
        super().__init__(request)
        self.ancestors = ancestors

    def transform_first_chunk(
        self, status_code: int, headers: httputil.HTTPHeaders, chunk: bytes, finishing: bool
    ) -> tuple[int, httputil.HTTPHeaders, bytes]:
        for name, value in FIXED_HEADERS.items():
            headers[name] = value
        if not headers.get("Content-Type", "").startswith("text/html"):
            headers["Content-Security-Policy"] = content_security_policy(None, self.ancestors)
            return status_code, headers, chunk
        nonce = secrets.token_urlsafe(18)
        page = with_shim_nonce(chunk, nonce)
        if page != chunk and "Content-Length" in headers:  # set by Tornado before the transforms run
            headers["Content-Length"] = str(len(page))
        headers["Content-Security-Policy"] = content_security_policy(
            page, self.ancestors, nonce if page != chunk else None
        )
        return status_code, headers, page


class Gzip(web.GZipContentEncoding):
    """Gzip for clients that accept it: a first visit's ≈4.2 MB of Bokeh, Panel, FAST and Tabulator scripts
    arrive as ≈1.1 MB (at 20 Mbit/s, ≈1.2 s sooner). The page is compressed as it is sent. The bundles are
    the installed packages' own files, which never change while the process runs: compressing all of them
    on the one event loop costs ≈0.12 s of CPU, for every first visit, which delayed everything else on
    the busy 2-core machine. So each bundle goes out as is the first time it is asked for, a worker thread
    compresses it meanwhile (zlib lets go of the GIL), and later visits get the stored bytes. Returning
    visitors keep the versioned bundles in their browser cache and fetch none."""

    STATIC: ClassVar[dict[str, bytes]] = {}
    """Compressed static files by path (a version in the query string names the same file), up to
    `STATIC_LIMIT` bytes in all: the files pages need, not every file a client can ask for."""
    STATIC_LIMIT = 8 << 20
    _worker: ClassVar[ThreadPoolExecutor | None] = None
    _pending: ClassVar[set[str]] = set()
    """Paths being compressed (another request for one meanwhile is not kept a second time)."""

    def __init__(self, request: httputil.HTTPServerRequest) -> None:
        super().__init__(request)
        static = request.method == "GET" and "/static/" in request.path
        self._key = request.path if static else None
        self._stored = False
        self._parts: list[bytes] | None = None

    def transform_first_chunk(
        self, status_code: int, headers: httputil.HTTPHeaders, chunk: bytes, finishing: bool
    ) -> tuple[int, httputil.HTTPHeaders, bytes]:
        if self._key is not None and self._gzipping and status_code == 200 and "Content-Range" not in headers:
            body = self.STATIC.get(self._key)
            if body is not None:
                headers["Vary"] = "Accept-Encoding"
                headers["Content-Encoding"] = "gzip"
                headers["Content-Length"] = str(len(body))
                self._stored = True
                return status_code, headers, body
            self._gzipping = False  # sent as is; compressed for the next visits
            if self._key not in self._pending:
                self._parts = []
                self._keep(chunk, finishing)
        return super().transform_first_chunk(status_code, headers, chunk, finishing)

    def transform_chunk(self, chunk: bytes, finishing: bool) -> bytes:
        if self._stored:
            return b""  # the stored bytes went out with the first chunk
        self._keep(chunk, finishing)
        return super().transform_chunk(chunk, finishing)

    def _keep(self, chunk: bytes, finishing: bool) -> None:
        if self._parts is None:
            return
        self._parts.append(chunk)
        if finishing:
            if Gzip._worker is None:
                Gzip._worker = ThreadPoolExecutor(1, thread_name_prefix="gzip-static")
            key = self._key or ""
            self._pending.add(key)
            Gzip._worker.submit(self._store, key, b"".join(self._parts))
            self._parts = None

    @classmethod
    def _store(cls, key: str, content: bytes) -> None:
        try:
            body = gzip.compress(content, cls.GZIP_LEVEL, mtime=0)
            if sum(map(len, cls.STATIC.values())) + len(body) <= cls.STATIC_LIMIT:
                cls.STATIC[key] = body  # the worker is the only writer
        finally:
            cls._pending.discard(key)


def transforms(ancestors: str) -> list[Callable[[httputil.HTTPServerRequest], web.OutputTransform]]:
    """For `tornado.web.Application(transforms=…)` (Panel passes it through to Bokeh's application).

    Then `Gzip` (Tornado's own `compress_response` is ignored once transforms are given), in this order,
    so the policy hashes the page's scripts before they are compressed."""
    return [partial(SecurityHeaders, ancestors=frame_ancestors(ancestors)), Gzip]
