"""One browser session of the dashboard: widgets, layout and the refresh loop.

Sessions never call the ingester themselves: they read `SharedData` (one per process),
and re-render when its data version changes (checked twice a second, in memory).
Every provider string that reaches HTML goes through `esc`; Bokeh canvases, Tabulator
cells and native <select> options render text, never markup.
"""

from __future__ import annotations

import io
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, ClassVar

import holoviews as hv
import pandas as pd
import panel as pn
from bokeh.models import GlyphRenderer, Line, LogScale, Range1d
from bokeh.models.widgets.tables import NumberFormatter

from cryptoviz.dashboard import charts
from cryptoviz.dashboard.data import IngesterRejected, IngesterUnavailable, SharedData, Snapshot, data_age
from cryptoviz.dashboard.logic import (
    CHANGE_COLUMNS,
    CUSTOM,
    GROUPS,
    PERIODS,
    default_selection,
    esc,
    format_age,
    latest_table,
    magnitude_span,
    needs_scale_advice,
    percent_change,
    period_window,
    refresh_spacing,
    streaming_status,
)

log = logging.getLogger(__name__)

MODES = {"Shared scale": "shared", "Separate charts": "separate", "Percent change": "percent"}
INDICATORS = ["SMA", "EMA", "Bollinger", "RSI", "MACD"]
TICK_MS = 500

CSS = """
.cv-cards {display:flex; flex-wrap:wrap; gap:8px; width:100%}
.cv-card {flex:1 1 120px; border:1px solid rgba(128,128,128,.35); border-radius:8px; padding:8px 12px; min-width:120px}
.cv-card .cv-label {font-size:12px; opacity:.75}
.cv-card .cv-value {font-size:20px; font-weight:600; overflow-wrap:anywhere}
.cv-status-green {color:#15803d} .cv-status-amber {color:#b45309} .cv-status-red {color:#b91c1c}
.cv-dot {display:inline-block; width:.7em; height:.7em; border-radius:50%; background:currentColor; margin-right:.35em}
.cv-groups {display:flex; flex-wrap:wrap; gap:8px; width:100%}
.cv-group {flex:1 1 160px} .cv-group b {display:block; font-size:13px}
.cv-group span {font-size:13px; overflow-wrap:anywhere}
"""


PHONE_CSS = """
@media (max-width: 700px) {
  #content {flex-direction: column; height: auto; overflow-y: auto}
  #sidebar:not(.hidden) {min-width: 100%; max-width: 100%; height: auto; border-right: 0}
  #main {padding: 0 4px; overflow: visible; height: auto}
  #main .card-margin {margin: 4px 0}
  #main .pn-wrapper {padding: 4px}
}
"""


class LiveChart:
    """A chart built with hvPlot and rendered to Bokeh once. New data of the same shape replaces
    the line sources and axis ranges in place (milliseconds, and the browser keeps the figure);
    any other chart (candlesticks, indicators) is re-rendered."""

    def __init__(self, build: Callable[[pd.DataFrame], hv.Element], data: pd.DataFrame, **pane: Any) -> None:
        self.build = build
        self.figure = pn.pane.Bokeh(self._render(data), sizing_mode="stretch_width")
        self.pane = pn.Column(self.figure, sizing_mode="stretch_width", **pane)

    def _render(self, data: pd.DataFrame) -> Any:
        return hv.render(self.build(data), backend="bokeh")

    def send(self, data: pd.DataFrame) -> None:
        if not _update_lines(self.figure.object, data):
            self.figure.object = self._render(data)


def _watched() -> bool:
    """Is a browser connected to this session? Bokeh keeps a session a while after its tab closes
    (in case it reconnects) and discards it only while none of its callbacks is pending."""
    context = getattr(pn.state.curdoc, "session_context", None)
    session = getattr(context, "_session", None)  # Bokeh's ServerSession; absent outside a server
    return session is None or session.connection_count > 0


