"""`cryptoviz dashboard`: serve the Panel app; it reads only the ingester's HTTP API."""

from __future__ import annotations

import logging
import os
import secrets

import click

log = logging.getLogger(__name__)


def _origins(value: str) -> list[str]:
    return [o.strip() for o in value.split(",") if o.strip()]


def _basic_auth(value: str) -> dict[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise click.BadParameter("use user:password", param_hint="DASHBOARD_BASIC_AUTH")
    return {user: password}


def _skip_mathjax() -> None:
    """Panel ships Bokeh's 1.8 MB MathJax bundle with every page that has an HTML pane, although
    its HTML panes render no math by default (`disable_math=True`) and ours never need any:
    parsing it costs the first chart about a third of a second. Private hook: if a Panel release
    drops it, pages still work, only slower."""
    from panel.io import resources

    if hasattr(resources, "_panel_use_mathjax"):
        resources._panel_use_mathjax = lambda _roots: False


def http_limits(idle_timeout: float) -> dict[str, float | int]:
    """Tornado's HTTPServer limits: a request head or body must arrive, and an idle keep-alive connection
    is kept, for `idle_timeout` seconds (Tornado's default is an hour, so a client sending a byte a
    minute held a connection forever); heads of 32 KiB and bodies of 1 MiB at most (the dashboard
    takes no uploads; open websockets are not affected)."""
    return {
        "idle_connection_timeout": idle_timeout,
        "body_timeout": idle_timeout,
        "max_header_size": 32 * 1024,
        "max_body_size": 1 << 20,
    }


def _opt(name: str, envvar: str, **kwargs: object):
    return click.option(name, envvar=envvar, show_envvar=True, show_default=True, **kwargs)


@click.command()
@_opt("--ingester-url", "INGESTER_URL", default="http://127.0.0.1:8000", help="Base URL of the ingester API.")
@_opt("--dashboard-port", "DASHBOARD_PORT", default=5006, type=click.IntRange(0, 65535), help="HTTP port.")
@_opt("--dashboard-address", "DASHBOARD_ADDRESS", default="0.0.0.0", help="Address to listen on.")
@_opt("--dashboard-prefix", "DASHBOARD_PREFIX", default="", help="URL prefix when served behind an Ingress, e.g. /cv.")
@_opt(
    "--dashboard-allowed-origins",
    "DASHBOARD_ALLOWED_ORIGINS",
    default="",
    help="Comma-separated host[:port] allowed to open the websocket (default: any, '*').",
)
@_opt("--cache-ttl", "CACHE_TTL", default=30.0, type=click.FloatRange(1), help="History cache TTL (s); latest: TTL/6.")
@_opt(
    "--scrape-interval",
    "SCRAPE_INTERVAL",
    default=300.0,
    type=click.FloatRange(1),
    help="Expected data cadence (s): status is green up to 2×, amber up to 5×, red after.",
)
@_opt("--dashboard-basic-auth", "DASHBOARD_BASIC_AUTH", default="", help="Optional user:password for basic auth.")
@_opt(
    "--metrics-port",
    "DASHBOARD_METRICS_PORT",
    default=0,
    type=click.IntRange(0, 65535),
    help="Port of the Prometheus /metrics endpoint, apart from the app's (0: off).",
)
@_opt(
    "--session-expiry",
    "DASHBOARD_SESSION_EXPIRY",
    default=15.0,
    type=click.FloatRange(0.5),
    help="Seconds a closed tab's session is kept for a reconnect before it is discarded.",
)
@_opt(
    "--idle-timeout",
    "DASHBOARD_IDLE_TIMEOUT",
    default=30.0,
    type=click.FloatRange(0.5, 3600),
    help="Seconds to receive a request head or body, and to keep an idle HTTP connection open.",
)
def dashboard(
    ingester_url: str,
    dashboard_port: int,
    dashboard_address: str,
    dashboard_prefix: str,
    dashboard_allowed_origins: str,
    cache_ttl: float,
    scrape_interval: float,
    dashboard_basic_auth: str,
    metrics_port: int,
    session_expiry: float,
    idle_timeout: float,
) -> None:
    """Serve the Panel dashboard (app at / or DASHBOARD_PREFIX, health at /liveness; Prometheus
    /metrics on --metrics-port).

    OAuth uses Panel's own PANEL_OAUTH_PROVIDER, PANEL_OAUTH_KEY, PANEL_OAUTH_SECRET and
    PANEL_COOKIE_SECRET environment variables.
    """
    import panel as pn

    from cryptoviz.dashboard.app import Settings, build, warm_up
    from cryptoviz.dashboard.data import IngesterClient, SharedData
    from cryptoviz.dashboard.metrics import serve_metrics

    auth = _basic_auth(dashboard_basic_auth) if dashboard_basic_auth else None
    oauth_provider = os.environ.get("PANEL_OAUTH_PROVIDER") or None
    cookie_secret = os.environ.get("PANEL_COOKIE_SECRET") or (secrets.token_hex(32) if auth else None)
    prefix = "/" + dashboard_prefix.strip("/") if dashboard_prefix.strip("/") else ""

    pn.extension("tabulator", design="fast", notifications=False)
    _skip_mathjax()
    shared = SharedData(IngesterClient(ingester_url), cache_ttl=cache_ttl).start()
    settings = Settings(ingester_url=ingester_url, scrape_interval=scrape_interval)
    log.info(
        "dashboard on %s:%s%s reading %s (auth: %s)",
        dashboard_address,
        dashboard_port,
        prefix or "/",
        ingester_url,
        "basic" if auth else oauth_provider or "none",
    )

    warm_up(shared, settings)

    def app() -> pn.template.FastListTemplate:
        return build(shared, settings)

    server = pn.serve(
        {"/": app},
        port=dashboard_port,
        address=dashboard_address,
        prefix=prefix,
        websocket_origin=_origins(dashboard_allowed_origins) or ["*"],
        show=False,
        title="CryptoViz",
        liveness=True,
        basic_auth=auth,
        oauth_provider=oauth_provider,
        cookie_secret=cookie_secret,
        oauth_guest_endpoints=["/liveness"] if (auth or oauth_provider) else None,
        unused_session_lifetime_milliseconds=int(session_expiry * 1000),
        # checked often enough that a closed tab's session goes at most min(expiry/2, 5 s) late
        check_unused_sessions_milliseconds=int(min(session_expiry / 2, 5.0) * 1000),
        admin=False,
        verbose=False,
        start=False,
        http_server_kwargs=http_limits(idle_timeout),
    )
    if metrics_port:
        try:
            serve_metrics(server, shared, metrics_port, dashboard_address)
        except OSError as exc:
            raise click.ClickException(f"cannot serve metrics on port {metrics_port}: {exc.strerror}") from exc
        log.info("metrics on %s:%s/metrics", dashboard_address, metrics_port)
    server.start()
    server.io_loop.start()
