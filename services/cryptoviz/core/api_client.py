"""The one client of the ingester's HTTP API, blocking (`IngesterClient`, requests) and asyncio
(`AsyncIngesterClient`, aiohttp), over one description of each call.

A call is built by a pure function (`Calls`: path, parameters, answer model, and how lists too long
for one request are split), sent by either transport, and its answer decoded by one function into
the models of `api_contract`. Refusals keep the server's message: `IngesterRejected` for a 4xx (the
question was wrong), `IngesterUnavailable` for no answer, a 5xx or an unusable body; both are
`IngesterError`s.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Generic, TypeVar

import orjson
import pydantic
import requests

from cryptoviz.core.api_contract import (
    MAX_SYMBOLS,
    AlertsAnswer,
    CoinsAnswer,
    CommitEvent,
    CoverageResponse,
    HistoryAnswer,
    LatestAnswer,
    Readiness,
    Stats,
)

if TYPE_CHECKING:
    import pyarrow as pa

M = TypeVar("M", bound=pydantic.BaseModel)
BACKUP_PATH = "/api/v1/admin/backup"
EVENTS_PATH = "/api/v1/events"


class IngesterError(RuntimeError):
    """The ingester could not be asked, or refused; `status` is its HTTP status when it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class IngesterUnavailable(IngesterError):
    """No answer, a server error, or an answer that is not what the API promises."""


class IngesterRejected(IngesterError):
    """A 4xx: the question was wrong (a symbol it does not know, a bad token); the message says why."""


@dataclass(frozen=True, slots=True)
class Call(Generic[M]):
    path: str
    model: type[M]
    params: dict[str, str] = field(default_factory=dict)


def _when(value: datetime | None) -> str | None:
    if value is None:
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _params(**values: Any) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v is not None and v != ""}


def symbol_chunks(symbols: Iterable[str] | None) -> list[list[str] | None]:
    """Distinct symbols in chunks the API accepts (at most MAX_SYMBOLS each); [None] means all."""
    if symbols is None:
        return [None]
    wanted = sorted(set(symbols))
    return [wanted[i : i + MAX_SYMBOLS] for i in range(0, len(wanted), MAX_SYMBOLS)] or [[]]


class Calls:
    """How each endpoint is asked: one Call, or one per chunk of symbols."""

    @staticmethod
    def coins() -> Call[CoinsAnswer]:
        return Call("/api/v1/coins", CoinsAnswer)

    @staticmethod
    def latest(symbols: Iterable[str] | None = None, provider: str | None = None) -> list[Call[LatestAnswer]]:
        return [
            Call("/api/v1/latest", LatestAnswer, _params(symbols=_joined(chunk), provider=provider))
            for chunk in symbol_chunks(symbols)
        ]

    @staticmethod
    def history(
        symbols: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        points: int | None = None,
        provider: str | None = None,
    ) -> Call[HistoryAnswer]:
        query = _params(symbols=_joined(symbols), start=_when(start), end=_when(end), points=points, provider=provider)
        return Call("/api/v1/history", HistoryAnswer, query)

    @staticmethod
    def coverage(
        symbols: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        min_gap: int | None = None,
        provider: str | None = None,
    ) -> list[Call[CoverageResponse]]:
        return [
            Call(
                "/api/v1/coverage",
                CoverageResponse,
                _params(
                    symbols=_joined(chunk), since=_when(since), until=_when(until), min_gap=min_gap, provider=provider
                ),
            )
            for chunk in symbol_chunks(symbols)
        ]

    @staticmethod
    def stats() -> Call[Stats]:
        return Call("/api/v1/stats", Stats)

    @staticmethod
    def alerts(since: datetime | None = None, limit: int | None = None) -> Call[AlertsAnswer]:
        return Call("/api/v1/alerts", AlertsAnswer, _params(since=_when(since), limit=limit))

    @staticmethod
    def readiness() -> Call[Readiness]:
        return Call("/readyz", Readiness)


def _joined(symbols: Iterable[str] | None) -> str | None:
    return None if symbols is None else ",".join(symbols)


