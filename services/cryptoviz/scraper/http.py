"""HTTP for provider APIs: one session per run, timeouts, bounded retries, and secrets kept out of text.

Retried: timeouts, connection errors, 5xx, malformed JSON, and rate limits (429 / Binance 418, and
what a provider reports as one in its body), waiting out `Retry-After` when it is at most
`max_retry_after` seconds. Not retried: anything a provider maps to a permanent condition (invalid
key, plan limit, exhausted credits), and other 4xx. Redirects are followed only within the same host
(an upgrade to https included): a provider key never travels to a host it was not configured for.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import orjson
import requests

log = logging.getLogger(__name__)

USER_AGENT = "cryptoviz-scraper/1"
MAX_REDIRECTS = 5
DEFAULT_PORTS = {"http": 80, "https": 443}


class ProviderError(Exception):
    """A provider call that failed; the message is for people and never contains a secret."""

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
        rate_limited: bool = False,
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.rate_limited = rate_limited or status in (418, 429)
        """The provider asked us to slow down (counted apart from other failures)."""


Checker = Callable[[requests.Response, Any], None]
"""Inspects a decoded non-5xx answer (also on HTTP 200) and raises ProviderError for provider-level errors."""


def decode_json(data: bytes) -> Any:
    """orjson for speed; the standard parser for what orjson refuses but providers send (NaN). None if neither."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(data)
    except ValueError:
        return None


def parse_retry_after(value: str | None, date: str | None = None, now: float | None = None) -> float | None:
    """Seconds from `Retry-After` (delta-seconds or an HTTP date); None if absent or unreadable.

    An HTTP date is measured from the answer's own `Date` when it has one (both come from the
    provider's clock, so a skewed local clock does not matter), else from `now` (epoch seconds).
    """
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        until = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    try:
        since = parsedate_to_datetime(date).timestamp() if date else None
    except (TypeError, ValueError):
        since = None
    if since is None:
        since = time.time() if now is None else now
    return max(until - since, 0.0)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme)


def same_host(source: str, target: str) -> bool:
    """Whether a redirect from `source` to `target` stays with the same host: same scheme, host and port,
    or the same host moving from http to https on the default ports (never https to http)."""
    before, after = _origin(source), _origin(target)
    if before[1] != after[1]:
        return False
    return before == after or (before[0], before[2], after[0], after[2]) == ("http", 80, "https", 443)


def host_of(url: str) -> str:
    """`host[:port]` of a URL, for messages (no path or query: those may carry tokens)."""
    parts = urlsplit(url)
    return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else "?"


