"""`cryptoviz dashboard`: serve the Panel app; it reads only the ingester's HTTP API."""

from __future__ import annotations

import logging
import os
import secrets
import signal
from typing import TYPE_CHECKING

import click

from cryptoviz.core.settings import click_options, from_options
from cryptoviz.dashboard.headers import local_origins
from cryptoviz.dashboard.settings import DashboardSettings

if TYPE_CHECKING:
    from bokeh.server.server import Server

    from cryptoviz.dashboard.data import SharedData

log = logging.getLogger(__name__)


def _skip_mathjax() -> None:
    """Panel ships Bokeh's 1.8 MB MathJax bundle with every page that has an HTML pane, although
    its HTML panes render no math by default (`disable_math=True`) and ours never need any:
    parsing it costs the first chart about a third of a second. Private hook: if a Panel release
    drops it, pages still work, only slower."""
    from panel.io import resources

    if hasattr(resources, "_panel_use_mathjax"):
        resources._panel_use_mathjax = lambda _roots: False


def _skip_webgl() -> None:
    """Bokeh ships its 190 kB WebGL bundle with every page, for figures drawn with
    `output_backend="webgl"`; ours are drawn on canvas (hvPlot's default), so the first chart need not
    wait for it to be parsed. Private class attribute of Bokeh's: if a release renames it, pages
    still work, only slower; a webgl figure would fall back to canvas with a console warning."""
    from bokeh.resources import Resources

    if hasattr(Resources, "_default_components"):
        Resources._default_components = [c for c in Resources._default_components if c != "bokeh-gl"]


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


def _skip_google_fonts() -> None:
    """Panel's FAST design adds a Google Fonts stylesheet (Open Sans) to every page: nothing the page
    may load (its CSP allows this server's stylesheets only) and nothing an offline install can reach;
    the system's sans-serif stands in. A class attribute of Panel's: if a release renames it, the
    stylesheet is merely refused by the CSP."""
    from panel.theme.fast import Fast

    Fast._resources = {kind: files for kind, files in Fast._resources.items() if kind != "font"}


@click.command()
@click_options(DashboardSettings)
def dashboard(**values: object) -> None:
    """Serve the Panel dashboard (app at / or DASHBOARD_PREFIX, health at /liveness; Prometheus
    /metrics on --metrics-port).

    OAuth uses Panel's own PANEL_OAUTH_PROVIDER, PANEL_OAUTH_KEY, PANEL_OAUTH_SECRET and
    PANEL_COOKIE_SECRET environment variables.
    """
    settings = from_options(DashboardSettings, values)
    import panel as pn

    from cryptoviz.dashboard.app import build, warm_up
    from cryptoviz.dashboard.data import IngesterClient, SharedData
    from cryptoviz.dashboard.headers import transforms
    from cryptoviz.dashboard.limits import SessionLimits
    from cryptoviz.dashboard.metrics import serve_metrics
    from cryptoviz.dashboard.server import install_handlers, quiet_disconnects

    auth = settings.basic_auth
    oauth_provider = os.environ.get("PANEL_OAUTH_PROVIDER") or None
    cookie_secret = os.environ.get("PANEL_COOKIE_SECRET") or (secrets.token_hex(32) if auth else None)
    address, port = settings.dashboard_address, settings.dashboard_port

    pn.extension("tabulator", design="fast", notifications=False)
    _skip_mathjax()
    _skip_webgl()
    _skip_google_fonts()
    shared = SharedData(IngesterClient(settings.ingester_url), cache_ttl=settings.cache_ttl).start()
    log.info(
        "dashboard on %s:%s%s reading %s (auth: %s)",
        address,
        port,
        settings.prefix or "/",
        settings.ingester_url,
        "basic" if auth else oauth_provider or "none",
    )

    warm_up(shared, settings)

    def app() -> pn.template.FastListTemplate:
        return build(shared, settings)

    expiry = settings.session_expiry
    check_every = min(expiry / 2, 5.0)  # how often Bokeh looks for sessions to discard
    proxies = settings.trusted_proxies
    install_handlers(
        SessionLimits(
            settings.dashboard_max_sessions,
            settings.dashboard_max_sessions_per_client,
            proxies,
            retry_after=int(expiry + check_every) + 1,
        )
    )
    origins = list(settings.dashboard_allowed_origins) or local_origins(port, address)
    log.info(
        "websocket origins %s; at most %d sessions, %d per client%s",
        ", ".join(origins),
        settings.dashboard_max_sessions,
        settings.dashboard_max_sessions_per_client,
        f" (X-Forwarded-For trusted from {', '.join(map(str, proxies))})" if proxies else "",
    )

    server = pn.serve(
        {"/": app},
        port=port,
        address=address,
        prefix=settings.prefix,
        websocket_origin=origins,
        transforms=transforms(settings.dashboard_frame_ancestors),
        show=False,
        title="CryptoViz",
        liveness=True,
        basic_auth=auth,
        oauth_provider=oauth_provider,
        cookie_secret=cookie_secret,
        oauth_guest_endpoints=["/liveness"] if (auth or oauth_provider) else None,
        unused_session_lifetime_milliseconds=int(expiry * 1000),
        # checked often enough that a closed tab's session goes at most min(expiry/2, 5 s) late
        check_unused_sessions_milliseconds=int(check_every * 1000),
        admin=False,
        verbose=False,
        start=False,
        http_server_kwargs=http_limits(settings.idle_timeout),
    )
    if settings.metrics_port:
        try:
            serve_metrics(server, shared, settings.metrics_port, address)
        except OSError as exc:
            raise click.ClickException(f"cannot serve metrics on port {settings.metrics_port}: {exc.strerror}") from exc
        log.info("metrics on %s:%s/metrics", address, settings.metrics_port)
    quiet_disconnects(server.io_loop.asyncio_loop)
    stop_on_signals(server, shared)
    server.start()
    server.io_loop.start()
    log.info("dashboard stopped")


def stop_on_signals(server: Server, shared: SharedData) -> None:
    """SIGTERM (Kubernetes stopping the pod) or SIGINT stops the server at once. A container's PID 1
    has no default action for SIGTERM: without a handler the pod ignored it and was killed only after
    its whole grace period (30 s of every rollout and node drain)."""
    loop = server.io_loop.asyncio_loop

    def stop(signum: int) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        shared.stop()
        server.stop()
        server.io_loop.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
