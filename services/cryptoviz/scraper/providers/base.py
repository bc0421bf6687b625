"""What every provider unit builds on: the adapter base class, its metadata, and history paging types.

An adapter turns one provider's documented wire format into validated `Quote`s (`fetch`) and, when
the provider publishes history, into validated `Candle`s one page at a time (`history_page`); the
paging loop, the choice of interval and the bookkeeping of bad input live in `scraper.history`.
Coins are identified by the provider's own id; a tracked coin without a pinned id is looked up by
symbol, and a symbol that matches several ids is reported (naming the candidates) instead of guessing.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypeVar

import requests

from cryptoviz.core.candle import Candle, CandleMaker
from cryptoviz.core.config import TrackedCoin
from cryptoviz.core.quote import InvalidQuote, Quote, make_quote
from cryptoviz.scraper.http import HttpClient, ProviderError

if TYPE_CHECKING:
    from cryptoviz.scraper.providers.wire import Wire

log = logging.getLogger("cryptoviz.scraper.providers")

T = TypeVar("T")
RECORD_ERRORS = (TypeError, AttributeError, KeyError, IndexError, ValueError, ArithmeticError)
"""What a record of an unforeseen shape raises while being read: counted as `malformed_record`."""


class HistoryUnavailable(ProviderError):
    """The provider, or this key's plan, serves no history: said once, and its coins are left to other providers."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A provider key: where it comes from and which header carries it (never logged)."""

    env: str
    header: str
    help: str
    file_env: str | None = None
    """A file holding the key (a mounted Secret), read when `env` is empty."""
    required: bool = False


@dataclass(frozen=True, slots=True)
class Offer:
    """Candles of `interval` seconds reaching back `reach` from the provider's now (None: as far as asked)."""

    interval: int
    reach: timedelta | None = None


@dataclass(frozen=True, slots=True)
class HistorySpec:
    """A provider's history endpoint and the limits the backfill keeps to (also shown in docs/scraper.md)."""

    endpoint: str
    per_call: int
    """Most candles one call returns."""
    min_interval: float
    """Least seconds between two history calls (the documented rate limit, with room to spare)."""
    offers: tuple[Offer, ...]
    """Intervals served, finest first; each part of a range is fetched at the finest one reaching it."""
    notes: str = ""


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """Everything about a provider that is not code: read by the CLI, the probe, run.py and the docs."""

    name: str
    display_name: str
    adapter: type[Provider]
    base_url: str | None
    """Default base URL; None for the local providers, which read MARKET_BASE_URL."""
    base_url_env: str
    ping_path: str
    """A cheap GET that shows whether the provider can be used (`cryptoviz dev` asks it before starting)."""
    key: ApiKey | None = None
    min_interval: float = 0.0
    """Least seconds between two quote calls."""
    history: HistorySpec | None = None
    wire: type[Wire] | None = None
    """The fake of this provider's wire format that the local market server speaks (None: it has none)."""
    ids_key: str | None = None
    """Which `coins[].ids` key the provider reads (default its name; demo/replay read CoinGecko's)."""
    quote_endpoints: str = ""
    """The live-quote endpoints, for the docs."""
    candles_with_quotes: bool = False
    """Each scrape also publishes the newest complete candle of every coin (the local market: replayed OHLC)."""

    @property
    def config_ids(self) -> str:
        return self.ids_key or self.name

    @property
    def local(self) -> bool:
        return self.base_url is None


@dataclass(slots=True)
class Fetched:
    """What one provider gave in one scrape."""

    quotes: list[Quote] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    missing: list[str] = field(default_factory=list)
    """Tracked coins the provider did not return this time (not listed, or a gap in its data)."""
    errors: list[str] = field(default_factory=list)
    """Configuration problems found while scraping, e.g. an ambiguous symbol."""
    identities: set[tuple[str, str, datetime]] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Target:
    """A coin whose history is wanted: the provider's id for it, and the names its candles carry."""

    coin_id: str
    symbol: str
    name: str


@dataclass(slots=True)
class Page:
    """One history call's answer: candles (validated, not yet checked for order) and where to go on."""

    candles: list[Candle] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    next: datetime | None = None
    """Open time to ask from next; None when the provider has nothing more for this range."""