@dataclass(slots=True)
class RateLimits:
    """Rate-limit answers of one provider in one run, shared by an HttpClient and its clones (threads)."""

    answers: int = 0
    """Rate-limit answers met (HTTP 429 / 418, a provider's own rate-limit error)."""
    waited: float = 0.0
    """Seconds waited for them before retrying."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, wait: float = 0.0) -> None:
        """One rate-limit answer, and the seconds waited for it (0: not waited out)."""
        with self._lock:
            self.answers += 1
            self.waited += wait


class HttpClient:
    """GETs JSON for one provider with retries; `secrets` are scrubbed from every error message."""

    def __init__(
        self,
        provider: str,
        session: requests.Session,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_retry_after: float = 60.0,
        min_interval: float = 0.0,
        headers: dict[str, str] | None = None,
        secrets: Iterable[str] = (),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider = provider
        self.session = session
        self.timeout = (connect_timeout, read_timeout)
        self.retries = retries
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self.min_interval = min_interval
        self.headers = headers or {}
        self.secrets = [s for s in secrets if s]
        self.last_headers: dict[str, str] = {}
        self.sleep = sleep
        """Every wait (backoff, Retry-After, pacing) goes through it: tests inject one that does not sleep."""
        self.clock = clock
        """Epoch seconds, for an HTTP-date `Retry-After` on an answer without `Date`."""
        self.rate_limits = RateLimits()
        self._last_request = 0.0
        self._not_before = 0.0

    def __repr__(self) -> str:
        return f"HttpClient({self.provider!r})"

    def clone(self) -> HttpClient:
        """The same settings and secrets on a new session (sessions are not shared between threads)."""
        twin = copy.copy(self)
        twin.session = requests.Session()
        twin.headers, twin.secrets, twin.last_headers = dict(self.headers), list(self.secrets), {}
        return twin

    def hold(self, seconds: float) -> None:
        """Send nothing for `seconds` (a provider's budget, such as Binance's request weight, is nearly spent)."""
        self._not_before = max(self._not_before, time.monotonic() + seconds)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def get_json(self, url: str, params: dict[str, Any] | None = None, check: Checker | None = None) -> Any:
        """GET and decode JSON; retry what is transient, raise ProviderError for the rest."""
        attempt = 0
        while True:
            try:
                return self._attempt(url, params, check)
            except ProviderError as exc:
                patient = exc.retry_after is None or exc.retry_after <= self.max_retry_after
                retry = exc.retryable and attempt < self.retries and patient
                delay = self._delay(attempt, exc.retry_after) if retry else 0.0
                if exc.rate_limited:
                    self.rate_limits.add(delay)
                if not retry:
                    if exc.retryable and attempt < self.retries:  # only the wait asked for is too long
                        raise ProviderError(
                            self.provider,
                            f"{exc.message}; Retry-After {exc.retry_after:.0f}s exceeds "
                            f"SCRAPE_MAX_RETRY_AFTER={self.max_retry_after:g}s, giving up until the next run",
                            status=exc.status,
                            rate_limited=exc.rate_limited,
                        ) from None
                    raise
                attempt += 1
                log.warning("%s; retry %d/%d in %.2fs", exc, attempt, self.retries, delay)
                self.sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return min(self.backoff * 2**attempt, 30.0) * random.uniform(0.5, 1.5)

    def _attempt(self, url: str, params: dict[str, Any] | None, check: Checker | None) -> Any:
        wait = max(self._last_request + self.min_interval, self._not_before) - time.monotonic()
        if wait > 0:
            self.sleep(wait)
        self._last_request = time.monotonic()
        try:
            response = self._follow(url, params)
        except requests.Timeout:
            raise ProviderError(self.provider, f"timed out after {self.timeout[1]:g}s", retryable=True) from None
        except requests.ConnectionError as exc:
            reason = self.redact(str(exc.args[0] if exc.args else exc))[:200]
            raise ProviderError(self.provider, f"connection failed: {reason}", retryable=True) from None
        except requests.RequestException as exc:
            raise ProviderError(self.provider, f"request failed: {self.redact(str(exc))[:200]}") from None
        self.last_headers = dict(response.headers)
        body = decode_json(response.content)
        status = response.status_code
        if check is not None and body is not None and status < 500:
            check(response, body)
        retry_after = self.retry_after(response)
        if status in (429, 418):
            what = "IP banned (HTTP 418)" if status == 418 else "rate limited (HTTP 429)"
            raise ProviderError(self.provider, what, retryable=True, retry_after=retry_after, status=status)
        if status >= 500:
            raise ProviderError(self.provider, f"server error HTTP {status}", retryable=True, retry_after=retry_after)
        if status >= 400:
            detail = self.redact(response.text[:200]).strip()
            raise ProviderError(self.provider, f"HTTP {status}: {detail}", status=status)
        if body is None:
            if response.content.lstrip()[:1] == b"<":
                what = f"an HTML page instead of JSON (HTTP {status}: an error page?)"
                raise ProviderError(self.provider, what, retryable=True, status=status)
            raise ProviderError(self.provider, "malformed JSON in response (truncated?)", retryable=True)
        return body

    def retry_after(self, response: requests.Response) -> float | None:
        """The answer's `Retry-After` in seconds (see `parse_retry_after`); None without one."""
        return parse_retry_after(response.headers.get("Retry-After"), response.headers.get("Date"), self.clock())

    def _follow(self, url: str, params: dict[str, Any] | None) -> requests.Response:
        """GET, following redirects only within the same host: the key headers go nowhere else."""
        response = self.session.get(
            url, params=params, headers=self.headers, timeout=self.timeout, allow_redirects=False
        )
        for _ in range(MAX_REDIRECTS):
            if not response.is_redirect:
                return response
            target = urljoin(response.url, response.headers["Location"])
            response.close()
            if not same_host(response.url, target):
                raise ProviderError(
                    self.provider,
                    f"refused a redirect (HTTP {response.status_code}) from {host_of(response.url)} to "
                    f"{self.redact(host_of(target))}: not the same host (or a downgrade to http), so neither its "
                    "key nor any request goes there; if the API moved, set its base URL to the new address",
                    status=response.status_code,
                )
            response = self.session.get(target, headers=self.headers, timeout=self.timeout, allow_redirects=False)
        if response.is_redirect:
            raise ProviderError(self.provider, f"more than {MAX_REDIRECTS} redirects", status=response.status_code)
        return response
