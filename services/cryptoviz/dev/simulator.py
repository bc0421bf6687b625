"""An offline market for `cryptoviz dev --demo`: the original's coin set, moving like a market.

Prices follow geometric Brownian motion with each coin's typical annual volatility, so a
newcomer sees believable wiggles at a scrape every few seconds; stablecoins mean-revert
tightly around $1. Every quote made from it is labelled provider `demo` (simulated) by the
scraper, so it can never be mistaken for, or mixed with, live data.

The simulator also has a past: 30 days of 1-minute prices per coin, drawn the same way backwards
from its starting prices (deterministic per coin and seed), as 5-minute candles. The local market
serves them as history, so a backfill against `demo` fills every period from the first second,
and the 1h/24h/7d changes of the first quotes are measured against that same past.
"""

from __future__ import annotations

import math
import random
import zlib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from cryptoviz.dev.market.feed import aggregate
from cryptoviz.scraper.providers.wire import CandleRow

SECONDS_PER_YEAR = 365.25 * 86400
CHANGE_WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
SLOT = 300
"""Seconds per simulated candle."""
PAST = timedelta(days=30)
KEEP = timedelta(days=60)
"""Candles older than this are forgotten (a demo left running for months stays small)."""


@dataclass(frozen=True, slots=True)
class CoinSpec:
    """A coin's identity (CoinGecko id, as the `demo` provider speaks CoinGecko) and its dynamics."""

    coin_id: str
    symbol: str
    name: str
    price: float
    volatility: float
    """Annualised volatility of log returns (0.55 = 55 %), or the peg's noise for stablecoins."""
    supply: float
    """Circulating supply, so market cap = price × supply stays consistent."""
    daily_turnover: float
    """24 h volume as a fraction of market cap."""
    stable: bool = False


# Starting points close to the market of early 2025, spanning the original's three price groups:
# over $1000, $1–$1000, under $1 (the dashboard groups coins by these).
COINS: tuple[CoinSpec, ...] = (
    CoinSpec("bitcoin", "BTC", "Bitcoin", 94_500.0, 0.50, 19.8e6, 0.03),
    CoinSpec("ethereum", "ETH", "Ethereum", 3_270.0, 0.65, 120.5e6, 0.08),
    CoinSpec("binancecoin", "BNB", "BNB", 1_050.0, 0.55, 145.9e6, 0.02),
    CoinSpec("solana", "SOL", "Solana", 185.0, 0.85, 487e6, 0.05),
    CoinSpec("litecoin", "LTC", "Litecoin", 105.0, 0.75, 75.3e6, 0.07),
    CoinSpec("avalanche-2", "AVAX", "Avalanche", 36.5, 0.90, 411e6, 0.04),
    CoinSpec("chainlink", "LINK", "Chainlink", 19.8, 0.85, 638e6, 0.05),
    CoinSpec("polkadot", "DOT", "Polkadot", 6.6, 0.85, 1.54e9, 0.04),
    CoinSpec("ripple", "XRP", "XRP", 2.45, 0.90, 57.6e9, 0.05),
    CoinSpec("cardano", "ADA", "Cardano", 0.97, 0.85, 35.1e9, 0.04),
    CoinSpec("matic-network", "MATIC", "Polygon", 0.45, 0.95, 9.3e9, 0.04),
    CoinSpec("dogecoin", "DOGE", "Dogecoin", 0.336, 0.95, 147.5e9, 0.06),
    CoinSpec("tether", "USDT", "Tether", 1.0, 0.0003, 138e9, 0.40, stable=True),
    CoinSpec("usd-coin", "USDC", "USDC", 1.0, 0.0002, 45e9, 0.15, stable=True),
)


@dataclass(slots=True)
class SimulatedQuote:
    """One coin's state at one tick, in plain fields any wire format can be built from."""

    coin_id: str
    symbol: str
    name: str
    price: float
    market_cap: float
    volume_24h: float
    percent_change_1h: float
    percent_change_24h: float
    percent_change_7d: float
    rank: int
    timestamp: datetime


@dataclass(slots=True)
class _CoinState:
    spec: CoinSpec
    price: float
    history: deque[tuple[datetime, float]] = field(default_factory=deque)
    anchors: dict[str, float] = field(default_factory=dict)
    """Prices 1h/24h/7d before the start (from the simulated past), so changes are defined from the first tick."""
    candles: dict[int, list[float]] = field(default_factory=dict)
    """5-minute slot (epoch seconds // 300) → [open, high, low, close], past and present."""


