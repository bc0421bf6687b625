"""Technical indicators as pure functions of a close-price series.

They take and return pandas objects aligned on the input index, so the chart code can
overlay them without re-indexing; the warm-up period is NaN, never a made-up value.
"""

from __future__ import annotations

import pandas as pd


def sma(close: pd.Series, window: int = 20) -> pd.Series:
    """Simple moving average; NaN until `window` values exist."""
    _check_window(window)
    return close.rolling(window, min_periods=window).mean()


def ema(close: pd.Series, span: int = 20) -> pd.Series:
    """Exponential moving average with alpha 2/(span+1), seeded by the first value (as charting tools do)."""
    _check_window(span)
    return close.ewm(span=span, adjust=False).mean()


def bollinger(close: pd.Series, window: int = 20, k: float = 2.0) -> pd.DataFrame:
    """Bollinger bands: middle SMA and ±k population standard deviations (Bollinger's definition)."""
    middle = sma(close, window)
    spread = close.rolling(window, min_periods=window).std(ddof=0) * k
    return pd.DataFrame({"middle": middle, "upper": middle + spread, "lower": middle - spread})


def rsi(close: pd.Series, period: int = 14) -> pd.Series:
    """Wilder's RSI in [0, 100]; 100 when there were no losses, 50 when the price did not move."""
    _check_window(period)
    delta = close.diff()
    gains = delta.clip(lower=0)
    losses = -delta.clip(upper=0)
    avg_gain = gains.ewm(alpha=1 / period, adjust=False, min_periods=period).mean()
    avg_loss = losses.ewm(alpha=1 / period, adjust=False, min_periods=period).mean()
    out = 100 - 100 / (1 + avg_gain / avg_loss)
    out = out.where(avg_loss != 0, 100.0)
    out = out.where((avg_gain != 0) | (avg_loss != 0), 50.0)
    return out.where(avg_gain.notna())


def macd(close: pd.Series, fast: int = 12, slow: int = 26, signal: int = 9) -> pd.DataFrame:
    """MACD line (fast EMA − slow EMA), its signal EMA and the histogram (line − signal)."""
    if fast >= slow:
        raise ValueError("MACD needs fast < slow")
    line = ema(close, fast) - ema(close, slow)
    sig = ema(line, signal)
    return pd.DataFrame({"macd": line, "signal": sig, "histogram": line - sig})


def _check_window(window: int) -> None:
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
