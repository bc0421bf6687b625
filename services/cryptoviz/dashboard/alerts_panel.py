"""The alerts panel: alerts fired in the last 24 h and whether each reached its notification targets.

It reads `GET /api/v1/alerts` (the ingester keeps the notifier's delivery receipts; the dashboard never
talks to the notifier). Receipts arrive after the alert, with no new market data, so the panel asks
again every `SharedData.latest_ttl` seconds on its own (one API call per process, from the shared
cache) instead of waiting for the next data version. Hidden when nothing fired.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param

from cryptoviz.dashboard.logic import esc, price_decimals
from cryptoviz.dashboard.state import DashboardState, parse_time

SHOWN = 20
"""Most alerts listed (newest first); the heading gives the total."""

STATE_TEXT = {
    "delivered": "Delivered",
    "partial": "Partly failed",
    "failed": "Failed",
    "retrying": "Retrying",
    "pending": "Pending",
}
"""The API's delivery states (see `ingester.alerts_api.FiredAlert.delivery`) as the panel says them."""

TARGET_MARK = {"delivered": "✓", "retrying": "↻", "failed": "✗"}

CSS = """
.cv-alerts {width:100%; overflow-x:auto}
.cv-alerts table {border-collapse:collapse; width:100%; font-size:13px}
.cv-alerts th, .cv-alerts td {text-align:left; padding:6px 8px; border-bottom:1px solid rgba(128,128,128,.3);
  vertical-align:top}
.cv-alerts th {font-weight:600; white-space:nowrap}
.cv-badge {display:inline-block; padding:1px 8px; border-radius:10px; font-weight:600; white-space:nowrap}
.cv-delivered {background:#dcfce7; color:#14532d} .cv-failed, .cv-partial {background:#fee2e2; color:#7f1d1d}
.cv-retrying, .cv-pending {background:#fef3c7; color:#78350f}
.cv-target {display:block; white-space:nowrap} .cv-reason {opacity:.8; white-space:normal}
@media (max-width: 640px) {  /* a phone: each alert is a small card, nothing to scroll sideways */
  .cv-alerts thead {display:none}
  .cv-alerts tr {display:block; padding:6px 0; border-bottom:1px solid rgba(128,128,128,.3)}
  .cv-alerts td {display:inline-block; border:none; padding:2px 6px}
  .cv-alerts td:nth-child(3), .cv-alerts td:nth-child(6) {display:block}
  .cv-target {white-space:normal}
}
"""


def _time(value: Any, zone: str) -> str:
    stamp = parse_time(value)
    return "–" if stamp is None else pd.Timestamp(stamp).tz_convert(zone).strftime("%m-%d %H:%M:%S")


def _targets(deliveries: Any) -> str:
    if deliveries is None or len(deliveries) == 0:
        return "<span class='cv-reason'>no receipt yet</span>"
    parts = []
    for d in deliveries:
        status = str(d.get("status"))
        tries = d.get("attempts") or 0
        reason = f" <span class='cv-reason'>{esc(d.get('reason'))}</span>" if d.get("reason") else ""
        parts.append(
            f"<span class='cv-target' data-testid='alert-target' data-status='{esc(status)}'>"
            f"{TARGET_MARK.get(status, '?')} {esc(d.get('target'))}"
            f" <small>({tries} {'try' if tries == 1 else 'tries'})</small>{reason}</span>"
        )
    return "".join(parts)


def _price(value: Any) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"${float(value):,.{price_decimals(float(value))}f}"


def _row(alert: dict[str, Any], zone: str) -> str:
    state = alert.get("delivery")
    return (
        f"<tr data-testid='alert-row' data-alert='{esc(alert.get('alert_id'))}'"
        f" data-symbol='{esc(alert.get('symbol'))}' data-delivery='{esc(state)}'>"
        f"<td>{esc(_time(alert.get('fired_at'), zone))}</td><td><b>{esc(alert.get('symbol'))}</b></td>"
        f"<td>{esc(alert.get('message') or alert.get('condition'))}</td><td>{esc(_price(alert.get('price')))}</td>"
        f"<td><span class='cv-badge cv-{esc(state)}'>{esc(STATE_TEXT.get(state, '?'))}</span></td>"
        f"<td>{_targets(alert.get('deliveries'))}</td></tr>"
    )


def alerts_html(alerts: pd.DataFrame, zone: str) -> str:
    """The panel's markup ('' when nothing fired); every provider string is escaped."""
    if alerts is None or alerts.empty:
        return ""
    records = alerts.sort_values("fired_at", ascending=False, kind="stable").to_dict("records")
    counts = pd.Series([r.get("delivery") for r in records]).value_counts()
    summary = ", ".join(f"{n} {STATE_TEXT.get(s, s).lower()}" for s, n in counts.items())
    rows = "".join(_row(a, zone) for a in records[:SHOWN])
    more = f"<p><small>Newest {SHOWN} of {len(records)} shown.</small></p>" if len(records) > SHOWN else ""
    return (
        f"<style>{CSS}</style><div class='cv-alerts' data-testid='alerts'>"
        f"<h3>Alerts (24 h): {len(records)} fired <small>({esc(summary)})</small></h3>"
        f"<table><thead><tr><th>Fired</th><th>Coin</th><th>Rule</th><th>Price</th><th>Delivery</th>"
        f"<th>Targets</th></tr></thead><tbody>{rows}</tbody></table>{more}</div>"
    )


class AlertsPanel(pn.viewable.Viewer):
    """Fired alerts and their delivery state; re-rendered only when they or the time zone change."""

    state = param.ClassSelector(class_=DashboardState)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.pane = pn.pane.HTML(sizing_mode="stretch_width")

    @param.depends("state.alerts", "state.tz", watch=True)
    def render(self) -> None:
        markup = alerts_html(self.state.alerts, self.state.zone()[0])
        if markup != self.pane.object:
            self.pane.object = markup

    def __panel__(self) -> pn.pane.HTML:
        return self.pane
