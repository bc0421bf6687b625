"""The dashboard's decisions, kept free of Panel so they are unit-tested directly:
periods, price groups, scale advice, streaming status, percent change, formatting."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

PERIODS: dict[str, timedelta | None] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "all": None,
}
CUSTOM = "custom"

HIGH, MID, LOW = "> $1000", "$1 – $1000", "< $1"
GROUPS: tuple[str, ...] = (HIGH, MID, LOW)
GROUP_MARGIN = 0.02
"""A coin changes group only once its price is 2 % beyond the boundary, so a stablecoin at
$0.9998 or $1.0002 stays where it is instead of flickering on every refresh."""

SPAN_ADVICE_RATIO = 100.0
"""More than two orders of magnitude between the cheapest and dearest selected coin makes
the cheap ones flat lines on a shared linear axis."""


def esc(value: object) -> str:
    """Untrusted provider text (names, symbols, alert messages) as inert HTML."""
    return html.escape("" if value is None else str(value), quote=True)


def period_window(
    period: str, newest: datetime | None, custom: tuple[datetime, datetime] | None = None
) -> tuple[datetime | None, datetime | None]:
    """(start, end) for the API. Relative periods end at the newest data, not at the wall
    clock, so a stopped feed still shows its last day instead of an empty chart."""
    if period == CUSTOM:
        if not custom:
            raise ValueError("custom period needs a start and an end")
        start, end = custom
        if start >= end:
            raise ValueError("the custom range must start before it ends")
        return start, end
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}")
    length = PERIODS[period]
    if length is None or newest is None:
        return None, None
    return newest - length, None


def _raw_group(price: float, raise_bar: float) -> str:
    if price > 1000 * raise_bar:
        return HIGH
    if price > 1 * raise_bar:
        return MID
    return LOW


def assign_groups(
    prices: Mapping[str, float], previous: Mapping[str, str] | None = None, margin: float = GROUP_MARGIN
) -> dict[str, str]:
    """Price group of each coin, with hysteresis.

    A new coin joins a higher group only when it is `margin` above the boundary (so USDT at
    $1.0002 is "< $1", as users expect of stablecoins). A known coin leaves its group only
    when its price is `margin` beyond the group's bounds.
    """
    previous = previous or {}
    groups: dict[str, str] = {}
    for symbol, price in prices.items():
        if price is None or not math.isfinite(price) or price <= 0:
            continue
        fresh = _raw_group(price, 1 + margin)
        old = previous.get(symbol)
        if old is None:
            groups[symbol] = fresh
            continue
        low, high = {HIGH: (1000.0, math.inf), MID: (1.0, 1000.0), LOW: (0.0, 1.0)}[old]
        inside = low * (1 - margin) < price <= high * (1 + margin)
        groups[symbol] = old if inside else _raw_group(price, 1.0)
    return groups


def magnitude_span(prices: Iterable[float]) -> float:
    """Ratio of the largest to the smallest positive price (1.0 for fewer than two)."""
    valid = [p for p in prices if p is not None and math.isfinite(p) and p > 0]
    if len(valid) < 2:
        return 1.0
    return max(valid) / min(valid)


def needs_scale_advice(prices: Iterable[float], threshold: float = SPAN_ADVICE_RATIO) -> bool:
    return magnitude_span(prices) > threshold


@dataclass(frozen=True, slots=True)
class StreamStatus:
    level: str  # green | amber | red
    text: str


def streaming_status(age_seconds: float | None, interval: float, reachable: bool = True) -> StreamStatus:
    """Green while data is at most two scrape intervals old, amber up to five, red after
    (or when there is no data, or the ingester cannot be reached)."""
    if not reachable:
        return StreamStatus("red", "Ingester unreachable")
    if age_seconds is None:
        return StreamStatus("red", "No data yet")
    age = format_age(age_seconds)
    if age_seconds <= 2 * interval:
        return StreamStatus("green", f"Streaming (last data: {age} ago)")
    if age_seconds <= 5 * interval:
        return StreamStatus("amber", f"Delayed (last data: {age} ago)")
    return StreamStatus("red", f"Stale (last data: {age} ago)")


RENDER_SHARE = 0.5
"""At most this share of the server's one event-loop thread goes to chart refreshes of all sessions."""


def refresh_spacing(cost_seconds: float, sessions: int, floor: float, share: float = RENDER_SHARE) -> float:
    """Seconds a session waits after a refresh before drawing newer data again.

    At a normal cadence (a scrape a minute) every refresh is immediate. When data arrives faster than
    all sessions can redraw (a fast replay, many tabs), each session redraws less often instead of
    the server falling behind: late page loads, and closed sessions not cleaned up in time.
    """
    return max(floor, cost_seconds * max(sessions, 1) / share)


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d"


def percent_change(history: pd.DataFrame, value: str = "close") -> pd.Series:
    """Change of each coin since its first point in the window, in percent."""
    first = history.groupby("symbol")[value].transform("first")
    return (history[value] / first - 1.0) * 100.0


