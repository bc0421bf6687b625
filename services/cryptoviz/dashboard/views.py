"""The text parts of the page: status cards, banners, price groups and the latest-prices table.

Each is a small `pn.viewable.Viewer` reading `DashboardState`. Every provider string that reaches HTML
goes through `esc`; Tabulator cells render text, never markup.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param

from cryptoviz.dashboard.data import data_age
from cryptoviz.dashboard.logic import (
    CHANGE_COLUMNS,
    GROUPS,
    esc,
    format_age,
    latest_table,
    round_price,
    streaming_status,
)
from cryptoviz.dashboard.state import DashboardState, parse_time

CSS = """
.cv-cards {display:flex; flex-wrap:wrap; gap:8px; width:100%}
.cv-card {flex:1 1 140px; border:1px solid rgba(128,128,128,.35); border-radius:8px; padding:8px 12px; min-width:0}
.cv-card .cv-label {font-size:12px; opacity:.8}
.cv-card .cv-value {font-size:18px; font-weight:600; overflow-wrap:anywhere}
.cv-status-green {color:var(--cv-up)} .cv-status-amber {color:var(--cv-amber)} .cv-status-red {color:var(--cv-down)}
.cv-dot {display:inline-block; width:.7em; height:.7em; border-radius:50%; background:currentColor; margin-right:.35em}
.cv-groups {display:flex; flex-wrap:wrap; gap:8px; width:100%}
.cv-group {flex:1 1 160px; min-width:0} .cv-group b {display:block; font-size:13px}
.cv-group span {font-size:13px; overflow-wrap:anywhere}
"""


def fmt_time(value: Any, zone: str) -> str:
    stamp = parse_time(value)
    if stamp is None:
        return "–"
    return pd.Timestamp(stamp).tz_convert(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def show_alerts(column: pn.Column, alerts: list[pn.pane.Alert]) -> None:
    """Replace a column's alerts only when what they say changed.

    Swapping in new Bokeh models on every tick raced with the browser's in-flight messages
    ("reference pNNNN isn't known"); unchanged banners keep their models.
    """

    def shown(items: list[Any]) -> list[tuple[Any, ...]]:
        return [(item.object, getattr(item, "alert_type", None), tuple(item.css_classes)) for item in items]

    if shown(alerts) != shown(column.objects):
        column.objects = alerts


class StatusCards(pn.viewable.Viewer):
    """Total records, coins, last update and the streaming status (green / amber / red)."""

    state = param.ClassSelector(class_=DashboardState)
    level = param.String(default="green", doc="The status level last shown (amber → red raises a banner).")

    def __init__(self, scrape_interval: float, **params: Any) -> None:
        super().__init__(**params)
        self.scrape_interval = scrape_interval
        self.pane = pn.pane.HTML(sizing_mode="stretch_width", stylesheets=[CSS])

    def render(self) -> None:
        """Called on every tick: the data's age moves on between refreshes."""
        stats = self.state.stats
        age = data_age(stats)
        status = streaming_status(age, self.scrape_interval, reachable=self.state.shared.reachable)
        zone, _ = self.state.zone()
        last = fmt_time(stats.get("last_update"), zone) if stats.get("last_update") else "–"
        stored = (stats.get("records") or 0) + (stats.get("candles") or 0)  # quotes and history candles
        cards = [
            ("records", "Total records", f"{stored:,}" if stats else "–"),
            ("coins", "Coins tracked", f"{stats.get('coins', 0):,}" if stats else "–"),
            ("last-update", "Last update", f"{last}<br><small>{format_age(age) + ' ago' if age else ''}</small>"),
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
        if html != self.pane.object:
            self.pane.object = html
        self.level = status.level

    def __panel__(self) -> pn.pane.HTML:
        return self.pane


class Banners(pn.viewable.Viewer):
    """Unreachable ingester, no data yet, stale data, simulated data."""

    state = param.ClassSelector(class_=DashboardState)
    cards = param.ClassSelector(class_=StatusCards)

    def __init__(self, ingester_url: str, **params: Any) -> None:
        super().__init__(**params)
        self.ingester_url = ingester_url
        self.column = pn.Column(sizing_mode="stretch_width")

    @param.depends("state.snap", "state.problem", "cards.level", watch=True)
    def render(self) -> None:
        shared, stats = self.state.shared, self.state.stats
        items: list[Any] = []
        if self.state.problem and self.state.answered and shared.reachable:  # up, but not for this question
            items.append(
                pn.pane.Alert(
                    f"⚠️ The ingester at {esc(self.ingester_url)} could not answer for this view "
                    f"({esc(self.state.problem)}). Showing the last chart received; it asks again with the "
                    "next update.",
                    alert_type="warning",
                    css_classes=["cv-banner-unanswered"],
                )
            )
        elif not shared.reachable or self.state.problem:
            since = shared.unreachable_since
            when = f" since {since:%H:%M:%S} UTC" if since else ""
            items.append(
                pn.pane.Alert(
                    f"⚠️ The ingester at {esc(self.ingester_url)} is unreachable{when}. "
                    + (
                        "Showing the last data received; this page reconnects by itself."
                        if self.state.snap is not None
                        else "No data received yet; this page connects by itself once it answers."
                    ),
                    alert_type="danger",
                    css_classes=["cv-banner-unreachable"],
                )
            )
        elif self.state.snap is not None and not stats.get("records") and not stats.get("candles"):
            items.append(
                pn.pane.Alert(
                    "No data yet: the ingester has stored no quotes. Start a scraper (`cryptoviz scrape --loop`) "
                    "or the whole local pipeline (`cryptoviz dev`); charts appear as soon as quotes arrive.",
                    alert_type="info",
                )
            )
        elif self.cards.level == "red":
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
        show_alerts(self.column, items)

    def __panel__(self) -> pn.Column:
        return self.column


class Groups(pn.viewable.Viewer):
    """The coins of each price group (> $1000, $1 – $1000, < $1), biggest first."""

    state = param.ClassSelector(class_=DashboardState)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.pane = pn.pane.HTML(sizing_mode="stretch_width", stylesheets=[CSS])

    @param.depends("state.snap", watch=True)
    def render(self) -> None:
        latest = self.state.latest
        if latest.empty:
            self.pane.object = ""
            return
        cells = []
        for index, group in enumerate(GROUPS):
            members = latest.loc[latest["group"] == group].sort_values("price", ascending=False)
            names = ", ".join(esc(s) for s in members["symbol"]) or "–"
            cells.append(
                f'<div class="cv-group"><b>{esc(group)}</b><span data-testid="group-{index}">{names}</span></div>'
            )
        html = f'<div class="cv-groups" data-testid="groups">{"".join(cells)}</div>'
        if html != self.pane.object:
            self.pane.object = html

    def __panel__(self) -> pn.pane.HTML:
        return self.pane


def _change_colour(value: Any) -> str:
    if value is None or pd.isna(value) or value == 0:
        return ""
    return "color: var(--cv-up)" if value > 0 else "color: var(--cv-down)"  # the theme's (app.THEME_COLOURS)


class PriceTable(pn.viewable.Viewer):
    """The latest prices, biggest market cap first; sortable; scrolls inside itself on a phone.

    It joins the page once the page has loaded (`attach`): the first chart paints without waiting for it.
    """

    state = param.ClassSelector(class_=DashboardState)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        money = {"type": "money", "symbol": "$", "precision": 0}
        change = {"type": "money", "precision": 2}
        self.table = pn.widgets.Tabulator(
            latest_table(pd.DataFrame()),
            formatters={
                # prices arrive rounded to about four significant digits: show every decimal they keep
                "Price": {"type": "money", "symbol": "$", "precision": False},
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
        self.slot = pn.Column(pn.pane.HTML("<h3>Latest prices</h3>"), sizing_mode="stretch_width")

    def attach(self) -> None:
        self.slot.append(self.table)

    @param.depends("state.snap", watch=True)
    def render(self) -> None:
        latest = self.state.latest
        if not latest.empty:
            table = latest_table(latest)
            table["Price"] = table["Price"].map(round_price)
            self.table.value = table.astype(object).where(table.notna(), None)  # unknown: an empty cell, not NaN

    def __panel__(self) -> pn.Column:
        return self.slot
