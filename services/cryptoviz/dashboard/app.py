"""One browser session of the dashboard: its state, its views, the page around them, the refresh tick.

Sessions never call the ingester themselves: they read `SharedData` (one per process) and refresh
when its data version changes (checked twice a second, in memory). The viewer's choices live in
`DashboardState`, synced with the URL; the views are small `pn.viewable.Viewer`s that depend on it.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import ClassVar

import panel as pn

from cryptoviz.dashboard.alerts_panel import AlertsPanel
from cryptoviz.dashboard.chart_views import CandleCharts, Guidance, PriceCharts
from cryptoviz.dashboard.data import SharedData
from cryptoviz.dashboard.logic import refresh_spacing
from cryptoviz.dashboard.settings import DashboardSettings
from cryptoviz.dashboard.sidebar import TOGGLE_CSS, Sidebar
from cryptoviz.dashboard.state import TABS, URL_PARAMETERS, DashboardState
from cryptoviz.dashboard.views import Banners, Groups, PriceTable, StatusCards

log = logging.getLogger(__name__)

TICK_MS = 500
ACCENT = "#0f766e"
THEME_COLOURS = {
    # toggles: selected the accent, filled; unselected the page's surface with a border (≥ 3:1 apart,
    # WCAG 1.4.11); up/amber/down: status and change text, ≥ 4.5:1 on the theme's background (WCAG 1.4.3)
    "default": {"on-bg": ACCENT, "on-fg": "#ffffff", "off-bg": "#ffffff", "off-fg": "#1f2937", "off-border": "#9ca3af",
                "up": "#166534", "amber": "#b45309", "down": "#b91c1c"},  # on the table's grey rows too
    "dark": {"on-bg": "#2dd4bf", "on-fg": "#0b1f1d", "off-bg": "#1f2226", "off-fg": "#e5e7eb", "off-border": "#6b7280",
             "up": "#4ade80", "amber": "#fbbf24", "down": "#f87171"},
}  # fmt: skip

PAGE_CSS = """
:root {%s}
.bk-tab {min-height: 40px; padding: 10px 14px !important; box-sizing: border-box}
#sidebar-button {min-width: 44px; min-height: 44px; display: flex; flex-direction: column; justify-content: center;
  align-items: center}
