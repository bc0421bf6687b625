"""The notification text of one alert, in the markup its target speaks (Apprise body formats).

Pure functions. Every value that comes from outside (a coin's name from a provider, a symbol) is
escaped for the format it is written into, and control characters are flattened, so a hostile
name can neither add markup or links nor forge lines. Apprise is told the body is already in the
target's own format, so it converts nothing.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from cryptoviz.core.alert_contract import AlertMessage
from cryptoviz.core.config import format_duration

TEXT, MARKDOWN, HTML = "text", "markdown", "html"
DASHBOARD_PERIODS = (("1h", 3600), ("24h", 86400), ("7d", 7 * 86400), ("30d", 30 * 86400))
"""The dashboard's relative periods (its `?period=`), shortest first."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~=&])")
RULE_TEXT = {
    "above": "price above {threshold:,.10g} USD",
    "below": "price below {threshold:,.10g} USD",
    "change_24h_above": "24h change beyond ±{threshold:g}%",
    "change_above": "rise of {threshold:g}% within {window}",
    "change_below": "fall of {threshold:g}% within {window}",
    "stale_after": "no new quote for {window}",
}


def flat(value: object) -> str:
    """One line of text: control characters (newlines included) become one space; at most 200 characters."""
    return _CONTROL.sub(" ", "" if value is None else str(value)).strip()[:200]


def escape_markdown(value: object) -> str:
    """CommonMark: every ASCII punctuation that could start markup gets a backslash."""
    return _MD_SPECIAL.sub(r"\\\1", flat(value))


def escape_html(value: object) -> str:
    return html.escape(flat(value), quote=True)


def period_for(alert: AlertMessage) -> str:
    """The dashboard period that shows the alert in context: at least twice its window, else 24h."""
    span = alert.threshold if alert.condition == "stale_after" else alert.window_seconds
    if not span:
        return "24h"
    return next((name for name, seconds in DASHBOARD_PERIODS if seconds >= 2 * span), "30d")


def dashboard_link(base_url: str | None, alert: AlertMessage) -> str | None:
    if not base_url:
        return None
    query = urlencode({"coins": alert.symbol, "period": period_for(alert)}, quote_via=quote)
    return f"{base_url.rstrip('/')}/?{query}"


def rule_text(alert: AlertMessage) -> str:
    template = RULE_TEXT.get(alert.condition, alert.condition + " {threshold:g}")
    window = alert.threshold if alert.condition == "stale_after" else alert.window_seconds
    return template.format(threshold=alert.threshold, window=format_duration(window))


def _time(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return flat(value)
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def facts(alert: AlertMessage) -> list[tuple[str, str]]:
    """(label, plain value) lines of the message, in order; values are not escaped yet."""
    coin = f"{alert.symbol} ({alert.name})" if alert.name and flat(alert.name) != alert.symbol else alert.symbol
    lines = [("Coin", coin), ("Rule", rule_text(alert))]
    if alert.price is not None:
        lines.append(("Price", f"{alert.price:,.10g} USD"))
    changes = []
    if alert.change_pct is not None:
        changes.append(f"{alert.change_pct:+.2f}% within {format_duration(alert.window_seconds)}")
    if alert.change_24h is not None:
        changes.append(f"{alert.change_24h:+.2f}% in 24h")
    if changes:
        lines.append(("Change", ", ".join(changes)))
    lines.append(("Time", _time(alert.fired_at)))
    lines.append(("Ref", alert.alert_id))
    return lines


def title(alert: AlertMessage) -> str:
    """Plain title; `render` escapes it for the format."""
    who = f"{alert.symbol} ({alert.name})" if alert.name and flat(alert.name) != alert.symbol else alert.symbol
    return f"CryptoViz alert: {who}, {rule_text(alert)}"


def render(alert: AlertMessage, fmt: str, dashboard_url: str | None = None) -> tuple[str, str]:
    """(title, body) in `fmt` (text, markdown or html)."""
    link = dashboard_link(dashboard_url, alert)
    headline = flat(alert.message)
    if fmt == HTML:
        lines = [f"<b>{escape_html(headline)}</b>"]
        lines += [f"<b>{label}:</b> {escape_html(value)}" for label, value in facts(alert)]
        if link:
            anchor = f"Open {escape_html(alert.symbol)} on the dashboard"
            lines.append(f'<a href="{html.escape(link, quote=True)}">{anchor}</a>')
        return escape_html(title(alert)), "<br/>\n".join(lines)
    if fmt == MARKDOWN:
        lines = [f"**{escape_markdown(headline)}**", ""]
        lines += [f"**{label}:** {escape_markdown(value)}  " for label, value in facts(alert)]
        if link:
            target = link.replace("(", "%28").replace(")", "%29").replace(" ", "%20")
            lines.append(f"[Open {escape_markdown(alert.symbol)} on the dashboard]({target})")
        return escape_markdown(title(alert)), "\n".join(lines)
    lines = [headline, *(f"{label}: {flat(value)}" for label, value in facts(alert))]
    if link:
        lines.append(f"Dashboard: {link}")
    return flat(title(alert)), "\n".join(lines)
