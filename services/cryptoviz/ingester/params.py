"""Query-parameter parsing with messages a person can act on (every failure is a 400).

Cost is bounded before any per-item work: a value's length is checked first (O(1)), then it is
split and checked once per item (O(n), duplicates found with a set), so no parameter can keep the
event loop busy however long or repetitive it is.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from cryptoviz.core.api_contract import MAX_SYMBOLS, SYMBOLS_MAX_CHARS, TEXT_MAX_CHARS
from cryptoviz.core.config import SYMBOL_PATTERN
from cryptoviz.core.quote import ALL_PROVIDERS, InvalidQuote, parse_ts
from cryptoviz.ingester.formats import BadRequest

_SYMBOL = re.compile(SYMBOL_PATTERN)
_MIN_TS = datetime(1970, 1, 2)
_MAX_TS = datetime(9999, 1, 1)


def _capped(value: str, name: str, limit: int = TEXT_MAX_CHARS) -> str:
    if len(value) > limit:
        raise BadRequest(f"{name} is too long: at most {limit:,} characters, not {len(value):,}")
    return value.strip()


def symbols(value: str | None) -> list[str] | None:
    """`BTC,eth` → ["BTC", "ETH"] (first occurrence order, duplicates dropped); None when absent (all)."""
    if value is None:
        return None
    text = _capped(value, "symbols", SYMBOLS_MAX_CHARS).strip(",")
    if not text:
        return None
    entries = text.split(",")
    if len(entries) > MAX_SYMBOLS:
        raise BadRequest(f"at most {MAX_SYMBOLS} symbols per request, not {len(entries):,}")
    result: dict[str, None] = {}
    for raw in entries:
        symbol = raw.strip().upper()
        if not symbol:
            continue
        if not _SYMBOL.match(symbol):
            raise BadRequest(f"invalid symbol {raw.strip()[:40]!r}: use tickers like BTC,ETH")
        result[symbol] = None
    return list(result) or None


def provider(value: str | None) -> str | None:
    if value is None:
        return None
    name = _capped(value, "provider").lower()
    if not name:
        return None
    if name not in ALL_PROVIDERS:
        raise BadRequest(f"unknown provider {value[:40]!r}: one of {', '.join(ALL_PROVIDERS)}")
    return name


def timestamp(value: str | None, name: str) -> datetime | None:
    """ISO-8601 (naive means UTC) or epoch seconds, as a naive UTC datetime."""
    if value is None:
        return None
    text = _capped(value, name)
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        number = None
    try:
        if number is not None:
            if not math.isfinite(number) or not 86400 <= number <= 253370764800:
                raise BadRequest(f"{name} epoch seconds out of range: {text[:40]}")
            parsed = datetime.fromtimestamp(number, UTC)
        else:
            parsed = parse_ts(text, name)
    except (InvalidQuote, OverflowError, OSError, ValueError) as exc:
        if isinstance(exc, BadRequest):
            raise
        raise BadRequest(
            f"{name} must be ISO-8601 (e.g. 2025-01-13T00:00:00Z) or epoch seconds, not {text[:40]!r}"
        ) from None
    naive = parsed.astimezone(UTC).replace(tzinfo=None)
    if not _MIN_TS <= naive <= _MAX_TS:
        raise BadRequest(f"{name} out of range: {text[:40]}")
    return naive


def integer(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    text = _capped(value, name)
    if not text:
        return default
    try:
        number = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be an integer between {low} and {high}, not {value[:40]!r}") from None
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, not {number}")
    return number
