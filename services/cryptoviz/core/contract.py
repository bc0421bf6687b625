"""The versioned message contract between the scraper and the ingester (and alert consumers).

Stream `CRYPTOVIZ_QUOTES` holds subjects `cryptoviz.quotes.<provider>`. One message carries
one chunk of one scrape of one provider (at most `MAX_QUOTES_PER_MESSAGE` quotes, so a
5,000-coin listing fits NATS' default 1 MiB payload limit in several messages):

    {"schema": 1, "provider": "coingecko", "scraped_at": "2025-01-13T00:05:00Z",
     "quotes": [<Quote.to_json_dict()>, ...]}

Headers: `Nats-Msg-Id` (content identity, so JetStream drops re-publishes within the
duplicate window) and `Cryptoviz-Schema` (the schema version, readable without parsing).
Ingesters reject messages whose schema they do not know and park them on
`cryptoviz.deadletter.<reason>`, in the same stream.

Candles (provider history, `cryptoviz backfill` and gap filling) travel in the same stream on
`cryptoviz.candles.<provider>`. One message holds at most `MAX_CANDLES_PER_MESSAGE` candles of one
coin at one interval, in open-time order:

    {"schema": 1, "kind": "candles", "provider": "binance", "scraped_at": "...",
     "candles": [<Candle.to_json_dict()>, ...]}

Its `Nats-Msg-Id` derives from provider, coin id, interval and the candles' open times, so a re-run
of the same range publishes nothing new; the ingester stores each (provider, coin_id, interval,
open_time) once whatever the chunking.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter

import orjson

from cryptoviz.core.candle import Candle
from cryptoviz.core.quote import ALL_PROVIDERS, InvalidQuote, Quote, format_ts

SCHEMA_VERSION = 1
STREAM_NAME = "CRYPTOVIZ_QUOTES"
SUBJECT_PREFIX = "cryptoviz.quotes"
CANDLES_PREFIX = "cryptoviz.candles"
DEADLETTER_PREFIX = "cryptoviz.deadletter"
ALERTS_PREFIX = "cryptoviz.alerts"
"""Fired alerts: `cryptoviz.alerts.<symbol>`, in their own stream (see `alert_contract`), not this one."""
STREAM_SUBJECTS: tuple[str, ...] = (f"{SUBJECT_PREFIX}.>", f"{CANDLES_PREFIX}.>", f"{DEADLETTER_PREFIX}.>")
QUOTES_CONSUMER = "cryptoviz-ingester"
CANDLES_CONSUMER = "cryptoviz-ingester-candles"
"""The ingester's durable consumers on `cryptoviz.quotes.>` and `cryptoviz.candles.>` (NATS permissions name them)."""
DUPLICATE_WINDOW = timedelta(hours=2)
"""Longer than any sensible scrape interval, so a CronJob run twice stores nothing twice."""
MAX_AGE = timedelta(days=7)
"""The stream is a buffer, not the archive: DuckDB is. A week lets a stopped ingester catch up."""
MAX_QUOTES_PER_MESSAGE = 500
MAX_CANDLES_PER_MESSAGE = 1000
"""About 250 bytes a candle: a message stays far below NATS' default 1 MiB payload limit."""
CANDLES_KIND = "candles"
SCHEMA_HEADER = "Cryptoviz-Schema"
MSG_ID_HEADER = "Nats-Msg-Id"