def _update_lines(figure: Any, data: pd.DataFrame) -> bool:
    """Swap the data of a line chart (one line per `coin`) in place; False if it is another kind."""
    lines = [r for r in figure.renderers if isinstance(r, GlyphRenderer) and isinstance(r.glyph, Line)]
    if not lines or len(lines) != len(figure.renderers) or data.empty:
        return False
    parts = dict(tuple(data.groupby("coin", sort=False))) if len(lines) > 1 else {lines[0].name: data}
    updates = []
    for renderer in lines:
        part = parts.get(renderer.name)
        columns = list(renderer.data_source.data)
        if part is None or any(c not in part for c in columns):
            return False
        updates.append((renderer, {c: part[c].to_numpy() for c in columns}))
    for renderer, columns in updates:
        renderer.data_source.data = columns
    if isinstance(figure.x_range, Range1d):
        figure.x_range.update(start=data["time"].min(), end=data["time"].max())
    values = data["value"].dropna()
    if isinstance(figure.y_range, Range1d) and not values.empty:
        low, high = float(values.min()), float(values.max())
        if isinstance(figure.y_scale, LogScale) and low > 0:
            figure.y_range.update(start=low / 1.05, end=high * 1.05)
        else:
            pad = (high - low) * 0.05 or abs(high) * 0.05 or 1.0
            figure.y_range.update(start=low - pad, end=high + pad)
    return True


def _coin_chart(data: pd.DataFrame, *, title: str, logy: bool, xlabel: str) -> hv.Element:
    return charts.coin_chart(data, title, logy=logy, xlabel=xlabel)


@dataclass(frozen=True)
class Settings:
    ingester_url: str
    scrape_interval: float = 300.0


def _show_alerts(column: pn.Column, alerts: list[pn.pane.Alert]) -> None:
    """Replace a column's alerts only when what they say changed.

    Swapping in new Bokeh models on every tick raced with the browser's in-flight messages
    ("reference pNNNN isn't known"); unchanged banners keep their models.
    """

    def shown(items: list[Any]) -> list[tuple[Any, ...]]:
        return [(item.object, getattr(item, "alert_type", None), tuple(item.css_classes)) for item in items]

    if shown(alerts) != shown(column.objects):
        column.objects = alerts


