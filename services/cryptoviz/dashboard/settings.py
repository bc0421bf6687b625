"""The settings of `cryptoviz dashboard`, declared once (core/settings.py makes the flags, env vars and
the table in docs/dashboard.md from them). Panel's own PANEL_OAUTH_* / PANEL_COOKIE_SECRET are Panel's."""

from __future__ import annotations

from pydantic import SecretStr, field_validator

from cryptoviz.core.settings import CommaList, ServiceSettings, setting
from cryptoviz.dashboard.headers import frame_ancestors
from cryptoviz.dashboard.limits import Network, parse_networks


class DashboardSettings(ServiceSettings):
    """`cryptoviz dashboard`: serve the Panel app; it reads only the ingester's HTTP API."""

    ingester_url: str = setting("http://127.0.0.1:8000", "Base URL of the ingester API.")
    dashboard_port: int = setting(5006, "HTTP port.", ge=1, le=65535)
    dashboard_address: str = setting("0.0.0.0", "Address to listen on.")
    dashboard_prefix: str | None = setting(
        None, "URL prefix behind an Ingress, e.g. /cryptoviz (app at /cryptoviz/, health at /cryptoviz/liveness)."
    )
    dashboard_allowed_origins: CommaList = setting(
        (),
        "Comma-separated host[:port] whose pages may open the websocket; a page from any other site gets 403"
        " (the chart sets the Ingress host).",
        shown="localhost, 127.0.0.1 and DASHBOARD_ADDRESS (this machine's name when that is 0.0.0.0) on DASHBOARD_PORT",
    )
    dashboard_frame_ancestors: str = setting(
        "'none'", "CSP frame-ancestors source list ('none', 'self' or origins): who may show the dashboard in a frame."
    )
    dashboard_max_sessions: int = setting(
        100,
        "Most sessions this process holds (open tabs, closed ones not yet discarded, pages being built); then"
        " HTTP 503 with a readable page.",
        ge=1,
    )
    dashboard_max_sessions_per_client: int = setting(
        10, "Most sessions one client (IP address) holds; then HTTP 429 with a readable page.", ge=1
    )
    dashboard_trusted_proxies: CommaList = setting(
        (),
        "IPs or CIDRs of proxies (the Ingress controller) whose X-Forwarded-For names the client: the rightmost"
        " entry that is not itself a trusted proxy.",
    )
    cache_ttl: float = setting(
        30.0,
        "Seconds history stays cached; latest, stats and alerts use CACHE_TTL/6 (new data invalidates both at once).",
        ge=1,
    )
    scrape_interval: float = setting(
        300.0, "Expected data cadence (s): status is green up to 2×, amber up to 5×, red after.", ge=1
    )
    dashboard_basic_auth: SecretStr | None = setting(
        None, "user:password enables Panel's basic-auth login page (never logged)."
    )
    metrics_port: int = setting(
        0,
        "Port of the Prometheus /metrics endpoint, apart from the app's so an Ingress never publishes it"
        " (0: off; the chart uses 9464).",
        env="DASHBOARD_METRICS_PORT",
        ge=0,
        le=65535,
    )
    session_expiry: float = setting(
        15.0,
        "Seconds a closed tab's server session is kept for a reconnect before it is discarded.",
        env="DASHBOARD_SESSION_EXPIRY",
        ge=0.5,
    )
    idle_timeout: float = setting(
        30.0,
        "Seconds to receive a request head or body, and to keep an idle HTTP connection open.",
        env="DASHBOARD_IDLE_TIMEOUT",
        ge=0.5,
        le=3600,
    )

    @field_validator("dashboard_frame_ancestors")
    @classmethod
    def _frame_ancestors(cls, value: str) -> str:
        return frame_ancestors(value)

    @field_validator("dashboard_trusted_proxies")
    @classmethod
    def _proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_networks(" ".join(value))
        return value

    @field_validator("dashboard_basic_auth")
    @classmethod
    def _user_and_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None  # an empty flag is off, as an empty variable is
        user, sep, password = value.get_secret_value().partition(":")
        if not sep or not user or not password:
            raise ValueError("use user:password")
        return value

    @property
    def prefix(self) -> str:
        """The prefix as Panel wants it: "" or "/name"."""
        name = (self.dashboard_prefix or "").strip("/")
        return "/" + name if name else ""

    @property
    def trusted_proxies(self) -> list[Network]:
        return parse_networks(" ".join(self.dashboard_trusted_proxies))

    @property
    def basic_auth(self) -> dict[str, str] | None:
        if self.dashboard_basic_auth is None:
            return None
        user, _, password = self.dashboard_basic_auth.get_secret_value().partition(":")
        return {user: password}
