"""HTTP for provider APIs: one session per run, timeouts, bounded retries, and secrets kept out of text.

Retried: timeouts, connection errors, 5xx, malformed JSON, and rate limits that say when to come back
(429 / Binance 418 with `Retry-After`, at most `max_retry_after` seconds). Not retried: anything a
provider maps to a permanent condition (invalid key, plan limit, exhausted credits), and other 4xx.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
import requests

log = logging.getLogger(__name__)

USER_AGENT = "cryptoviz-scraper/1"


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
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


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


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from `Retry-After` (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


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
                if not exc.retryable or attempt >= self.retries:
                    raise
                if exc.retry_after is not None and exc.retry_after > self.max_retry_after:
                    raise ProviderError(
                        self.provider,
                        f"{exc.message}; Retry-After {exc.retry_after:.0f}s exceeds "
                        f"SCRAPE_MAX_RETRY_AFTER={self.max_retry_after:g}s, giving up until the next run",
                        status=exc.status,
                    ) from None
                delay = self._delay(attempt, exc.retry_after)
                attempt += 1
                log.warning("%s; retry %d/%d in %.2fs", exc, attempt, self.retries, delay)
                time.sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return min(self.backoff * 2**attempt, 30.0) * random.uniform(0.5, 1.5)

    def _attempt(self, url: str, params: dict[str, Any] | None, check: Checker | None) -> Any:
        wait = max(self._last_request + self.min_interval, self._not_before) - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_request = time.monotonic()
        try:
            response = self.session.get(url, params=params, headers=self.headers, timeout=self.timeout)
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
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
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
