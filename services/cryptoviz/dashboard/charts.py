"""hvPlot figures of the current view. Inputs are plain DataFrames with a naive `time`
column already in the viewer's time zone; nothing here knows about sessions or the API."""

from __future__ import annotations

import math

import holoviews as hv
import hvplot.pandas  # noqa: F401  (registers .hvplot on DataFrames)
import pandas as pd
from bokeh.models import HoverTool, NumeralTickFormatter

from cryptoviz.dashboard import indicators

CHART_HEIGHT = 380
SMALL_HEIGHT = 260


def _opts(xlabel: str) -> dict:
    return {"responsive": True, "xlabel": xlabel, "grid": True, "toolbar": "above"}


def _hover(value_label: str, fmt: str) -> HoverTool:
    """Tooltips use Bokeh's default (escaped) field formatting: coin labels stay text."""
    return HoverTool(
        tooltips=[("coin", "@{coin}"), ("time", "@{time}{%F %H:%M}"), (value_label, f"@{{value}}{{{fmt}}}")],
        formatters={"@{time}": "datetime"},
    )


def shared_chart(view: pd.DataFrame, *, logy: bool, xlabel: str, percent: bool) -> hv.Element:
    """All coins on one axis: prices (linear or log) or percent change since the period start."""
    ylabel = "Change (%)" if percent else "Price (USD)"
    fmt = "+0.00" if percent else "$0,0.[0000]"
    return view.hvplot.line(
        x="time",
        y="value",
        by="coin",
        logy=logy and not percent,
        height=CHART_HEIGHT,
        ylabel=ylabel,
        yformatter="%+.1f%%" if percent else NumeralTickFormatter(format="$0,0.[00]"),
        legend="bottom",  # outside the plot, wrapped in rows of 4: stays readable on a phone
        tools=[_hover("change %" if percent else "price", fmt)],
        **_opts(xlabel),
    ).opts(
        title="Change since start of period (%)" if percent else "Prices (shared scale)",
        legend_cols=math.ceil(view["coin"].nunique() / 4),
        legend_opts={"label_text_font_size": "9pt", "spacing": 2},
        toolbar="above",
    )


def coin_chart(view: pd.DataFrame, title: str, *, logy: bool, xlabel: str) -> hv.Element:
    """One coin on its own price axis (the separate-charts mode)."""
    return view.hvplot.line(
        x="time",
        y="value",
        logy=logy,
        height=SMALL_HEIGHT,
        ylabel="Price (USD)",
        yformatter=NumeralTickFormatter(format="$0,0.[0000]"),
        tools=[_hover("price", "$0,0.[0000]")],
        title=title,
        shared_axes=False,  # each coin on its own scale: the point of this mode
        **_opts(xlabel),
    )


def candle_chart(ohlc: pd.DataFrame, title: str, chosen: list[str], *, logy: bool, xlabel: str) -> hv.Element:
    """Candlesticks, with SMA/EMA/Bollinger overlays when chosen."""
    close = ohlc["close"]
    main = ohlc.hvplot.ohlc(
        x="time",
        y=["open", "low", "high", "close"],
        height=CHART_HEIGHT,
        ylabel="Price (USD)",
        yformatter=NumeralTickFormatter(format="$0,0.[0000]"),
        logy=logy,
        **_opts(xlabel),
    ).opts(title=title)
    overlays: list[hv.Element] = []
    frame = ohlc[["time"]].copy()
    if "SMA" in chosen:
        frame["SMA 20"] = indicators.sma(close, 20)
        overlays.append(frame.hvplot.line(x="time", y="SMA 20", label="SMA 20", color="#ff7f0e", responsive=True))
    if "EMA" in chosen:
        frame["EMA 20"] = indicators.ema(close, 20)
        overlays.append(frame.hvplot.line(x="time", y="EMA 20", label="EMA 20", color="#9467bd", responsive=True))
    if "Bollinger" in chosen:
        bands = indicators.bollinger(close, 20, 2.0)
        frame[["BB upper", "BB lower"]] = bands[["upper", "lower"]].to_numpy()
        band = frame.hvplot.area(x="time", y="BB lower", y2="BB upper", alpha=0.15, color="#1f77b4", responsive=True)
        overlays.append(band.relabel("Bollinger 20/2"))
    if not overlays:
        return main
    return hv.Overlay([main, *overlays]).opts(
        legend_position="top_left", title=title, responsive=True, height=CHART_HEIGHT
    )


def rsi_chart(ohlc: pd.DataFrame, *, xlabel: str) -> hv.Element:
    """RSI 14 with the usual 70/30 guides."""
    frame = ohlc[["time"]].assign(**{"RSI 14": indicators.rsi(ohlc["close"], 14)})
    line = frame.hvplot.line(x="time", y="RSI 14", ylim=(0, 100), ylabel="RSI", **_opts(xlabel))
    guides = hv.HLine(70).opts(color="red", alpha=0.4) * hv.HLine(30).opts(color="green", alpha=0.4)
    return (line * guides).opts(title="RSI 14", responsive=True, height=SMALL_HEIGHT - 60)


def macd_chart(ohlc: pd.DataFrame, *, xlabel: str) -> hv.Element:
    """MACD 12/26/9: line, signal and histogram."""
    m = indicators.macd(ohlc["close"])
    frame = ohlc[["time"]].assign(MACD=m["macd"], signal=m["signal"], histogram=m["histogram"])
    plot = (
        frame.hvplot.area(x="time", y="histogram", alpha=0.3, color="#888888", label="histogram", **_opts(xlabel))
        * frame.hvplot.line(x="time", y="MACD", label="MACD", color="#1f77b4", responsive=True)
        * frame.hvplot.line(x="time", y="signal", label="signal", color="#ff7f0e", responsive=True)
    )
    return plot.opts(
        title="MACD 12/26/9", height=SMALL_HEIGHT - 40, ylabel="MACD", legend_position="top_left", responsive=True
    )
