"""The controls: coins, period (with a custom range to the minute), display mode, log scale, time zone,
CSV download. Each widget is made `from_param` on `DashboardState`, so it and the URL stay in step.

Toggles show their state plainly (the selected button filled with the accent colour, ≥ 3:1 against the
unselected ones) and are at least 40 px tall, a finger's width, on every screen.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import panel as pn
import param

from cryptoviz.dashboard.logic import CUSTOM, esc, format_age
from cryptoviz.dashboard.state import MODES, DashboardState

TOGGLE_CSS = """
.bk-btn-group {flex-wrap: wrap; gap: 4px}
.bk-btn-group > .bk-btn {flex: 1 0 auto; border-radius: 6px !important; margin: 0 !important}
.bk-btn {min-height: 40px; font-size: 14px}
.bk-btn:not(.bk-active) {background: var(--cv-off-bg) !important; color: var(--cv-off-fg) !important;
  border: 1px solid var(--cv-off-border) !important}
.bk-btn.bk-active {background: var(--cv-on-bg) !important; color: var(--cv-on-fg) !important;
  border: 1px solid var(--cv-on-bg) !important; font-weight: 600; box-shadow: none !important}
"""
INPUT_CSS = ".bk-input {min-height: 40px; font-size: 16px}"
"""16 px: iOS Safari zooms the page into any smaller input it focuses."""


class Sidebar(pn.viewable.Viewer):
    """The sidebar's widgets, bound to the session's state."""

    state = param.ClassSelector(class_=DashboardState)

    def __init__(self, ingester_url: str, scrape_interval: float, theme_switch: pn.widgets.Button,
                 **params: Any) -> None:  # fmt: skip
        super().__init__(**params)
        state = self.state
        self.find = pn.widgets.AutocompleteInput(
            name="Add a coin",
            placeholder="Type a symbol or name…",
            options=[],
            search_strategy="includes",  # "link" → LINK · Chainlink only, not every fuzzy match
            case_sensitive=False,
            min_characters=1,
            restrict=True,
            sizing_mode="stretch_width",
            stylesheets=[INPUT_CSS],
        )
        self.find.param.watch(self._add_found, "value")
        self.coins = pn.widgets.CheckButtonGroup.from_param(
            state.param.coins, name="Coins", sizing_mode="stretch_width", stylesheets=[TOGGLE_CSS]
        )
        self.period = pn.widgets.RadioButtonGroup.from_param(
            state.param.period, name="Period", sizing_mode="stretch_width", stylesheets=[TOGGLE_CSS]
        )
        self.start = pn.widgets.DatetimePicker.from_param(
            state.param.custom_start,
            name="From (UTC)",
            css_classes=["cv-custom"],
            sizing_mode="stretch_width",
            stylesheets=[INPUT_CSS],
        )
        self.end = pn.widgets.DatetimePicker.from_param(
            state.param.custom_end,
            name="To (UTC)",
            css_classes=["cv-custom"],
            sizing_mode="stretch_width",
            stylesheets=[INPUT_CSS],
        )
        self.mode = pn.widgets.RadioButtonGroup.from_param(
            state.param.mode,
            name="Display",
            options=MODES,
            orientation="vertical",
            sizing_mode="stretch_width",
            stylesheets=[TOGGLE_CSS],
        )
        self.log = pn.widgets.Toggle.from_param(
            state.param.logy,
            name="Log scale",
            css_classes=["cv-log"],
            sizing_mode="stretch_width",
            stylesheets=[TOGGLE_CSS],
        )
        self.tz = pn.widgets.RadioButtonGroup.from_param(
            state.param.tz, name="Time zone", sizing_mode="stretch_width", stylesheets=[TOGGLE_CSS]
        )
        self.download = pn.widgets.FileDownload(
            callback=self._csv,
            filename="cryptoviz-view.csv",
            label="Download CSV of this view",
            button_type="primary",
            sizing_mode="stretch_width",
            stylesheets=[".bk-btn {min-height: 40px}"],
        )
        self.custom = pn.Column(sizing_mode="stretch_width")  # the pickers, only while "custom" is chosen
        self.theme_switch = theme_switch
        self.note = pn.pane.HTML(
            f"<small>Data from {esc(ingester_url)}; expected every {format_age(scrape_interval)}.</small>"
        )
        self.show_custom()

    @param.depends("state.period", watch=True)
    def show_custom(self) -> None:
        self.custom.objects = [self.start, self.end] if self.state.period == CUSTOM else []

    @param.depends("state.snap", watch=True)
    def update_options(self) -> None:
        latest = self.state.latest
        if latest.empty:
            return
        ordered = latest.sort_values("market_cap", ascending=False, na_position="last")
        # AutocompleteInput shows its completions as text: provider names need no escaping here
        options = [f"{row.symbol} · {row.name}" for row in ordered.itertuples()]
        if options != self.find.options:
            self.find.options = options

    def _add_found(self, event: Any) -> None:
        if not event.new:
            return
        symbol = str(event.new).split(" · ", 1)[0]
        if symbol in self.state.param.coins.objects and symbol not in self.state.coins:
            self.state.coins = [*self.state.coins, symbol]
        self.find.value = ""

    def _csv(self) -> io.StringIO:
        view = self.state.view()
        columns = ["time", "symbol", "name", "open", "high", "low", "close", "value"]
        out = view[[c for c in columns if c in view]] if not view.empty else pd.DataFrame(columns=columns)
        if self.state.mode == "percent" and "value" in out:
            out = out.rename(columns={"value": "change_pct"})
        else:
            out = out.drop(columns=["value"], errors="ignore")
        out = out.rename(columns={"time": f"time_{self.state.zone()[0].replace('/', '_')}"})
        buffer = io.StringIO()
        out.to_csv(buffer, index=False)
        buffer.seek(0)
        return buffer

    def __panel__(self) -> pn.Column:
        heading = lambda text: pn.pane.HTML(f"<b>{text}</b>", margin=(8, 10, 0, 10))  # noqa: E731
        return pn.Column(
            heading("Coins"),
            self.find,
            self.coins,
            heading("Period"),
            self.period,
            self.custom,
            heading("Display"),
            self.mode,
            self.log,
            heading("Time zone"),
            self.tz,
            self.download,
            self.theme_switch,
            self.note,
            sizing_mode="stretch_width",
        )