@media (max-width: 700px) {
  body {overflow: auto}
  #content {height: auto; width: 100%%; overflow: visible}
  #container {width: 100%%}
  #sidebar {position: fixed; top: 64px; left: 0; bottom: 0; z-index: 20; width: 86vw; min-width: 86vw;
    max-width: 86vw; height: auto; background: var(--background-color); box-shadow: 4px 0 16px rgba(0,0,0,.35)}
  #sidebar.hidden {min-width: 0; max-width: 0; width: 0; box-shadow: none}
  #main {padding: 0 4px; overflow: visible; height: auto; width: 100%%; min-width: 0; box-sizing: border-box}
  #main .card-margin {margin: 0 !important; padding: 0 !important; border: 0 !important}
  #main .pn-wrapper {padding: 0 !important}
  .title {font-size: 20px !important}
}
"""


def _watched() -> bool:
    """Is a browser connected to this session? Bokeh keeps a session a while after its tab closes
    (in case it reconnects) and discards it only while none of its callbacks is pending."""
    context = getattr(pn.state.curdoc, "session_context", None)
    session = getattr(context, "_session", None)  # Bokeh's ServerSession; absent outside a server
    return session is None or session.connection_count > 0


def _session_theme() -> str:
    """`?theme=dark`, else the light one (`default`, `light`, anything else). The value is written back
    into the request's arguments: Panel's FAST template reads them itself and fails on a name it
    does not know (`?theme=light` was a traceback page)."""
    args = pn.state.session_args
    theme = "dark" if (args.get("theme") or [b""])[0].strip(b"'\"") == b"dark" else "default"
    if "theme" in args:
        args["theme"] = [theme.encode()]
    return theme


def _touch_device() -> bool:
    """A phone or tablet (its browser says "Mobi" or "Android"): controls start folded into the drawer."""
    agent = (pn.state.headers or {}).get("User-Agent", "")
    return "Mobi" in agent or "Android" in agent


class Dashboard:
    """One session: state, views, page, and the tick that refreshes them."""

    live: ClassVar[weakref.WeakSet[Dashboard]] = weakref.WeakSet()
    """The sessions of this process, to share the server's time between their refreshes."""

    def __init__(
        self,
        shared: SharedData,
        settings: DashboardSettings,
        *,
        theme: str = "default",
        touch: bool = False,
        chosen: frozenset[str] = frozenset(),
    ) -> None:
        Dashboard.live.add(self)
        self.settings, self.theme, self.touch = settings, theme, touch
        self.next_refresh = 0.0
        self.next_alerts = 0.0
        self.watched = True
        self.seen_version, self.seen_reachable = -1, True
        self.timings = {"refresh": 0.0}
        self.state = state = DashboardState(shared, chosen=chosen)
        state.offer_coins()
        self.cards = StatusCards(settings.scrape_interval, state=state)
        self.banners = Banners(settings.ingester_url, state=state, cards=self.cards)
        self.groups = Groups(state=state)
        self.guidance = Guidance(state=state)
        self.prices = PriceCharts(theme, touch, state=state)
        self.candles = CandleCharts(theme, touch, TOGGLE_CSS, state=state)
        self.alerts = AlertsPanel(state=state)
        self.table = PriceTable(state=state)
        self.sidebar = Sidebar(settings.ingester_url, settings.scrape_interval, self._theme_switch(), state=state)
        # dynamic: a hidden tab is neither rendered nor updated
        self.tabs = pn.Tabs(
            ("Prices", self.prices),
            ("Candlesticks & indicators", self.candles),
            dynamic=True,
            sizing_mode="stretch_width",
            active=TABS.index(state.tab),
        )
        self.tabs.param.watch(lambda event: setattr(state, "tab", TABS[event.new]), "active")
        state.param.watch(lambda event: setattr(self.tabs, "active", TABS.index(event.new)), "tab")

    def _theme_switch(self) -> pn.widgets.Button:
        """Reloads the page in the other theme with every choice kept (they are in the URL)."""
        other = "default" if self.theme == "dark" else "dark"
        switch = pn.widgets.Button(
            name="Light theme" if self.theme == "dark" else "Dark theme",
            button_type="default",
            sizing_mode="stretch_width",
            stylesheets=[".bk-btn {min-height: 40px}"],
        )
        switch.js_on_click(
            code=f"const u = new URL(window.location.href); u.searchParams.set('theme', '{other}');"
            " window.location.href = u.toString();"
        )
        return switch

    def template(self) -> pn.template.FastListTemplate:
        main = pn.Column(
            self.banners,
            self.cards,
            self.groups,
            self.guidance,
            self.tabs,
            self.alerts,
            self.table,
            sizing_mode="stretch_width",
        )
        colours = "; ".join(f"--cv-{k}: {v}" for k, v in THEME_COLOURS[self.theme].items())
        template = pn.template.FastListTemplate(
            title="CryptoViz",
            # Panel's busy spinner follows one process-wide flag: every tick of any tab queued an update on
            # every other tab's document, and the queue kept closed tabs' sessions from being discarded
            busy_indicator=None,
            # one Bokeh root per template item, and each root re-walks the whole document: one Column
            sidebar=[self.sidebar],
            main=[main],
            theme_toggle=False,
            theme="dark" if self.theme == "dark" else "default",
            accent=ACCENT,
            font_url="",  # Open Sans from Google: none offline (the CSP allows this server's styles only)
            sidebar_width=300,
            collapsed_sidebar=self.touch,
            meta_viewport="width=device-width, initial-scale=1",
        )
        template.config.raw_css.append(PAGE_CSS % colours)
        return template

    # ---- refresh loop -----------------------------------------------------------------------
    def start(self) -> None:
        """Fill the views on the next tick, then tick. The page's HTML goes out first and the browser
        loads its scripts while the charts are built; its pull of the document waits for them (the
        document lock), so they still come with the first document, not a second round trip."""
        pn.state.execute(self.refresh, schedule=True)
        pn.state.add_periodic_callback(self._tick, period=TICK_MS)

    def on_load(self) -> None:
        """The page has loaded: add the prices table; the browser's time zone is now known."""
        self.table.attach()
        zone = getattr(pn.state.browser_info, "timezone", None)
        if zone:
            self.state.browser_zone = zone

    def refresh(self) -> None:
        started = time.perf_counter()
        shared = self.state.shared
        self.seen_version, self.seen_reachable = shared.version, shared.reachable
        with pn.io.hold():  # cards, banners and charts reach the browser together
            self.state.refresh()
            self.cards.render()
            self.banners.render()
        self.timings["refresh"] = time.perf_counter() - started
        log.debug("refresh: %.0f ms", self.timings["refresh"] * 1e3)

    def _tick(self) -> None:
        self.watched = _watched()
        if not self.watched:
            return  # the tab is gone: an idle tick lets Bokeh discard the session (a busy one blocks that)
        shared = self.state.shared
        new_data = shared.version != self.seen_version and time.monotonic() >= self.next_refresh
        if new_data or shared.reachable != self.seen_reachable:
            self.refresh()
            watched = sum(1 for session in Dashboard.live if session.watched)
            self.next_refresh = time.monotonic() + refresh_spacing(self.timings["refresh"], watched, TICK_MS / 1000)
        else:
            with pn.io.hold():
                self.cards.render()  # the data's age moves on; amber → red raises the stale banner
                if time.monotonic() >= self.next_alerts:
                    self.next_alerts = time.monotonic() + shared.latest_ttl
                    self.state.refresh_alerts()


def build(shared: SharedData, settings: DashboardSettings) -> pn.template.FastListTemplate:
    """Panel's per-session entry point."""
    args = pn.state.session_args or {}
    chosen = frozenset(p for p, name in URL_PARAMETERS.items() if name in args)
    dashboard = Dashboard(shared, settings, theme=_session_theme(), touch=_touch_device(), chosen=chosen)
    if pn.state.location is not None:
        pn.state.location.sync(dashboard.state, URL_PARAMETERS)
    template = dashboard.template()
    dashboard.start()
    pn.state.onload(dashboard.on_load)
    return template


def warm_up(shared: SharedData, settings: DashboardSettings) -> None:
    """Build one session off-screen before the server listens, so the first visitor meets a warm
    process (Bokeh's and Panel's lazily built parts, the shared cache filled) instead of paying for it."""
    from bokeh.document import Document

    started = time.perf_counter()
    dashboard = Dashboard(shared, settings)
    try:
        dashboard.template().server_doc(Document())
        dashboard.refresh()
    except Exception as exc:  # never keep the dashboard from starting; the first visitor is just slower
        log.warning("warm-up session failed: %s: %s", type(exc).__name__, exc)
    finally:
        Dashboard.live.discard(dashboard)
    log.info("warm-up session built in %.2f s", time.perf_counter() - started)