class Dashboard:
    """The widgets and views of one session."""

    live: ClassVar[weakref.WeakSet[Dashboard]] = weakref.WeakSet()
    """The sessions of this process, to share the server's time between their refreshes."""

    def __init__(self, shared: SharedData, settings: Settings) -> None:
        Dashboard.live.add(self)
        self.next_refresh = 0.0
        self.watched = True
        self.shared = shared
        self.settings = settings
        self.snap: Snapshot | None = None
        self.history = pd.DataFrame()
        self.view_frame = pd.DataFrame()
        self.seen_version = -1
        self.seen_reachable = True
        self.fetch_error = ""
        self._busy = False
        self._defaulted = False
        self._status_html = ""
        self._stale_level = "green"
        self.timings: dict[str, float] = {"cards": 0.0, "views": 0.0}

        self.coins = pn.widgets.MultiChoice(
            name="Coins", options={}, placeholder="Search coins…", search_option_limit=25, sizing_mode="stretch_width"
        )
        self.period = pn.widgets.RadioButtonGroup(
            name="Period", options=[*PERIODS, CUSTOM], value="7d", button_type="default", sizing_mode="stretch_width"
        )
        self.custom = pn.widgets.DatetimeRangePicker(
            name="Custom range (UTC)", visible=False, sizing_mode="stretch_width", css_classes=["cv-custom"]
        )
        self.mode = pn.widgets.RadioButtonGroup(
            name="Display", options=MODES, value="shared", orientation="vertical", sizing_mode="stretch_width"
        )
        self.log_scale = pn.widgets.Checkbox(name="Log scale", css_classes=["cv-log"])
        self.tz = pn.widgets.RadioButtonGroup(name="Time", options=["UTC", "Local"], value="UTC")
        self.candle_coin = pn.widgets.Select(name="Candlestick coin", options=[], sizing_mode="stretch_width")
        self.indicators = pn.widgets.CheckButtonGroup(
            name="Indicators", options=INDICATORS, value=["SMA", "Bollinger"], sizing_mode="stretch_width"
        )
        self.download = pn.widgets.FileDownload(
            callback=self._csv, filename="cryptoviz-view.csv", label="Download CSV of this view", button_type="primary"
        )

        self.banners = pn.Column(sizing_mode="stretch_width")
        self.metrics = pn.pane.HTML(sizing_mode="stretch_width", stylesheets=[CSS])
        self.advice_text = pn.pane.Alert("", alert_type="warning", sizing_mode="stretch_width")
        fixes = {
            "Show percent change": lambda _e: setattr(self.mode, "value", "percent"),
            "Use separate charts": lambda _e: setattr(self.mode, "value", "separate"),
            "Use log scale": lambda _e: setattr(self.log_scale, "value", True),
        }
        buttons = []
        for index, (label, fix) in enumerate(fixes.items()):
            buttons.append(pn.widgets.Button(name=label, button_type="primary" if index == 0 else "default"))
            buttons[-1].on_click(fix)
        self.advice = pn.Column(self.advice_text, pn.FlexBox(*buttons), sizing_mode="stretch_width", visible=False)
        self.groups = pn.pane.HTML(sizing_mode="stretch_width", stylesheets=[CSS])
        self.help = pn.Column(sizing_mode="stretch_width")
        self.chart_area = pn.FlexBox(sizing_mode="stretch_width", flex_wrap="wrap")
        self.candle_area = pn.Column(sizing_mode="stretch_width")
        # dynamic: a hidden tab is neither rendered nor updated
        self.tabs = pn.Tabs(
            ("Prices", self.chart_area),
            (
                "Candlesticks & indicators",
                pn.Column(
                    pn.FlexBox(self.candle_coin, self.indicators, sizing_mode="stretch_width"),
                    self.candle_area,
                    sizing_mode="stretch_width",
                ),
            ),
            dynamic=True,
            sizing_mode="stretch_width",
        )
        self._charts: dict[str, LiveChart] = {}
        self._candles: list[LiveChart] = []
        self._chart_shape: tuple | None = None
        self._candle_shape: tuple | None = None
        self.alerts = pn.pane.HTML(sizing_mode="stretch_width")
        change = NumberFormatter(format="+0.00")
        money = NumberFormatter(format="$0,0")
        self.table = pn.widgets.Tabulator(
            latest_table(pd.DataFrame()),
            formatters={
                "Price": NumberFormatter(format="$0,0.[000000]"),
                **dict.fromkeys(CHANGE_COLUMNS, change),
                "Market cap": money,
                "Volume 24h": money,
            },
            disabled=True,
            show_index=False,
            sizing_mode="stretch_width",
            height=420,
            layout="fit_data_stretch",
            pagination=None,
        )
        self.table.style.map(_change_colour, subset=list(CHANGE_COLUMNS))
        # the table joins the page once it has loaded (`on_load`): the first chart paints without waiting for it
        self.table_slot = pn.Column(sizing_mode="stretch_width")

        for widget in (self.coins, self.mode, self.log_scale, self.tz):
            widget.param.watch(self._on_view_change, "value")
        self.period.param.watch(self._on_period, "value")
        self.custom.param.watch(self._on_view_change, "value")
        self.candle_coin.param.watch(self._render_candles_cb, "value")
        self.tabs.param.watch(self._render_candles_cb, "active")
        self.indicators.param.watch(self._render_candles_cb, "value")

    # ---- layout ---------------------------------------------------------------------------
    def template(self) -> pn.template.FastListTemplate:
        sidebar = [
            self.coins,
            pn.pane.HTML("<b>Period</b>"),
            self.period,
            self.custom,
            pn.pane.HTML("<b>Display</b>"),
            self.mode,
            self.log_scale,
            pn.pane.HTML("<b>Time zone</b>"),
            self.tz,
            self.download,
            pn.pane.HTML(
                f"<small>Data from {esc(self.settings.ingester_url)}; expected every "
                f"{format_age(self.settings.scrape_interval)}.</small>"
            ),
        ]
        main = [
            pn.Column(
                self.banners,
                self.metrics,
                self.groups,
                self.advice,
                self.help,
                self.tabs,
                self.alerts,
                pn.pane.HTML("<h3>Latest prices</h3>"),
                self.table_slot,
                sizing_mode="stretch_width",
            )
        ]
        template = pn.template.FastListTemplate(
            title="CryptoViz",
            # Panel's busy spinner follows one process-wide flag: every tick of any tab queued an update on
            # every other tab's document, and the queue kept closed tabs' sessions from being discarded
            busy_indicator=None,
            # one Bokeh root per template item, and each root re-walks the whole document: one Column
            sidebar=[pn.Column(*sidebar, sizing_mode="stretch_width")],
            main=main,
            theme_toggle=True,
            accent="#0f766e",
            sidebar_width=300,
        )
        template.config.raw_css.append(PHONE_CSS)
        return template

    # ---- refresh loop -----------------------------------------------------------------------
    def start(self) -> None:
        """First render inside the page's initial document (no extra round trip), then tick."""
        self.refresh(defer_views=False)
        pn.state.add_periodic_callback(self._tick, period=TICK_MS)

    def on_load(self) -> None:
        """The page has loaded: add the prices table; the browser's time zone is now known, redraw if used."""
        self.table_slot.objects = [self.table]
        if self.tz.value == "Local":
            self._render_views()

    def _tick(self) -> None:
        self.watched = _watched()
        if not self.watched:
            return  # the tab is gone: an idle tick lets Bokeh discard the session (a busy one blocks that)
        new_data = self.shared.version != self.seen_version and time.monotonic() >= self.next_refresh
        with pn.io.hold():  # cards and banners reach the browser together (red status with its banner)
            if new_data or self.shared.reachable != self.seen_reachable:
                self.refresh()
                cost = self.timings["cards"] + self.timings["views"]  # the charts' share: the previous refresh's
                watched = sum(1 for session in Dashboard.live if session.watched)
                self.next_refresh = time.monotonic() + refresh_spacing(cost, watched, TICK_MS / 1000)
            else:
                level = self._stale_level
                self._render_metrics()
                if self._stale_level != level:  # e.g. amber → red: the stale-data banner appears
                    self._render_banners()

    def refresh(self, defer_views: bool = True) -> None:
        """New data (or reachability) from the shared cache → every view of this session.

        Cards, banners and the table go out first; the charts follow on the next tick, so
        the numbers update without waiting for the (slower) plot rendering.
        """
        started = time.perf_counter()
        self.seen_version, self.seen_reachable = self.shared.version, self.shared.reachable
        try:
            self.snap = self.shared.snapshot()
            self.fetch_error = ""
        except (IngesterUnavailable, IngesterRejected) as exc:
            self.fetch_error = str(exc)  # keep showing the last data we had
        self._render_metrics()
        self._render_banners()
        if self.snap is not None:
            self._update_options()
            self._render_table()
            self._render_groups()
            self._render_alerts()
        self.timings["cards"] = time.perf_counter() - started
        doc = pn.state.curdoc
        if defer_views and doc is not None and doc.session_context is not None:
            doc.add_next_tick_callback(self._render_views_timed)
        else:
            self._render_views_timed()

    def _render_views_timed(self) -> None:
        started = time.perf_counter()
        self._render_views()
        self.timings["views"] = time.perf_counter() - started
        log.debug("refresh: cards %.0f ms, views %.0f ms", self.timings["cards"] * 1e3, self.timings["views"] * 1e3)

    def _on_view_change(self, *_: Any) -> None:
        if not self._busy:
            self._render_views()

    def _on_period(self, event: Any) -> None:
        self.custom.visible = event.new == CUSTOM
        if event.new == CUSTOM and not self.custom.value and not self.history.empty:
            self._busy = True  # one render below, not a second one from the range's own watcher
            try:
                self.custom.value = (
                    self.history["timestamp"].min().to_pydatetime().replace(tzinfo=None),
                    self.history["timestamp"].max().to_pydatetime().replace(tzinfo=None),
                )
            finally:
                self._busy = False
        self._on_view_change()

    def _render_candles_cb(self, *_: Any) -> None:
        if not self._busy:
            self._render_candles()

    # ---- data → widgets -------------------------------------------------------------------
    def _latest(self) -> pd.DataFrame:
        return self.snap.latest if self.snap is not None else pd.DataFrame()

    def _update_options(self) -> None:
        latest = self._latest()
        if latest.empty:
            return
        ordered = latest.sort_values(["group", "price"], ascending=[True, False], key=_group_order)
        # Bokeh's MultiChoice renders labels as HTML: escape them (values are matched, not shown).
        options = {esc(f"{row.symbol} · {row.name}"): row.symbol for row in ordered.itertuples()}
        self._busy = True
        try:
            if options != self.coins.options:
                keep = [s for s in self.coins.value if s in options.values()]
                self.coins.options = options
                if keep != list(self.coins.value):
                    self.coins.value = keep
            if not self.coins.value and not self._defaulted:  # once: an emptied selection stays empty
                self.coins.value = default_selection(latest, dict(zip(latest.symbol, latest.group, strict=True)))
                self._defaulted = True
        finally:
            self._busy = False

    def _window(self) -> tuple[datetime | None, datetime | None]:
        stats = self.snap.stats if self.snap else {}
        newest = _parse_time(stats.get("last_update"))
        custom = None
        if self.period.value == CUSTOM and self.custom.value:
            custom = tuple(pd.Timestamp(v).tz_localize("UTC").to_pydatetime() for v in self.custom.value)
        start, end = period_window(self.period.value, newest, custom)
        if start is None and self.period.value != CUSTOM:  # "all": the API defaults to one day
            start = _parse_time(stats.get("first_update"))
        return start, end

    def _tzinfo(self) -> tuple[str, str]:
        """(pandas tz name, axis label) for the chosen time zone; Local is the browser's."""
        if self.tz.value == "Local":
            zone = getattr(pn.state.browser_info, "timezone", None) or "UTC"
            return zone, f"Time ({zone})"
        return "UTC", "Time (UTC)"

    def _render_views(self) -> None:
        """Fetch the history of the selection (from the shared cache) and draw the charts.

        The changes go to the browser as one batch: replaced figures arriving in several messages
        raced with Bokeh's client, which then reported models as unknown ("reference pNNNN isn't known").
        """
        with pn.io.hold():
            self._render_views_now()

    def _render_views_now(self) -> None:
        symbols = tuple(sorted(self.coins.value))
        if self.snap is not None and symbols:
            try:
                start, end = self._window()
                self.history = self.shared.history(symbols, start, end)
            except ValueError as exc:  # an impossible custom range
                self.help.objects = [pn.pane.Alert(esc(str(exc)), alert_type="warning")]
                return
            except IngesterUnavailable as exc:
                self.fetch_error = str(exc)
        elif not symbols:
            self.history = self.history.iloc[0:0]
        self._busy = True
        try:
            have = set(self.history.get("symbol", []))
            present = [s for s in self.coins.value if s in have]  # selection order: biggest coin first
            self.candle_coin.options = present
            if present and self.candle_coin.value not in present:
                self.candle_coin.value = present[0]
        finally:
            self._busy = False
        self._render_charts(symbols)
        self._render_candles()

    def _view(self, symbols: tuple[str, ...]) -> pd.DataFrame:
        """The history rows being shown, with display labels, local time and the plotted value."""
        frame = self.history[self.history["symbol"].isin(symbols)].copy() if not self.history.empty else self.history
        if frame.empty:
            return frame
        zone, _ = self._tzinfo()
        frame["time"] = frame["timestamp"].dt.tz_convert(zone).dt.tz_localize(None)
        simulated = self._simulated_symbols()
        frame["coin"] = frame["symbol"].map(lambda s: f"{s} (simulated)" if s in simulated else s)
        frame["value"] = percent_change(frame) if self.mode.value == "percent" else frame["close"]
        return frame

    def _simulated_symbols(self) -> set[str]:
        latest = self._latest()
        if latest.empty or "simulated" not in latest:
            return set()
        return set(latest.loc[latest["simulated"].astype(bool), "symbol"])

    def _render_charts(self, symbols: tuple[str, ...]) -> None:
        help_items: list[Any] = []
        view = self._view(symbols)
        self.view_frame = view
        _, xlabel = self._tzinfo()
        missing = [s for s in symbols if view.empty or s not in set(view["symbol"])]
        if self.snap is not None and not self._latest().empty and not symbols:
            help_items.append(
                pn.pane.Alert(
                    "No coin selected: pick one or more coins in the sidebar (type to search).", alert_type="info"
                )
            )
        if missing and self.snap is not None and not self._latest().empty:
            help_items.append(
                pn.pane.Alert(
                    f"No data in this period for: {esc(', '.join(missing))}. Choose a longer period or “all”.",
                    alert_type="info",
                )
            )
        _show_alerts(self.help, help_items)
        self._render_advice(symbols)
        if view.empty:
            self.chart_area.objects, self._chart_shape = [], None
            return
        logy, mode = self.log_scale.value, self.mode.value
        parts = dict(tuple(view.groupby("symbol", sort=True)))
        shape = (mode, logy, xlabel, tuple(view["coin"].unique()))
        if shape == self._chart_shape:  # same charts, new data or period: update them in place
            if mode == "separate":
                for symbol, part in parts.items():
                    self._charts[symbol].send(part)
            else:
                self._charts["shared"].send(view)
            return
        self._chart_shape = shape
        if mode == "separate":
            self._charts = {
                symbol: LiveChart(
                    partial(_coin_chart, title=str(part["coin"].iloc[0]), logy=logy, xlabel=xlabel),
                    part,
                    css_classes=["cv-coin-chart"],
                    styles={"flex": "1 1 420px"},
                )
                for symbol, part in parts.items()
            }
        else:
            build = partial(charts.shared_chart, logy=logy, xlabel=xlabel, percent=mode == "percent")
            self._charts = {"shared": LiveChart(build, view, css_classes=["cv-chart"])}
        self.chart_area.objects = [chart.pane for chart in self._charts.values()]

    def _render_advice(self, symbols: tuple[str, ...]) -> None:
        """Shared linear scale over > 2 orders of magnitude: say so and offer the fixes."""
        latest = self._latest()
        prices = latest.loc[latest["symbol"].isin(symbols), "price"].tolist() if not latest.empty else []
        show = self.mode.value == "shared" and not self.log_scale.value and needs_scale_advice(prices)
        if show:
            self.advice_text.object = (
                f"The selected coins span {magnitude_span(prices):,.0f}× in price (more than two orders of "
                "magnitude): on one linear scale the cheaper ones look flat. Switch view:"
            )
        self.advice.visible = show

    def _render_candles(self) -> None:
        """Candlesticks and indicator sub-plots of one coin (only while their tab is shown)."""
        symbol = self.candle_coin.value
        ohlc = self.history[self.history["symbol"] == symbol] if symbol and not self.history.empty else None
        if ohlc is None or ohlc.empty or self.tabs.active != 1:
            if ohlc is None or ohlc.empty:
                self.candle_area.objects, self._candle_shape = [], None
            return
        zone, xlabel = self._tzinfo()
        ohlc = ohlc.assign(time=ohlc["timestamp"].dt.tz_convert(zone).dt.tz_localize(None)).reset_index(drop=True)
        chosen = list(self.indicators.value)
        shape = (symbol, tuple(chosen), self.log_scale.value, xlabel)
        if shape == self._candle_shape:
            for chart in self._candles:
                chart.send(ohlc)
            return
        self._candle_shape = shape
        builders = [
            partial(charts.candle_chart, title=f"{symbol} candlesticks", chosen=chosen, logy=shape[2], xlabel=xlabel)
        ]
        if "RSI" in chosen:
            builders.append(partial(charts.rsi_chart, xlabel=xlabel))
        if "MACD" in chosen:
            builders.append(partial(charts.macd_chart, xlabel=xlabel))
        self._candles = [LiveChart(build, ohlc, css_classes=["cv-candles"]) for build in builders]
        self.candle_area.objects = [chart.pane for chart in self._candles]

    def _render_table(self) -> None:
        latest = self._latest()
        if not latest.empty:
            self.table.value = latest_table(latest)

    def _render_groups(self) -> None:
        latest = self._latest()
        if latest.empty:
            self.groups.object = ""
            return
        cells = []
        for index, group in enumerate(GROUPS):
            members = latest.loc[latest["group"] == group].sort_values("price", ascending=False)
            names = ", ".join(esc(s) for s in members["symbol"]) or "–"
            cells.append(
                f'<div class="cv-group"><b>{esc(group)}</b><span data-testid="group-{index}">{names}</span></div>'
            )
        self.groups.object = f'<div class="cv-groups" data-testid="groups">{"".join(cells)}</div>'

    def _render_alerts(self) -> None:
        alerts = self.snap.alerts if self.snap is not None else pd.DataFrame()
        if alerts.empty:
            self.alerts.object = ""
            return
        items = "".join(
            f"<li><b>{esc(a.get('symbol'))}</b> {esc(a.get('message') or a.get('condition'))} "
            f"<small>({esc(_fmt_time(a.get('fired_at'), self._tzinfo()[0]))})</small></li>"
            for a in alerts.sort_values("fired_at", ascending=False).head(10).to_dict("records")
        )
        self.alerts.object = f'<h3>Active alerts (24 h)</h3><ul data-testid="alerts">{items}</ul>'

    def _render_metrics(self) -> None:
        stats = self.snap.stats if self.snap is not None else {}
        last = _parse_time(stats.get("last_update"))
        age = data_age(stats)
        status = streaming_status(age, self.settings.scrape_interval, reachable=self.shared.reachable)
        zone, _ = self._tzinfo()
        last_text = _fmt_time(last, zone) if last else "–"
        cards = [
            ("records", "Total records", f"{stats.get('records', 0):,}" if stats else "–"),
            ("coins", "Coins tracked", f"{stats.get('coins', 0):,}" if stats else "–"),
            ("last-update", "Last update", f"{last_text}<br><small>{format_age(age) + ' ago' if age else ''}</small>"),
            (
                "status",
                "Streaming status",
                f'<span class="cv-status-{status.level}"><span class="cv-dot"></span>{esc(status.text)}</span>',
            ),
        ]
        body = "".join(
            f'<div class="cv-card"><div class="cv-label">{label}</div>'
            f'<div class="cv-value" data-testid="metric-{key}" data-level="{status.level if key == "status" else ""}">'
            f"{value}</div></div>"
            for key, label, value in cards
        )
        html = f'<div class="cv-cards">{body}</div>'
        if html != self._status_html:
            self._status_html = html
            self.metrics.object = html
        self._stale_level = status.level

    def _render_banners(self) -> None:
        items: list[Any] = []
        stats = self.snap.stats if self.snap is not None else {}
        if not self.shared.reachable or self.fetch_error:
            since = self.shared.unreachable_since
            when = f" since {since:%H:%M:%S} UTC" if since else ""
            items.append(
                pn.pane.Alert(
                    f"⚠️ The ingester at {esc(self.settings.ingester_url)} is unreachable{when}. "
                    + (
                        "Showing the last data received; this page reconnects by itself."
                        if self.snap is not None
                        else "No data received yet; this page connects by itself once it answers."
                    ),
                    alert_type="danger",
                    css_classes=["cv-banner-unreachable"],
                )
            )
        elif self.snap is not None and not stats.get("records"):
            items.append(
                pn.pane.Alert(
                    "No data yet: the ingester has stored no quotes. Start a scraper (`cryptoviz scrape --loop`) "
                    "or the whole local pipeline (`cryptoviz dev`); charts appear as soon as quotes arrive.",
                    alert_type="info",
                )
            )
        elif self._stale_level == "red":
            items.append(
                pn.pane.Alert(
                    "Data is stale: no new quotes for more than five scrape intervals. Check the scraper and NATS.",
                    alert_type="warning",
                )
            )
        if stats.get("simulated"):
            items.append(
                pn.pane.Alert(
                    "Simulated data: quotes from the local demo provider, not live market prices "
                    "(marked “(simulated)” in charts and table).",
                    alert_type="secondary",
                    css_classes=["cv-banner-simulated"],
                )
            )
        _show_alerts(self.banners, items)

    # ---- export ------------------------------------------------------------------------------
    def _csv(self) -> io.StringIO:
        view = self.view_frame
        columns = ["time", "symbol", "name", "open", "high", "low", "close", "value"]
        out = view[[c for c in columns if c in view]] if not view.empty else pd.DataFrame(columns=columns)
        if self.mode.value == "percent" and "value" in out:
            out = out.rename(columns={"value": "change_pct"})
        else:
            out = out.drop(columns=["value"], errors="ignore")
        out = out.rename(columns={"time": f"time_{self._tzinfo()[0].replace('/', '_')}"})
        buffer = io.StringIO()
        out.to_csv(buffer, index=False)
        buffer.seek(0)
        return buffer


def _group_order(column: pd.Series) -> pd.Series:
    if column.name == "group":
        return column.map({g: i for i, g in enumerate(GROUPS)}).fillna(len(GROUPS))
    return column


def _change_colour(value: Any) -> str:
    if value is None or pd.isna(value) or value == 0:
        return ""
    return "color: #15803d" if value > 0 else "color: #b91c1c"


def _parse_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return (
            pd.Timestamp(value).tz_localize("UTC").to_pydatetime()
            if pd.Timestamp(value).tzinfo is None
            else (pd.Timestamp(value).tz_convert("UTC").to_pydatetime())
        )
    except (ValueError, TypeError):
        return None


def _fmt_time(value: Any, zone: str) -> str:
    stamp = _parse_time(value)
    if stamp is None:
        return "–"
    return pd.Timestamp(stamp).tz_convert(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def build(shared: SharedData, settings: Settings) -> pn.template.FastListTemplate:
    """Panel's per-session entry point."""
    dashboard = Dashboard(shared, settings)
    template = dashboard.template()
    dashboard.start()
    pn.state.onload(dashboard.on_load)
    return template
