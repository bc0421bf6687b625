"""Bokeh figures of the current view, built directly (no HoloViews layer: a session's first chart is
built in milliseconds) and updated in place when only the data changes.

Inputs are plain DataFrames with a naive `time` column already in the viewer's time zone; nothing
here knows about sessions or the API. Colours come from the caller (one per coin in every view), the
theme from the page; wheel zoom is a tool but not active, so the page scrolls under the mouse wheel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from bokeh.models import (
    ColumnDataSource,
    DatetimeTickFormatter,
    HoverTool,
    Legend,
    LegendItem,
    NumeralTickFormatter,
    Range1d,
    Span,
)
from bokeh.plotting import figure

from cryptoviz.dashboard import indicators
from cryptoviz.dashboard.logic import axis_format

CHART_HEIGHT = 400
SMALL_HEIGHT = 280
INDICATOR_HEIGHT = 260
TOOLS = "pan,box_zoom,wheel_zoom,reset,save"
UP, DOWN = "#16a34a", "#dc2626"


@dataclass(frozen=True)
class Look:
    background: str
    text: str
    grid: str


LOOKS = {
    "default": Look(background="#ffffff", text="#1f2937", grid="#e5e7eb"),
    "dark": Look(background="#1f2226", text="#e5e7eb", grid="#3a3f45"),
}
DATETIME_FORMATS = {
    "seconds": "%H:%M:%S", "minsec": "%H:%M:%S", "minutes": "%H:%M", "hourmin": "%H:%M", "hours": "%H:%M",
    "days": "%d %b", "months": "%b %Y",
}  # fmt: skip
"""Tick labels (a model per figure: a Bokeh model belongs to one session's document)."""


def _figure(
    title: str,
    ylabel: str,
    xlabel: str,
    theme: str,
    height: int,
    *,
    logy: bool = False,
    touch: bool = False,
    x_range: Range1d | None = None,
) -> figure:
    look = LOOKS.get(theme, LOOKS["default"])
    fig = figure(
        title=title,
        height=height,
        sizing_mode="stretch_width",
        x_axis_type="datetime",
        y_axis_type="log" if logy else "linear",
        x_range=x_range or Range1d(0, 1),
        y_range=Range1d(0, 1),
        tools=TOOLS,
        toolbar_location="above",
        background_fill_color=look.background,
        border_fill_color=look.background,
        outline_line_color=look.grid,
        min_border_left=10,
    )
    fig.toolbar.active_scroll = None  # the page scrolls under the wheel; wheel zoom is one click away
    fig.toolbar.active_drag = None if touch else fig.toolbar.active_drag  # a finger scrolls the page
    fig.toolbar.logo = None
    fig.title.text_color = look.text
    fig.xaxis.axis_label, fig.yaxis.axis_label = xlabel, ylabel
    fig.xaxis.formatter = DatetimeTickFormatter(**DATETIME_FORMATS)
    fig.xaxis.ticker.desired_num_ticks = 4 if touch else 7  # a phone's labels need room
    for axis in (*fig.xaxis, *fig.yaxis):
        axis.axis_label_text_color = axis.major_label_text_color = look.text
        axis.axis_line_color = axis.major_tick_line_color = axis.minor_tick_line_color = look.grid
    fig.grid.grid_line_color = look.grid
    return fig


PHONE_LEGEND_WIDTH = 330
"""Pixels a legend row may take on a phone (a 360 px screen less the axis): Bokeh does not wrap one."""


def legend_columns(labels: list[str], touch: bool) -> int:
    """Six per row; on a phone as many as fit its width (a 9pt character ≈ 7 px, a swatch and gap 28 px),
    so long labels like "DOGE (simulated)" go two to a row instead of running off the screen."""
    if not touch:
        return min(len(labels), 6)
    widest = 7 * max(map(len, labels)) + 28
    return max(1, min(len(labels), 6, PHONE_LEGEND_WIDTH // widest))


def _legend(fig: figure, items: list[LegendItem], theme: str, touch: bool) -> None:
    """Below the plot (never over the data), in rows that fit the screen; a click hides a series."""
    if not items:
        return
    look = LOOKS.get(theme, LOOKS["default"])
    legend = Legend(
        items=items,
        orientation="horizontal",
        click_policy="hide",
        ncols=legend_columns([str(item.label.value) for item in items], touch),
        label_text_font_size="9pt",
        label_text_color=look.text,
        background_fill_alpha=0,
        border_line_alpha=0,
        spacing=8,
    )
    fig.add_layout(legend, "below")


def _x_bounds(times: pd.Series) -> tuple[float, float]:
    """Epoch ms of the data's first and last time, padded a little (a single time gets ± a minute)."""
    low, high = (pd.Timestamp(t).value / 1e6 for t in (times.min(), times.max()))
    pad = (high - low) * 0.02 or 60_000.0
    return low - pad, high + pad


def _y_bounds(values: np.ndarray, logy: bool) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if logy:
        finite = finite[finite > 0]
    if finite.size == 0:
        return (0.1, 10.0) if logy else (0.0, 1.0)
    low, high = float(finite.min()), float(finite.max())
    if logy:
        return low / 1.05, high * 1.05
    pad = (high - low) * 0.06 or abs(high) * 0.02 or 1.0
    return low - pad, high + pad


class LineChart:
    """One line per coin (plus a marker on its newest point, which is all a single sample shows).

    `update` swaps the sources' data and the ranges in place; a different set of coins needs a new chart.
    """

    def __init__(
        self,
        frames: dict[str, pd.DataFrame],
        colours: dict[str, str],
        *,
        title: str,
        ylabel: str,
        xlabel: str,
        theme: str,
        percent: bool = False,
        logy: bool = False,
        touch: bool = False,
        height: int = CHART_HEIGHT,
    ) -> None:
        self.coins = tuple(frames)
        self.percent, self.logy = percent, logy and not percent
        self.figure = fig = _figure(title, ylabel, xlabel, theme, height, logy=self.logy, touch=touch)
        fig.yaxis.formatter = NumeralTickFormatter(format="0,0")
        self.colours = {coin: colours.get(coin, "#2563eb") for coin in self.coins}
        self.lines: dict[str, ColumnDataSource] = {}
        items = []
        for coin in self.coins:
            self.lines[coin] = source = ColumnDataSource(_line_data(coin, frames[coin]))
            line = fig.line("time", "value", source=source, color=self.colours[coin], line_width=2, name=coin)
            items.append(LegendItem(label=coin, renderers=[line]))
        # every coin's newest point in one renderer (a dot; all that a single quote can show)
        self.ends = ColumnDataSource(self._ends(frames))
        fig.scatter("time", "value", source=self.ends, color="colour", size=7, name="newest")
        fig.add_tools(
            HoverTool(
                renderers=list(fig.renderers),
                tooltips=[("coin", "@coin"), ("time", "@time{%F %H:%M}"), ("", "@label")],
                formatters={"@time": "datetime"},
            )
        )
        if len(items) > 1:
            _legend(fig, items, theme, touch)
        self.update(frames)

    def _ends(self, frames: dict[str, pd.DataFrame]) -> dict[str, object]:
        parts = [_line_data(coin, frame.tail(1)) for coin, frame in frames.items()]
        ends = {key: [value for part in parts for value in part[key]] for key in ("time", "value", "coin", "label")}
        ends["time"] = np.array(ends["time"], dtype="datetime64[ns]")
        ends["colour"] = [self.colours[coin] for coin in ends["coin"]]
        return ends

    def update(self, frames: dict[str, pd.DataFrame]) -> None:
        for coin, frame in frames.items():
            self.lines[coin].data = _line_data(coin, frame)
        self.ends.data = self._ends(frames)
        everything = pd.concat(list(frames.values())) if frames else pd.DataFrame({"time": [], "value": []})
        if everything.empty:
            return
        self.figure.x_range.update(**dict(zip(("start", "end"), _x_bounds(everything["time"]), strict=True)))
        low, high = _y_bounds(everything["value"].to_numpy(dtype=float), self.logy)
        self.figure.y_range.update(start=low, end=high)
        values = everything["value"].dropna()
        fmt = "+0.0" if self.percent else axis_format(values.min(), values.max()) if not values.empty else None
        for axis in self.figure.yaxis:
            # the formatter's property, not a new model: a new model re-walks the whole document (~0.15 s)
            if fmt and axis.formatter.format != fmt:
                axis.formatter.format = fmt


def _line_data(coin: str, frame: pd.DataFrame) -> dict[str, object]:
    values = frame["value"].to_numpy(dtype=float)
    label = frame["label"].tolist() if "label" in frame else [f"{v:,.4g}" for v in values]
    return {"time": frame["time"].to_numpy(), "value": values, "coin": [coin] * len(values), "label": label}


def candle_spans_ms(times: pd.Series) -> np.ndarray:
    """Each candle's slot on the time axis: the distance to its nearer neighbour, so one view's
    5-minute candles of a backfilled past and the finer buckets of live quotes after it each fill their
    own slots (one width for all drew the live candles over each other). The first candle is stamped at
    the first quote, inside its bucket, so the gap after it is not taken; a single candle gets an hour."""
    ms = pd.to_datetime(times).to_numpy().astype("datetime64[ms]").astype(np.int64).astype(float)
    if len(ms) < 2:
        return np.full(len(ms), 3_600_000.0)
    gaps = np.diff(ms)
    before = np.concatenate([[np.inf], gaps])
    after = np.concatenate([gaps, [np.inf]])
    if len(ms) > 2:
        after[0] = before[1] = gaps[1]
    return np.maximum(np.minimum(before, after), 1000.0)


def candle_centres(times: pd.Series, spans_ms: np.ndarray) -> np.ndarray:
    """Each candle in the middle of its slot; the first slot ends where the second begins."""
    starts = pd.to_datetime(times).to_numpy().astype("datetime64[ms]")
    if len(starts) > 1:
        starts[0] = min(starts[0], starts[1] - np.timedelta64(int(spans_ms[0]), "ms"))
    return starts + (spans_ms / 2).astype("timedelta64[ms]")


def candle_chart(
    ohlc: pd.DataFrame, chosen: list[str], *, title: str, xlabel: str, theme: str, logy: bool, touch: bool = False
) -> figure:
    """Each bucket's real open/high/low/close as a candle (green up, red down; a bucket whose open equals
    its close is a doji line), with SMA 20 / EMA 20 / Bollinger 20/2 overlays when there are enough."""
    fig = _figure(title, "Price (USD)", xlabel, theme, CHART_HEIGHT, logy=logy, touch=touch)
    up = ohlc["close"] >= ohlc["open"]
    spans = candle_spans_ms(ohlc["time"])
    source = ColumnDataSource(
        {
            "time": candle_centres(ohlc["time"], spans),
            "width": spans * 0.8,
            "open": ohlc["open"].to_numpy(dtype=float),
            "high": ohlc["high"].to_numpy(dtype=float),
            "low": ohlc["low"].to_numpy(dtype=float),
            "close": ohlc["close"].to_numpy(dtype=float),
            "top": np.maximum(ohlc["open"], ohlc["close"]).to_numpy(dtype=float),
            "bottom": np.minimum(ohlc["open"], ohlc["close"]).to_numpy(dtype=float),
            "colour": np.where(up, UP, DOWN),
        }
    )
    wick = fig.segment("time", "high", "time", "low", source=source, color="colour", name="candles")
    body = fig.vbar(
        "time",
        "width",
        "top",
        "bottom",
        source=source,
        fill_color="colour",
        line_color="colour",
        name="candles",
    )
    fmt = axis_format(float(ohlc["low"].min()), float(ohlc["high"].max()))
    fig.add_tools(
        HoverTool(
            renderers=[body],
            tooltips=[("time", "@time{%F %H:%M}"), *((k, f"@{k}{{{fmt}}}") for k in ("open", "high", "low", "close"))],
            formatters={"@time": "datetime"},
        )
    )
    items = [LegendItem(label="candles", renderers=[wick, body])]
    close = ohlc["close"].reset_index(drop=True)
    times = source.data["time"]
    overlays = {
        "SMA": ("SMA 20", lambda: indicators.sma(close, 20), "#f59e0b"),
        "EMA": ("EMA 20", lambda: indicators.ema(close, 20), "#a855f7"),
    }
    for key, (label, compute, colour) in overlays.items():
        values = compute().to_numpy(dtype=float) if key in chosen else np.array([])
        if np.isfinite(values).sum() >= 2:
            line = fig.line(times, values, color=colour, line_width=2, name=label)
            items.append(LegendItem(label=label, renderers=[line]))
    if "Bollinger" in chosen:
        bands = indicators.bollinger(close, 20, 2.0)
        if bands["upper"].notna().sum() >= 2:
            band = fig.varea(
                times,
                bands["lower"].to_numpy(dtype=float),
                bands["upper"].to_numpy(dtype=float),
                fill_color="#3b82f6",
                fill_alpha=0.15,
                name="Bollinger 20/2",
            )
            items.append(LegendItem(label="Bollinger 20/2", renderers=[band]))
    _legend(fig, items, theme, touch)
    start, end = _x_bounds(pd.Series(source.data["time"]))
    fig.x_range.update(start=start - spans[0] * 0.56, end=end + spans[-1] * 0.56)  # the outer candles whole
    low, high = _y_bounds(np.concatenate([source.data["low"], source.data["high"]]), logy)
    fig.y_range.update(start=low, end=high)
    fig.yaxis.formatter = NumeralTickFormatter(format=fmt)
    return fig


def rsi_chart(ohlc: pd.DataFrame, *, x_range: Range1d, xlabel: str, theme: str, touch: bool = False) -> figure:
    """RSI 14 with the usual 70/30 guides, on the candles' x-range (zooming one zooms both)."""
    fig = _figure("RSI 14", "RSI", xlabel, theme, INDICATOR_HEIGHT, x_range=x_range, touch=touch)
    values = indicators.rsi(ohlc["close"].reset_index(drop=True), 14).to_numpy(dtype=float)
    times = candle_centres(ohlc["time"], candle_spans_ms(ohlc["time"]))  # under the candles they follow
    fig.line(times, values, color="#8b5cf6", line_width=2, name="RSI 14")
    for level, colour in ((70, DOWN), (30, UP)):
        fig.add_layout(Span(location=level, dimension="width", line_color=colour, line_alpha=0.5, line_dash="dashed"))
    fig.y_range.update(start=0, end=100)
    return fig


def macd_chart(ohlc: pd.DataFrame, *, x_range: Range1d, xlabel: str, theme: str, touch: bool = False) -> figure:
    """MACD 12/26/9: line, signal and histogram, on the candles' x-range."""
    fig = _figure("MACD 12/26/9", "MACD", xlabel, theme, INDICATOR_HEIGHT, x_range=x_range, touch=touch)
    m = indicators.macd(ohlc["close"].reset_index(drop=True))
    spans = candle_spans_ms(ohlc["time"])
    times = candle_centres(ohlc["time"], spans)
    hist = fig.vbar(
        times,
        spans * 0.8,
        m["histogram"].to_numpy(dtype=float),
        0,
        color="#94a3b8",
        alpha=0.5,
        name="histogram",
    )
    line = fig.line(times, m["macd"].to_numpy(dtype=float), color="#2563eb", line_width=2, name="MACD")
    signal = fig.line(times, m["signal"].to_numpy(dtype=float), color="#f59e0b", line_width=2, name="signal")
    _legend(
        fig,
        [LegendItem(label=n, renderers=[r]) for n, r in (("MACD", line), ("signal", signal), ("histogram", hist))],
        theme,
        touch,
    )
    values = np.concatenate([m[c].to_numpy(dtype=float) for c in ("macd", "signal", "histogram")])
    low, high = _y_bounds(values, False)
    bound = max(abs(low), abs(high), 1e-9)
    fig.y_range.update(start=-bound if low < 0 else low, end=bound if high > 0 else high)
    fig.yaxis.formatter = NumeralTickFormatter(format="0.[0000]" if bound < 1 else "0,0.[00]")
    return fig