def simulated_past(spec: CoinSpec, price: float, start: datetime, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Epoch seconds and prices, one a minute for PAST, ending at `price` at `start` (same draw for same inputs)."""
    minutes = int(PAST.total_seconds() // 60)
    shocks = np.random.default_rng([seed, zlib.crc32(spec.symbol.encode())]).standard_normal(minutes)
    if spec.stable:
        prices = np.append(1.0 + spec.volatility * shocks, price)
    else:
        sigma = spec.volatility * math.sqrt(60 / SECONDS_PER_YEAR)
        back = price * np.exp(-np.cumsum(sigma * shocks))  # the price 1, 2, … minutes before the start
        prices = np.append(back[::-1], price)
    times = start.timestamp() - 60.0 * np.arange(minutes, -1, -1)
    return times, prices


def _slots(times: np.ndarray, prices: np.ndarray) -> dict[int, list[float]]:
    slot = (times // SLOT).astype(np.int64)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(slot)) + 1])
    ends = np.append(starts[1:], len(prices)) - 1
    highs, lows = np.maximum.reduceat(prices, starts), np.minimum.reduceat(prices, starts)
    return {
        int(slot[s]): [float(prices[s]), float(h), float(lo), float(prices[e])]
        for s, e, h, lo in zip(starts, ends, highs, lows, strict=True)
    }


class MarketSimulator:
    """Deterministic for a given seed; `tick(now)` moves every coin from its last tick to `now`."""

    def __init__(
        self,
        coins: tuple[CoinSpec, ...] = COINS,
        *,
        seed: int | None = None,
        start: datetime | None = None,
        start_prices: dict[str, float] | None = None,
    ) -> None:
        self._rng = random.Random(seed)
        self._now = start or datetime.now(UTC)
        self._coins: list[_CoinState] = []
        for spec in coins:
            price = (start_prices or {}).get(spec.symbol) or spec.price
            state = _CoinState(spec, price)
            times, prices = simulated_past(spec, price, self._now, seed or 0)
            for label, window in CHANGE_WINDOWS.items():
                state.anchors[label] = float(prices[-1 - int(window.total_seconds() // 60)])
            state.candles = _slots(times, prices)
            state.history.append((self._now, price))
            self._coins.append(state)
        self._by_symbol = {state.spec.symbol: state for state in self._coins}

    def candles(self, symbol: str, interval: int, start: datetime, end: datetime) -> list[CandleRow]:
        """Candles of `interval` (a multiple of 5 minutes) opening in [start, end), up to now; oldest first."""
        state = self._by_symbol.get(symbol)
        if state is None or interval % SLOT:
            return []
        first = int(start.timestamp()) // interval * interval // SLOT
        last = int(min(end, self._now + timedelta(seconds=1)).timestamp() - 1) // SLOT
        rows = []
        for slot in range(first, last + 1):
            ohlc = state.candles.get(slot)
            if ohlc is not None:
                volume = ohlc[3] * state.spec.supply * state.spec.daily_turnover * SLOT / 86_400
                rows.append(CandleRow(datetime.fromtimestamp(slot * SLOT, UTC), *ohlc, volume=volume))
        return [c for c in (rows if interval == SLOT else aggregate(rows, interval)) if c.open_time >= start]

    def _record(self, state: _CoinState, before: float) -> None:
        """The tick's price in its 5-minute candle (a new candle opens at the previous price)."""
        slot = int(self._now.timestamp()) // SLOT
        candle = state.candles.get(slot)
        if candle is None:
            state.candles[slot] = candle = [before, max(before, state.price), min(before, state.price), state.price]
            oldest = slot - int(KEEP.total_seconds()) // SLOT
            for old in [s for s in state.candles if s < oldest]:
                del state.candles[old]
        candle[1], candle[2], candle[3] = max(candle[1], state.price), min(candle[2], state.price), state.price

    def _step(self, state: _CoinState, seconds: float) -> None:
        spec = state.spec
        if spec.stable:
            # Ornstein–Uhlenbeck around the peg: pulled back to $1 within minutes.
            keep = math.exp(-seconds / 120.0)
            noise = spec.volatility * math.sqrt(1.0 - keep * keep)
            state.price = 1.0 + (state.price - 1.0) * keep + self._rng.gauss(0.0, noise)
            return
        dt = seconds / SECONDS_PER_YEAR
        sigma = spec.volatility
        state.price *= math.exp(-0.5 * sigma * sigma * dt + sigma * math.sqrt(dt) * self._rng.gauss(0.0, 1.0))

    def _past_price(self, state: _CoinState, label: str, now: datetime) -> float:
        """The price `label` ago: from our own history once it reaches back that far, else the anchor."""
        cutoff = now - CHANGE_WINDOWS[label]
        if state.history[0][0] > cutoff:
            return state.anchors[label]
        return next(price for when, price in state.history if when >= cutoff)

    def tick(self, now: datetime | None = None) -> list[SimulatedQuote]:
        """Advance to `now` (default: the wall clock) and return every coin's quote, ranked by market cap."""
        now = now or datetime.now(UTC)
        seconds = max((now - self._now).total_seconds(), 0.0)
        self._now = max(now, self._now)
        week_ago = self._now - CHANGE_WINDOWS["7d"]
        for state in self._coins:
            before = state.price
            if seconds:
                self._step(state, seconds)
            self._record(state, before)
            state.history.append((self._now, state.price))
            while state.history and state.history[0][0] < week_ago:
                state.history.popleft()
        ranked = sorted(self._coins, key=lambda s: s.price * s.spec.supply, reverse=True)
        quotes = []
        for rank, state in enumerate(ranked, start=1):
            spec, price = state.spec, state.price
            market_cap = price * spec.supply
            wobble = 1.0 + 0.1 * self._rng.uniform(-1.0, 1.0)
            changes = {
                label: (price / self._past_price(state, label, self._now) - 1.0) * 100.0 for label in CHANGE_WINDOWS
            }
            quotes.append(
                SimulatedQuote(
                    coin_id=spec.coin_id,
                    symbol=spec.symbol,
                    name=spec.name,
                    price=price,
                    market_cap=market_cap,
                    volume_24h=market_cap * spec.daily_turnover * wobble,
                    percent_change_1h=changes["1h"],
                    percent_change_24h=changes["24h"],
                    percent_change_7d=changes["7d"],
                    rank=rank,
                    timestamp=self._now,
                )
            )
        return quotes
