"""Fetching a coin's history as candles: which interval for which part of a range, paging, bad input.

Pure decisions (`plan_segments`, `missing_ranges`, `accept`) are kept apart from the paging loop
(`fetch_history`), which calls one adapter's `history_page` until the range is done, the provider
has nothing more, or its cursor stops advancing. Bad input is counted by reason and logged once
per coin; everything valid is kept.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter, lt

from cryptoviz.core.candle import Candle
from cryptoviz.scraper.http import ProviderError
from cryptoviz.scraper.providers.base import HistoryUnavailable, Offer, Provider, Target

log = logging.getLogger("cryptoviz.scraper.history")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Segment:
    """Candles of `interval` opening in [start, end)."""

    interval: int
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Span:
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def align_down(when: datetime, interval: int) -> datetime:
    seconds = (when - EPOCH).total_seconds()
    return EPOCH + timedelta(seconds=math.floor(seconds / interval) * interval)


def plan_segments(
    start: datetime, end: datetime, now: datetime, offers: Sequence[Offer]
) -> tuple[list[Segment], Span | None]:
    """The finest interval reaching each part of [start, end), oldest part first; and the part none reaches.

    `offers` are finest first; an offer reaches back `reach` from the provider's `now` (None: any depth).
    """
    segments: list[Segment] = []
    upper = end
    for offer in offers:
        if upper <= start:
            break
        reach_start = start if offer.reach is None else max(start, now - offer.reach)
        if reach_start < upper:
            segments.append(Segment(offer.interval, align_down(reach_start, offer.interval), upper))
            upper = reach_start
    unreached = Span(start, upper) if upper > start else None
    return segments[::-1], unreached


def missing_ranges(
    first: datetime | None,
    last: datetime | None,
    gaps: Iterable[Span],
    since: datetime,
    now: datetime,
    min_gap: float,
    *,
    past: bool = True,
) -> list[Span]:
    """What to fetch in [since, now]: before the first stored time, the stored series' gaps, after the last.

    Holes of `min_gap` seconds or less are not worth a call (a scrape interval is not a gap).
    Without `past` only the holes are wanted (a scrape's gap filling): nothing before the first
    stored time, nothing for a series never stored; that is the backfill's part.
    """
    if first is None or last is None:
        return [Span(since, now)] if past and now > since else []
    wanted = [*([Span(since, first)] if past else []), *gaps, Span(last, now)]
    out = []
    for span in wanted:
        clipped = Span(max(span.start, since), min(span.end, now))
        if clipped.seconds > min_gap:
            out.append(clipped)
    return out


@dataclass(slots=True)
class CoinHistory:
    """One coin's history from one provider in one run."""

    provider: str
    target: Target
    candles: list[Candle] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    asked: list[Span] = field(default_factory=list)
    unreached: list[Span] = field(default_factory=list)
    """Parts of the asked ranges older than any history the provider serves."""
    pages: int = 0
    error: str | None = None
    count: int = 0
    """Candles fetched (still counted once `candles` is released after publishing)."""
    first: datetime | None = None
    last: datetime | None = None
    """Open time of the oldest candle, close time of the newest."""
    stored: int = 0
    duplicates: int = 0

    def settle(self) -> None:
        """Sort the candles and note what they span."""
        self.candles.sort(key=attrgetter("open_time"))  # two stable sorts: no key tuple per candle
        self.candles.sort(key=attrgetter("interval"))
        self.count = len(self.candles)
        self.first = min(map(attrgetter("open_time"), self.candles), default=None)
        intervals = list(map(attrgetter("interval"), self.candles))
        newest = [self.candles[bisect_right(intervals, i) - 1] for i in set(intervals)]  # each interval's last
        self.last = max((c.close_time for c in newest), default=None)


def accept(
    candles: Iterable[Candle], segment: Segment, now: datetime, seen: set[datetime], rejected: Counter[str]
) -> list[Candle]:
    """The candles of one page worth keeping: in the segment, complete, each (interval, open time) once.

    Candles outside the asked segment (providers answer more than asked) and the one still in
    progress are left out quietly; candles opening after the provider's now are counted and
    dropped, out-of-order ones kept and counted, repeats counted and dropped.
    """
    kept: list[Candle] = []
    previous = EPOCH
    start, end = segment.start, min(segment.end, now - timedelta(seconds=segment.interval) + timedelta.resolution)
    if not isinstance(candles, list):
        candles = list(candles)
    opened = list(map(attrgetter("open_time"), candles))
    in_order = opened and start <= opened[0] and opened[-1] < end and all(map(lt, opened, opened[1:]))
    if in_order and seen.isdisjoint(opened):  # the usual page: in order, all in the segment, all new (checks in C)
        seen.update(opened)
        return candles
    for candle in candles:  # every candle of a page has the segment's interval
        opened = candle.open_time
        if not start <= opened < end:  # outside the segment, or not complete by now (open + interval > now)
            if opened > now:
                rejected["future_candle"] += 1
            continue
        if opened in seen:
            rejected["duplicate_candle"] += 1
            continue
        if opened < previous:
            rejected["out_of_order"] += 1
        previous = opened
        seen.add(opened)
        kept.append(candle)
    return kept


def fetch_history(
    adapter: Provider,
    target: Target,
    ranges: Sequence[Span],
    now: datetime,
    per_call: int,
    on_candles: Callable[[int], None] | None = None,
) -> CoinHistory:
    """Every candle of `target` the provider has in `ranges`; provider errors end this coin, not the run.

    Raises ProviderError only for what ends the provider for this run (rate limits beyond the
    patience, a key or plan without history), so the caller can stop asking it.
    """
    out = CoinHistory(adapter.label, target, asked=list(ranges))
    seen: dict[int, set[datetime]] = {}
    """Open times kept so far, per interval."""
    try:
        for span in ranges:
            segments, unreached = plan_segments(span.start, span.end, now, adapter.history_offers)
            if unreached:
                out.unreached.append(unreached)
            for segment in segments:
                _fetch_segment(adapter, target, segment, now, per_call, seen, out, on_candles)
    except ProviderError as exc:
        if ends_provider(exc):
            raise
        out.error = str(exc)
    out.settle()
    if out.rejected:
        rejected = ",".join(f"{k}={v}" for k, v in sorted(out.rejected.items()))
        log.warning("%s %s: kept %d candles, rejected %s", adapter.label, target.symbol, len(out.candles), rejected)
    return out


def ends_provider(error: ProviderError) -> bool:
    """Errors after which asking this provider for more history in this run is pointless."""
    return isinstance(error, HistoryUnavailable) or error.status in (401, 403, 418, 429) or error.retryable


def _fetch_segment(
    adapter: Provider,
    target: Target,
    segment: Segment,
    now: datetime,
    per_call: int,
    seen: dict[int, set[datetime]],
    out: CoinHistory,
    on_candles: Callable[[int], None] | None,
) -> None:
    cursor = segment.start
    # Even a provider whose cursor jumps back and forth cannot keep the loop going past this.
    pages = math.ceil((segment.end - segment.start).total_seconds() / segment.interval / max(per_call, 1)) + 2
    for _ in range(pages):
        page = adapter.history_page(target, segment.interval, cursor, segment.end)
        out.pages += 1
        out.rejected.update(page.rejected)
        kept = accept(page.candles, segment, now, seen.setdefault(segment.interval, set()), out.rejected)
        out.candles += kept
        if on_candles is not None:
            on_candles(len(kept))
        if page.next is None or page.next >= segment.end:
            return
        if page.next <= cursor:
            out.rejected["stuck_cursor"] += 1
            log.warning(
                "%s %s: the page cursor did not advance (%s after %s); stopping this range",
                adapter.label,
                target.symbol,
                page.next.isoformat(),
                cursor.isoformat(),
            )
            return
        cursor = page.next
    out.rejected["too_many_pages"] += 1
    log.warning(
        "%s %s: more pages than [%s, %s) can hold; stopping", adapter.label, target.symbol, segment.start, segment.end
    )
