"""The chart parts of the page: price charts, candlesticks with indicators, and what to do when a
chart cannot say much (no coin, no data in the period, a single quote, too few candles, a flat scale).

Figures are rebuilt only when their shape changes (coins, mode, scale, time zone); new data of the same
shape replaces the sources and ranges in place, which keeps the browser's figure (milliseconds).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param

from cryptoviz.dashboard import charts
from cryptoviz.dashboard.data import data_age
from cryptoviz.dashboard.logic import (
    coin_colours,
    esc,
    format_age,
    indicator_notes,
    magnitude_span,
    needs_scale_advice,
    price_decimals,
)
from cryptoviz.dashboard.state import INDICATORS, DashboardState
from cryptoviz.dashboard.views import fmt_time, show_alerts


def _label(value: float, percent: bool) -> str:
    if percent:
        return f"{value:+.2f} %"
    return f"${value:,.{price_decimals(value)}f}"


class PriceCharts(pn.viewable.Viewer):
    """All selected coins on one axis (prices or percent change), or one chart per coin."""

    state = param.ClassSelector(class_=DashboardState)

    def __init__(self, theme: str, touch: bool, **params: Any) -> None:
        super().__init__(**params)
        self.theme, self.touch = theme, touch
        self.area = pn.FlexBox(sizing_mode="stretch_width", flex_wrap="wrap")
        self.charts: dict[str, charts.LineChart] = {}
        self.shape: tuple | None = None

    def colours(self) -> dict[str, str]:
        by_symbol = coin_colours(self.state.param.coins.objects)
        return {f"{s} (simulated)": c for s, c in by_symbol.items()} | by_symbol

    @param.depends("state.history", "state.mode", "state.logy", "state.tz", "state.browser_zone", watch=True)
    def render(self) -> None:
        view = self.state.view()
        if view.empty:
            self.area.objects, self.shape, self.charts = [], None, {}
            return
        percent = self.state.mode == "percent"
        view["label"] = [_label(v, percent) for v in view["value"].to_numpy(dtype=float)]
        frames = {coin: part for coin, part in view.groupby("coin", sort=False)}
        order = [c for c in self.state.coins for c in (c, f"{c} (simulated)") if c in frames]
        frames = {coin: frames[coin] for coin in order}
        _, xlabel = self.state.zone()
        shape = (self.state.mode, self.state.logy, xlabel, tuple(frames))
        if shape == self.shape:
            if self.state.mode == "separate":
                for coin, frame in frames.items():
                    self.charts[coin].update({coin: frame})
            else:
                self.charts["all"].update(frames)
            return
        self.shape = shape
        colours = self.colours()
        common = {"xlabel": xlabel, "theme": self.theme, "touch": self.touch, "logy": self.state.logy}
        if self.state.mode == "separate":
            self.charts = {
                coin: charts.LineChart(
                    {coin: frame}, colours, title=coin, ylabel="Price (USD)", height=charts.SMALL_HEIGHT, **common
                )
                for coin, frame in frames.items()
            }
            panes = [
                pn.pane.Bokeh(
                    chart.figure,
                    sizing_mode="stretch_width",
                    css_classes=["cv-coin-chart"],
                    styles={"flex": "1 1 420px", "min-width": "0"},
                )
                for chart in self.charts.values()
            ]
        else:
            title = "Change since the period's start (%)" if percent else "Prices (shared scale)"
            ylabel = "Change (%)" if percent else "Price (USD)"
            self.charts = {
                "all": charts.LineChart(frames, colours, title=title, ylabel=ylabel, percent=percent, **common)
            }
            panes = [pn.pane.Bokeh(self.charts["all"].figure, sizing_mode="stretch_width", css_classes=["cv-chart"])]
        for chart in self.charts.values():  # the figure is the pane's model: the classes go on it
            chart.figure.css_classes = ["cv-coin-chart" if self.state.mode == "separate" else "cv-chart"]
        self.area.objects = panes

    def __panel__(self) -> pn.FlexBox:
        return self.area


class Guidance(pn.viewable.Viewer):
    """Says why a chart shows little and offers the one-click fix."""

    state = param.ClassSelector(class_=DashboardState)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.column = pn.Column(sizing_mode="stretch_width")
        self.show_all = pn.widgets.Button(name="Show all data", button_type="primary", stylesheets=[BUTTON_CSS])
        self.show_all.on_click(lambda _e: setattr(self.state, "period", "all"))
        self.advice_text = pn.pane.Alert("", alert_type="warning", sizing_mode="stretch_width")
        fixes = {
            "Show percent change": ("mode", "percent"),
            "Use separate charts": ("mode", "separate"),
            "Use log scale": ("logy", True),
        }
        buttons = []
        for index, (label, (name, value)) in enumerate(fixes.items()):
            button = pn.widgets.Button(
                name=label, button_type="primary" if index == 0 else "default", stylesheets=[BUTTON_CSS]
            )
            button.on_click(lambda _e, n=name, v=value: setattr(self.state, n, v))
            buttons.append(button)
        self.fixes = pn.FlexBox(*buttons)
        # filled only while shown: hidden models would still cost the first page load their views
        self.advice = pn.Column(sizing_mode="stretch_width")

    @param.depends("state.history", "state.range_error", "state.mode", "state.logy", watch=True)
    def render(self) -> None:
        state = self.state
        items: list[Any] = []
        if state.range_error:
            items.append(pn.pane.Alert(esc(state.range_error), alert_type="warning"))
        have_data = state.snap is not None and not state.latest.empty
        history = state.history if state.history is not None else pd.DataFrame()
        if have_data and not state.coins:
            items.append(pn.pane.Alert("No coin selected: pick one or more coins in the sidebar.", alert_type="info"))
        present = set(history["symbol"]) if not history.empty else set()
        missing = [s for s in state.coins if s not in present]
        if have_data and missing and not state.range_error:
            age = data_age(state.stats)
            newest = fmt_time(state.stats.get("last_update"), state.zone()[0])
            items.append(
                pn.pane.Alert(
                    f"No data in this period for: {esc(', '.join(missing))}. The newest data is from {esc(newest)}"
                    + (f" ({format_age(age)} ago)" if age else "")
                    + ". Choose a longer period, or:",
                    alert_type="info",
                    css_classes=["cv-no-data"],
                )
            )
            items.append(self.show_all)
        counts = history.groupby("symbol").size() if not history.empty else pd.Series(dtype=int)
        single = [s for s in state.coins if counts.get(s, 0) == 1]
        if single:
            items.append(
                pn.pane.Alert(
                    f"Only one quote so far for {esc(', '.join(single))}: shown as a dot; the line starts with the "
                    "next one.",
                    alert_type="light",
                    css_classes=["cv-single"],
                )
            )
        show_alerts(self.column, items)
        prices = state.latest.loc[state.latest["symbol"].isin(state.coins), "price"].tolist() if have_data else []
        show = state.mode == "shared" and not state.logy and needs_scale_advice(prices)
        if show:
            self.advice_text.object = (
                f"The selected coins span {magnitude_span(prices):,.0f}× in price (more than two orders of "
                "magnitude): on one linear scale the cheaper ones look flat. Switch view:"
            )
        self.advice.objects = [self.advice_text, self.fixes] if show else []

    def __panel__(self) -> pn.Column:
        return pn.Column(self.column, self.advice, sizing_mode="stretch_width")


BUTTON_CSS = ".bk-btn {min-height: 40px}"


def indicator_names(notes: list[str]) -> list[str]:
    """The indicators `indicator_notes` said cannot be drawn yet."""
    return [note.split(" ", 1)[0] for note in notes]


class CandleCharts(pn.viewable.Viewer):
    """Candlesticks of one coin with SMA/EMA/Bollinger overlays and RSI/MACD below, on one x-range."""

    state = param.ClassSelector(class_=DashboardState)

    def __init__(self, theme: str, touch: bool, toggle_css: str, **params: Any) -> None:
        super().__init__(**params)
        self.theme, self.touch = theme, touch
        self.coin = pn.widgets.Select.from_param(
            self.state.param.candle_coin,
            name="Candlestick coin",
            sizing_mode="stretch_width",
            stylesheets=[".bk-input {min-height: 40px}"],
        )
        self.chosen = pn.widgets.CheckButtonGroup.from_param(
            self.state.param.indicators,
            name="Indicators",
            options=INDICATORS,
            sizing_mode="stretch_width",
            stylesheets=[toggle_css],
        )
        self.notes = pn.Column(sizing_mode="stretch_width")
        self.area = pn.Column(sizing_mode="stretch_width")

    @param.depends("state.candles", "state.indicators", "state.logy", "state.tz", "state.tab", watch=True)
    def render(self) -> None:
        state = self.state
        if state.tab != "candles":
            return  # drawn when shown
        ohlc = state.candles if state.candles is not None else pd.DataFrame()
        if ohlc.empty or state.candle_coin is None:
            self.area.objects = []
            show_alerts(self.notes, [pn.pane.Alert("No candles in this period.", alert_type="info")])
            return
        zone, xlabel = state.zone()
        ohlc = ohlc.assign(time=ohlc["timestamp"].dt.tz_convert(zone).dt.tz_localize(None)).reset_index(drop=True)
        chosen = list(state.indicators)
        notes = indicator_notes(chosen, len(ohlc))
        if len(ohlc) == 1:
            notes.insert(0, "One candle so far (its open, high, low and close); more appear as quotes arrive.")
        note = pn.pane.Alert(esc(" ".join(notes)), alert_type="light", css_classes=["cv-candle-note"])
        show_alerts(self.notes, [note] if notes else [])
        common = {"xlabel": xlabel, "theme": self.theme, "touch": self.touch}
        enough = [c for c in chosen if c not in indicator_names(notes)]  # one short of candles is said, not drawn
        title = f"{state.candle_coin} candlesticks"
        main = charts.candle_chart(ohlc, enough, title=title, logy=state.logy, **common)
        figures = [main]
        if "RSI" in enough:
            figures.append(charts.rsi_chart(ohlc, x_range=main.x_range, **common))
        if "MACD" in enough:
            figures.append(charts.macd_chart(ohlc, x_range=main.x_range, **common))
        for fig in figures:
            fig.css_classes = ["cv-candles"]
        self.area.objects = [pn.pane.Bokeh(fig, sizing_mode="stretch_width") for fig in figures]

    def __panel__(self) -> pn.Column:
        return pn.Column(
            pn.FlexBox(self.coin, self.chosen, sizing_mode="stretch_width"),
            self.notes,
            self.area,
            sizing_mode="stretch_width",
        )