class Provider:
    """Base adapter. `name` picks the wire format and config ids; `label` is the quotes' provider field."""

    name = ""
    history_offers: tuple[Offer, ...] = ()

    def __init__(self, http: HttpClient, base_url: str, label: str | None = None) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.label = label or self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def clone(self) -> Provider:
        """The same adapter on a connection of its own, for fetching from another thread."""
        return type(self)(self.http.clone(), self.base_url, self.label)

    def fetch(self, coins: list[TrackedCoin], top_n: int) -> Fetched:
        """Tracked `coins`, or the provider's top `top_n` by rank when none are tracked."""
        raise NotImplementedError

    def history_page(self, target: Target, interval: int, start: datetime, end: datetime) -> Page:
        """One call of the provider's history: candles of `interval` opening in [start, end), from `start` on."""
        raise HistoryUnavailable(self.label, "publishes no history")

    def clock(self) -> datetime:
        """The provider's time: its last HTTP `Date` (the local market's feed time), else this machine's."""
        date = self.http.last_headers.get("Date")
        try:
            return parsedate_to_datetime(date).astimezone(UTC) if date else datetime.now(UTC)
        except (TypeError, ValueError):
            return datetime.now(UTC)

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.http.get_json(self.base_url + path, params, self.check)

    def check(self, response: requests.Response, body: Any) -> None:
        """Raise ProviderError for errors the provider reports inside a (possibly HTTP 200) body."""

    def _keep(self, out: Fetched, items: Iterable[Any], build: Callable[[Any], dict[str, Any]]) -> None:
        received = datetime.now(UTC)
        for item in items:
            try:
                quote = make_quote(provider=self.label, received_at=received, **build(item))
            except InvalidQuote as exc:
                out.rejected[exc.reason] += 1
                log.debug("%s: rejected %s", self.label, exc)
            except RECORD_ERRORS:
                out.rejected["malformed_record"] += 1
            else:  # a coin listed twice (pages that shifted while paging, overlapping lookups) is one fact
                if quote.identity in out.identities:
                    out.rejected["duplicate_in_answer"] += 1
                    continue
                out.identities.add(quote.identity)
                out.quotes.append(quote)

    def _candles(
        self,
        page: Page,
        target: Target,
        interval: int,
        rows: Iterable[Any],
        build: Callable[[Any], dict[str, Any]],
        columns: Callable[[CandleMaker, Any], list[Candle] | None] | None = None,
    ) -> Page:
        """Validate each row into a candle of `target` (`build` gives open_time, open, high, low, close, volume).

        `columns`, when given, may build the whole page at once (`CandleMaker.columns`); if it answers
        None, each row is validated alone.
        """
        received = datetime.now(UTC)
        make = CandleMaker(
            provider=self.label, coin_id=target.coin_id, symbol=target.symbol, name=target.name, interval=interval,
            received_at=received, now=received,
        )  # fmt: skip
        whole = columns(make, rows) if columns is not None else None
        if whole is not None:
            page.candles += whole
            return page
        append = page.candles.append
        for row in rows:
            try:
                append(make(**build(row)))
            except InvalidQuote as exc:
                page.rejected[exc.reason] += 1
                log.debug("%s: rejected candle %s", self.label, exc)
            except RECORD_ERRORS:
                page.rejected["malformed_record"] += 1
        return page

    def _expect(self, body: Any, kind: type) -> Any:
        if not isinstance(body, kind):
            raise ProviderError(self.label, f"unexpected answer: expected a JSON {kind.__name__}")
        return body

    def unknown_pair(self, error: ProviderError) -> bool:
        """Whether `error` is the exchange refusing a request because one of its pairs is unknown."""
        return False

    def _by_pairs(self, pairs: list[str], fetch: Callable[[list[str]], T]) -> tuple[list[T], list[str]]:
        """All `pairs` in one call; only if the exchange refuses that for an unknown pair, each pair alone.

        Exchanges reject the whole request for one unknown pair, which would lose every good pair too.
        Returns the answers and the pairs the exchange does not know.
        """
        try:
            return [fetch(pairs)], []
        except ProviderError as exc:
            if not self.unknown_pair(exc):
                raise
            if len(pairs) == 1:
                return [], pairs
        log.warning("%s: an unknown pair among %d; asking for each pair alone", self.label, len(pairs))
        answers, unknown = [], []
        for pair in pairs:
            try:
                answers.append(fetch([pair]))
            except ProviderError as exc:
                if not self.unknown_pair(exc):
                    raise
                unknown.append(pair)
        return answers, unknown


def unknown_pair_message(provider: str, pair: str, symbol: str) -> str:
    return (
        f"{provider} does not know the pair {pair} (for {symbol}); set coins[].ids.{provider} to its pair "
        f"in the scraper config, or leave {provider} out of the coin's providers"
    )


def epoch_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


class CoinIndex(Provider):
    """A market-data index (CoinMarketCap, CoinGecko): coins found by pinned id or by symbol."""

    def _record(self, item: Any, coin: TrackedCoin | None) -> dict[str, Any]:
        """`make_quote` fields of one answer item; a tracked `coin` gives symbol and name (else the provider's)."""
        raise NotImplementedError

    def _keep_tracked(self, out: Fetched, items: list[Any], coins: dict[str, TrackedCoin]) -> None:
        """Items answering a lookup by pinned id: each quote carries the configured symbol and name."""
        self._keep(out, items, lambda item: self._record(item, coins.get(str(item.get("id")))))

    def _keep_symbol_match(self, out: Fetched, coin: TrackedCoin, matches: list[dict[str, Any]]) -> None:
        """A coin looked up by symbol: one match is kept; several are an error naming the candidates."""
        if len(matches) > 1:
            candidates = ", ".join(f"{m.get('id')} ({m.get('name')})" for m in matches)
            out.errors.append(
                f"symbol {coin.symbol} matches {len(matches)} {self.name} coins: {candidates}; "
                f"pin one with coins[].ids.{self.name} in the scraper config"
            )
        elif not matches:
            out.missing.append(coin.symbol)
        else:
            self._keep(out, matches, lambda item: self._record(item, coin))
