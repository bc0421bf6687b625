"""How many sessions one dashboard process holds, and how many one client may hold.

Every page load builds a whole server session (state, views, Bokeh document: about 0.4 s of the one
event loop's time) and keeps it until its tab has been gone `DASHBOARD_SESSION_EXPIRY` seconds, so
unbounded anonymous loads starve every open tab and `/liveness`. `SessionLimits` counts the sessions the
server holds (connected, closed but not yet discarded, and being built) per process and per client,
and `refusal` decides, before any work, whether one more may be built: at the per-client cap the answer
is HTTP 429, at the process's cap 503, each with a page a person can read and `Retry-After`.

A client is its IP address, or, when the request comes from a trusted proxy
(`DASHBOARD_TRUSTED_PROXIES`, e.g. the Ingress controller), the address that proxy saw: the rightmost
`X-Forwarded-For` entry not itself a trusted proxy (entries further left are the client's own claims).
"""

from __future__ import annotations

import html
import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> list[Network]:
    """Comma- or space-separated addresses or CIDR ranges (`10.0.0.0/8, 192.168.1.5`)."""
    networks = []
    for item in value.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR range: {item!r}") from None
    return networks


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address.ipv4_mapped or address if isinstance(address, ipaddress.IPv6Address) else address


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, proxies: Iterable[Network]) -> bool:
    return address is not None and any(address in network for network in proxies)


def client_address(peer: str, forwarded_for: str | None, proxies: list[Network]) -> str:
    """The client a request is counted against (see the module docstring)."""
    if not proxies or not _trusted(_address(peer), proxies) or not forwarded_for:
        return peer
    for hop in reversed([h for h in forwarded_for.split(",") if h.strip()]):
        address = _address(hop)
        if address is None:
            return peer  # the trusted proxy wrote something that is no address: count the proxy
        if not _trusted(address, proxies):
            return str(address)
    return peer


@dataclass(frozen=True)
class Refusal:
    status: int
    title: str
    text: str
    retry_after: int


def refusal(total: int, mine: int, max_total: int, max_mine: int, retry_after: int) -> Refusal | None:
    """None if one more session may be built, given the sessions held in all and by this client."""
    if mine >= max_mine:
        return Refusal(
            429,
            "Too many CryptoViz tabs",
            f"This browser (or network) already has {mine} dashboard sessions open on this server, the most"
            " allowed. Close some CryptoViz tabs; a closed tab's session is freed within"
            f" {retry_after} seconds. Then reload this page.",
            retry_after,
        )
    if total >= max_total:
        return Refusal(
            503,
            "CryptoViz is busy",
            f"This dashboard server is showing {total} sessions, as many as it serves at once. Please try"
            f" again in a minute; sessions of closed tabs are freed within {retry_after} seconds.",
            retry_after,
        )
    return None


def refusal_page(refused: Refusal, reload_url: str) -> str:
    """A small page that needs nothing else from the server (no script, inline style only)."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(refused.title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:12vh auto;padding:0 1rem;line-height:1.5;
color:#1f2937}} a{{display:inline-block;margin-top:1rem;padding:.6rem 1rem;background:#0f766e;color:#fff;
border-radius:6px;text-decoration:none}}</style></head>
<body><h1>{html.escape(refused.title)}</h1><p>{html.escape(refused.text)}</p>
<p><small>HTTP {refused.status}</small></p><a href="{html.escape(reload_url, quote=True)}">Try again</a></body></html>
"""


class SessionLimits:
    """The sessions this process holds, by client: registered when built, forgotten when Bokeh drops them."""

    def __init__(self, max_sessions: int, max_per_client: int, proxies: list[Network], retry_after: int) -> None:
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client
        self.proxies = proxies
        self.retry_after = retry_after
        self.owners: dict[str, str] = {}
        """Session id → client."""
        self.building: Counter[str] = Counter()
        """Sessions being built now, by client (a build awaits, so several can be under way)."""

    def client(self, peer: str, forwarded_for: str | None) -> str:
        return client_address(peer, forwarded_for, self.proxies)

    def check(self, client: str, live: Iterable[str]) -> Refusal | None:
        """May `client` have one more session, with `live` the ids of the sessions the server holds?"""
        live = set(live)
        for gone in [sid for sid in self.owners if sid not in live]:
            del self.owners[gone]
        mine = sum(1 for owner in self.owners.values() if owner == client) + self.building[client]
        total = len(live) + sum(self.building.values())
        return refusal(total, mine, self.max_sessions, self.max_per_client, self.retry_after)

    def start(self, client: str) -> None:
        self.building[client] += 1

    def done(self, client: str, session_id: str | None) -> None:
        self.building[client] -= 1
        if self.building[client] <= 0:
            del self.building[client]
        if session_id is not None:
            self.owners[session_id] = client
