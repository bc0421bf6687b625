"""One notification to one target through Apprise, and what its outcome means for a retry.

Apprise reports success or failure per service plus the log lines of the attempt; the HTTP status
is only in those lines (`error=400.`). A 4xx other than 408/425/429 will not change by retrying
(bad token, unknown chat, malformed webhook): permanent. Anything else (5xx, 429, timeouts,
connection errors) is temporary. Reasons are built from the status code alone: Apprise's own log
lines may name hosts or tokens, so none of them is ever logged or stored. Apprise's logger (and
urllib3's, which logs request paths such as Telegram's /bot<token>/) are silenced for the same reason.

Apprise's plugins send with `requests.request` / `requests.post`, which open a new connection (and, to
an https target, a new TLS handshake) for every message. `keep_connections()` routes those calls, while
one of our Senders is sending, through a `requests.Session` of its own, so a target's messages reuse a
kept-alive connection (cookies are refused, as with the one-shot calls); any other caller is untouched.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import apprise
import requests
import requests.api

from cryptoviz.notify.targets import Target, TargetError

_STATUS = re.compile(r"error=(\d{3})\b")
_RETRYABLE_4XX = frozenset({408, 425, 429})
FORMATS = {
    apprise.NotifyFormat.TEXT: "text",
    apprise.NotifyFormat.MARKDOWN: "markdown",
    apprise.NotifyFormat.HTML: "html",
}


SECRET_BEARING_LOGGERS = (apprise.LOGGER_NAME, "urllib3", "requests")


def silence_apprise() -> None:
    """Apprise and urllib3 log URLs, paths and payloads: keep their records away from every handler
    (not even logging's last-resort one), whatever LOG_LEVEL says."""
    for name in SECRET_BEARING_LOGGERS:
        logger = logging.getLogger(name)
        logger.propagate = False
        logger.handlers[:] = [logging.NullHandler()]


_sending = threading.local()
"""The Session of the send running on this thread, if any."""
_one_shot_request = requests.api.request


def _request(method: str, url: str, **kwargs: Any) -> requests.Response:
    session: requests.Session | None = getattr(_sending, "session", None)
    if session is None:
        return _one_shot_request(method, url, **kwargs)
    return session.request(method=method, url=url, **kwargs)


def keep_connections() -> None:
    """Let Apprise's plugins reuse each Sender's connections (`requests.post` and `requests.get` call
    `requests.api.request`; some plugins call `requests.request`, the same function under another name)."""
    requests.api.request = _request  # type: ignore[assignment]
    requests.request = _request  # type: ignore[assignment]


def _session() -> requests.Session:
    session = requests.Session()
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # nothing kept between messages
    return session


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    permanent: bool = False
    reason: str | None = None
    status: int | None = None


def classify(ok: bool, timed_out: bool, log_lines: list[str]) -> Outcome:
    """Pure: an Apprise result (and its log lines) → delivered / temporary / permanent, with a safe reason."""
    if ok:
        return Outcome(True)
    codes = [int(m.group(1)) for line in log_lines for m in [_STATUS.search(line)] if m]
    if not codes:
        return Outcome(False, reason="timed out" if timed_out else "not accepted (connection error or service refusal)")
    code = codes[-1]
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "unknown status"
    permanent = 400 <= code < 500 and code not in _RETRYABLE_4XX
    return Outcome(False, permanent=permanent, reason=f"HTTP {code} {phrase}", status=code)


class Sender:
    """Apprise objects for one target, one per concurrent send (plugins keep per-instance state), each
    with its own Session (its kept-alive connection)."""

    def __init__(self, target: Target, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self._idle: list[tuple[apprise.Apprise, requests.Session]] = []
        self._lock = threading.Lock()
        first = self._make()
        self.format = FORMATS.get(first[0].resolve_format(None), "text")
        self._idle.append((first, _session()))

    def _make(self) -> apprise.Apprise:
        # Sent in the calling worker thread (we run sends in parallel ourselves): async_mode off, and
        # no service_timeout, with which Apprise hands every send to its own shared pool of
        # cpu_count + 4 threads and waits for it: a second thread hop per message, and at most that
        # many sends at once whatever NOTIFY_CONCURRENCY says. The plugin's socket timeouts
        # (NOTIFY_TIMEOUT) bound each send instead.
        instance = apprise.Apprise(asset=apprise.AppriseAsset(async_mode=False, service_timeout=0))
        if not instance.add(self.target.url):
            raise TargetError(f"target {self.target.name}: not a valid Apprise URL (scheme {self.target.scheme}://)")
        plugin = instance[0]
        plugin.socket_connect_timeout = plugin.socket_read_timeout = self.timeout
        return instance

    def send(self, title: str, body: str) -> Outcome:
        """Blocking (run it on a worker thread)."""
        with self._lock:
            idle = self._idle.pop() if self._idle else None
        instance, session = idle or (self._make(), _session())
        started = time.monotonic()
        _sending.session = session
        try:
            result = instance.notify(body=body, title=title, body_format=self.format)
        except Exception as exc:  # a plugin bug: a temporary failure, named by type only (no URL)
            return Outcome(False, reason=f"Apprise raised {type(exc).__name__}")
        finally:
            _sending.session = None
            with self._lock:
                self._idle.append((instance, session))
        lines = [entry.message for service in result.results for attempt in service for entry in attempt]
        # A socket timeout is logged by the plugin as a connection error (its detail only at DEBUG,
        # which is not captured): a failure that took the whole timeout is one.
        timed_out = not result and time.monotonic() - started >= self.timeout
        return classify(bool(result), timed_out, lines)