def _refusal(path: str, status: int, body: bytes) -> IngesterError:
    try:
        message = str(orjson.loads(body)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = body[:200].decode(errors="replace")
    kind = IngesterRejected if 400 <= status < 500 else IngesterUnavailable
    return kind(f"{path} answered HTTP {status}: {message}", status)


def decode(call: Call[M], status: int, body: bytes, *, accept: tuple[int, ...] = (200,)) -> M:
    """The answer as its model, or the refusal as an IngesterError."""
    if status not in accept:
        raise _refusal(call.path, status, body)
    try:
        return call.model.model_validate_json(body)
    except pydantic.ValidationError as exc:
        raise IngesterUnavailable(f"{call.path} answered something unusable: {exc.errors()[0]['msg']}") from None


def rows_of(call: Call[M], status: int, body: bytes) -> list[dict[str, Any]]:
    """The `data` rows of a list answer as plain dicts (parsed by orjson, no model per row)."""
    if status != 200:
        raise _refusal(call.path, status, body)
    try:
        rows = orjson.loads(body)["data"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        rows = None
    if not isinstance(rows, list):
        raise IngesterUnavailable(f"{call.path} answered without a data list")
    return rows


def merged_latest(answers: list[LatestAnswer]) -> LatestAnswer:
    """One answer of a call split by symbols: the rows of all chunks."""
    return LatestAnswer(data=[row for answer in answers for row in answer.data])


def merged_coverage(answers: list[CoverageResponse]) -> CoverageResponse:
    """The rows, unknown symbols and truncation of all chunks; the window of the first."""
    return answers[0].model_copy(
        update={
            "data": [row for answer in answers for row in answer.data],
            "unknown_symbols": sorted({s for answer in answers for s in answer.unknown_symbols}),
            "series_truncated": any(answer.series_truncated for answer in answers),
        }
    )


class EventParser:
    """Server-Sent Events, line by line: each `event: commit` with its data becomes a CommitEvent."""

    def __init__(self) -> None:
        self._event = ""

    def feed(self, line: str) -> CommitEvent | None:
        if line.startswith("event:"):
            self._event = line[6:].strip()
        elif line.startswith("data:") and self._event == "commit":
            self._event = ""
            try:
                return CommitEvent.model_validate_json(line[5:].strip())
            except pydantic.ValidationError:
                return None
        elif not line:
            self._event = ""
        return None


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.strip()}"}


def _commits(response: requests.Response, base_url: str) -> Iterator[CommitEvent]:
    parser = EventParser()
    try:
        for line in response.iter_lines(decode_unicode=True):
            if (event := parser.feed(line)) is not None:
                yield event
    except requests.RequestException as exc:  # the stream broke or went silent past the read timeout
        raise IngesterUnavailable(f"event stream from {base_url} ended: {type(exc).__name__}") from None


class IngesterClient:
    """Blocking client; one requests session per thread; counts requests per path (for benchmarks)."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.requests: Counter[str] = Counter()
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _raw(self, path: str, params: dict[str, str], headers: dict[str, str] | None = None) -> requests.Response:
        self.requests[path] += 1
        try:
            return self._session().get(self.base_url + path, params=params, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise IngesterUnavailable(f"{self.base_url} unreachable: {type(exc).__name__}") from None

    def get(self, call: Call[M], accept: tuple[int, ...] = (200,)) -> M:
        response = self._raw(call.path, call.params, {"Accept": "application/json"})
        return decode(call, response.status_code, response.content, accept=accept)

    def coins(self) -> CoinsAnswer:
        return self.get(Calls.coins())

    def latest(self, symbols: Iterable[str] | None = None, provider: str | None = None) -> LatestAnswer:
        return merged_latest([self.get(call) for call in Calls.latest(symbols, provider)])

    def history(self, *args: Any, **kwargs: Any) -> HistoryAnswer:
        """See `Calls.history` for the parameters."""
        return self.get(Calls.history(*args, **kwargs))

    def history_rows(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """The buckets as plain JSON rows, for frames: a model per row costs about ten times the parse
        (the API's tests hold every row to `HistoryBucket`); no pyarrow needed, unlike `history_table`."""
        call = Calls.history(*args, **kwargs)
        response = self._raw(call.path, call.params, {"Accept": "application/json"})
        return rows_of(call, response.status_code, response.content)

    def history_table(self, *args: Any, **kwargs: Any) -> pa.Table:
        """The same buckets as an Arrow table (no JSON, no row objects: for frames and charts)."""
        import pyarrow as pa

        call = Calls.history(*args, **kwargs)
        response = self._raw(call.path, {**call.params, "format": "arrow"})
        if response.status_code != 200:
            raise _refusal(call.path, response.status_code, response.content)
        return pa.ipc.open_stream(response.content).read_all()

    def coverage(self, *args: Any, **kwargs: Any) -> CoverageResponse:
        return merged_coverage([self.get(call) for call in Calls.coverage(*args, **kwargs)])

    def stats(self) -> Stats:
        return self.get(Calls.stats())

    def alerts(self, since: datetime | None = None, limit: int | None = None) -> AlertsAnswer:
        return self.get(Calls.alerts(since, limit))

    def readiness(self) -> Readiness:
        return self.get(Calls.readiness(), accept=(200, 503))

    @contextlib.contextmanager
    def events(self, read_timeout: float = 30.0) -> Iterator[Iterator[CommitEvent]]:
        """The commit events as they come (the ingester sends a keep-alive every 15 s)."""
        self.requests[EVENTS_PATH] += 1
        try:
            response = self._session().get(
                self.base_url + EVENTS_PATH,
                stream=True,
                timeout=(self.timeout, read_timeout),
                headers={"Accept": "text/event-stream"},
            )
        except requests.RequestException as exc:
            raise IngesterUnavailable(f"{self.base_url} unreachable: {type(exc).__name__}") from None
        with contextlib.closing(response):
            if response.status_code != 200:
                raise _refusal(EVENTS_PATH, response.status_code, response.content)
            yield _commits(response, self.base_url)

    def backup(self, out: IO[bytes], token: str, timeout: float = 600.0) -> int:
        """Stream a backup tar into `out`; the bytes written."""
        self.requests[BACKUP_PATH] += 1
        written = 0
        try:
            with requests.post(self.base_url + BACKUP_PATH, headers=_bearer(token), stream=True, timeout=timeout) as r:
                if r.status_code != 200:
                    raise _refusal(BACKUP_PATH, r.status_code, r.content)
                for chunk in r.iter_content(1 << 20):
                    out.write(chunk)
                    written += len(chunk)
        except requests.RequestException as exc:
            raise IngesterUnavailable(f"backup from {self.base_url} failed: {exc or type(exc).__name__}") from None
        return written


class AsyncIngesterClient:
    """asyncio client (the operator's, inside kopf's loop): the same calls and answers.

    aiohttp is imported here, not with the module: the ingester's and the dashboard's images, whose
    processes use the blocking client, do not carry it."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        import aiohttp

        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.requests: Counter[str] = Counter()

    async def get(self, call: Call[M], accept: tuple[int, ...] = (200,)) -> M:
        self.requests[call.path] += 1
        import aiohttp

        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout) as session,
                session.get(
                    self.base_url + call.path, params=call.params, headers={"Accept": "application/json"}
                ) as response,
            ):
                status, body = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise IngesterUnavailable(f"{self.base_url} unreachable: {exc or type(exc).__name__}") from None
        return decode(call, status, body, accept=accept)

    async def coins(self) -> CoinsAnswer:
        return await self.get(Calls.coins())

    async def latest(self, symbols: Iterable[str] | None = None, provider: str | None = None) -> LatestAnswer:
        return merged_latest([await self.get(call) for call in Calls.latest(symbols, provider)])

    async def history(self, *args: Any, **kwargs: Any) -> HistoryAnswer:
        return await self.get(Calls.history(*args, **kwargs))

    async def coverage(self, *args: Any, **kwargs: Any) -> CoverageResponse:
        return merged_coverage([await self.get(call) for call in Calls.coverage(*args, **kwargs)])

    async def stats(self) -> Stats:
        return await self.get(Calls.stats())

    async def alerts(self, since: datetime | None = None, limit: int | None = None) -> AlertsAnswer:
        return await self.get(Calls.alerts(since, limit))

    async def readiness(self) -> Readiness:
        return await self.get(Calls.readiness(), accept=(200, 503))

    async def events(self) -> AsyncIterator[CommitEvent]:
        """The commit events as they come, until the stream ends."""
        self.requests[EVENTS_PATH] += 1
        parser = EventParser()
        import aiohttp

        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_connect=self.timeout.total)) as session,
                session.get(self.base_url + EVENTS_PATH, headers={"Accept": "text/event-stream"}) as response,
            ):
                if response.status != 200:
                    raise _refusal(EVENTS_PATH, response.status, await response.read())
                async for raw in response.content:
                    event = parser.feed(raw.decode(errors="replace").rstrip("\r\n"))
                    if event is not None:
                        yield event
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise IngesterUnavailable(f"{self.base_url} unreachable: {exc or type(exc).__name__}") from None