class ContractError(ValueError):
    """A message that does not follow this contract. `reason` is short and stable."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    subject: str
    payload: bytes
    headers: dict[str, str]

    @property
    def msg_id(self) -> str:
        return self.headers[MSG_ID_HEADER]


@dataclass(slots=True)
class DecodedBatch:
    """A decoded message: the valid quotes, and the reasons of those rejected."""

    provider: str
    quotes: list[Quote]
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class DecodedCandles:
    """A decoded candles message: the valid candles, and the reasons of those rejected."""

    provider: str
    candles: list[Candle]
    rejected: dict[str, int] = field(default_factory=dict)


def subject_for(provider: str) -> str:
    if provider not in ALL_PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}")
    return f"{SUBJECT_PREFIX}.{provider}"


def candles_subject_for(provider: str) -> str:
    if provider not in ALL_PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}")
    return f"{CANDLES_PREFIX}.{provider}"


def message_id(provider: str, quotes: Iterable[Quote]) -> str:
    """Content identity of a chunk: provider plus sorted (coin id, provider timestamp) pairs.

    Two scrapes that saw the same provider data produce the same id; any new price does not.
    """
    digest = hashlib.sha256(provider.encode())
    for coin_id, ts in sorted((q.coin_id, format_ts(q.timestamp)) for q in quotes):
        digest.update(b"\0" + coin_id.encode() + b"\0" + ts.encode())
    return f"{provider}-{digest.hexdigest()[:40]}"


def encode_scrape(provider: str, quotes: list[Quote], scraped_at: datetime | None = None) -> list[OutgoingMessage]:
    """Split one scrape into contract messages, chunked in a stable (coin id) order."""
    subject = subject_for(provider)
    stamp = format_ts(scraped_at or datetime.now(UTC))
    ordered = sorted(quotes, key=lambda q: (q.coin_id, q.timestamp))
    messages = []
    for start in range(0, len(ordered), MAX_QUOTES_PER_MESSAGE):
        chunk = ordered[start : start + MAX_QUOTES_PER_MESSAGE]
        body = {
            "schema": SCHEMA_VERSION,
            "provider": provider,
            "scraped_at": stamp,
            "quotes": [q.to_json_dict() for q in chunk],
        }
        headers = {MSG_ID_HEADER: message_id(provider, chunk), SCHEMA_HEADER: str(SCHEMA_VERSION)}
        messages.append(OutgoingMessage(subject, orjson.dumps(body), headers))
    return messages


def decode_message(payload: bytes, *, now: datetime | None = None) -> DecodedBatch:
    """Parse a message; raise `ContractError` if the envelope is unusable.

    Individually invalid quotes (a time past `now` + MAX_CLOCK_SKEW included) do not spoil the
    message: they are counted in `rejected`.
    """
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ContractError("malformed_json", str(exc)[:120]) from None
    if not isinstance(body, dict):
        raise ContractError("not_an_object")
    if body.get("schema") != SCHEMA_VERSION:
        raise ContractError("unknown_schema", repr(body.get("schema"))[:32])
    provider = body.get("provider")
    if provider not in ALL_PROVIDERS:
        raise ContractError("unknown_provider", repr(provider)[:32])
    raw_quotes = body.get("quotes")
    if not isinstance(raw_quotes, list):
        raise ContractError("missing_quotes")
    batch = DecodedBatch(provider=provider, quotes=[])
    now = now or datetime.now(UTC)
    for raw in raw_quotes:
        try:
            quote = Quote.from_json_dict(raw, now=now)
        except InvalidQuote as exc:
            batch.rejected[exc.reason] = batch.rejected.get(exc.reason, 0) + 1
            continue
        if quote.provider != provider:
            batch.rejected["provider_mismatch"] = batch.rejected.get("provider_mismatch", 0) + 1
            continue
        batch.quotes.append(quote)
    return batch


def candles_message_id(provider: str, coin_id: str, interval: int, open_times: Iterable[datetime]) -> str:
    """Identity of a chunk of candles: provider, coin id, interval and the sorted open times."""
    digest = hashlib.sha256(f"{provider}\0{coin_id}\0{interval}".encode())
    utc = [t if t.tzinfo is UTC else t.astimezone(UTC) for t in open_times]
    # orjson writes format_ts's text (Z, microseconds only when present) ten times faster: a backfill's hot path
    for stamp in sorted(orjson.loads(orjson.dumps(utc, option=orjson.OPT_UTC_Z))):
        digest.update(b"\0" + stamp.encode())
    return f"candles-{provider}-{digest.hexdigest()[:40]}"


def encode_candles(provider: str, candles: list[Candle], scraped_at: datetime | None = None) -> list[OutgoingMessage]:
    """Contract messages for candles: grouped by (coin, interval), in open-time order, chunked."""
    subject = candles_subject_for(provider)
    stamp = format_ts(scraped_at or datetime.now(UTC))
    groups: dict[tuple[str, int], list[Candle]] = {}
    for candle in sorted(candles, key=attrgetter("coin_id", "interval", "open_time")):
        if candle.provider != provider:
            raise ValueError(f"candle of provider {candle.provider!r} in a {provider!r} message")
        groups.setdefault((candle.coin_id, candle.interval), []).append(candle)
    messages = []
    for (coin_id, interval), group in groups.items():
        for start in range(0, len(group), MAX_CANDLES_PER_MESSAGE):
            chunk = group[start : start + MAX_CANDLES_PER_MESSAGE]
            body = {
                "schema": SCHEMA_VERSION,
                "kind": CANDLES_KIND,
                "provider": provider,
                "scraped_at": stamp,
                "candles": chunk,  # orjson writes each Candle as its to_json_dict(), byte for byte, twice as fast
            }
            msg_id = candles_message_id(provider, coin_id, interval, (c.open_time for c in chunk))
            headers = {MSG_ID_HEADER: msg_id, SCHEMA_HEADER: str(SCHEMA_VERSION)}
            messages.append(OutgoingMessage(subject, orjson.dumps(body, option=orjson.OPT_UTC_Z), headers))
    return messages


def decode_candles(payload: bytes, *, now: datetime | None = None) -> DecodedCandles:
    """Parse a candles message; raise `ContractError` if the envelope is unusable.

    Invalid candles (inconsistent OHLC, non-positive prices, opening in the future …) are counted
    in `rejected` by reason; the rest of the message is kept.
    """
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ContractError("malformed_json", str(exc)[:120]) from None
    if not isinstance(body, dict):
        raise ContractError("not_an_object")
    if body.get("schema") != SCHEMA_VERSION:
        raise ContractError("unknown_schema", repr(body.get("schema"))[:32])
    if body.get("kind") != CANDLES_KIND:
        raise ContractError("not_candles", repr(body.get("kind"))[:32])
    provider = body.get("provider")
    if provider not in ALL_PROVIDERS:
        raise ContractError("unknown_provider", repr(provider)[:32])
    raw_candles = body.get("candles")
    if not isinstance(raw_candles, list):
        raise ContractError("missing_candles")
    batch = DecodedCandles(provider=provider, candles=[])
    now = now or datetime.now(UTC)
    for raw in raw_candles:
        try:
            candle = Candle.from_json_dict(raw, now=now)
        except InvalidQuote as exc:
            batch.rejected[exc.reason] = batch.rejected.get(exc.reason, 0) + 1
            continue
        if candle.provider != provider:
            batch.rejected["provider_mismatch"] = batch.rejected.get("provider_mismatch", 0) + 1
            continue
        batch.candles.append(candle)
    return batch