def default_selection(latest: pd.DataFrame, groups: Mapping[str, str], per_group: int = 2) -> list[str]:
    """The biggest coins (by market cap, else rank, else price) from each price group,
    like the original's BTC/ETH, XRP/SOL, DOGE/ADA starting view."""
    if latest.empty:
        return []
    frame = latest.assign(group=latest["symbol"].map(groups))
    frame = frame.assign(
        _cap=_numeric(frame, "market_cap").fillna(-1), _rank=_numeric(frame, "rank").fillna(1e9)
    ).sort_values(["_cap", "_rank", "price"], ascending=[False, True, False])
    chosen: list[str] = []
    for group in GROUPS:
        symbols = frame.loc[frame["group"] == group, "symbol"]
        if group == LOW:  # stablecoins are flat lines: prefer coins that move
            movers = symbols[~symbols.isin(STABLECOINS)]
            symbols = pd.concat([movers, symbols[symbols.isin(STABLECOINS)]])
        chosen.extend(symbols.head(per_group))
    return chosen


CHANGE_COLUMNS = ("1h %", "24h %", "7d %")
TABLE_COLUMNS = ("Symbol", "Name", "Group", "Price", *CHANGE_COLUMNS, "Market cap", "Volume 24h", "Source")


def latest_table(latest: pd.DataFrame) -> pd.DataFrame:
    """The latest-prices table, biggest market cap first; simulated sources say so."""
    if latest.empty:
        return pd.DataFrame({c: pd.Series(dtype=float if c in CHANGE_COLUMNS else object) for c in TABLE_COLUMNS})
    simulated = latest["simulated"].fillna(False).astype(bool) if "simulated" in latest else False
    table = pd.DataFrame(
        {
            "Symbol": latest["symbol"],
            "Name": latest["name"],
            "Group": latest.get("group"),
            "Price": _numeric(latest, "price"),
            "1h %": _numeric(latest, "percent_change_1h"),
            "24h %": _numeric(latest, "percent_change_24h"),
            "7d %": _numeric(latest, "percent_change_7d"),
            "Market cap": _numeric(latest, "market_cap"),
            "Volume 24h": _numeric(latest, "volume_24h"),
            "Source": latest["provider"].where(~simulated, latest["provider"] + " (simulated)"),
        }
    )
    return table.sort_values("Market cap", ascending=False, na_position="last").reset_index(drop=True)


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    """A numeric column, or NaNs when the API did not send it."""
    if column not in frame:
        return pd.Series(float("nan"), index=frame.index)
    return pd.to_numeric(frame[column], errors="coerce")


STABLECOINS = frozenset({"USDT", "USDC", "DAI", "BUSD", "TUSD", "USDP", "FDUSD", "USDE", "PYUSD"})


# ---- display decisions ---------------------------------------------------------------------

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
"""Tableau 10 (ten distinct hues, readable on light and dark backgrounds), then their light variants."""


def coin_colours(symbols: Iterable[str]) -> dict[str, str]:
    """One colour per coin, the same in every view of a session: by the coin's place in `symbols`
    (the latest prices' order), cycling through the palette."""
    return {symbol: PALETTE[index % len(PALETTE)] for index, symbol in enumerate(dict.fromkeys(symbols))}


def price_decimals(price: float | None) -> int:
    """Decimals that show a price to about four significant digits, never more than 8:
    BTC $97,123 · SOL $187.42 · DOGE $0.2534 · SHIB $0.00001234."""
    if price is None or not math.isfinite(price) or price == 0:
        return 2
    magnitude = math.floor(math.log10(abs(price)))
    if magnitude >= 3:
        return 0
    if magnitude >= 0:
        return 2
    return min(8, 3 - magnitude)


def round_price(price: float | None) -> float | None:
    if price is None or not math.isfinite(price):
        return None
    return round(price, price_decimals(price))


def axis_format(low: float, high: float) -> str:
    """A Numeral.js format for a price axis spanning [low, high]: cents only where they matter."""
    span = abs(high - low) or abs(high) or 1.0
    decimals = max(0, min(8, 1 - math.floor(math.log10(span))))  # ticks are about a tenth of the span apart
    return "$0,0" if decimals == 0 else "$0,0." + "0" * decimals


def first_mode(prices: Iterable[float]) -> str:
    """The display mode a first visit starts in: percent change when the selection spans more than two
    orders of magnitude (a shared price axis would flatten the cheap coins), else the shared scale."""
    return "percent" if needs_scale_advice(prices) else "shared"


INDICATOR_NEEDS = {"SMA": 20, "EMA": 2, "Bollinger": 20, "RSI": 15, "MACD": 35}
"""Candles each indicator needs before it draws anything (MACD: 26 for the slow EMA + 9 for the signal)."""


def indicator_notes(chosen: Iterable[str], candles: int) -> list[str]:
    """What cannot be drawn yet with `candles` candles, said plainly."""
    return [
        f"{name} needs {INDICATOR_NEEDS[name]} candles; this period has {candles}."
        for name in chosen
        if candles < INDICATOR_NEEDS.get(name, 0)
    ]


def candle_points(samples: int, most: int = 80, per_candle: int = 4) -> int:
    """Candles to ask for: at most `most`, and few enough that each holds about `per_candle` quotes, so
    a candle shows how the price moved inside it (one quote per bucket would be a flat dash)."""
    return max(2, min(most, samples // per_candle))
