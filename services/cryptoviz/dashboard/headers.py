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
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import socket
from functools import partial

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


def transforms(ancestors: str) -> list:
    """For `tornado.web.Application(transforms=…)` (Panel passes it through to Bokeh's application)."""
    return [partial(SecurityHeaders, ancestors=frame_ancestors(ancestors))]
