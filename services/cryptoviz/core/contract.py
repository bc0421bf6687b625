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
coin at one interval, in open-time order. Schema 2 (what `encode_candles` writes) is columnar: what
the candles share once, then one list per field, in `Candle.to_json_dict`'s types (a third of the
bytes of schema 1, and no object per candle on either side):

    {"schema": 2, "kind": "candles", "provider": "binance", "scraped_at": "...",
     "coin_id": "BTCUSDT", "symbol": "BTC", "name": "Bitcoin", "interval": 300,
     "open_time": ["2025-01-01T00:00:00Z", ...], "open": [...], "high": [...], "low": [...],
     "close": [...], "volume": [... or null], "received_at": [...]}

Schema 1 (`"candles": [<Candle.to_json_dict()>, ...]`, written before) is still decoded.

Its `Nats-Msg-Id` derives from provider, coin id, interval and the candles' open times, so a re-run
of the same range publishes nothing new; the ingester stores each (provider, coin_id, interval,
open_time) once whatever the chunking.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter, itemgetter
from typing import Any

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
"""About 100 bytes a candle (250 in schema 1): a message stays far below NATS' default 1 MiB payload limit."""
CANDLES_KIND = "candles"
CANDLES_SCHEMA_VERSION = 2
"""Candle messages' schema (columnar); `CANDLES_SCHEMAS` are those still decoded."""
CANDLES_SCHEMAS = (1, 2)
CANDLE_SHARED = ("coin_id", "symbol", "name", "interval")
"""Fields a schema-2 message gives once (with `provider`); the others (`CANDLE_COLUMNS`) are one list each."""
CANDLE_COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "received_at")
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
    """Contract messages (schema 2) for candles: grouped by coin and interval, in open-time order, chunked."""
    subject = candles_subject_for(provider)
    stamp = format_ts(scraped_at or datetime.now(UTC))
    groups: dict[tuple[str, int, str, str], list[Candle]] = {}
    for candle in candles:
        if candle.provider != provider:
            raise ValueError(f"candle of provider {candle.provider!r} in a {provider!r} message")
        groups.setdefault((candle.coin_id, candle.interval, candle.symbol, candle.name), []).append(candle)
    messages = []
    for (coin_id, interval, symbol, name), group in sorted(groups.items(), key=itemgetter(0)):
        group.sort(key=attrgetter("open_time"))
        for start in range(0, len(group), MAX_CANDLES_PER_MESSAGE):
            chunk = group[start : start + MAX_CANDLES_PER_MESSAGE]
            body: dict[str, object] = {
                "schema": CANDLES_SCHEMA_VERSION,
                "kind": CANDLES_KIND,
                "provider": provider,
                "scraped_at": stamp,
                "coin_id": coin_id,
                "symbol": symbol,
                "name": name,
                "interval": interval,
            }
            for column in CANDLE_COLUMNS:  # orjson writes the datetimes as format_ts does (OPT_UTC_Z)
                body[column] = list(map(attrgetter(column), chunk))
            msg_id = candles_message_id(provider, coin_id, interval, map(attrgetter("open_time"), chunk))
            headers = {MSG_ID_HEADER: msg_id, SCHEMA_HEADER: str(CANDLES_SCHEMA_VERSION)}
            messages.append(OutgoingMessage(subject, orjson.dumps(body, option=orjson.OPT_UTC_Z), headers))
    return messages


def candle_records(body: dict[str, Any]) -> list[Any]:
    """The per-candle records of a schema-1 or schema-2 body (`Candle.to_json_dict` shape for schema 2);
    raise `ContractError("missing_candles")` when it has none in a readable shape."""
    if body.get("schema") == 1:
        records = body.get("candles")
        if not isinstance(records, list):
            raise ContractError("missing_candles")
        return records
    columns: list[Any] = [body.get(name) for name in CANDLE_COLUMNS]
    if not all(isinstance(column, list) for column in columns) or len(set(map(len, columns))) != 1:
        raise ContractError("missing_candles", "schema 2 needs lists of one length for " + ", ".join(CANDLE_COLUMNS))
    shared = {name: body.get(name) for name in ("provider", *CANDLE_SHARED)}
    return [{**shared, **dict(zip(CANDLE_COLUMNS, values, strict=True))} for values in zip(*columns, strict=True)]


def decode_candles(payload: bytes, *, now: datetime | None = None) -> DecodedCandles:
    """Parse a candles message (schema 1 or 2); raise `ContractError` if the envelope is unusable.

    Invalid candles (inconsistent OHLC, non-positive prices, opening in the future …) are counted
    in `rejected` by reason; the rest of the message is kept.
    """
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ContractError("malformed_json", str(exc)[:120]) from None
    if not isinstance(body, dict):
        raise ContractError("not_an_object")
    if body.get("schema") not in CANDLES_SCHEMAS:
        raise ContractError("unknown_schema", repr(body.get("schema"))[:32])
    if body.get("kind") != CANDLES_KIND:
        raise ContractError("not_candles", repr(body.get("kind"))[:32])
    provider = body.get("provider")
    if provider not in ALL_PROVIDERS:
        raise ContractError("unknown_provider", repr(provider)[:32])
    raw_candles = candle_records(body)
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
