"""What one browser session shows: the viewer's choices (kept in the URL) and the data read for them.

`DashboardState` is a `param.Parameterized`: widgets are made `from_param`, views depend on its
parameters, and the choices are synced with the page's query string, so a reload, the theme switch or a
shared link opens the same view. The data comes from `SharedData` (one per process): a session never
calls the ingester itself.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import param

from cryptoviz.dashboard.data import IngesterRejected, IngesterUnavailable, SharedData
from cryptoviz.dashboard.logic import (
    CUSTOM,
    PERIODS,
    candle_points,
    default_selection,
    first_mode,
    period_window,
)

MODES = {"Shared scale": "shared", "Separate charts": "separate", "Percent change": "percent"}
INDICATORS = ["SMA", "EMA", "Bollinger", "RSI", "MACD"]
TABS = ["prices", "candles"]
CANDLE_POINTS = 80
"""Most candles per chart (fewer when there are few quotes: see `logic.candle_points`)."""
URL_PARAMETERS = {"coins": "coins", "period": "period", "mode": "mode", "logy": "log", "tab": "tab", "tz": "tz"}
"""The choices kept in the page's query string (the theme is the template's own `theme`)."""


class DashboardState(param.Parameterized):
    """One session's choices and the data that answers them."""

    coins = param.ListSelector(default=[], objects=[], check_on_set=False, doc="Selected coins, biggest first.")
    period = param.Selector(default="7d", objects=[*PERIODS, CUSTOM])
    custom_start = param.Date(default=None, doc="Custom range start (naive UTC).")
    custom_end = param.Date(default=None, doc="Custom range end (naive UTC).")
    mode = param.Selector(default="shared", objects=list(MODES.values()))
    logy = param.Boolean(default=False, doc="Log price axis.")
    tab = param.Selector(default="prices", objects=TABS)
    tz = param.Selector(default="UTC", objects=["UTC", "Local"])
    candle_coin = param.Selector(default=None, objects=[], check_on_set=False, allow_None=True)
    indicators = param.ListSelector(default=["SMA", "Bollinger"], objects=INDICATORS)

    snap = param.Parameter(default=None, doc="The latest Snapshot (stats, latest prices, alerts).")
    alerts = param.DataFrame(default=None, doc="Alerts fired in the last 24 h with their delivery state.")
    history = param.DataFrame(default=None, doc="History rows of the selection in the window.")
    candles = param.DataFrame(default=None, doc="Fewer, fuller buckets of the candle coin.")
    problem = param.String(default="", doc="Why the last read of the ingester failed (the last data stays).")
    answered = param.Boolean(default=False, doc="The failed read got an HTTP answer (the ingester is up).")
    range_error = param.String(default="", doc="Why the custom range cannot be asked for.")
    browser_zone = param.String(default="UTC")

    def __init__(self, shared: SharedData, *, chosen: set[str] = frozenset(), **params: Any) -> None:
        super().__init__(**params)
        self.shared = shared
        self.chosen = set(chosen)
        """Choices the URL made: the first data does not override them with defaults."""
        self.defaulted = False

    # ---- reading ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """New data (or reachability) → snapshot; the first one also picks the default view."""
        try:
            snap = self.shared.snapshot()
        except (IngesterUnavailable, IngesterRejected) as exc:
            self._failed(exc)
            return
        updates: dict[str, Any] = {"snap": snap, "problem": ""}
        if not _same(snap.alerts, self.alerts):
            updates["alerts"] = snap.alerts
        latest = snap.latest
        if not latest.empty:
            self._offer(latest)
            if not self.defaulted:
                self.defaulted = True
                if "coins" not in self.chosen:
                    groups = dict(zip(latest.symbol, latest.group, strict=True))
                    updates["coins"] = default_selection(latest, groups)
                if "mode" not in self.chosen:
                    chosen = updates.get("coins", self.coins)
                    updates["mode"] = first_mode(latest.loc[latest["symbol"].isin(chosen), "price"].tolist())
        self.param.update(**updates)  # one batch: `load` runs once for the new snapshot and the defaults

    def offer_coins(self) -> None:
        """The coins to pick from, before the page's widgets are made: a coin chosen in the URL is kept
        only if its toggle exists. Cheap (the shared cache); `refresh` reads and draws the rest."""
        with contextlib.suppress(IngesterUnavailable, IngesterRejected):  # the first refresh says why
            self._offer(self.shared.snapshot().latest)

    def _offer(self, latest: pd.DataFrame) -> None:
        if not latest.empty:
            self.param.coins.objects = latest.sort_values("market_cap", ascending=False, na_position="last")[
                "symbol"
            ].tolist()

    def refresh_alerts(self) -> None:
        """Delivery receipts come without new data: re-read the alerts (shared cache) between refreshes."""
        try:
            alerts = self.shared.alerts()
        except (IngesterUnavailable, IngesterRejected):
            return  # the next refresh reports the ingester's problem
        if not _same(alerts, self.alerts):
            self.alerts = alerts

    def window(self) -> tuple[datetime | None, datetime | None]:
        """(start, end) of the API question; relative periods end at the newest data."""
        stats = self.snap.stats if self.snap is not None else {}
        newest = parse_time(stats.get("last_update"))
        custom = None
        if self.period == CUSTOM and self.custom_start and self.custom_end:
            custom = (utc(self.custom_start), utc(self.custom_end))
        start, end = period_window(self.period, newest, custom)
        if start is None and self.period != CUSTOM:  # "all": the API's default is one day
            start = parse_time(stats.get("first_update"))
            if start is not None and newest is not None and start >= newest:
                start = newest - timedelta(seconds=1)
        return start, end

    @param.depends("snap", "coins", "period", "custom_start", "custom_end", watch=True)
    def load(self) -> None:
        """History of the selection in the window (from the shared cache)."""
        if self.snap is None:
            return
        if self.period == CUSTOM and not (self.custom_start and self.custom_end):
            self._prefill_custom()  # sets both ends, which loads again
            return
        try:
            start, end = self.window()
            history = self.shared.history(tuple(sorted(self.coins)), start, end)
        except ValueError as exc:  # an impossible custom range
            self.range_error = str(exc)
            return
        except IngesterUnavailable as exc:
            self._failed(exc)
            return
        present = [s for s in self.coins if s in set(history["symbol"])]
        self.param.candle_coin.objects = present
        coin = self.candle_coin if self.candle_coin in present else (present[0] if present else None)
        self.param.update(history=history, candle_coin=coin, problem="", range_error="")

    @param.depends("history", "tab", "candle_coin", watch=True)
    def load_candles(self) -> None:
        """Candles of one coin, only while their tab is shown: fewer, fuller buckets than the lines."""
        if self.tab != "candles" or not self.candle_coin:
            return
        history = self.history if self.history is not None else pd.DataFrame()
        mine = history[history["symbol"] == self.candle_coin] if not history.empty else history
        samples = int(mine["samples"].sum()) if "samples" in mine else len(mine)
        try:
            start, end = self.window()
            points = candle_points(samples, CANDLE_POINTS)
            self.candles = self.shared.history((self.candle_coin,), start, end, points=points)
        except ValueError:
            self.problem = ""
        except IngesterUnavailable as exc:
            self._failed(exc)

    def _failed(self, exc: IngesterUnavailable | IngesterRejected) -> None:
        self.param.update(problem=str(exc), answered=exc.status is not None)

    def _prefill_custom(self) -> None:
        """A custom range starts as the data being shown (to the minute), never as an empty range."""
        history = self.history if self.history is not None and not self.history.empty else None
        if history is not None:
            first, last = history["timestamp"].min(), history["timestamp"].max()
        else:
            first, last = (
                pd.Timestamp(parse_time(self.stats.get(k)) or pd.Timestamp.now("UTC"))
                for k in ("first_update", "last_update")
            )
        start = pd.Timestamp(first).tz_convert("UTC").floor("min").tz_localize(None).to_pydatetime()
        end = pd.Timestamp(last).tz_convert("UTC").ceil("min").tz_localize(None).to_pydatetime()
        if end <= start:
            end = start + timedelta(minutes=1)
        self.param.update(custom_start=start, custom_end=end)

    # ---- derived -------------------------------------------------------------------------------
    @property
    def latest(self) -> pd.DataFrame:
        return self.snap.latest if self.snap is not None else pd.DataFrame()

    @property
    def stats(self) -> dict[str, Any]:
        return self.snap.stats if self.snap is not None else {}

    def zone(self) -> tuple[str, str]:
        """(pandas tz name, axis label) for the chosen time zone; Local is the browser's."""
        if self.tz == "Local":
            return self.browser_zone, f"Time ({self.browser_zone})"
        return "UTC", "Time (UTC)"

    def simulated(self) -> set[str]:
        latest = self.latest
        if latest.empty or "simulated" not in latest:
            return set()
        return set(latest.loc[latest["simulated"].fillna(False).astype(bool), "symbol"])

    def view(self) -> pd.DataFrame:
        """The history rows being shown, with display labels, local time and the plotted value."""
        history = self.history if self.history is not None else pd.DataFrame()
        if history.empty:
            return history
        frame = history[history["symbol"].isin(self.coins)].copy()
        if frame.empty:
            return frame
        zone, _ = self.zone()
        frame["time"] = frame["timestamp"].dt.tz_convert(zone).dt.tz_localize(None)
        simulated = self.simulated()
        frame["coin"] = frame["symbol"].map(lambda s: f"{s} (simulated)" if s in simulated else s)
        if self.mode == "percent":
            first = frame.groupby("symbol")["close"].transform("first")
            frame["value"] = (frame["close"] / first - 1.0) * 100.0
        else:
            frame["value"] = frame["close"]
        return frame


def parse_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).to_pydatetime()


def utc(value: datetime) -> datetime:
    """A naive (UTC) or aware datetime as aware UTC."""
    return parse_time(value)


def _same(a: pd.DataFrame | None, b: pd.DataFrame | None) -> bool:
    return a is b or (a is not None and b is not None and a.equals(b))
